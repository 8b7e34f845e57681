"""The zenoh sink with real Zenoh peers on 127.0.0.1 (explicit endpoints, multicast scouting off): a subscriber
in another process receives valid fire messages; with `firespotter listen` running, the outbox empties."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import REPO
from helpers.net import ZENOH_SUBSCRIBER as SUBSCRIBER, fire_result, kill_process as _kill, free_port, wait_until
from firespotter.net import wire

pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed (pip install 'firespotter[zenoh]')")

from firespotter.plugins.sinks.zenoh import ZenohOptions, ZenohSink  # noqa: E402



def test_subscriber_receives_and_listener_acks_empty_the_outbox(tmp_path):
    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    sink = ZenohSink(ZenohOptions(listen=[endpoint], multicast_scouting=False, min_interval_ms=0, resend_after_s=1.0,
                                  max_backoff_s=2.0, outbox=tmp_path / "outbox.sqlite", close_timeout_s=0), name="zenoh")
    sink.start({"drone_id": "uav-z"})
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, endpoint, "30"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    listener = None
    try:
        assert sub.stdout.readline().strip() == "ready", sub.stderr.read() if sub.poll() is not None else ""
        assert wait_until(sink._ready, 10), "the subscriber should match the fire key"
        for seq in range(5):
            sink.send(fire_result(seq, size=64))
        got: dict[str, dict] = {}
        deadline = time.monotonic() + 15
        while len(got) < 5 and time.monotonic() < deadline:
            line = sub.stdout.readline()
            if line.strip():
                msg = json.loads(line)
                assert wire.validation_errors(msg) == []
                got[msg["id"]] = msg
        assert sorted(m["seq"] for m in got.values()) == [0, 1, 2, 3, 4]
        assert sink.outbox.pending() == 5, "a plain subscriber does not acknowledge"
        listener = subprocess.Popen([sys.executable, "-m", "firespotter", "listen", "--transport", "zenoh",
                                     "--connect", endpoint, "--no-multicast", "--duration", "30"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        assert wait_until(lambda: sink.outbox.pending() == 0, 25), \
            f"outbox still has {sink.outbox.pending()}: {listener.stderr.read() if listener.poll() is not None else ''}"
        assert sink.forwarder.acked_total >= 5
    finally:
        if listener is not None:
            _kill(listener)
        _kill(sub)
        sink.close()
    out, err = listener.communicate(timeout=5)
    assert "5 fire messages from 1 drones" in err, err


def test_no_subscriber_no_send_and_a_session_that_cannot_open_keeps_messages(tmp_path, caplog):
    busy = free_port()
    import socket

    with socket.socket() as s:  # something else listens there: the session cannot bind
        s.bind(("127.0.0.1", busy))
        s.listen()
        sink = ZenohSink(ZenohOptions(listen=[f"tcp/127.0.0.1:{busy}"], multicast_scouting=False, min_interval_ms=0,
                                      outbox=tmp_path / "o.sqlite", close_timeout_s=0), name="zenoh")
        sink.start({"drone_id": "uav-z"})
        for seq in range(3):
            sink.send(fire_result(seq, size=32))
        assert wait_until(lambda: sink.link_error is not None, 10)
        assert "cannot open a zenoh session" in sink.link_error
        assert sink.outbox.pending() == 3 and sink.forwarder.sent == 0
        sink.close()
