"""`firespotter pdk new NAME --kind KIND`: an installable plugin package that passes its own tests as generated.

Each kind gets a small working example, the conformance suite of its kind, and a replay test.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from firespotter import __version__
from firespotter.runtime.errors import FirespotterError

KINDS = ("source", "backend", "model", "adapter", "sink", "processor")

PYPROJECT = Template('''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "A firespotter $kind plugin"
requires-python = ">=3.10"
dependencies = ["firespotter>=$fs_version"]

[project.entry-points.firespotter]
$name = "$module"

[tool.setuptools]
py-modules = ["$module"]
''')

README = Template('''# $dist

A firespotter **$kind** plugin, scaffolded by `firespotter pdk new $name --kind $kind`.

```bash
pip install -e .                 # registers the `$name` entry point in the `firespotter` group
firespotter plugins              # lists it, with whether it is available here
pytest                           # the $kind conformance suite + a replay through the plugin
```

$usage

Edit `$module.py`; keep `test_$module.py` passing: the conformance suite checks what the runtime relies on
(see firespotter's docs/plugins.md).
''')

SOURCES = {
    "source": Template('''"""A $name source: `$name://?frames=N&size=WxH` yields moving gradient frames (replace with your camera)."""

from __future__ import annotations

import numpy as np

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.source_base import FrameSource
from firespotter.runtime.sources import int_param, size_param
from firespotter.runtime.specs import SourceSpec


class ${Class}Source(FrameSource):
    def __init__(self, frames: int, width: int, height: int, source_id: str, live: bool):
        super().__init__(source_id, live=live)
        self.frames, self.width, self.height = frames, width, height
        self.fps = 10.0
        self.expected_frames = frames

    def _images(self):
        x = np.linspace(0, 255, self.width, dtype=np.float32)
        for i in range(self.frames):
            row = ((x + 8 * i) % 256).astype(np.uint8)
            image = np.zeros((self.height, self.width, 3), np.uint8)
            image[:, :, 0] = row
            image[:, :, 1] = row[::-1]
            yield image, {"name": f"${name}_{i:06d}"}


def open_$module(uri, *, source_id: str, live: bool = False, options: dict | None = None):
    width, height = size_param(uri, "size", (96, 64))
    return ${Class}Source(int_param(uri, "frames", 10, minimum=1), width, height, source_id, live)


@hookimpl
def register_sources():
    return [SourceSpec("$name", open_$module, "moving gradient frames (scaffold example)")]
'''),
    "sink": Template('''"""A $name sink: one JSON line per result in a file (replace with your ground-station protocol)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec


class ${Class}Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path


class ${Class}Sink:
    needs_image = False

    def __init__(self, options: ${Class}Options, name: str = "$name"):
        self.name = name
        self.path = options.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def send(self, result) -> None:
        self._file.write(json.dumps(result.as_event()) + "\\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@hookimpl
def register_sinks():
    return [SinkSpec("$name", lambda options, name="$name": ${Class}Sink(options, name), "JSON lines (scaffold example)",
                     options_model=${Class}Options)]
'''),
    "model": Template('''"""A $name model: a brightness threshold as a fire probability (replace with your network)."""

from __future__ import annotations

import numpy as np

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import ModelSpec
from firespotter.runtime.types import InputSpec


def ${module}_prob(batch: np.ndarray) -> np.ndarray:
    """N×H×W×3 uint8 -> N×H×W float32: bright, red-dominant pixels are fire."""
    x = batch.astype(np.float32) / 255.0
    score = 6.0 * (x[..., 0] - 0.5 * (x[..., 1] + x[..., 2]) - 0.25)
    return (1.0 / (1.0 + np.exp(-score))).astype(np.float32)


class ${Class}Model:
    model_id = "$name-1"
    input_spec = InputSpec(size=None)

    def formats(self):
        return ("numpy",)

    def artifact(self, fmt):
        if fmt != "numpy":
            raise KeyError(fmt)
        return ${module}_prob


@hookimpl
def register_models():
    return [ModelSpec("$name", lambda options: ${Class}Model(), "brightness threshold (scaffold example)", ("fp32",))]
'''),
    "backend": Template('''"""A $name backend: runs numpy-callable models in tiles of at most `tile` frames (replace with your runtime)."""

from __future__ import annotations

import numpy as np

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import BackendSpec
from firespotter.runtime.types import PrecisionLabel


class ${Class}Segmenter:
    def __init__(self, model, tile: int):
        self.model_id = model.model_id
        self.input_spec = model.input_spec
        self.precision = PrecisionLabel("fp32", 32, False)
        self.fn = model.artifact("numpy")
        self.tile = tile

    def predict(self, batch: np.ndarray) -> np.ndarray:
        parts = [self.fn(batch[i : i + self.tile]) for i in range(0, len(batch), self.tile)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def info(self) -> dict:
        return {"backend": "$name", "tile": self.tile}


def load(model, precision="fp32", device="cpu", options=None):
    return ${Class}Segmenter(model, int((options or {}).get("tile", 1)))


@hookimpl
def register_backends():
    return [BackendSpec("$name", load, formats=("numpy",), description="tiled numpy runner (scaffold example)",
                        priority=-1)]
'''),
    "adapter": Template('''"""A $name adapter: tracks the running mean confidence and reports drift (replace with your adaptation)."""

from __future__ import annotations

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import AdapterSpec


class ${Class}Adapter:
    name = "$name"

    def __init__(self, segmenter, options=None):
        self.segmenter = segmenter
        self.mean = None
        self.frames = 0

    def observe(self, batch, prediction):
        value = float(prediction.prob.mean())
        self.mean = value if self.mean is None else 0.9 * self.mean + 0.1 * value
        self.frames += 1
        return {"frames": self.frames, "mean_prob": round(self.mean, 6), "updated_params": 0}

    def close(self):
        pass


@hookimpl
def register_adapters():
    return [AdapterSpec("$name", lambda segmenter, options: ${Class}Adapter(segmenter, options),
                        "confidence drift monitor (scaffold example)")]
'''),
    "processor": Template('''"""A $name processor: records each result's fire-pixel fraction in `result.meta["$name"]` (replace with
your step: runs on the post-processing thread after inference, before the Result is frozen for the sinks)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.processor_base import ProcessorBase
from firespotter.runtime.specs import ProcessorSpec


class ${Class}Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = "$name"  # the result.meta key it writes


class ${Class}Processor(ProcessorBase):
    """One per pipeline: per-run counters live on the instance, never at module level."""

    def __init__(self, options: ${Class}Options, info: dict):
        self.key = options.key
        self.results = 0
        self.max_fire_frac = 0.0

    def process(self, result) -> None:
        frac = float(np.count_nonzero(result.mask)) / max(result.mask.size, 1)
        result.meta = {**(result.meta or {}), self.key: round(frac, 6)}
        self.results += 1
        self.max_fire_frac = max(self.max_fire_frac, frac)

    def stats(self) -> dict:
        return {"results": self.results, "max_fire_frac": round(self.max_fire_frac, 6)}


def make_$module(options: ${Class}Options, *, info: dict, registry) -> ${Class}Processor:
    return ${Class}Processor(options, info)


@hookimpl
def register_processors():
    return [ProcessorSpec("$name", make_$module, "fire-pixel fraction in result.meta (scaffold example)",
                          options_model=${Class}Options)]
'''),
}

TESTS = {
    "source": Template('''import pytest

from firespotter.pdk.testing import SourceContract
from firespotter.runtime.sources import parse_uri

import $module


class Test${Class}Source(SourceContract):
    @pytest.fixture
    def source(self):
        return $module.open_$module(parse_uri("$name://?frames=6&size=64x48"), source_id="t")


def test_replay_through_the_plugin(run_pipeline):
    results, summary = run_pipeline(source="$name://?frames=5&size=64x48")
    assert [r.seq for r in results] == [0, 1, 2, 3, 4] and summary["frames"] == 5
'''),
    "sink": Template('''import json

import pytest

from firespotter.pdk.testing import SinkContract

import $module


class Test${Class}Sink(SinkContract):
    @pytest.fixture
    def sink(self, tmp_path):
        return $module.${Class}Sink($module.${Class}Options(path=tmp_path / "out.jsonl"))

    def delivered(self, sink):
        return [json.loads(line)["seq"] for line in sink.path.read_text().splitlines()]


def test_replay_through_the_plugin(run_pipeline, tmp_path):
    results, _ = run_pipeline(sinks=[{"type": "$name", "path": str(tmp_path / "r.jsonl")}])
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == len(results) == 8
'''),
    "model": Template('''import pytest

from firespotter.pdk.testing import BackendContract, ModelContract
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.plugins import new_registry

import $module


class Test${Class}Model(ModelContract):
    @pytest.fixture
    def model(self):
        return $module.${Class}Model()


class Test${Class}OnItsBackend(BackendContract):
    @pytest.fixture
    def segmenter(self):
        return bind_segmenter(new_registry(), ModelSettings(name="$name"))[0]


def test_replay_through_the_plugin(run_pipeline):
    results, summary = run_pipeline(model="$name")
    assert summary["model_id"] == "$name-1" and len(results) == 8
'''),
    "backend": Template('''import pytest

from firespotter.pdk.testing import BackendContract
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.plugins import new_registry


class Test${Class}Backend(BackendContract):
    @pytest.fixture
    def segmenter(self):
        return bind_segmenter(new_registry(), ModelSettings(name="colorrule", backend="$name"))[0]


def test_replay_through_the_plugin(run_pipeline):
    results, summary = run_pipeline(backend="$name")
    assert summary["backend"] == "$name" and len(results) == 8
'''),
    "adapter": Template('''import pytest

from firespotter.pdk.testing import AdapterContract
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.plugins import new_registry

import $module


class Test${Class}Adapter(AdapterContract):
    moves_segmenter = False  # a monitor: it changes no weight or statistic

    @pytest.fixture
    def segmenter(self):
        return bind_segmenter(new_registry(), ModelSettings(name="colorrule"))[0]

    @pytest.fixture
    def adapter(self, segmenter):
        return $module.${Class}Adapter(segmenter)


def test_replay_through_the_plugin(tmp_path):
    from firespotter.runtime.assemble import build_pipeline
    from firespotter.runtime.config import parse_settings

    settings = parse_settings({"source": {"uri": "test://?frames=4&size=64x64"}, "adapt": {"name": "$name"},
                               "sinks": [{"type": "null"}]})
    pipeline = build_pipeline(settings, new_registry())
    summary = pipeline.run()
    assert summary["frames"] == 4 and pipeline.adapters[0].frames == 4
'''),
    "processor": Template('''import pytest

from firespotter.pdk.testing import ProcessorContract

import $module


class Test${Class}Processor(ProcessorContract):
    @pytest.fixture
    def processor(self):
        return $module.make_$module($module.${Class}Options(), info={}, registry=None)

    def test_records_the_fire_fraction(self, processor):
        result = self.results()[0]
        processor.process(result)
        assert 0.0 < result.meta["$name"] < 1.0 and processor.stats()["results"] == 1


def test_replay_through_the_plugin(run_pipeline):
    results, summary = run_pipeline(processors=[{"type": "$name", "key": "frac"}])
    assert len(results) == 8 and all("frac" in r.meta for r in results)
    assert summary["processors"]["$name"]["results"] == 8
'''),
}

USAGE = {
    "source": "Use it: `firespotter replay \"$name://?frames=20\" --out out/$name`.",
    "sink": "Use it in a config:\n\n```toml\n[[sinks]]\ntype = \"$name\"\npath = \"out/$name.jsonl\"\n```",
    "model": "Use it: `firespotter replay test:// --out out/$name --model $name`.",
    "backend": "Use it: `firespotter replay test:// --out out/$name --backend $name`.",
    "adapter": "Use it in a config:\n\n```toml\n[adapt]\nname = \"$name\"\n```",
    "processor": "Use it in a config:\n\n```toml\n[[processors]]\ntype = \"$name\"\n```",
}


def check_name(name: str) -> str:
    """The name, or an error that gives the rule it breaks (not the whole rule list: "x" has the right letters
    and is too short)."""
    why = None
    if not 2 <= len(name) <= 41:
        why = f"it has {len(name)} character(s); use 2 to 41"
    elif not name[0].isascii() or not name[0].islower():
        why = "it must start with a lower-case letter (a-z)"
    elif not re.fullmatch(r"[a-z0-9_]+", name):
        bad = sorted({c for c in name if not re.fullmatch(r"[a-z0-9_]", c)})
        why = f"it contains {' '.join(repr(c) for c in bad)}; use lower-case letters, digits and underscores only"
    elif keyword.iskeyword(name):
        why = "it is a Python keyword (the package is imported by that name)"
    if why:
        raise FirespotterError(f"plugin name {name!r} is not usable: {why}")
    return name


def scaffold(name: str, kind: str, out: Path) -> Path:
    """Write the package; returns its folder. Refuses to overwrite an existing one."""
    check_name(name)
    if kind not in KINDS:
        raise FirespotterError(f"unknown plugin kind {kind!r}; choose one of {', '.join(KINDS)}")
    dist = f"firespotter-{name.replace('_', '-')}"
    root = out / dist
    if root.exists():
        raise FirespotterError(f"{root} already exists", "choose another --out or remove it")
    module = f"firespotter_{name}"
    values = {"name": name, "dist": dist, "kind": kind, "module": module, "Class": "".join(p.title() for p in name.split("_")),
              "fs_version": __version__}
    values["usage"] = Template(USAGE[kind]).substitute(values)
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT.substitute(values))
    (root / "README.md").write_text(README.substitute(values))
    (root / f"{module}.py").write_text(SOURCES[kind].substitute(values))
    (root / f"test_{module}.py").write_text(TESTS[kind].substitute(values))
    return root
