"""The SQLite outbox: order, acks, bound policy, survival of a SIGKILL, a full disk; and the network sink
skeleton on a fake transport."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from conftest import REPO
from helpers.net import fire_result, wait_until
from firespotter.net import wire
from firespotter.net.forwarder import Forwarder
from firespotter.net.outbox import Outbox
from firespotter.net.sink import NetworkSink, NetworkSinkOptions
from firespotter.runtime.types import Pose


def _msg(seq, alert="fire", mask=True):
    r = fire_result(seq, size=64)
    r.mask = (np.random.default_rng(seq).random((64, 64)) > 0.5).astype(np.uint8) * 255  # incompressible: masks dominate
    m = wire.fire_message(r, "d", mask_max_side=64 if mask else 0)
    m["alert"] = alert
    return m


def _put(ob, m):
    ob.put(m["id"], wire.topic("d", "fire"), wire.dumps(m), seq=m["seq"], rank=wire.ALERT_RANK[m["alert"]],
           has_mask=m["mask"] is not None)


def test_oldest_first_ack_and_reopen(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    msgs = [_msg(i) for i in range(5)]
    for m in msgs:
        _put(ob, m)
    assert [it.seq for it in ob.due(10)] == [0, 1, 2, 3, 4]
    assert [it.seq for it in ob.due(2, exclude=[msgs[0]["id"]])] == [1, 2]
    assert ob.ack([msgs[1]["id"], msgs[3]["id"], "0" * 32]) == 2
    _put(ob, msgs[0])  # a duplicate put is ignored
    assert ob.pending() == 3
    ob.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert [it.seq for it in again.due(10)] == [0, 2, 4]
    assert wire.loads(again.due(1)[0].payload)["id"] == msgs[0]["id"]
    again.close()


def test_survives_sigkill(tmp_path):
    path = tmp_path / "o.sqlite"
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from helpers.net import fire_result
        from firespotter.net import wire
        from firespotter.net.outbox import Outbox
        ob = Outbox({str(path)!r})
        ids = []
        for i in range(50):
            m = wire.fire_message(fire_result(i, size=32), "d")
            ob.put(m["id"], "t", wire.dumps(m), seq=i)
            ids.append(m["id"])
        ob.ack(ids[:20])
        print(",".join(ids[20:]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert p.returncode == -signal.SIGKILL, p.stderr
    expected = p.stdout.strip().split(",")
    ob = Outbox(path)
    assert [wire.loads(it.payload)["id"] for it in ob.due(100)] == expected
    ob.close()


def test_bound_drops_masks_first_then_non_alerts_then_alerts(tmp_path):
    probe = wire.dumps(_msg(0))
    lite = wire.strip_mask(probe)
    assert len(lite) < len(probe)
    # room for 4 messages with masks, or about 10 without
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=max(1024, 4 * len(probe) + 100), max_messages=6)
    msgs = [_msg(0, "fire"), _msg(1, "suspect"), _msg(2, "fire"), _msg(3, "suspect"), _msg(4, "fire")]
    for m in msgs:
        _put(ob, m)
    stored = {wire.loads(it.payload)["seq"]: wire.loads(it.payload) for it in ob.due(100)}
    assert set(stored) == {0, 1, 2, 3, 4}, "masks go before messages"
    assert ob.masks_dropped >= 1 and stored[0]["mask"] is None and stored[0]["mask_dropped"]
    assert stored[4]["mask"] is not None, "the newest keeps its mask"
    assert ob.dropped == 0
    for i in range(5, 8):  # count bound 6: non-alerts go first, oldest first
        _put(ob, _msg(i, "fire"))
    seqs = [it.seq for it in ob.due(100)]
    assert 1 not in seqs and 3 not in seqs and seqs == [0, 2, 4, 5, 6, 7][-len(seqs):]
    for i in range(8, 12):
        _put(ob, _msg(i, "fire"))
    assert [it.seq for it in ob.due(100)] == [6, 7, 8, 9, 10, 11]  # then the oldest alerts
    assert ob.pending() == 6
    ob.close()


def test_full_disk_is_reported_and_the_outbox_goes_on_in_memory(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="firespotter.outbox")
    ob = Outbox(tmp_path / "o.sqlite", retry_s=3600)
    _put(ob, _msg(0))
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full for this database (SQLITE_FULL)
    for i in range(1, 6):
        _put(ob, _msg(i))
    assert ob.degraded and "full" in ob.degraded
    assert "going on without persistence" in caplog.text
    assert ob.pending() == 6 and [it.seq for it in ob.due(10)] == [0, 1, 2, 3, 4, 5]
    assert ob.stats()["degraded"]
    ids = [wire.loads(it.payload)["id"] for it in ob.due(10)]
    ob.ack(ids)
    assert ob.pending() == 0 and ob.due(10) == []
    ob.close()


def test_unwritable_directory_degrades_instead_of_failing(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ob = Outbox(blocker / "sub" / "o.sqlite")  # parent is a file: cannot be created
    assert ob.degraded
    _put(ob, _msg(0))
    assert ob.pending() == 1
    ob.close()


def test_forwarder_resends_until_acked_and_keeps_the_id(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    sent: list[str] = []
    fw = Forwarder(ob, lambda it: sent.append(it.id), ready=lambda: True, window=2, resend_after_s=0.2,
                   max_backoff_s=0.4)
    msgs = [_msg(i) for i in range(3)]
    for m in msgs:
        _put(ob, m)
    fw.start()
    try:
        assert wait_until(lambda: sent.count(msgs[0]["id"]) >= 2, 5), "unacked messages are resent"
        assert msgs[2]["id"] not in sent or sent.index(msgs[2]["id"]) > 1, "window of 2"
        fw.acked([m["id"] for m in msgs])
        assert wait_until(lambda: ob.pending() == 0, 5)
        n = len(sent)
        threading.Event().wait(0.6)
        assert len(sent) == n, "nothing acknowledged is resent"
    finally:
        fw.stop()
        ob.close()


class FakeSink(NetworkSink):
    """A transport that delivers into a list and acks at once (or never)."""

    transport = "zenoh"

    def __init__(self, options, name="fake", ack=True):
        super().__init__(options, name)
        self.delivered: list[dict] = []
        self.states: list[dict] = []
        self.ack = ack
        self.up = True

    def _open(self):
        pass

    def _ready(self):
        return self.up

    def _publish(self, item):
        self.delivered.append(wire.loads(item.payload))
        if self.ack:
            self.forwarder.acked([item.id])

    def _publish_state(self, topic, payload):
        self.states.append(wire.loads(payload))

    def _close_transport(self):
        pass


def test_network_sink_skeleton_gates_georeferences_and_heartbeats(tmp_path):
    opts = NetworkSinkOptions(outbox=tmp_path / "o.sqlite", min_interval_ms=60_000, state_interval_s=0.1,
                              stall_after_s=0.3)
    sink = FakeSink(opts)
    sink.start({"drone_id": "uav-9", "adapter": "tent"})
    pose = Pose(lat=46.0, lon=7.0, alt_agl_m=100.0, pitch_deg=-90.0, hfov_deg=90.0)
    sink.send(fire_result(0, size=64, pose=pose))
    sink.send(fire_result(0, size=64, pose=pose))  # same fire, within the interval: suppressed
    assert wait_until(lambda: len(sink.delivered) == 1 and sink.outbox.pending() == 0, 5)
    msg = sink.delivered[0]
    assert msg["drone_id"] == "uav-9" and msg["georef"] == "ok" and msg["area_m2"] > 0
    assert all(r["geo"]["type"] == "Polygon" for r in msg["regions"])
    assert wait_until(lambda: any(s["source_state"] == "stalled" for s in sink.states), 5), "no frame -> stalled"
    st = sink.states[-1]
    assert wire.validation_errors(st) == [] and st["adapter"] == {"name": "tent", "state": "active"}
    assert st["no_frame_s"] >= 0.3 and st["seq"] == 0 and st["outbox"]["pending"] == 0
    sink.close()
    assert sink.states[-1]["running"] is False


def test_network_sink_keeps_messages_while_the_link_is_down(tmp_path):
    sink = FakeSink(NetworkSinkOptions(outbox=tmp_path / "o.sqlite", min_interval_ms=0, close_timeout_s=0))
    sink.up = False
    sink.start({"drone_id": "d"})
    for i in range(5):
        sink.send(fire_result(i, size=32))
    threading.Event().wait(0.3)
    assert sink.delivered == [] and sink.outbox.pending() == 5
    sink.up = True
    sink.forwarder.wake()
    assert wait_until(lambda: sink.outbox.pending() == 0, 5)
    assert [m["seq"] for m in sink.delivered] == [0, 1, 2, 3, 4]  # oldest first
    sink.close()
