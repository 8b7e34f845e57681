"""Every built-in plugin passes its kind's conformance suite (firespotter.pdk.testing), like a third-party one.

Built-in adapters: none yet (test-time adaptation arrives with its own issue and must add its class here)."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
from firespotter.pdk.testing import (
    BackendContract,
    ModelContract,
    ProcessorContract,
    SinkContract,
    SourceContract,
    check_available,
)
from firespotter.runtime.assemble import bind_segmenter
from firespotter.runtime.config import ModelSettings
from firespotter.runtime.gst import gst_available
from firespotter.runtime.plugins import new_registry
from firespotter.runtime.sources import parse_uri
from firespotter.runtime.video import VideoWriter


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "c.mp4"
    with VideoWriter(path, 64, 48, 10) as w:
        for i in range(8):
            w.write(np.full((48, 64, 3), 20 * i, np.uint8))
    return path


def test_every_builtin_spec_explains_its_availability():
    registry = new_registry()
    for kind in ("sources", "backends", "models", "processors", "sinks", "commands"):
        for name in registry.specs(kind):
            for spec, _ in registry.alternatives(kind, name):
                check_available(spec)


class TestDirSource(SourceContract):
    @pytest.fixture
    def source(self, tmp_path):
        for i in range(4):
            cv2.imwrite(str(tmp_path / f"i{i}.png"), np.full((16, 24, 3), 30 * i, np.uint8))
        return new_registry().get("sources", "dir").factory(parse_uri(f"dir://{tmp_path}"), source_id="c")


class TestSyntheticSource(SourceContract):
    @pytest.fixture
    def source(self):
        return new_registry().get("sources", "test").factory(parse_uri("test://?frames=5&size=64x48"), source_id="c")


class TestOpenCvFileSource(SourceContract):
    @pytest.fixture
    def source(self, clip):
        from firespotter.plugins.sources.video_file import open_file

        return open_file(parse_uri(str(clip)), source_id="c")


@pytest.mark.skipif(not gst_available(), reason="GStreamer not installed (make setup)")
class TestGstreamerFileSource(SourceContract):
    @pytest.fixture
    def source(self, clip):
        from firespotter.plugins.sources.gstreamer import open_file

        return open_file(parse_uri(str(clip)), source_id="c")


class TestFilesSink(SinkContract):
    @pytest.fixture
    def sink(self, tmp_path):
        spec = new_registry().get("sinks", "files")
        return spec.factory(spec.options_model(dir=tmp_path / "files"), name="files")

    def delivered(self, sink):
        return [json.loads(line)["seq"] for line in (sink.dir / "events.jsonl").read_text().splitlines()]


class TestNullSink(SinkContract):
    @pytest.fixture
    def sink(self):
        return new_registry().get("sinks", "null").factory(None, name="null")

    def delivered(self, sink):
        return list(range(sink.count))


@pytest.mark.skipif(not gst_available(), reason="GStreamer not installed (make setup)")
class TestVideoSink(SinkContract):
    @pytest.fixture
    def sink(self, tmp_path):
        spec = new_registry().get("sinks", "video")
        return spec.factory(spec.options_model(path=tmp_path / "v.mp4", fps=10), name="video")

    def delivered(self, sink):
        path = sink.options.path
        sink.close()  # an MP4 is readable once finalised
        cap = cv2.VideoCapture(str(path))
        n = 0
        while cap.read()[0]:
            n += 1
        return list(range(n))


class TestColorRuleModel(ModelContract):
    @pytest.fixture
    def model(self):
        return new_registry().get("models", "colorrule").factory({})


class TestNumpyBackend(BackendContract):
    @pytest.fixture
    def segmenter(self):
        return bind_segmenter(new_registry(), ModelSettings(name="colorrule", backend="numpy"))[0]


class TestOnnxRuntimeBackend(BackendContract):
    input_size = (64, 64)

    @pytest.fixture
    def segmenter(self, tmp_path):
        sys.path.insert(0, str(REPO / "bench"))
        from cnn_standin import build

        from firespotter.plugins.backends.onnxruntime_backend import OrtSegmenter
        from firespotter.runtime.formats import OnnxArtifact
        from firespotter.runtime.types import InputSpec

        class StandIn:
            model_id = "standin"
            input_spec = InputSpec(size=(64, 64))

        return OrtSegmenter(StandIn(), OnnxArtifact(build(tmp_path / "m.onnx", size=64), (64, 64)), threads=1)


class TestGeoProcessor(ProcessorContract):
    """Results with a pose and a fire region: every region gets a lon/lat outline."""

    @pytest.fixture
    def processor(self):
        from firespotter.plugins.post.geo import GeoOptions, make_geo

        return make_geo(GeoOptions(camera={"hfov_deg": 90.0}), info={})

    def results(self):
        from firespotter.pdk.testing import make_result
        from firespotter.runtime.post import PostParams, postprocess
        from firespotter.runtime.types import Pose

        out = []
        for i in range(self.n_results):
            r = make_result(i)
            _, r.mask, r.regions, r.alert, _ = postprocess((r.mask / 255.0).astype(np.float32), *r.mask.shape,
                                                           PostParams())
            r.pose = Pose(lat=46.5, lon=7.5, alt_agl_m=100.0, pitch_deg=-90.0, hfov_deg=90.0)
            out.append(r)
        return out

    def test_regions_get_outlines(self, processor):
        results = self.results()
        for r in results:
            processor.process(r)
        assert all(reg.geo_polygon and reg.area_m2 > 0 for r in results for reg in r.regions)
        assert processor.stats()["with_pose"] == self.n_results
