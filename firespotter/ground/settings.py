"""A ground station's config file (`firespotter listen -c FILE`): the same settings as the command's options,
in TOML, validated like the drone's config (unknown keys, wrong types and impossible values are named).

Options given on the command line win over the file. Secrets stay out of it: the access token comes from
FIRESPOTTER_LISTEN_TOKEN, the broker password from the variable named by `[mqtt] password_env`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firespotter.runtime.config import describe_validation_error
from firespotter.runtime.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenSettings(_Table):
    """What the ground station does (`firespotter listen` options of the same names)."""

    transport: Literal["zenoh", "mqtt"] = Field("zenoh", description="how the drones publish: zenoh or mqtt")
    station: str = Field("ground", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="this station's name (in acks)")
    geojson: Path | None = Field(None, description="write the fleet fire map (GeoJSON) here as it changes")
    window_s: float = Field(900.0, ge=1, description="fires older than this leave the map")
    connect_timeout_s: float = Field(10.0, ge=0, description="exit with status 1 if the broker or a connect peer "
                                     "is not reached within this; 0 waits for ever")
    http: str | None = Field(None, description="serve the live ground view on PORT or HOST:PORT (127.0.0.1 unless "
                             "given; any other host needs the token in FIRESPOTTER_LISTEN_TOKEN)")
    lost_after_s: float = Field(15.0, ge=0.5, description="ground view: a drone silent this long is shown LOST")
    tiles: str | None = Field(None, description="ground view background: tile URL template, XYZ folder or .mbtiles")
    tiles_attribution: str = Field("", description="credit shown for `tiles`")
    print_every_s: float = Field(5.0, ge=0.2, description="without a terminal: print the table this often")
    auth_key: Path | None = Field(None, description="this station's private key (NAME.key, NAME = station): acks "
                                  "are signed with it; needs `trust`")
    trust: list[Path] = Field(default_factory=list, description="drones' public keys (NAME.pub files or folders of "
                              "them): only messages they signed are accepted; empty = unauthenticated links")
    auth_max_age_s: float = Field(300.0, ge=1, le=86400, description="with `trust`: refuse messages signed longer "
                                  "ago than this")


class ZenohListenSettings(_Table):
    """The Zenoh session of the ground station (`transport = "zenoh"`)."""

    mode: Literal["peer", "client"] = Field("peer", description="peer, or client of a router")
    connect: list[str] = Field(default_factory=list, description="endpoints to connect to, e.g. tcp/10.8.0.1:7447")
    listen: list[str] = Field(default_factory=list, description="endpoints to listen on, e.g. tcp/0.0.0.0:7447 "
                              "(the drones' `connect`)")
    multicast: bool = Field(True, description="find peers by UDP multicast scouting")
    config_file: Path | None = Field(None, description="a Zenoh JSON5 config; the keys above override it")


class MqttListenSettings(_Table):
    """The MQTT client of the ground station (`transport = "mqtt"`)."""

    host: str = Field("127.0.0.1", description="broker host")
    port: int | None = Field(None, ge=1, le=65535, description="broker port; default 1883, 8883 with tls")
    client_id: str | None = Field(None, description="default firespotter-listen-<station>; keep it fixed so the "
                                  "broker queues QoS 1 messages while the station is away")
    clean_session: bool = Field(False, description="forget messages queued while away")
    username: str | None = Field(None, description="broker user name")
    password_env: str | None = Field(None, description="environment variable holding the broker password")
    tls: bool = Field(False, description="TLS to the broker")
    ca_certs: Path | None = Field(None, description="CA bundle for TLS; default: the system's")


class GroundConfig(_Table):
    """A ground station config: `[listen]` (required: it marks the file as a ground station's), `[zenoh]`,
    `[mqtt]`."""

    listen: ListenSettings
    zenoh: ZenohListenSettings = Field(default_factory=ZenohListenSettings)
    mqtt: MqttListenSettings = Field(default_factory=MqttListenSettings)


def is_ground_config(data: dict[str, Any]) -> bool:
    return isinstance(data.get("listen"), dict)


def parse_ground_config(data: dict[str, Any], where: str) -> GroundConfig:
    try:
        return GroundConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, where, root=GroundConfig)) from None


def load_ground_config(path: Path) -> GroundConfig:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", "pass an existing TOML file with -c")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid UTF-8 TOML file: {exc}") from None
    if not is_ground_config(data):
        raise ConfigError(f"{path}: not a ground station config (it has no [listen] table)",
                          "a drone's config runs with `firespotter run -c`")
    return parse_ground_config(data, str(path))
