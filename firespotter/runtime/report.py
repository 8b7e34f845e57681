"""The replay report: one self-contained HTML file (inline SVG plots, inline JPEG thumbnails, no script).

Fire area and region count over time, a per-stage latency histogram, drops, the model and precision labels,
and a strip of the frames with the most fire.
"""

from __future__ import annotations

import base64
import heapq
import html
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .overlay import draw_overlay

THUMB_WIDTH = 240


class TopFireFrames:
    """An internal sink: overlay thumbnails of the `k` frames with the largest fire fraction, spread over the
    flight (neighbouring frames look alike, so candidates closer than a minimum gap give way to later ones)."""

    needs_image = True

    def __init__(self, k: int = 6, name: str = "report"):
        self.name = name
        self.k = k
        self.capacity = 8 * k  # candidates kept while streaming; the spread-out pick happens at the end
        self._heap: list[tuple[float, int, bytes, str]] = []

    def send(self, result) -> None:
        frac = result.fire_fraction
        if frac <= 0 or (len(self._heap) >= self.capacity and frac <= self._heap[0][0]):
            return
        image = draw_overlay(result.image, result.mask, result.regions)
        h, w = image.shape[:2]
        if w > THUMB_WIDTH:
            image = cv2.resize(image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        caption = f"#{result.seq} {result.meta.get('name') or ''} fire {100 * frac:.2f}% · {len(result.regions)} regions"
        item = (frac, -result.seq, jpg.tobytes(), caption)
        if len(self._heap) < self.capacity:
            heapq.heappush(self._heap, item)
        else:
            heapq.heapreplace(self._heap, item)

    def frames(self) -> list[tuple[bytes, str]]:
        """Most fire first, each at least `gap` frames from the ones already picked."""
        ranked = sorted(self._heap, reverse=True)
        if not ranked:
            return []
        seqs = [-neg_seq for _, neg_seq, _, _ in ranked]
        gap = max(1, (max(seqs) - min(seqs)) // (2 * self.k))
        picked: list[tuple[float, int, bytes, str]] = []
        for item in ranked:
            if all(abs(item[1] - other[1]) >= gap for other in picked):
                picked.append(item)
            if len(picked) == self.k:
                break
        return [(jpg, cap) for _, _, jpg, cap in picked]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


# --- SVG ----------------------------------------------------------------------------------------------------

W, H, PAD_L, PAD_B, PAD_T, PAD_R = 640, 200, 56, 30, 14, 12


def _axes(x_max: float, y_max: float, x_label: str, y_label: str) -> list[str]:
    parts = [f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" class="axis"/>',
             f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" class="axis"/>']
    for frac in (0.0, 0.5, 1.0):
        y = H - PAD_B - frac * (H - PAD_B - PAD_T)
        parts.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">{_num(frac * y_max)}</text>')
        x = PAD_L + frac * (W - PAD_L - PAD_R)
        parts.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}" text-anchor="middle">{_num(frac * x_max)}</text>')
    parts.append(f'<text x="{(W + PAD_L) / 2:.0f}" y="{H - 2}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{(H - PAD_B + PAD_T) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(H - PAD_B + PAD_T) / 2:.0f})">{html.escape(y_label)}</text>')
    return parts


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}"
    return f"{v:.3g}"


def line_chart(xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str, css_class: str) -> str:
    if not xs:
        return '<p class="empty">no frames</p>'
    x_max = max(max(xs), 1e-9)
    y_max = max(max(ys), 1e-9)
    sx = (W - PAD_L - PAD_R) / x_max
    sy = (H - PAD_B - PAD_T) / y_max
    points = " ".join(f"{PAD_L + x * sx:.1f},{H - PAD_B - y * sy:.1f}" for x, y in zip(xs, ys))
    body = _axes(x_max, y_max, x_label, y_label)
    body.append(f'<polyline points="{points}" class="{css_class}"/>')
    return f'<svg viewBox="0 0 {W} {H}" role="img">{"".join(body)}</svg>'


def nice_ceiling(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^n that is >= v: an axis end that reaches the largest value."""
    if v <= 0:
        return 1.0
    exp = 10 ** np.floor(np.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * exp >= v * (1 - 1e-12):
            return float(m * exp)
    return float(10 * exp)


def histogram(values: Sequence[float], x_label: str, bins: int = 30) -> str:
    """Bars over [0, nice ceiling of the largest value]: every sample, the slowest included, is on the axis."""
    if len(values) == 0:
        return '<p class="empty">no samples</p>'
    a = np.asarray(values, np.float64)
    hi = nice_ceiling(float(a.max()))
    counts, edges = np.histogram(np.clip(a, 0, hi), bins=bins, range=(0, hi))
    y_max = max(int(counts.max()), 1)
    bw = (W - PAD_L - PAD_R) / bins
    sy = (H - PAD_B - PAD_T) / y_max
    body = _axes(hi, y_max, x_label, "frames")
    for i, c in enumerate(counts):
        if c:
            body.append(f'<rect x="{PAD_L + i * bw:.1f}" y="{H - PAD_B - c * sy:.1f}" width="{max(bw - 1, 1):.1f}" '
                        f'height="{c * sy:.1f}" class="bar"><title>{edges[i]:.3g}–{edges[i + 1]:.3g} ms: {c}</title></rect>')
    return f'<svg viewBox="0 0 {W} {H}" role="img">{"".join(body)}</svg>'


# --- page -----------------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
svg{width:100%;max-width:680px;height:auto;font-size:11px}
.axis{stroke:#444}.fire{fill:none;stroke:#d62;stroke-width:1.5}.regions{fill:none;stroke:#258;stroke-width:1.5}
.bar{fill:#579}.strip{display:flex;flex-wrap:wrap;gap:8px}.strip figure{margin:0}
.strip figcaption{font-size:12px}.empty{color:#888}.labels code{background:#f3f3f3;padding:1px 4px}
"""


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def flight_times(timeline: Sequence[tuple], fps: float | None) -> tuple[list[float], str]:
    """Seconds into the flight for each timeline entry: the frame's position in the recording (seq / fps) when
    the source knows its rate, else its capture time since the first frame; and the axis label saying which."""
    if fps:
        return [t[0] / fps for t in timeline], "time in the recording (s)"
    t0 = timeline[0][4] if timeline else 0
    return [(t[4] - t0) / 1e9 for t in timeline], "time since the first frame was read (s)"


def render_report(summary: dict, timeline: Sequence[tuple], stages: dict[str, Sequence[float]],
                  frames: Sequence[tuple[bytes, str]], fps: float | None = None) -> str:
    seqs, time_label = flight_times(timeline, fps)
    fire_pct = [100 * t[1] for t in timeline]
    regions = [t[2] for t in timeline]
    labels = (f"<p class='labels'>precision_exec <code>{summary.get('precision_exec')}</code> · weight_bits "
              f"<code>{summary.get('weight_bits')}</code> · simulated <code>{summary.get('simulated')}</code></p>")
    overview = _table([
        ("source", summary.get("source")), ("model", f"{summary.get('model')} ({summary.get('model_id')})"),
        ("backend", summary.get("backend")), ("mode", summary.get("mode")), ("frames", summary.get("frames")),
        ("fire frames", summary.get("fire_frames")), ("alert frames", summary.get("alert_frames")),
        ("fps", summary.get("fps")), ("wall time (s)", summary.get("wall_s")),
        ("skipped (unreadable)", summary.get("skipped", 0)), ("inference errors", summary.get("infer_errors")),
    ])
    drops = [("source queue (live)", summary.get("dropped_queue", 0)),
             ("deadline (live)", summary.get("dropped_deadline", 0))]
    for name, s in summary.get("sinks", {}).items():
        drops.append((f"sink {name}: dropped / errors", f"{s['dropped']} / {s['errors']}"))
    hists = []
    for stage, title in (("infer", "inference"), ("post", "post-processing"), ("latency", "capture → publish")):
        samples = stages.get(stage, [])
        stat = summary.get("stages_ms", {}).get(stage, {})
        hists.append(f"<h3>{title}</h3><p>median {stat.get('p50', '-')} ms · p95 {stat.get('p95', '-')} ms · "
                     f"max {stat.get('max', '-')} ms</p>{histogram(samples, 'milliseconds')}")
    strip = "".join(
        f"<figure><img alt='{html.escape(cap)}' src='data:image/jpeg;base64,{base64.b64encode(jpg).decode()}'>"
        f"<figcaption>{html.escape(cap)}</figcaption></figure>" for jpg, cap in frames
    ) or '<p class="empty">no frame had fire</p>'
    adapt = "".join(f"<h3>{html.escape(str(a.get('name')))}</h3>" + _table([(k, v) for k, v in a.items() if k != "name"])
                    for a in summary.get("adapters") or [])
    if adapt:  # only when an adapter ran: what it selected, how far it moved, how often it reset
        adapt = f"<h2>Test-time adaptation</h2>{adapt}"
    created = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>firespotter replay report</title>
<link rel="icon" href="data:,"><style>{CSS}</style></head>
<body>
<h1>firespotter replay report</h1>
<p>{html.escape(str(summary.get('source')))} · {created}</p>
{labels}
{overview}
<h2>Fire area over time</h2>
{line_chart(seqs, fire_pct, time_label, 'fire area (% of frame)', 'fire')}
<h2>Fire regions over time</h2>
{line_chart(seqs, regions, time_label, 'regions', 'regions')}
<h2>Latency per stage</h2>
{''.join(hists)}
<h2>Drops</h2>
{_table(drops)}
{adapt}
<h2>Frames with the most fire</h2>
<div class="strip">{strip}</div>
</body></html>
"""


def write_report(path: Path, summary: dict, pipeline, top: TopFireFrames | None) -> Path:
    stages = {name: list(t.samples) for name, t in pipeline.stage.items()}
    fps = (getattr(pipeline, "info", None) or {}).get("source_fps")
    text = render_report(summary, pipeline.timeline, stages, top.frames() if top else [], fps=fps)
    path.write_text(text, encoding="utf-8")
    return path
