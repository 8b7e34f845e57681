"""Availability: is a drone's firespotter up, Home Assistant style (docs/wire-format.md, "Availability").

MQTT: a retained `online` on `firespotter/<drone_id>/availability` once connected, and `offline` as the
connection's last will (the broker publishes it the moment the drone's connection dies: a SIGKILL, a crash, or
keepalive × 1.5 without a packet) and at a clean shutdown. Zenoh: a liveliness token on the same key, which every
subscriber sees go away when the drone's session does. The listener marks a drone LOST at once on `offline`
instead of waiting for `--lost-after-s` of silence.
"""

from __future__ import annotations

import re

from .schema import WireError

KIND = "availability"
ONLINE = b"online"
OFFLINE = b"offline"
_DRONE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PREFIX = "firespotter"


def topic(drone_id: str) -> str:
    if not _DRONE_ID.match(drone_id):
        raise ValueError(f"drone id {drone_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return f"{PREFIX}/{drone_id}/{KIND}"


def drone_of(name: str) -> str | None:
    """'firespotter/uav-1/availability' -> 'uav-1'; None for any other topic."""
    parts = str(name).split("/")
    if len(parts) == 3 and parts[0] == PREFIX and parts[2] == KIND and _DRONE_ID.match(parts[1]):
        return parts[1]
    return None


def parse(name: str, payload: bytes | bytearray | memoryview | str) -> tuple[str, bool]:
    """(drone, online) from an availability message; WireError for anything else."""
    drone = drone_of(name)
    if drone is None:
        raise WireError(f"not an availability topic: {str(name)[:100]!r}")
    raw = payload.encode() if isinstance(payload, str) else bytes(payload[:16])
    value = raw.strip()
    if value not in (ONLINE, OFFLINE):
        raise WireError(f"{name}: availability must be 'online' or 'offline', got {raw[:16]!r}")
    return drone, value == ONLINE
