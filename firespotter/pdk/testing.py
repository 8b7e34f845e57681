"""Conformance suites and fixtures for firespotter plugin authors (a pytest plugin, entry point `pytest11`).

Inherit the suite of your plugin's kind and provide its fixture; every test says which rule it checks:

    from firespotter.pdk.testing import SinkContract

    class TestMySink(SinkContract):
        @pytest.fixture
        def sink(self, tmp_path):
            return MySink(...)

        def delivered(self, sink):          # what reached the destination, as a list of frame seqs
            return [...]

Fixtures for any test: `synthetic_frames` (a list of Frames from the project's synthetic scene) and
`run_pipeline(source=..., sinks=..., processors=..., model=..., backend=...)`, a short replay that returns the
Results.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Iterable

import numpy as np
import pytest

from firespotter.runtime.errors import PluginError
from firespotter.runtime.protocols import (ADAPTER, MODEL, PROCESSOR, SEGMENTER, SINK, SOURCE, Contract, SinkBase,
                                           conform)
from firespotter.runtime.specs import Availability
from firespotter.runtime.types import AlertLevel, Frame, PrecisionLabel, Prediction, Result, SourceState

# Which state may follow which (docs/architecture.md, source states). A state may always repeat.
ALLOWED = {
    SourceState.CONNECTING: {SourceState.STREAMING, SourceState.RECONNECTING, SourceState.FAILED, SourceState.ENDED},
    SourceState.STREAMING: {SourceState.STALLED, SourceState.RECONNECTING, SourceState.ENDED, SourceState.FAILED},
    SourceState.STALLED: {SourceState.STREAMING, SourceState.RECONNECTING, SourceState.ENDED, SourceState.FAILED},
    SourceState.RECONNECTING: {SourceState.CONNECTING, SourceState.STREAMING, SourceState.FAILED, SourceState.ENDED},
    SourceState.ENDED: set(),
    SourceState.FAILED: set(),
}


class ContractError(AssertionError):
    """A broken rule of the plugin contract; the message names the rule."""


def rule(name: str, ok: bool, detail: str) -> None:
    if not ok:
        raise ContractError(f"contract rule '{name}' broken: {detail}")


def check_json(name: str, value: Any) -> None:
    """Rule `name`: `value` serializes to JSON."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        rule(name, False, str(exc))


def check_contract(component: Any, contract: Contract) -> Any:
    """Rule: `component` has every member its kind's contract requires (runtime/protocols.py). -> the component
    as the engine sees it (with the base class's defaults for optional members it lacks)."""
    try:
        return conform(component, contract)
    except PluginError as exc:
        rule(f"a {contract.kind} implements its contract", False, exc.message)


def check_available(spec: Any) -> None:
    avail = spec.available()
    rule("available() returns an Availability", isinstance(avail, Availability), f"got {avail!r}")
    rule("available() explains a no", avail.ok or bool(avail.reason.strip()), "ok=False with an empty reason")


def make_result(seq: int, image: np.ndarray | None = None, size: tuple[int, int] = (48, 64)) -> Result:
    """A plausible Result for sink tests: a fire square in the middle of the frame."""
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 255
    now = time.monotonic_ns()
    return Result(seq=seq, source_id="pdk", t_capture_ns=now, t_wall_ns=time.time_ns(), mask=mask, regions=[],
                  alert=AlertLevel.NONE, source_state=SourceState.STREAMING, model_id="pdk-model",
                  precision=PrecisionLabel(), timings_ms={}, drops={}, image=image, t_publish_ns=now,
                  meta={"name": f"pdk_{seq:06d}"})


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def synthetic_frames() -> list[Frame]:
    """Twelve 96×128 frames of the synthetic aerial fire scene (deterministic)."""
    from firespotter.models.synthetic import SyntheticScene

    scene = SyntheticScene(width=128, height=96, frames=12, seed=7)
    frames = []
    for i in range(12):
        rgb, mask = scene.render(i)
        frames.append(Frame(rgb, i, time.monotonic_ns(), time.time_ns(), "pdk", meta={"truth_mask": mask}))
    return frames


@pytest.fixture
def run_pipeline():
    """run_pipeline(source="test://?frames=8&size=96x96", model="colorrule", backend="auto", sinks=[{...}],
    processors=[{...}], model_options={...}, backend_options={...}, adapt={"name": ..., "options": {...}})
    -> (results, summary): a short replay through the registered plugins (yours included once installed)."""
    from firespotter.runtime.assemble import build_pipeline
    from firespotter.runtime.config import parse_settings
    from firespotter.runtime.plugins import new_registry

    def run(source: str = "test://?frames=8&size=96x96", model: str = "colorrule", backend: str = "auto",
            sinks: Iterable[dict] = (), limit: int | None = None, registry=None, processors: Iterable[dict] = (),
            model_options: dict | None = None, backend_options: dict | None = None, adapt: dict | None = None):
        results: list[Result] = []

        class Collect(SinkBase):
            name = "pdk-collect"

            def send(self, result):
                results.append(result)

            def flush(self):
                pass

            def close(self):
                pass

        settings = parse_settings({"source": {"uri": source},
                                   "model": {"name": model, "backend": backend, "options": model_options or {},
                                             "backend_options": backend_options or {}},
                                   "adapt": adapt or {}, "sinks": list(sinks), "processors": list(processors)},
                                  "run_pipeline")
        pipeline = build_pipeline(settings, registry or new_registry(), limit=limit,
                                  extra_sinks=[("pdk-collect", Collect())])
        summary = pipeline.run()
        return results, summary

    return run


# --- suites -------------------------------------------------------------------------------------------------


class SourceContract:
    """Provide a `source` fixture (a fresh, finite source of at least `min_frames` frames); optionally `spec`."""

    min_frames = 3

    @pytest.fixture
    def source(self):  # pragma: no cover - the plugin's test class provides it
        raise NotImplementedError("provide a `source` fixture returning a fresh, finite source")

    def _frames(self, source, limit: int = 50) -> list[Frame]:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) >= limit:
                break
        return frames

    def test_implements_the_contract(self, source):
        check_contract(source, SOURCE)
        source.close()

    def test_frames_are_rgb_uint8(self, source):
        frames = self._frames(source)
        rule("a source yields frames", len(frames) >= self.min_frames, f"got {len(frames)}")
        for f in frames:
            img = f.image
            rule("images are H×W×3 uint8 RGB", isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3
                 and img.dtype == np.uint8, f"frame {f.seq}: {getattr(img, 'shape', None)} {getattr(img, 'dtype', None)}")
            rule("images are C-contiguous", img.flags.c_contiguous, f"frame {f.seq}")
        source.close()

    def test_seq_increases_by_one_and_capture_times_never_go_back(self, source):
        frames = self._frames(source)
        for prev, cur in zip(frames, frames[1:]):
            rule("seq increases by one", cur.seq == prev.seq + 1, f"seq {cur.seq} after {prev.seq}")
            rule("capture times never go back", cur.t_capture_ns >= prev.t_capture_ns,
                 f"frame {cur.seq} captured {prev.t_capture_ns - cur.t_capture_ns} ns before frame {prev.seq}")
        source.close()

    def test_states_follow_the_state_machine(self, source):
        seen = [source.state]
        for _ in source:
            if source.state is not seen[-1]:
                seen.append(source.state)
            rule("a yielding source is STREAMING", source.state is SourceState.STREAMING, f"state {source.state}")
        if source.state is not seen[-1]:
            seen.append(source.state)
        for a, b in zip(seen, seen[1:]):
            rule("states follow the state machine", b in ALLOWED[a], f"{a.value} -> {b.value}")
        rule("a finite source ends ENDED or FAILED", seen[-1] in (SourceState.ENDED, SourceState.FAILED),
             f"ended in {seen[-1].value}")

    def test_close_is_idempotent_and_stops_iteration(self, source):
        it = iter(source)
        next(it)
        source.close()
        source.close()
        t0 = time.monotonic()
        rest = sum(1 for _ in it)
        rule("close() stops iteration promptly", time.monotonic() - t0 < 5, "iteration went on after close()")
        rule("close() stops iteration", rest <= 2, f"{rest} more frames after close()")


class SinkContract:
    """Provide a `sink` fixture and `delivered(sink) -> list of seqs` reading back what reached the destination."""

    n_results = 10

    @pytest.fixture
    def sink(self):  # pragma: no cover
        raise NotImplementedError("provide a `sink` fixture")

    def delivered(self, sink) -> list[int]:  # pragma: no cover
        raise NotImplementedError("return the seqs of the results that reached the destination")

    def _results(self, sink):
        image = np.zeros((48, 64, 3), np.uint8) if check_contract(sink, SINK).needs_image else None
        return [make_result(i, image) for i in range(self.n_results)]

    def test_declares_name_and_needs_image(self, sink):
        seen = check_contract(sink, SINK)
        rule("a sink has a name", isinstance(seen.name, str) and bool(seen.name), f"{sink!r}")
        rule("needs_image is a bool", isinstance(seen.needs_image, bool), f"{sink!r}")
        stats = seen.stats()
        rule("stats() returns a dict or None", stats is None or isinstance(stats, dict), repr(stats))
        check_json("stats() is JSON-serializable (it goes into the run's summary)", stats)
        depth = seen.outbox_depth()
        rule("outbox_depth() returns an int or None", depth is None or isinstance(depth, int), repr(depth))
        sink.close()

    def test_flush_delivers_everything_accepted(self, sink):
        for result in self._results(sink):
            sink.send(result)
        sink.flush()
        got = self.delivered(sink)
        missing = sorted(set(range(self.n_results)) - set(got))
        rule("flush() delivers everything accepted", not missing, f"missing seqs {missing} of {self.n_results}")
        sink.close()

    def test_close_is_idempotent(self, sink):
        sink.send(self._results(sink)[0])
        sink.close()
        sink.close()


class ModelContract:
    """Provide a `model` fixture (what your ModelSpec's factory returns); optionally `spec`."""

    @pytest.fixture
    def model(self):  # pragma: no cover
        raise NotImplementedError("provide a `model` fixture")

    def test_identity_and_formats(self, model):
        check_contract(model, MODEL)
        rule("model_id is a non-empty string", isinstance(model.model_id, str) and model.model_id, repr(model))
        formats = tuple(model.formats())
        rule("a model offers at least one format", len(formats) > 0, "formats() is empty")
        for fmt in formats:
            rule("every offered format has an artifact", model.artifact(fmt) is not None, fmt)
        size = model.input_spec.size
        rule("input_spec.size is None or (h, w)", size is None or (len(size) == 2 and all(v > 0 for v in size)),
             repr(size))


class BackendContract:
    """Provide a `segmenter` fixture: a model bound to your backend."""

    input_size = (72, 96)

    @pytest.fixture
    def segmenter(self):  # pragma: no cover
        raise NotImplementedError("provide a `segmenter` fixture")

    def _batch(self, n: int = 2) -> np.ndarray:
        rng = np.random.default_rng(0)
        batch = rng.integers(0, 255, (n, *self.input_size, 3), dtype=np.uint8)
        batch[:, 10:30, 10:30] = (255, 160, 40)
        return batch

    def test_output_has_the_declared_shape_and_is_finite(self, segmenter):
        out = segmenter.predict(self._batch(2))
        rule("predict returns N×H'×W' float32", isinstance(out, np.ndarray) and out.ndim == 3 and out.shape[0] == 2
             and out.dtype == np.float32, f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}")
        size = segmenter.input_spec.size
        if size is not None:
            rule("output matches input_spec.size", out.shape[1:] == tuple(size), f"{out.shape[1:]} vs {size}")
        rule("output is finite", bool(np.isfinite(out).all()), "NaN or inf in the probabilities")
        rule("output is a probability", float(out.min()) >= 0.0 and float(out.max()) <= 1.0,
             f"range [{out.min():.3f}, {out.max():.3f}]")

    def test_labels_and_info(self, segmenter):
        check_contract(segmenter, SEGMENTER)
        p = segmenter.precision
        rule("precision_exec is a known label", p.precision_exec in ("fp32", "fp16", "bf16", "int8"), repr(p))
        rule("weight_bits is a known width", p.weight_bits in (32, 16, 8, 4, 2), repr(p))
        rule("simulated is a bool", isinstance(p.simulated, bool), repr(p))
        rule("info() is a dict", isinstance(segmenter.info(), dict), repr(segmenter.info()))

    def test_scored_prediction_matches_the_frame_head(self, segmenter):
        seen = check_contract(segmenter, SEGMENTER)
        rule("frame_head is a bool", isinstance(seen.frame_head, bool), repr(seen.frame_head))
        prob, score = seen.predict_scored(self._batch(2))
        rule("predict_scored returns predict's probabilities", isinstance(prob, np.ndarray) and prob.shape[0] == 2,
             f"{getattr(prob, 'shape', None)}")
        if not seen.frame_head:
            rule("without a frame head predict_scored gives no score", score is None, repr(score))
            return
        rule("predict_scored returns one score per frame", score is not None and len(score) == 2,
             f"{score!r} for 2 frames")
        rule("scores are probabilities", all(0.0 <= float(s) <= 1.0 and math.isfinite(float(s)) for s in score),
             repr(score))

    def test_adaptable_is_a_declared_capability(self, segmenter):
        from firespotter.runtime.errors import FirespotterError
        from firespotter.runtime.protocols import AdaptableGraph, AdaptableModule

        try:
            target = check_contract(segmenter, SEGMENTER).adaptable()
        except FirespotterError:
            return  # adaptable, but not as configured: it says why
        rule("adaptable() returns an AdaptableModule, an AdaptableGraph or None",
             target is None or isinstance(target, (AdaptableModule, AdaptableGraph)), repr(target))


class ProcessorContract:
    """Provide a `processor` fixture (a fresh instance, as your ProcessorSpec's factory returns it); override
    `results()` to feed results your processor acts on (the default: a fire square, no pose)."""

    n_results = 6

    @pytest.fixture
    def processor(self):  # pragma: no cover
        raise NotImplementedError("provide a `processor` fixture")

    def results(self) -> list[Result]:
        return [make_result(i) for i in range(self.n_results)]

    def test_process_completes_the_result_in_place(self, processor):
        check_contract(processor, PROCESSOR)
        for result in self.results():
            seq, shape = result.seq, result.mask.shape
            out = processor.process(result)
            rule("process() returns None (it completes the result in place)", out is None, repr(out))
            rule("process() keeps the frame's identity", result.seq == seq and result.mask.shape == shape,
                 f"seq {result.seq}, mask {result.mask.shape} after process()")
        processor.close()

    def test_stats_is_a_json_dict(self, processor):
        processor.process(self.results()[0])
        stats = check_contract(processor, PROCESSOR).stats()
        rule("stats() returns a dict", isinstance(stats, dict), repr(stats))
        check_json("stats() is JSON-serializable (it goes into the run's summary)", stats)
        processor.close()

    def test_close_is_idempotent(self, processor):
        processor = check_contract(processor, PROCESSOR)
        processor.process(self.results()[0])
        processor.close()
        processor.close()


class AdapterContract:
    """Provide `adapter` (bound to a segmenter) and `segmenter` fixtures; optionally override `shifted_frames()`
    (default: six 64×64 low-light frames of the synthetic scene, a shift an adapting adapter answers). An adapter
    that only watches (a monitor, changing no weight or statistic) sets `moves_segmenter = False`."""

    moves_segmenter = True

    @pytest.fixture
    def adapter(self):  # pragma: no cover
        raise NotImplementedError("provide an `adapter` fixture")

    def shifted_frames(self) -> list[np.ndarray]:
        from firespotter.models.synthetic import SyntheticScene

        scene = SyntheticScene(64, 64, frames=6, seed=3, n_fires=2, shift="lowlight")
        return [scene.render(i)[0] for i in range(6)]

    def _observe(self, adapter, segmenter, batch: np.ndarray):
        prob, score = check_contract(segmenter, SEGMENTER).predict_scored(batch)
        return adapter.observe(batch, Prediction(prob[0], segmenter.model_id, segmenter.precision,
                                                 fire_score=None if score is None else float(score[0])))

    def test_observe_reports_a_json_dict_or_none(self, adapter, segmenter):
        batch = np.zeros((1, 48, 64, 3), np.uint8)
        for _ in range(3):
            report = self._observe(adapter, segmenter, batch)
            rule("observe() returns a dict or None", report is None or isinstance(report, dict), repr(report))
            check_json("observe()'s report is JSON-serializable (observers and metrics read it)", report)
        seen = check_contract(adapter, ADAPTER)
        rule("an adapter has a name", isinstance(seen.name, str), repr(adapter))
        rule("resets is an int", isinstance(seen.resets, int), repr(seen.resets))
        check_json("last_update is JSON-serializable (metrics read it)", dict(seen.last_update or {}))
        adapter.close()
        adapter.close()

    def test_a_shifted_stream_moves_the_segmenter(self, adapter, segmenter):
        if not self.moves_segmenter:
            pytest.skip("a monitor: moves_segmenter = False")
        frames = self.shifted_frames()
        before = segmenter.predict(frames[0][None])
        for image in frames:
            self._observe(adapter, segmenter, image[None])
        after = segmenter.predict(frames[0][None])
        moved = float(np.abs(after - before).max())
        rule("observing a shifted stream changes the segmenter's output", moved > 1e-4,
             f"max change {moved:.2e} after {len(frames)} frames")
        adapter.close()

    def test_summary_is_a_json_dict_or_none(self, adapter, segmenter):
        self._observe(adapter, segmenter, np.zeros((1, 48, 64, 3), np.uint8))
        out = check_contract(adapter, ADAPTER).summary()
        rule("summary() returns a dict or None", out is None or isinstance(out, dict), repr(out))
        check_json("summary() is JSON-serializable (it goes into the run's summary)", out)
        adapter.close()


class CommandContract:
    """Provide a `command` fixture: your CommandSpec (a typer-style function or a typer.Typer app)."""

    @pytest.fixture
    def command(self):  # pragma: no cover
        raise NotImplementedError("provide a `command` fixture returning your CommandSpec")

    def test_name_and_help(self, command):
        name = getattr(command, "name", None)
        rule("a command's name is one lowercase CLI word", isinstance(name, str) and name.replace("-", "").isalnum()
             and name == name.lower(), repr(name))
        rule("a command says what it does (help)", bool((command.help or "").strip()), f"{name}: empty help")

    def test_mounts_and_answers_help(self, command):
        import typer
        from typer.testing import CliRunner

        group = isinstance(command.callback, typer.Typer)
        rule("the callback is a function or a typer.Typer", group or callable(command.callback),
             repr(command.callback))
        app = typer.Typer()
        if group:
            app.add_typer(command.callback, name=command.name, help=command.help)
        else:
            app.command(name=command.name, help=command.help)(command.callback)

        @app.command(name="pdk-other")  # two commands: the app dispatches by name, as `firespotter` does
        def _other():  # pragma: no cover
            pass

        res = CliRunner().invoke(app, [command.name, "--help"])
        rule("mounted on a CLI, `NAME --help` exits 0", res.exit_code == 0,
             f"exit {res.exit_code}: {res.output[-300:]} {res.exception!r}")
        rule("`NAME --help` prints a usage line", "Usage" in res.output, res.output[-300:])
