"""Board temperature (Linux thermal zones: Jetson, laptops) and the frame-skip policy when it throttles."""

from __future__ import annotations

from pathlib import Path


def read_zones(root: str | Path = "/sys/class/thermal") -> dict[str, float]:
    """{zone type: °C} for every readable thermal_zone*/temp (millidegrees in the file)."""
    zones: dict[str, float] = {}
    base = Path(root)
    if not base.is_dir():
        return zones
    for zone in sorted(base.glob("thermal_zone*")):
        try:
            milli = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip() if (zone / "type").exists() else zone.name
        except (OSError, ValueError):
            continue
        zones[kind] = milli / 1000.0
    return zones


def skip_factor(max_temp_c: float | None, throttle_c: float, max_skip: int) -> int:
    """Process 1 of every N frames: 1 below the threshold, then one more skipped frame per 2 °C above it."""
    if max_temp_c is None or max_temp_c < throttle_c:
        return 1
    return min(max_skip, 2 + int((max_temp_c - throttle_c) // 2))
