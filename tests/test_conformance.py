"""Every built-in plugin passes its kind's conformance suite (firespotter.pdk.testing), like a third-party one.

Real components where they run here: a mosquitto broker, a Zenoh peer and a MAVLink receiver on 127.0.0.1, the
shipped fireseg-lite weights on ONNX Runtime and torch, fireseg-unet (no shipped weights: freshly initialised) on
torch, the adapters on torch. CONFORMANCE maps every entry point in pyproject.toml to its classes; a new entry
point without one fails test_every_entry_point_has_a_class."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import tomllib

import cv2
import numpy as np
import pytest

from conftest import REPO
from helpers.net import MOSQUITTO, ZENOH_SUBSCRIBER, Mosquitto, fire_result, free_port, kill_process, wait_until
from firespotter.pdk.testing import (
    AdapterContract,
    BackendContract,
    CommandContract,
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

# Entry point (pyproject.toml, [project.entry-points.firespotter]) -> the conformance classes of its plugins.
CONFORMANCE = {
    "dir_source": ["TestDirSource"],
    "video_file_source": ["TestOpenCvFileSource"],
    "gstreamer_sources": ["TestGstreamerFileSource"],
    "test_source": ["TestSyntheticSource"],
    "numpy_backend": ["TestNumpyBackend"],
    "onnxruntime_backend": ["TestOnnxRuntimeBackend", "TestFiresegLiteOnnxRuntime"],
    "torch_backend": ["TestFiresegLiteTorch", "TestFiresegUnetTorch"],
    "tensorrt_backend": ["TestTensorRtBackend"],
    "colorrule": ["TestColorRuleModel"],
    "fireseg_models": ["TestFiresegLiteModel", "TestFiresegLiteOnnxRuntime", "TestFiresegLiteTorch",
                       "TestFiresegUnetModel", "TestFiresegUnetTorch"],
    "files_sink": ["TestFilesSink"],
    "null_sink": ["TestNullSink"],
    "video_sink": ["TestVideoSink"],
    "mqtt_sink": ["TestMqttSink"],
    "zenoh_sink": ["TestZenohSink"],
    "mavlink_sink": ["TestMavlinkSink"],
    "tak_sink": ["TestTakSink"],
    "geo_post": ["TestGeoProcessor"],
    "adapters": ["TestBnstatsAdapter", "TestTentAdapter", "TestOsttaAdapter"],
    **{name: ["TestCommands"] for name in ("synth_command", "pdk_command", "eval_command", "listen_command",
                                           "config_command", "keys_command", "train_command", "build_command",
                                           "bench_command", "replay_command")},
}


def test_every_entry_point_has_a_class():
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["firespotter"]
    missing = sorted(name for name in entry_points if not CONFORMANCE.get(name))
    assert not missing, f"entry points without a conformance class in CONFORMANCE: {missing}"
    stale = sorted(set(CONFORMANCE) - set(entry_points))
    assert not stale, f"CONFORMANCE names entry points pyproject.toml no longer has: {stale}"
    module = sys.modules[__name__]
    for name, classes in CONFORMANCE.items():
        for cls in classes:
            obj = getattr(module, cls, None)
            assert isinstance(obj, type) and any(c.__module__ == "firespotter.pdk.testing" for c in obj.__mro__[1:]), \
                f"{name}: {cls} is not a conformance class of this module"


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
            found = postprocess((r.mask / 255.0).astype(np.float32), *r.mask.shape, PostParams())
            r.mask, r.regions, r.alert = found.mask, found.regions, found.alert
            r.pose = Pose(lat=46.5, lon=7.5, alt_agl_m=100.0, pitch_deg=-90.0, hfov_deg=90.0)
            out.append(r)
        return out

    def test_regions_get_outlines(self, processor):
        results = self.results()
        for r in results:
            processor.process(r)
        assert all(reg.geo_polygon and reg.area_m2 > 0 for r in results for reg in r.regions)
        assert processor.stats()["with_pose"] == self.n_results


# --- network sinks, each with a real receiver on 127.0.0.1 ---------------------------------------------------


class NetworkSinkResults:
    """Network sinks send fire only (their gate drops frames without fire): feed processed fire frames."""

    def _results(self, sink):
        return [fire_result(i, size=64) for i in range(self.n_results)]


def _seqs(lines) -> list[int]:
    return [json.loads(line)["seq"] for line in lines if line.strip()]


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")
class TestMqttSink(NetworkSinkResults, SinkContract):
    @pytest.fixture
    def sink(self, tmp_path):
        pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed (pip install 'firespotter[mqtt]')")
        from paho.mqtt import client as mqtt

        from firespotter.plugins.sinks.mqtt import MqttOptions, MqttSink

        broker = Mosquitto(tmp_path / "broker", persistence=False).start()
        got: list[bytes] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="conformance-sub")
        sub.on_message = lambda client, userdata, msg: got.append(msg.payload)
        subscribed = []
        sub.on_subscribe = lambda *a: subscribed.append(True)
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        sub.subscribe("firespotter/+/fire", qos=1)
        assert wait_until(lambda: bool(subscribed), 10), "the test subscriber could not subscribe"
        sink = MqttSink(MqttOptions(port=broker.port, min_interval_ms=0, outbox=tmp_path / "outbox.sqlite",
                                    close_timeout_s=1.0), name="mqtt")
        sink.start({"drone_id": "uav-c"})
        self.received = got
        yield sink
        sink.close()
        sub.loop_stop()
        sub.disconnect()
        broker.stop()

    def delivered(self, sink):
        wait_until(lambda: len(self.received) >= self.n_results, 20)
        return _seqs(p.decode() for p in list(self.received))


class TestZenohSink(NetworkSinkResults, SinkContract):
    @pytest.fixture
    def sink(self, tmp_path):
        pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed (pip install 'firespotter[zenoh]')")
        from firespotter.plugins.sinks.zenoh import ZenohOptions, ZenohSink

        endpoint = f"tcp/127.0.0.1:{free_port()}"
        sink = ZenohSink(ZenohOptions(listen=[endpoint], multicast_scouting=False, min_interval_ms=0,
                                      outbox=tmp_path / "outbox.sqlite", close_timeout_s=0), name="zenoh")
        sink.start({"drone_id": "uav-c"})
        self.sub = subprocess.Popen([sys.executable, "-c", ZENOH_SUBSCRIBER, endpoint, "30"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        try:
            assert self.sub.stdout.readline().strip() == "ready", "the Zenoh subscriber did not start"
            assert wait_until(sink._ready, 10), "the subscriber should match the fire key"
            yield sink
        finally:
            kill_process(self.sub)
            sink.close()

    def delivered(self, sink):
        lines: list[str] = []
        deadline = time.monotonic() + 15
        while len(lines) < self.n_results and time.monotonic() < deadline:
            line = self.sub.stdout.readline()
            if not line:
                break
            lines.append(line)
        return _seqs(lines)


class TestMavlinkSink(NetworkSinkResults, SinkContract):
    """A pymavlink ground station on UDP: what reached it are the FIRE_DETECTION messages."""

    @pytest.fixture
    def sink(self):
        pytest.importorskip("pymavlink", reason="pymavlink is not installed (pip install 'firespotter[mavlink]')")
        os.environ.setdefault("MAVLINK20", "1")
        from pymavlink import mavutil

        from firespotter.plugins.sinks.mavlink import MavlinkOptions, MavlinkSink
        from firespotter.plugins.sinks.mavlink_dialect import register

        port = free_port()
        self.rx = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}", dialect="common")
        register(self.rx.mav)
        sink = MavlinkSink(MavlinkOptions(url=f"udpout:127.0.0.1:{port}", heartbeat_s=0.2, min_interval_ms=0),
                           name="mavlink")
        sink.start({"drone_id": "uav-c"})
        yield sink
        sink.close()
        self.rx.close()

    def delivered(self, sink):
        seqs: list[int] = []
        deadline = time.monotonic() + 5
        while len(seqs) < self.n_results and time.monotonic() < deadline:
            m = self.rx.recv_match(type="FIRE_DETECTION", blocking=True, timeout=0.3)
            if m is not None:
                seqs.append(m.seq)
        return seqs


class TestTakSink(SinkContract):
    """A TAK-server stand-in on TCP: what reached it are the fire polygons (parsed with takproto), each
    naming its frame's seq. Results carry a pose: TAK gets geo outlines only."""

    @pytest.fixture
    def sink(self, tmp_path):
        pytest.importorskip("pytak", reason="pytak is not installed (pip install 'firespotter[tak]')")
        pytest.importorskip("takproto", reason="takproto is not installed (pip install 'firespotter[tak]')")
        from helpers.tak import TcpReceiver

        from firespotter.plugins.sinks.tak import TakOptions, TakSink

        self.rx = TcpReceiver()
        sink = TakSink(TakOptions(url=f"tcp://127.0.0.1:{self.rx.port}", min_interval_ms=0, confirm_s=0.2,
                                  outbox=tmp_path / "outbox.sqlite", close_timeout_s=1.0), name="tak")
        sink.start({"drone_id": "uav-c"})
        yield sink
        sink.close()
        self.rx.close()

    def _results(self, sink):
        from firespotter.runtime.types import Pose

        pose = Pose(lat=46.5, lon=7.5, alt_agl_m=100.0, hfov_deg=80.0)
        return [fire_result(i, size=64, pose=pose) for i in range(self.n_results)]

    def delivered(self, sink):
        def seqs():
            return sorted({int(e.fs["seq"]) for e in self.rx.of_type("u-d-f") if e.fs})

        wait_until(lambda: len(seqs()) >= self.n_results, 15)
        return seqs()


# --- the fireseg models on their backends, the adapters -------------------------------------------------------


def _fireseg_lite(backend: str, **backend_options):
    """fireseg-lite's shipped weights bound to `backend`."""
    return bind_segmenter(new_registry(), ModelSettings(name="fireseg-lite", backend=backend,
                                                        backend_options=backend_options))[0]


@pytest.fixture
def _one_torch_thread():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'firespotter[torch]')")
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than two on a shared, loaded machine
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def unet_checkpoint(tmp_path_factory):
    """fireseg-unet has no shipped weights: a freshly initialised network, saved as `firespotter train` would."""
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'firespotter[torch]')")
    from firespotter.models.arch import build
    from firespotter.models.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("unet") / "model.pt"
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": "fireseg-unet",
                           "model": build("fireseg-unet").state_dict(), "input_size": [64, 64]})
    return path


class TestFiresegUnetModel(ModelContract):
    @pytest.fixture
    def model(self, unet_checkpoint):
        spec = new_registry().get("models", "fireseg-unet")
        return spec.factory(spec.options_model(weights=str(unet_checkpoint)))


@pytest.mark.usefixtures("_one_torch_thread")
class TestFiresegUnetTorch(BackendContract):
    input_size = (64, 64)

    @pytest.fixture
    def segmenter(self, unet_checkpoint):
        return bind_segmenter(new_registry(), ModelSettings(name="fireseg-unet", backend="torch",
                                                            options={"weights": str(unet_checkpoint)}))[0]


class TestFiresegLiteModel(ModelContract):
    @pytest.fixture
    def model(self):
        spec = new_registry().get("models", "fireseg-lite")
        return spec.factory(spec.options_model())

    def test_offers_onnx_and_torch(self, model):
        assert set(model.formats()) == {"onnx", "torch"}


class TestFiresegLiteOnnxRuntime(BackendContract):
    @pytest.fixture
    def segmenter(self):
        return _fireseg_lite("onnxruntime")


@pytest.mark.usefixtures("_one_torch_thread")
class OnTorch:
    """fireseg-lite on torch at 64×64 (fully convolutional; small frames keep the CPU tests quick)."""

    input_size = (64, 64)

    @pytest.fixture
    def segmenter(self):
        return _fireseg_lite("torch", input_size=64)


class TestFiresegLiteTorch(OnTorch, BackendContract):
    pass


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed (a CUDA machine)")
class TestTensorRtBackend(BackendContract):
    @pytest.fixture
    def segmenter(self):
        return _fireseg_lite("tensorrt")


class AdapterOnTorch(OnTorch, AdapterContract):
    """The adapter named `adapter_name` on fireseg-lite (torch, 64×64)."""

    adapter_name = ""

    @pytest.fixture
    def adapter(self, segmenter):
        spec = new_registry().get("adapters", self.adapter_name)
        return spec.factory(segmenter, spec.options_model())


class TestBnstatsAdapter(AdapterOnTorch):
    adapter_name = "bnstats"


class TestTentAdapter(AdapterOnTorch):
    adapter_name = "tent"


class TestOsttaAdapter(AdapterOnTorch):
    adapter_name = "ostta"


# --- commands -------------------------------------------------------------------------------------------------


class TestCommands(CommandContract):
    @pytest.fixture(params=["synth", "pdk", "eval", "listen", "train", "build", "bench", "keys", "config", "replay"])
    def command(self, request):
        return new_registry().get("commands", request.param)
