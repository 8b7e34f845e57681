"""`firespotter listen` tells whether it reached its broker: a line naming the address when it cannot, exit
status 1 when it never did within --connect-timeout, a line when it connects, and the ground view's page shows
the station's own link while it is down."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request

import pytest

from conftest import REPO, run_cli
from helpers.net import MOSQUITTO, Mosquitto, free_port, port_open, start_listen, stop_process, wait_until

needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (make setup)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@needs_mosquitto
def test_listen_without_a_broker_exits_nonzero_naming_it():
    port = free_port()
    t0 = time.monotonic()
    r = run_cli("listen", "--transport", "mqtt", "--port", str(port), "--connect-timeout", "2", "--duration", "60")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert f"cannot reach mqtt broker 127.0.0.1:{port}: Connection refused" in r.stderr
    assert f"could not reach mqtt broker 127.0.0.1:{port} within 2 s" in r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 30  # the timeout, not --duration


def _state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as resp:
        return json.loads(resp.read())


@needs_mosquitto
def test_listen_reports_the_broker_coming_up_and_the_page_shows_the_link(tmp_path):
    port, http_port = free_port(), free_port()
    listener = start_listen("--transport", "mqtt", "--port", str(port), "--connect-timeout", "0", "--duration", "60",
                       "--http", f"127.0.0.1:{http_port}", cwd=REPO)
    broker = None
    try:
        assert wait_until(lambda: port_open(http_port), 20), listener.poll()
        assert wait_until(lambda: _state(http_port)["counters"]["link"]["error"], 10)
        link = _state(http_port)["counters"]["link"]
        assert link["connected"] is False and f"127.0.0.1:{port}" in link["where"]
        if CHROMIUM is not None:
            sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{http_port}/", wait_until="load", timeout=15000)
                page.wait_for_selector("#link:not([hidden])", timeout=10000)
                assert f"127.0.0.1:{port}" in page.locator("#link").inner_text()
                browser.close()
        broker = Mosquitto(tmp_path / "broker", port=port, persistence=False).start()
        t_up = time.monotonic()
        assert wait_until(lambda: _state(http_port)["counters"]["link"]["connected"], 10)
        assert time.monotonic() - t_up < 4.0  # the reconnect backoff is capped at 2 s
    finally:
        _, err = stop_process(listener)
        if broker is not None:
            broker.stop()
    assert f"connected to mqtt broker 127.0.0.1:{port}" in err, err


def test_zenoh_listen_with_an_unreachable_peer_exits_nonzero_naming_it():
    pytest.importorskip("zenoh", reason="eclipse-zenoh not installed (zenoh extra)")
    port = free_port()
    r = run_cli("listen", "--transport", "zenoh", "--connect", f"tcp/127.0.0.1:{port}", "--no-multicast",
                "--connect-timeout", "2", "--duration", "60")
    assert r.returncode == 1, r.stderr
    assert f"could not reach zenoh peer, connect tcp/127.0.0.1:{port} within 2 s" in r.stderr
