"""The archive's index: DIR/index.json (one row per flight), DIR/index.html (the same as a table, each row
linking to its flight's report) and, when flights carry telemetry, an archive-wide fire map: the union of
every flight's geo-referenced fire outlines as GeoJSON (RFC 7946) and KML, built by the ground station's own
fleet-map code with each flight in the place of a drone."""

from __future__ import annotations

import html
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from firespotter.ground.export import finite, kml
from firespotter.ground.fleet import Detection, lonlat_ok, union_features

INDEX_VERSION = 1
COLUMNS = (("flight_id", "flight"), ("status", "status"), ("frames", "frames"), ("fire_frames", "fire frames"),
           ("largest_fire_px", "largest fire (px)"), ("largest_fire_m2", "largest fire (m²)"),
           ("first_fire_s", "first fire (s)"), ("last_fire_s", "last fire (s)"), ("model_id", "model"),
           ("precision_exec", "precision"), ("weight_bits", "weight bits"), ("simulated", "simulated"),
           ("cpu_s", "CPU s"), ("attempts", "attempts"))


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def flight_detections(folder: Path, flight_id: str) -> list[Detection]:
    """Every geo-referenced fire outline of one flight's events.jsonl."""
    dets: list[Detection] = []
    try:
        f = open(folder / "events.jsonl", encoding="utf-8")
    except OSError:
        return dets
    with f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            rings = [[(p[0], p[1]) for p in r["geo_polygon"]] for r in e.get("regions") or ()
                     if r.get("geo_polygon") and len(r["geo_polygon"]) >= 3]
            rings = [r for r in rings if all(lonlat_ok(lon, lat) for lon, lat in r)]
            if rings:
                t_ns = int(e.get("t_wall_ns") or 0)
                dets.append(Detection(t_ns / 1e9, flight_id, f"{flight_id}/{e.get('seq')}", int(e.get("seq") or 0),
                                      t_ns, rings))
    return dets


def fire_map(out: Path, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    dets = [d for r in rows if r.get("status") in ("replayed", "skipped") and r.get("geo")
            for d in flight_detections(out / r["flight_id"], r["flight_id"])]
    if not dets:
        return None
    try:
        feats = union_features(dets, window_s=float("inf"))
    except ImportError:  # shapely: the [ground] extra
        logging.getLogger("firespotter.archive").warning(
            "no archive fire map: it needs shapely (pip install 'firespotter[ground]')")
        return None
    for feat in feats:
        feat["properties"]["flights"] = feat["properties"].pop("drones")
    return {"type": "FeatureCollection", "features": feats,
            "properties": {"generator": "firespotter replay (archive)", "flights": len({d.drone_id for d in dets})}}


def write_index(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Path]:
    """Write index.json, index.html and, with telemetry, firemap.geojson + firemap.kml; return their paths."""
    written: dict[str, Path] = {}
    fc = fire_map(out, rows)
    if fc is not None:
        written["geojson"] = out / "firemap.geojson"
        _write(written["geojson"], json.dumps(finite(fc), allow_nan=False).encode())
        kml_fc = {**fc, "features": [{**f, "properties": {**f["properties"], "drones": f["properties"]["flights"]}}
                                     for f in fc["features"]]}
        written["kml"] = out / "firemap.kml"
        _write(written["kml"], kml(kml_fc, [3600.0]))
    index = {"version": INDEX_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **meta,
             "firemap": {k: p.name for k, p in written.items()} or None, "flights": rows}
    written["json"] = out / "index.json"
    _write(written["json"], (json.dumps(finite(index), indent=2, allow_nan=False) + "\n").encode())
    written["html"] = out / "index.html"
    _write(written["html"], render_html(index).encode())
    return written


def _cell(key: str, row: dict[str, Any]) -> str:
    v = row.get(key)
    if key == "flight_id" and row.get("status") in ("replayed", "skipped"):
        return f'<a href="{html.escape(row["report"], quote=True)}">{html.escape(str(v))}</a>'
    if key == "status" and row.get("error"):
        return f'<span title="{html.escape(str(row["error"]), quote=True)}">{html.escape(str(v))}</span>'
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return html.escape(str(v))


def render_html(index: dict[str, Any]) -> str:
    rows = index["flights"]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in COLUMNS)
    body = "\n".join(f'<tr class="{html.escape(str(r.get("status")))}">'
                     + "".join(f"<td>{_cell(k, r)}</td>" for k, _ in COLUMNS) + "</tr>" for r in rows)
    errors = "".join(f"<li><b>{html.escape(r['flight_id'])}</b>: {html.escape(str(r['error']))}</li>"
                     for r in rows if r.get("error"))
    fm = index.get("firemap") or {}
    maps = (f'<p>Fire map of the whole archive: <a href="{fm["geojson"]}">GeoJSON</a> · '
            f'<a href="{fm["kml"]}">KML</a></p>') if fm.get("geojson") else \
        "<p>No fire map: no flight carried telemetry (a [camera] and [telemetry] section geo-reference fires).</p>"
    totals = index.get("totals", {})
    summary = " · ".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in totals.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>firespotter archive</title>
<link rel="icon" href="data:,">
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
tr.failed td, tr.interrupted td {{ background: #fde8e8; }} tr.skipped td {{ color: #555; }}
</style></head><body>
<h1>firespotter archive</h1>
<p>{html.escape(str(index.get("out", "")))} · model {html.escape(str(index.get("model_id", "")))} · config
{html.escape(str(index.get("config_hash", ""))[:12])} · {html.escape(index["created"])}</p>
<p>{summary}</p>
{maps}
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
{f"<h2>Errors</h2><ul>{errors}</ul>" if errors else ""}
</body></html>
"""
