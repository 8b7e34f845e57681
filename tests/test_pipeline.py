"""Pipeline semantics: replay is lossless and ordered; live stays bounded; sinks cannot stall or kill it."""

from __future__ import annotations

import threading
import time

import numpy as np

from conftest import FakeSegmenter, ListSource, RaisingSink, RecordingSink, frames_with_fire
from firespotter.runtime.pipeline import Pipeline, PipelineOptions
from firespotter.runtime.types import AlertLevel


def test_replay_processes_every_frame_in_order():
    sink = RecordingSink()
    p = Pipeline(ListSource(frames_with_fire(200)), FakeSegmenter(), [("rec", sink)],
                 PipelineOptions(mode="replay", queue_size=2, sink_queue_size=3))
    summary = p.run()
    assert sink.seqs == list(range(200))
    assert summary["frames"] == 200 and summary["dropped"] == 0
    assert summary["fire_frames"] == 100  # every even frame has a fire patch
    assert sink.flushed == 1 and sink.closed


def test_replay_is_lossless_with_a_slow_sink():
    slow = RecordingSink("slow", delay_s=0.002)
    p = Pipeline(ListSource(frames_with_fire(60)), FakeSegmenter(), [("slow", slow)],
                 PipelineOptions(mode="replay", sink_queue_size=2))
    summary = p.run()
    assert slow.seqs == list(range(60))
    assert summary["sinks"]["slow"]["dropped"] == 0


def test_replay_masks_are_deterministic():
    def masks():
        sink = RecordingSink()
        Pipeline(ListSource(frames_with_fire(30)), FakeSegmenter(), [("rec", sink)]).run()
        return [r.mask.tobytes() for r in sink.results]

    assert masks() == masks()


def test_live_mode_with_fast_source_stays_bounded_and_counts_drops():
    # Source at 250 fps, model at ~50 fps: five times faster than inference.
    sink = RecordingSink()
    deadline_ms = 150.0
    opts = PipelineOptions(mode="live", queue_size=2, deadline_ms=deadline_ms, sink_queue_size=4)
    p = Pipeline(ListSource(frames_with_fire(250), fps=250.0), FakeSegmenter(delay_s=0.02), [("rec", sink)], opts)
    summary = p.run()
    assert p.q_frames.max_depth <= 2
    assert summary["frames_in"] == 250
    assert summary["dropped"] > 100  # most frames cannot be processed
    assert summary["frames"] + summary["dropped_queue"] + summary["dropped_deadline"] == summary["frames_in"]
    latencies = [(r.t_publish_ns - r.t_capture_ns) / 1e6 for r in sink.results]
    assert latencies and max(latencies) < deadline_ms + 40  # dequeue check + one inference at most
    assert sink.seqs == sorted(sink.seqs)  # still in order, with gaps
    assert summary["stages_ms"]["latency"]["max"] < deadline_ms + 40


def test_live_deadline_drops_stale_frames():
    # A model slower than the deadline: frames waiting in the queue go stale and are dropped, not processed late.
    sink = RecordingSink()
    opts = PipelineOptions(mode="live", queue_size=4, deadline_ms=30.0)
    p = Pipeline(ListSource(frames_with_fire(40), fps=200.0), FakeSegmenter(delay_s=0.04), [("rec", sink)], opts)
    summary = p.run()
    assert summary["dropped_deadline"] > 0
    assert summary["frames"] + summary["dropped"] == summary["frames_in"]


def test_raising_sink_is_counted_while_others_and_inference_go_on(caplog):
    good, bad = RecordingSink("good"), RaisingSink("bad")
    p = Pipeline(ListSource(frames_with_fire(50)), FakeSegmenter(), [("bad", bad), ("good", good)])
    summary = p.run()
    assert good.seqs == list(range(50))
    assert summary["sinks"]["bad"]["errors"] == 50
    assert "link down" in summary["sinks"]["bad"]["last_error"]
    assert summary["frames"] == 50
    assert any("sink bad" in r.getMessage() for r in caplog.records)
    assert bad.flushed == 1 and bad.closed  # even a failing sink is flushed and closed


def test_slow_sink_in_live_mode_does_not_stall_inference():
    slow, fast = RecordingSink("slow", delay_s=0.05), RecordingSink("fast")
    opts = PipelineOptions(mode="live", queue_size=2, deadline_ms=1000, sink_queue_size=2, drain_timeout_s=5)
    p = Pipeline(ListSource(frames_with_fire(100), fps=500.0), FakeSegmenter(), [("slow", slow), ("fast", fast)], opts)
    summary = p.run()
    assert summary["sinks"]["slow"]["dropped"] > 0
    # On a loaded machine even the fast sink may lose one to its small leaky queue; it is counted either way.
    assert len(fast.seqs) + summary["sinks"]["fast"]["dropped"] == summary["frames"]
    assert len(fast.seqs) > len(slow.seqs)


def test_inference_error_on_one_frame_skips_it():
    sink = RecordingSink()
    summary = Pipeline(ListSource(frames_with_fire(10)), FakeSegmenter(fail_on={3}), [("rec", sink)]).run()
    assert summary["infer_errors"] == 1
    assert sink.seqs == [0, 1, 2, 4, 5, 6, 7, 8, 9]


def test_broken_model_stops_with_fatal_error():
    sink = RecordingSink()
    summary = Pipeline(ListSource(frames_with_fire(200)), FakeSegmenter(fail_on=set(range(200))), [("rec", sink)]).run()
    assert summary["fatal_error"] and "in a row" in summary["fatal_error"]
    assert sink.closed


def test_nan_output_is_counted_and_never_published_as_fire_or_no_fire():
    sink = RecordingSink()
    summary = Pipeline(ListSource(frames_with_fire(4)), FakeSegmenter(nan=True), [("rec", sink)]).run()
    assert summary["nonfinite_frames"] == 4 and summary["frames"] == 0
    assert sink.results == []


def test_request_stop_drains_accepted_frames_and_flushes():
    sink = RecordingSink()
    src = ListSource(frames_with_fire(10_000), fps=1000.0)
    p = Pipeline(src, FakeSegmenter(delay_s=0.001), [("rec", sink)], PipelineOptions(mode="replay"))
    threading.Timer(0.3, p.request_stop).start()
    t0 = time.monotonic()
    summary = p.run()
    assert time.monotonic() - t0 < 5
    assert summary["stopped_by_request"] and summary["drained"]
    assert 0 < summary["frames"] < 10_000
    assert summary["frames"] == summary["frames_in"]  # replay: everything accepted was processed
    assert sink.seqs == list(range(summary["frames"]))
    assert sink.flushed == 1 and sink.closed and src.closed


def test_regions_and_result_fields():
    img = np.zeros((64, 64, 3), np.uint8)
    img[5:15, 5:15, 0] = 255
    img[40:50, 30:60, 0] = 255
    sink = RecordingSink()
    Pipeline(ListSource([img]), FakeSegmenter(), [("rec", sink)]).run()
    (r,) = sink.results
    assert [reg.area_px for reg in r.regions] == [300, 100]  # largest first
    assert r.regions[0].bbox == (30, 40, 30, 10)
    assert r.alert is AlertLevel.FIRE
    assert r.mask.shape == (64, 64) and r.mask.max() == 255
    ev = r.as_event()
    assert ev["regions"][1]["centroid"] == [9.5, 9.5]
    assert ev["latency_ms"] is not None and ev["precision_exec"] == "fp32"


def test_frame_level_score_reaches_every_result():
    class Scored(FakeSegmenter):
        def predict_scored(self, batch):
            prob = self.predict(batch)
            return prob, prob.reshape(len(prob), -1).max(axis=1)

    sink = RecordingSink()
    Pipeline(ListSource(frames_with_fire(6)), Scored(), [("rec", sink)]).run()
    assert [r.fire_score for r in sink.results] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert sink.results[0].as_event()["fire_score"] == 1.0
    plain = RecordingSink()
    Pipeline(ListSource(frames_with_fire(2)), FakeSegmenter(), [("rec", plain)]).run()
    assert plain.results[0].fire_score is None


def test_sinks_get_frozen_results_they_cannot_change():
    """After the processors the Result is read-only: a sink that writes to it fails (counted), the others
    see it as the processors left it."""
    import dataclasses

    class Stamp:
        def process(self, result):
            result.meta = {**result.meta, "stamped": True}

        def stats(self):
            return {}

        def close(self):
            pass

    class Meddler(RecordingSink):
        def send(self, result):
            result.alert = AlertLevel.NONE

    class RegionMeddler(RecordingSink):
        def send(self, result):
            result.mask[0, 0] = 255

    rec = RecordingSink()
    summary = Pipeline(ListSource(frames_with_fire(4)), FakeSegmenter(),
                       [("meddler", Meddler("meddler")), ("pixels", RegionMeddler("pixels")), ("rec", rec)],
                       processors=[("stamp", Stamp())]).run()
    assert summary["sinks"]["meddler"]["errors"] == 4 and "FrozenInstanceError" in summary["sinks"]["meddler"]["last_error"]
    assert summary["sinks"]["pixels"]["errors"] == 4 and "read-only" in summary["sinks"]["pixels"]["last_error"]
    assert all(r.frozen and r.meta["stamped"] and isinstance(r.regions, tuple) for r in rec.results)
    assert [r.alert for r in rec.results][0] is AlertLevel.FIRE
    copy = dataclasses.replace(rec.results[0])  # a copy is the caller's to change
    copy.alert = AlertLevel.NONE
    assert not copy.frozen and rec.results[0].alert is AlertLevel.FIRE


def test_components_are_checked_against_their_contract_once_at_assembly():
    """protocols.py: a missing required member is a clear error before any frame; a component written before the
    optional members were declared gets the base class's defaults, and the stages call members directly."""
    import pytest

    from firespotter.runtime.errors import PluginError
    from firespotter.runtime.protocols import SINK, SinkBase, conform, declares

    class Bare:  # name, send, flush, close only: no needs_image, start, stats, outbox_depth
        name = "bare"

        def __init__(self):
            self.seqs = []

        def send(self, result):
            self.seqs.append(result.seq)

        def flush(self):
            pass

        def close(self):
            pass

    bare = Bare()
    seen = conform(bare, SINK)
    assert seen is not bare and seen.needs_image is False and seen.stats() is None and seen.outbox_depth() is None
    assert conform(seen, SINK) is seen and conform(RecordingSink(), SINK) is not None

    class WithOutbox(SinkBase):
        name = "o"
        send = flush = close = lambda self, *args: None

        def outbox_depth(self):
            return 3

    # declares(): an optional member of its own, not the base's default (the metrics bind outbox gauges by it)
    assert declares(WithOutbox(), SINK, "outbox_depth") and not declares(seen, SINK, "outbox_depth")
    assert not declares(conform(RecordingSink(), SINK), SINK, "outbox_depth")
    summary = Pipeline(ListSource(frames_with_fire(3)), FakeSegmenter(), [("bare", bare)]).run()
    assert bare.seqs == [0, 1, 2] and "delivery" not in summary["sinks"]["bare"]
    assert summary["source_state"] == "ended" and summary["adapters"] == []

    class NoFlush:
        name = "noflush"
        send = close = lambda self, *args: None

    with pytest.raises(PluginError, match=r"sink 'x' \(NoFlush\) does not implement flush of the sink contract"):
        Pipeline(ListSource([]), FakeSegmenter(), [("x", NoFlush())])


def test_results_leave_through_one_observer_channel_before_the_sinks():
    """The on_result hook and every observer added see each frozen Result, in order, before any sink does;
    one that raises is counted and the others, and the sinks, still get every result."""
    from firespotter.runtime.plugins import hookimpl, new_registry

    order: list[tuple[str, int]] = []

    class Hook:
        @hookimpl
        def on_result(self, result):
            order.append(("hook", result.seq))

    class Sink(RecordingSink):
        def send(self, result):
            order.append(("sink", result.seq))
            super().send(result)

    def bad(result):
        raise RuntimeError("observer bug")

    sink = Sink()
    p = Pipeline(ListSource(frames_with_fire(3)), FakeSegmenter(), [("rec", sink)],
                 hook=new_registry(load_entry_points=False, plugins=[("h", Hook())]).hook(),
                 observers=[lambda r: order.append(("observer", r.seq)), bad])
    seen = []
    p.add_observer(lambda r: seen.append((r.frozen, p.frames_out)))
    summary = p.run()
    assert sink.seqs == [0, 1, 2] and summary["hook_errors"] == 3
    assert seen == [(True, 1), (True, 2), (True, 3)]  # frozen, and counted as out when observed (progress)
    for seq in range(3):
        mine = [who for who, s in order if s == seq]
        assert mine == ["hook", "observer", "sink"]
