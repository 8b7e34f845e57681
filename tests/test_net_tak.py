"""The tak sink against real receivers on 127.0.0.1: a TCP and a TLS (client certificate) TAK-server stand-in and
UDP (unicast and multicast on loopback) sockets, every event parsed with takproto and ElementTree."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from helpers.net import fire_result, free_port, wait_until

pytest.importorskip("pytak", reason="pytak is not installed (pip install 'firespotter[tak]')")
pytest.importorskip("takproto", reason="takproto is not installed (pip install 'firespotter[tak]')")

from firespotter.net import cot  # noqa: E402
from firespotter.plugins.sinks.tak import TakOptions, TakSink  # noqa: E402
from firespotter.runtime.errors import FirespotterError  # noqa: E402
from firespotter.runtime.geo import lonlat_to_ne  # noqa: E402
from firespotter.runtime.types import Pose  # noqa: E402
from helpers.tak import TcpReceiver, UdpReceiver, make_pki, server_context  # noqa: E402

POSE = Pose(lat=46.52, lon=7.51, alt_agl_m=120.0, yaw_deg=15.0, hfov_deg=82.0)
DRONE = "a-f-A-M-F-Q"


def _sink(url, tmp_path, **kw) -> TakSink:
    opts = dict(url=url, min_interval_ms=0, outbox=tmp_path / "outbox.sqlite", close_timeout_s=2.0,
                state_interval_s=0.2, confirm_s=0.3, min_backoff_s=0.2, reconnect_max_s=0.5, resend_after_s=2.0)
    opts.update(kw)
    sink = TakSink(TakOptions(**opts), name="tak")
    sink.start({"drone_id": "uav-01"})
    return sink


def _to_m(latlon):
    return lonlat_to_ne(np.asarray(latlon, float)[:, ::-1], POSE.lat, POSE.lon)


def _dist_to_ring(points, ring):
    """Distance of each point to the closed polyline `ring` (both N×2 metres)."""
    a, b = ring, np.roll(ring, -1, axis=0)
    ab = b - a
    t = np.clip(((points[:, None, :] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    closest = a + t[..., None] * ab
    return np.hypot(*(points[:, None, :] - closest).transpose(2, 0, 1)).min(axis=1)


def _max_error_m(ring_lonlat, links_latlon) -> float:
    """How far apart (metres) a region's lon/lat outline and the shape's (lat, lon) vertices are, both ways:
    every CoT vertex on the fire's outline, and every outline vertex near the CoT shape (its simplification)."""
    ours = _to_m([(lat, lon) for lon, lat in ring_lonlat])
    theirs = _to_m(links_latlon)
    assert len(theirs) >= 4 and (theirs[0] == theirs[-1]).all(), "a closed ring"
    return float(max(_dist_to_ring(theirs, ours).max(), _dist_to_ring(ours, theirs[:-1]).max()))


def _check_fire_shapes(rx, results, stale_s=900.0):
    """Every region of every result arrived as a polygon within 1 m of its geo outline, with a site point,
    the right types, times from the capture and stale = capture + stale_s."""
    shapes = {(int(e.fs["seq"]), e.uid): e for e in rx.of_type("u-d-f") if e.fs}
    sites = [e for e in rx.of_type("b-m-p-s-m")]
    for r in results:
        assert r.regions, "the test needs fire regions"
        for k, region in enumerate(r.regions):
            e = shapes[(r.seq, f"firespotter.uav-01.fire.{k}")]
            assert _max_error_m(region.geo_polygon, e.links) < 1.0
            assert abs(e.start_ms - r.t_wall_ns / 1e6) <= 1
            assert abs(e.stale_ms - e.start_ms - stale_s * 1000) <= 1
            assert e.how == "m-f" and e.callsign == f"FIRE uav-01 #{k + 1}"
            lon, lat = cot.centroid_lonlat(region.geo_polygon)
            assert any(s.uid == f"firespotter.uav-01.site.{k}" and abs(s.lat - lat) < 1e-6 and abs(s.lon - lon) < 1e-6
                       for s in sites)
    assert not rx.errors, rx.errors


def test_tcp_fire_regions_drone_track_and_in_place_updates(tmp_path):
    rx = TcpReceiver()
    sink = _sink(f"tcp://127.0.0.1:{rx.port}", tmp_path)
    try:
        results = [fire_result(seq, size=128, seed=seq, pose=POSE) for seq in (3, 4, 5)]
        for r in results:
            sink.send(r)
        n = sum(len(r.regions) for r in results)
        assert wait_until(lambda: len([e for e in rx.of_type("u-d-f") if e.fs]) >= n, 10), rx.errors
        _check_fire_shapes(rx, results)
        # the drone: a friendly UAV track at its pose, with its camera footprint around the fires
        assert wait_until(lambda: rx.of_type(DRONE), 5)
        track = rx.of_type(DRONE)[-1]
        assert track.uid == "firespotter.uav-01" and abs(track.lat - POSE.lat) < 1e-7 and abs(track.lon - POSE.lon) < 1e-7
        assert 14_000 <= track.stale_ms - track.start_ms <= 16_000
        fp = [e for e in rx.of_type("u-d-f") if e.uid == "firespotter.uav-01.footprint"][-1]
        lat = [p[0] for p in fp.links]
        lon = [p[1] for p in fp.links]
        for e in rx.of_type("u-d-f"):
            for la, lo in e.links:
                assert min(lat) - 1e-6 <= la <= max(lat) + 1e-6 and min(lon) - 1e-6 <= lo <= max(lon) + 1e-6
        # uids are per region rank: a frame with fewer regions deletes the ones that went out
        last = len(results[-1].regions)
        fewer = fire_result(6, size=128, seed=6, pose=POSE)
        while len(fewer.regions) >= last:
            fewer = fire_result(fewer.seq + 1, size=128, seed=fewer.seq + 1, pose=POSE)
        sink.send(fewer)
        gone = {f"firespotter.uav-01.{kind}.{k}" for kind in ("fire", "site") for k in range(len(fewer.regions), last)}
        assert wait_until(lambda: gone <= {u for e in rx.of_type("t-x-d-d") for u in e.link_uids}, 5), rx.of_type("t-x-d-d")
        uids = {e.uid for e in rx.of_type("u-d-f") if e.fs}
        assert uids == {f"firespotter.uav-01.fire.{k}" for k in range(max(len(r.regions) for r in results))}
        assert wait_until(lambda: sink.outbox.pending() == 0, 5)
    finally:
        sink.close()
        rx.close()
    # a clean shutdown marks the drone stale at once
    assert any(e.stale_ms == e.start_ms for e in rx.of_type(DRONE))


def test_tls_with_client_certificate(tmp_path):
    pki = make_pki(tmp_path / "pki")
    rx = TcpReceiver(ssl_ctx=server_context(pki))
    sink = _sink(f"tls://127.0.0.1:{rx.port}", tmp_path, certfile=pki["client_cert"], keyfile=pki["client_key"],
                 cafile=pki["ca"])
    try:
        results = [fire_result(seq, size=128, seed=seq, pose=POSE) for seq in (1, 2)]
        for r in results:
            sink.send(r)
        n = sum(len(r.regions) for r in results)
        assert wait_until(lambda: len([e for e in rx.of_type("u-d-f") if e.fs]) >= n, 10), rx.errors
        _check_fire_shapes(rx, results)
        subject = dict(x[0] for x in rx.peer_certs[0]["subject"])
        assert subject["commonName"] == "uav-01"  # the server saw the drone's client certificate
    finally:
        sink.close()
        rx.close()


def test_tls_server_not_signed_by_cafile_is_refused_and_messages_kept(tmp_path):
    pki, other = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other")
    rx = TcpReceiver(ssl_ctx=server_context(other))  # an impostor: its certificate is not from our CA
    sink = _sink(f"tls://127.0.0.1:{rx.port}", tmp_path, certfile=pki["client_cert"], keyfile=pki["client_key"],
                 cafile=pki["ca"])
    try:
        sink.send(fire_result(1, size=128, seed=1, pose=POSE))
        assert wait_until(lambda: sink.link.failures >= 2, 10)
        assert "CERTIFICATE_VERIFY_FAILED" in (sink.link_error or ""), sink.link_error
        assert sink.outbox.pending() == 1 and not rx.of_type("u-d-f")
    finally:
        sink.close()
        rx.close()


def test_a_tls_certificate_that_does_not_load_is_one_clear_line(tmp_path):
    bad = tmp_path / "client.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    with pytest.raises(FirespotterError) as err:
        TakSink(TakOptions(url="tls://127.0.0.1:8089", certfile=bad, keyfile=bad, outbox=tmp_path / "o.sqlite"))
    text = str(err.value)
    assert "\n" not in text and str(bad) in text and "does not load" in text
    with pytest.raises(FirespotterError, match="does not exist"):
        TakSink(TakOptions(url="tls://127.0.0.1:8089", certfile=tmp_path / "missing.pem"))
    # the same through the CLI: one line on stderr, no traceback
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nname = "colorrule"\n[[sinks]]\ntype = "tak"\nurl = "tls://127.0.0.1:8089"\ncertfile = "{bad}"\n')
    r = run_cli("replay", "test://?frames=2&size=64x64", "-c", str(config), "--out", str(tmp_path / "out"))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "does not load" in lines[0], r.stderr


def test_unreachable_server_is_retried_and_messages_are_kept(tmp_path, caplog):
    port = free_port()
    sink = _sink(f"tcp://127.0.0.1:{port}", tmp_path)
    rx = None
    try:
        results = [fire_result(seq, size=128, seed=seq, pose=POSE) for seq in (10, 11, 12)]
        for r in results:
            sink.send(r)
        assert wait_until(lambda: sink.link.failures >= 2, 5)
        assert sink.outbox.pending() == 3
        assert "cannot connect to TAK server" in sink.state_message()["link"]["error"]
        rx = TcpReceiver(port=port)  # the server comes up: the backlog drains, oldest first
        n = sum(len(r.regions) for r in results)
        assert wait_until(lambda: len([e for e in rx.of_type("u-d-f") if e.fs]) >= n, 10), rx.errors
        assert wait_until(lambda: sink.outbox.pending() == 0, 5)
        _check_fire_shapes(rx, results)
        seqs = [int(e.fs["seq"]) for e in rx.of_type("u-d-f") if e.fs]
        assert seqs == sorted(seqs)
        # the server hangs up: the sink notices, reconnects, and nothing sent meanwhile is lost
        rx.drop_clients()
        more = [fire_result(seq, size=128, seed=seq, pose=POSE) for seq in (13, 14)]
        for r in more:
            sink.send(r)
        assert wait_until(lambda: {13, 14} <= {int(e.fs["seq"]) for e in rx.of_type("u-d-f") if e.fs}, 10)
        assert rx.connections >= 2
    finally:
        sink.close()
        if rx:
            rx.close()


def test_udp_unicast_and_multicast_sa(tmp_path):
    rx = UdpReceiver()
    sink = _sink(f"udp://127.0.0.1:{rx.port}", tmp_path)
    try:
        r = fire_result(7, size=128, seed=7, pose=POSE)
        sink.send(r)
        assert wait_until(lambda: len([e for e in rx.of_type("u-d-f") if e.fs]) >= len(r.regions), 5)
        _check_fire_shapes(rx, [r])
        assert wait_until(lambda: rx.of_type(DRONE), 5)
        assert wait_until(lambda: sink.outbox.pending() == 0, 5)
    finally:
        sink.close()
        rx.close()
    # TAK Protocol Version 1 mesh: protobuf datagrams, as ATAK sends on the SA group
    prx = UdpReceiver()
    sink = _sink(f"udp://127.0.0.1:{prx.port}", tmp_path / "p", protocol="protobuf")
    try:
        r = fire_result(9, size=128, seed=9, pose=POSE)
        sink.send(r)
        assert wait_until(lambda: len([e for e in prx.of_type("u-d-f") if e.fs]) >= len(r.regions), 5), prx.errors
        _check_fire_shapes(prx, [r])
        assert all(e.xml[:3] == b"\xbf\x01\xbf" for e in prx.events)
    finally:
        sink.close()
        prx.close()
    try:
        mrx = UdpReceiver(group="239.2.3.1")
    except OSError as exc:
        pytest.skip(f"this machine cannot join a multicast group on loopback: {exc}")
    sink = _sink(f"udp://239.2.3.1:{mrx.port}", tmp_path / "m", multicast_interface="127.0.0.1")
    try:
        r = fire_result(8, size=128, seed=8, pose=POSE)
        sink.send(r)
        assert wait_until(lambda: len([e for e in mrx.of_type("u-d-f") if e.fs]) >= len(r.regions), 5), \
            sink.stats()
        _check_fire_shapes(mrx, [r])
    finally:
        sink.close()
        mrx.close()


def test_big_outlines_are_simplified_within_tolerance():
    """A pixel contour has a vertex per pixel step; TAK gets at most max_vertices, within tolerance of it."""
    r = fire_result(9, size=512, seed=9, pose=POSE)
    big = max(r.regions, key=lambda g: len(g.geo_polygon))
    assert len(big.geo_polygon) > 200
    style = cot.CotStyle(tolerance_m=0.25, max_vertices=64)
    (shape, *_) = [e for e in cot.fire_events([big], "uav-01", r.t_wall_ns, style) if e.get("type") == "u-d-f"]
    links = [tuple(float(v) for v in link.get("point").split(",")) for link in shape.iter("link")]
    assert 4 <= len(links) <= 65
    assert _max_error_m(big.geo_polygon, links) < 1.0  # the outline moved by less than a metre


def test_bad_urls_are_config_errors():
    from pydantic import ValidationError

    for url, needle in [("http://x:1", "scheme must be one of"), ("tcp://:8087", "no host"),
                        ("tcp://h:99999", "Port out of range")]:
        with pytest.raises(ValidationError, match=needle):
            TakOptions(url=url)
    with pytest.raises(ValidationError, match="protobuf"):
        TakOptions(url="tcp://127.0.0.1:8087", protocol="protobuf")
