"""One test per hook (test_hook_<name>), plus the meta-test that keeps hooks, tests and docs in step."""

from __future__ import annotations

import inspect
import json
import re

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from conftest import REPO, FakeSegmenter, ListSource, RecordingSink, frames_with_fire, make_dist, run_cli
from firespotter.runtime import hookspecs
from firespotter.runtime.assemble import build_pipeline
from firespotter.runtime.config import parse_settings
from firespotter.runtime.errors import ConfigError, PluginError
from firespotter.runtime.pipeline import Pipeline
from firespotter.runtime.plugins import hookimpl, new_registry
from firespotter.runtime.protocols import ProcessorBase
from firespotter.runtime.source_base import FrameSource
from firespotter.runtime.specs import (AdapterSpec, BackendSpec, ModelSpec, ProcessorSpec, SinkSpec, SourceSpec,
                                      TelemetryReaderSpec)
from firespotter.runtime.types import InputSpec, Pose, PrecisionLabel


def hook_names() -> list[str]:
    return sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                  if hasattr(fn, "firespotter_spec"))


def test_every_hook_has_a_test_and_docs():
    assert len(hook_names()) >= 10
    tests = {name for name, _ in inspect.getmembers(__import__(__name__), inspect.isfunction)}
    docs = (REPO / "docs" / "plugins.md").read_text()
    hooks_section = docs.split("\n## Hooks", 1)[1].split("\n## ", 1)[0]  # up to the next level-2 heading
    documented = set(re.findall(r"^### `?(\w+)`?", hooks_section, flags=re.M))
    missing_tests = [h for h in hook_names() if f"test_hook_{h}" not in tests]
    missing_docs = [h for h in hook_names() if h not in documented]
    assert not missing_tests, f"hooks without a test_hook_<name> test: {missing_tests}"
    assert not missing_docs, f"hooks without a '### name' entry in docs/plugins.md: {missing_docs}"
    assert not documented - set(hook_names()) - {"hookimpl"}, "docs/plugins.md documents hooks that do not exist"


def documented_signature(name: str, fn) -> str:
    """`name(param: type, ...) -> return` as docs/plugins.md writes it (a None return left out)."""
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    ret = "" if sig.return_annotation in ("None", None) else f" -> {sig.return_annotation}"
    return f"{name}({params}){ret}"


def test_every_hook_is_documented_with_its_signature():
    """Each hook's entry opens with its exact signature (parameter names, types, return), so the docs cannot
    drift from hookspecs.py."""
    docs = (REPO / "docs" / "plugins.md").read_text()
    hooks_section = docs.split("\n## Hooks", 1)[1].split("\n## ", 1)[0]
    for name in hook_names():
        entry = hooks_section.split(f"\n### {name}\n", 1)[1].lstrip()
        written = entry.split("`", 2)[1]
        assert written == documented_signature(name, getattr(hookspecs, name)), name


class ConstantSource(FrameSource):
    def __init__(self, n):
        super().__init__("const")
        self.n = n

    def _images(self):
        for i in range(self.n):
            yield np.full((32, 32, 3), (250, 120, 30), np.uint8), {"name": f"c{i}"}


class ThirdParty:
    """A plugin object implementing every registration hook."""

    def __init__(self):
        self.sink = RecordingSink("capture")
        self.observed = []

    @hookimpl
    def register_sources(self):
        return [SourceSpec("const", lambda uri, **kw: ConstantSource(int(uri.params.get("n", 3))), "constant")]

    @hookimpl
    def register_models(self):
        class M:
            model_id = "half"
            input_spec = InputSpec()

            def formats(self):
                return ("halfmap",)

            def artifact(self, fmt):
                return 0.5

        return [ModelSpec("half", lambda options: M(), precisions=("fp32", "int8"))]

    @hookimpl
    def register_backends(self):
        class LiftOptions(BaseModel):
            model_config = ConfigDict(extra="forbid")
            lift: float = 0.4

        class Seg:  # written to the old contract: no SegmenterBase, no predict_scored (the engine adds it)
            def __init__(self, model, precision, lift):
                self.model_id = model.model_id
                self.input_spec = model.input_spec
                self.precision = PrecisionLabel(precision, 8 if precision == "int8" else 32, False)
                self.value = model.artifact("halfmap") + lift

            def predict(self, batch):
                return np.full(batch.shape[:3], self.value, np.float32)

            def info(self):
                return {}

        return [BackendSpec("constant", lambda model, precision, device, options: Seg(model, precision, options.lift),
                            formats=("halfmap",), priority=5, options_model=LiftOptions)]

    @hookimpl
    def register_adapters(self):
        observed = self.observed

        class A:
            name = "watcher"

            def observe(self, batch, prediction):
                observed.append((batch.shape, float(prediction.prob.mean())))
                return {"updated": 0}

            def close(self):
                pass

        return [AdapterSpec("watcher", lambda segmenter, options: A())]

    @hookimpl
    def register_processors(self):
        class StampOptions(BaseModel):
            model_config = ConfigDict(extra="forbid")
            label: str = "stamped"

        class Stamp(ProcessorBase):
            def __init__(self, options, info):
                self.label, self.source, self.n = options.label, info["source"], 0

            def process(self, result):
                result.meta = {**(result.meta or {}), "stamp": f"{self.label} {self.source} {self.n}"}
                self.n += 1

            def stats(self):
                return {"stamped": self.n}

        return [ProcessorSpec("stamp", lambda options, *, info, registry: Stamp(options, info), options_model=StampOptions)]

    @hookimpl
    def register_telemetry_readers(self):
        class HoverOptions(BaseModel):
            model_config = ConfigDict(extra="forbid")
            lat: float
            lon: float

        class Hover:
            """The drone hovering at one place, 100 m up, camera straight down."""

            def __init__(self, cfg, camera):
                self.lat, self.lon = cfg["lat"], cfg["lon"]
                self.hfov = float(camera["hfov_deg"])

            def pose_for(self, item, fps=None):
                return Pose(lat=self.lat, lon=self.lon, alt_agl_m=100.0, hfov_deg=self.hfov)

            def __len__(self):
                return 1

            def close(self):
                pass

        return [TelemetryReaderSpec("hover", lambda cfg, *, camera: Hover(cfg, camera), "a fixed pose",
                                    options_model=HoverOptions)]

    @hookimpl
    def register_sinks(self):
        return [SinkSpec("capture", lambda options, name: self.sink)]


def run_third_party(processors=(), sections=None, **model):
    plugin = ThirdParty()
    registry = new_registry(plugins=[("third", plugin)])
    settings = parse_settings({"source": {"uri": "const://?n=4"}, "model": {"name": "half", **model},
                               "adapt": {"name": "watcher"}, "processors": list(processors),
                               "sinks": [{"type": "capture"}], **(sections or {})})
    summary = build_pipeline(settings, registry).run()
    return plugin, summary


def test_hook_register_sources():
    plugin, summary = run_third_party()
    assert summary["frames"] == 4 and plugin.sink.seqs == [0, 1, 2, 3]
    assert summary["source"] == "const://?n=4"


def test_hook_register_models():
    plugin, summary = run_third_party(precision="int8")
    assert summary["model_id"] == "half" and summary["precision_exec"] == "int8" and summary["weight_bits"] == 8


def test_hook_register_backends():
    plugin, summary = run_third_party()
    assert summary["backend"] == "constant"  # chosen by format for backend = "auto"
    assert all(r.mask.all() for r in plugin.sink.results)  # 0.9 everywhere > threshold
    assert all(r.fire_score is None for r in plugin.sink.results)  # no frame head declared
    plugin, _ = run_third_party(backend_options={"lift": -0.2})  # its own options, validated by its own model
    assert not any(r.mask.any() for r in plugin.sink.results)  # 0.3 < threshold
    with pytest.raises(ConfigError, match=r"model.backend_options \(constant\): unknown key 'lfit'; did you mean 'lift'"):
        run_third_party(backend_options={"lfit": 0.1})
    # A config from before backend options had their own table: one line saying what to move where.
    with pytest.raises(ConfigError, match=r"^config: \[model\] options: lift is an option of the backend \(constant\), "
                       r"not of model 'half': move it to \[model\] backend_options, e\.g\. "
                       r"backend_options = \{ lift = 0\.1 \}$"):
        run_third_party(options={"lift": 0.1})


def test_hook_register_adapters():
    plugin, summary = run_third_party()
    assert len(plugin.observed) == 4 and plugin.observed[0][0] == (1, 32, 32, 3)
    assert plugin.observed[0][1] == pytest.approx(0.9)
    assert summary["stages_ms"]["adapt"]["n"] == 4


def test_hook_register_sinks():
    plugin, _ = run_third_party()
    assert plugin.sink.flushed == 1 and plugin.sink.closed


def test_hook_register_processors():
    plugin, summary = run_third_party(processors=[{"type": "stamp", "label": "seen"}])
    assert [r.meta["stamp"] for r in plugin.sink.results] == [f"seen const://?n=4 {i}" for i in range(4)]
    assert summary["processors"] == {"stamp": {"stamped": 4, "errors": 0}}
    with pytest.raises(ConfigError, match=r"processors\[0\] \(stamp\).*colour"):
        run_third_party(processors=[{"type": "stamp", "colour": "red"}])


def test_hook_register_telemetry_readers():
    """A plugin's reader, picked by [telemetry] source = NAME with keys of its own, feeds the geo processor."""
    camera = {"hfov_deg": 90.0}
    plugin, summary = run_third_party(sections={"camera": camera,
                                                "telemetry": {"source": "hover", "lat": 46.5, "lon": 7.5}})
    assert summary["processors"]["geo"]["with_pose"] == 4
    assert all(r.pose.lat == 46.5 and r.regions and r.regions[0].geo_polygon for r in plugin.sink.results)
    with pytest.raises(ConfigError, match=r"telemetry \(hover\): lon: required key is missing"):
        run_third_party(sections={"camera": camera, "telemetry": {"source": "hover", "lat": 46.5}})
    with pytest.raises(PluginError, match="unknown telemetry_reader 'hovr'.*did you mean 'hover'"):
        run_third_party(sections={"camera": camera, "telemetry": {"source": "hovr"}})


def test_hook_register_commands(tmp_path):
    make_dist(tmp_path, "hellofire", "hellofire", "hellofire_plugin", """
        import typer
        from firespotter.runtime.plugins import hookimpl
        from firespotter.runtime.specs import CommandSpec

        def hello(name: str = typer.Option("world", "--name")):
            typer.echo(f"hello {name} from a plugin")

        @hookimpl
        def register_commands():
            return [CommandSpec("hello", hello, help="Say hello.")]
    """)
    r = run_cli("hello", "--name", "drone", env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello drone from a plugin"
    assert "hello" in run_cli("--help", env={"PYTHONPATH": str(tmp_path)}).stdout


class Observer:
    def __init__(self):
        self.started, self.results, self.stopped = [], [], []

    @hookimpl
    def on_pipeline_start(self, info):
        self.started.append(info)

    @hookimpl
    def on_result(self, result):
        self.results.append(result.seq)

    @hookimpl
    def on_pipeline_stop(self, summary):
        self.stopped.append(summary)


def observed_run(late: Observer | None = None):
    early = Observer()
    registry = new_registry(plugins=[("early", early)])
    p = Pipeline(ListSource(frames_with_fire(5)), FakeSegmenter(), [("rec", RecordingSink())], hook=registry.hook(),
                 info={"source": "list"})
    p.run()
    if late is not None:
        registry.register(late, "late")
    return early


def test_hook_on_pipeline_start():
    late = Observer()
    early = observed_run(late)
    assert early.started[0]["source"] == "list" and early.started[0]["model_id"] == "fake-1"
    assert late.started == early.started  # historic: a plugin registered afterwards still hears of the run


def test_hook_on_result():
    assert observed_run().results == [0, 1, 2, 3, 4]


def test_hook_on_result_errors_do_not_stop_the_pipeline():
    class Bad:
        @hookimpl
        def on_result(self, result):
            raise ValueError("observer bug")

    registry = new_registry(plugins=[("bad", Bad())])
    sink = RecordingSink()
    summary = Pipeline(ListSource(frames_with_fire(5)), FakeSegmenter(), [("rec", sink)], hook=registry.hook()).run()
    assert sink.seqs == [0, 1, 2, 3, 4] and summary["hook_errors"] == 5


def test_hook_on_pipeline_stop():
    (summary,) = observed_run().stopped
    assert summary["frames"] == 5 and summary["drained"]


def test_hook_resolve_source_uri(tmp_path):
    class Alias:
        @hookimpl
        def resolve_source_uri(self, uri):
            return "test://?frames=2&size=64x64" if uri == "demo-camera" else None

    registry = new_registry(plugins=[("alias", Alias())])
    settings = parse_settings({"source": {"uri": "demo-camera"}, "sinks": [{"type": "null"}]})
    assert build_pipeline(settings, registry).run()["frames"] == 2
    # Other strings are left alone and resolved as usual.
    settings = parse_settings({"source": {"uri": "test://?frames=1&size=64x64"}, "sinks": [{"type": "null"}]})
    assert build_pipeline(settings, registry).run()["frames"] == 1


def test_plugins_json_lists_adapter_and_versions():
    rows = json.loads(run_cli("plugins", "--json").stdout)
    assert all(row["version"] for row in rows)
