"""`firespotter listen`: the ground-station side of the drone network (firespotter/ground/).

Subscribes to every drone (`firespotter/*/fire|state`), acknowledges each `fire` message, drops duplicates by id,
prints a live table (drone, state, fires, last seen) and keeps a fleet fire map, written as GeoJSON to
--geojson PATH whenever it changes. With --http ADDR it also serves the ground view: a live map page of the
fleet, GeoJSON/KML exports and a time slider over the last hour, fed by the same messages.

This module only reads the options and wires the parts together; the station lives in firespotter.ground.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from firespotter.ground.fleet import FleetMap
from firespotter.ground.http import GroundViewServer, check_exposure, parse_http_addr
from firespotter.ground.run import run_station
from firespotter.ground.settings import load_ground_config
from firespotter.ground.station import GroundStation
from firespotter.ground.tiles import open_tiles
from firespotter.ground.transports import MqttListener, ZenohListener
from firespotter.ground.view import GroundView
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import CommandSpec


def listen(
    transport: str = typer.Option("zenoh", "--transport", "-t", help="zenoh or mqtt."),
    geojson: Optional[Path] = typer.Option(None, "--geojson", help="Write the fleet fire map (GeoJSON) here as it changes."),
    window_s: float = typer.Option(900.0, "--window-s", min=1.0, help="Fires older than this leave the map."),
    station: str = typer.Option("ground", "--station", help="This station's name (in acks)."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.0, help="Exit after this many seconds."),
    print_every: float = typer.Option(5.0, "--print-every", min=0.2, help="Without a terminal: print the table this often."),
    mode: str = typer.Option("peer", "--mode", help="zenoh: peer or client."),
    connect: list[str] = typer.Option([], "--connect", "-e", help="zenoh: endpoint to connect to (repeat), e.g. tcp/10.8.0.1:7447."),
    listen_on: list[str] = typer.Option([], "--listen", "-l", help="zenoh: endpoint to listen on (repeat)."),
    no_multicast: bool = typer.Option(False, "--no-multicast", help="zenoh: no multicast scouting."),
    zenoh_config: Optional[Path] = typer.Option(None, "--zenoh-config", help="zenoh: a JSON5 config file."),
    host: str = typer.Option("127.0.0.1", "--host", help="mqtt: broker host."),
    port: Optional[int] = typer.Option(None, "--port", help="mqtt: broker port (1883, 8883 with --tls)."),
    client_id: Optional[str] = typer.Option(None, "--client-id", help="mqtt: default firespotter-listen-<station>."),
    clean_session: bool = typer.Option(False, "--clean-session", help="mqtt: forget messages queued while away."),
    username: Optional[str] = typer.Option(None, "--username", help="mqtt: user name."),
    password_env: Optional[str] = typer.Option(None, "--password-env", help="mqtt: environment variable with the password."),
    tls: bool = typer.Option(False, "--tls", help="mqtt: TLS."),
    ca_certs: Optional[Path] = typer.Option(None, "--ca-certs", help="mqtt: CA bundle for TLS."),
    http: Optional[str] = typer.Option(
        None, "--http", metavar="ADDR",
        help="Serve the live ground view (map page, exports) on ADDR: PORT or HOST:PORT, host 127.0.0.1 unless "
             "given. Any other host needs --token."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="FIRESPOTTER_LISTEN_TOKEN", show_envvar=True,
        help="Access token for --http (open http://HOST:PORT/?token=...); prefer the environment variable: "
             "a command line is visible to every user of the machine."),
    lost_after_s: float = typer.Option(15.0, "--lost-after-s", min=0.5,
                                       help="--http: a drone silent this long is shown as LOST."),
    tiles: Optional[str] = typer.Option(
        None, "--tiles", metavar="URL|DIR|FILE.mbtiles",
        help="--http: map background: a tile URL template (https://.../{z}/{x}/{y}.png), a local XYZ folder "
             "(DIR/{z}/{x}/{y}.png) or a raster .mbtiles file. Default: a plain metric grid (offline)."),
    tiles_attribution: str = typer.Option("", "--tiles-attribution", help="--http: credit shown for --tiles."),
    auth_key: Optional[Path] = typer.Option(
        None, "--auth-key", help="This station's private key (NAME.key, NAME = --station; `firespotter keys new "
                                 "NAME`): acks are signed with it. Needs --trust."),
    trust: list[Path] = typer.Option(
        [], "--trust", help="Drones' public keys (NAME.pub files or a folder of them; repeat): only messages they "
                            "signed are accepted. Without it, links are unauthenticated."),
    auth_max_age_s: float = typer.Option(300.0, "--auth-max-age-s", min=1.0, max=86400.0,
                                         help="With --trust: refuse messages signed longer ago than this."),
    connect_timeout: float = typer.Option(
        10.0, "--connect-timeout", min=0.0,
        help="Exit with status 1 if the broker (mqtt) or a --connect peer (zenoh) is not reached within this many "
             "seconds; 0 waits for ever. A link lost later is reported and retried, never fatal."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c",
        help="A ground station config (TOML with [listen], [zenoh], [mqtt]; deploy/configs/ground-laptop.toml). "
             "Options given on the command line win over it."),
    ctx: typer.Context = None,
) -> None:
    """Ground station: subscribe to every drone, acknowledge fire messages, show a live table, keep a fleet fire map."""
    if isinstance(config, (str, Path)):  # (a direct call from Python passes typer's OptionInfo defaults)
        values = from_config(load_ground_config(Path(config)), ctx)
        transport, geojson, window_s, station = values["transport"], values["geojson"], values["window_s"], values["station"]
        print_every, mode, connect, listen_on = values["print_every"], values["mode"], values["connect"], values["listen_on"]
        no_multicast, zenoh_config, host, port = values["no_multicast"], values["zenoh_config"], values["host"], values["port"]
        client_id, clean_session, username = values["client_id"], values["clean_session"], values["username"]
        password_env, tls, ca_certs, http = values["password_env"], values["tls"], values["ca_certs"], values["http"]
        lost_after_s, tiles, tiles_attribution = values["lost_after_s"], values["tiles"], values["tiles_attribution"]
        connect_timeout, auth_key, trust = values["connect_timeout"], values["auth_key"], values["trust"]
        auth_max_age_s = values["auth_max_age_s"]
    if transport not in ("zenoh", "mqtt"):
        raise FirespotterError(f"--transport {transport!r}: expected zenoh or mqtt")
    if mode not in ("peer", "client"):
        raise FirespotterError(f"--mode {mode!r}: expected peer or client")
    try:
        if transport == "zenoh":
            import zenoh  # noqa: F401
        else:
            import paho.mqtt.client  # noqa: F401
    except ImportError as exc:
        extra = "zenoh" if transport == "zenoh" else "mqtt"
        raise FirespotterError(f"listen --transport {transport}: {exc}", f"pip install 'firespotter[{extra}]'") from None
    try:
        import shapely  # noqa: F401  (the fleet map's union)
    except ImportError as exc:
        raise FirespotterError(f"listen: the fleet map needs shapely 2 ({exc})", "pip install 'firespotter[ground]'") from None
    password = None
    if password_env:
        if password_env not in os.environ:
            raise FirespotterError(f"--password-env {password_env}: not set in the environment")
        password = os.environ[password_env]
    view_server = None
    if http is None:
        if tiles:
            raise FirespotterError("--tiles: only with --http (it is the ground view's map background)")
    else:
        http_host, http_port = parse_http_addr(http)
        check_exposure(http_host, token)
        tile_source = open_tiles(tiles, tiles_attribution) if tiles else None
    verifier, signer = _keys(auth_key, trust, station, auth_max_age_s)
    gs = GroundStation(station, FleetMap(window_s=window_s), verifier=verifier, signer=signer).start()
    if http is not None:  # bound before the broker connection: a port in use fails fast
        view_server = GroundViewServer(
            GroundView(gs, station=station, window_s=window_s, lost_after_s=lost_after_s, tiles=tile_source),
            http_host, http_port, token=token or None)
        view_server.start()
    try:
        if transport == "zenoh":
            conn: Any = ZenohListener(gs, mode, list(connect), list(listen_on), not no_multicast, zenoh_config)
            where = f"zenoh {mode}" + (f", connect {', '.join(connect)}" if connect else "") + (
                f", listen {', '.join(listen_on)}" if listen_on else "")
        else:
            p = port or (8883 if tls else 1883)
            conn = MqttListener(gs, host, p, client_id or f"firespotter-listen-{station}", username, password, tls,
                                 ca_certs, clean_session)
            where = f"mqtt broker {host}:{p}"
    except BaseException:
        if view_server is not None:
            view_server.close()
        raise
    gs.set_link(gs.link["connected"], gs.link["error"], where=where)
    typer.echo(f"connecting to {where}" + (f"; fleet map -> {geojson}" if geojson else ""), err=True)
    if view_server is not None:
        typer.echo(f"ground view on {view_server.url}" + (" (needs the access token: ?token=...)" if token else ""),
                   err=True)
    run_station(gs, conn, where, geojson=geojson, duration=duration, print_every=print_every, view_server=view_server,
                connect_timeout_s=connect_timeout or None)


# option name -> (table, key) in a ground station config; `no_multicast` is the file's `multicast` negated
FROM_FILE = {
    "transport": ("listen", "transport"), "geojson": ("listen", "geojson"), "window_s": ("listen", "window_s"),
    "station": ("listen", "station"), "print_every": ("listen", "print_every_s"), "http": ("listen", "http"),
    "lost_after_s": ("listen", "lost_after_s"), "tiles": ("listen", "tiles"),
    "tiles_attribution": ("listen", "tiles_attribution"), "connect_timeout": ("listen", "connect_timeout_s"),
    "mode": ("zenoh", "mode"), "connect": ("zenoh", "connect"), "listen_on": ("zenoh", "listen"),
    "no_multicast": ("zenoh", "multicast"), "zenoh_config": ("zenoh", "config_file"),
    "host": ("mqtt", "host"), "port": ("mqtt", "port"), "client_id": ("mqtt", "client_id"),
    "clean_session": ("mqtt", "clean_session"), "username": ("mqtt", "username"),
    "password_env": ("mqtt", "password_env"), "tls": ("mqtt", "tls"), "ca_certs": ("mqtt", "ca_certs"),
    "auth_key": ("listen", "auth_key"), "trust": ("listen", "trust"), "auth_max_age_s": ("listen", "auth_max_age_s"),
}


def from_config(cfg, ctx) -> dict[str, Any]:
    """Every option's value: the command line's where given there, else the file's."""
    out = {}
    for option, (table, key) in FROM_FILE.items():
        source = ctx.get_parameter_source(option) if ctx is not None else None
        # COMMANDLINE or ENVIRONMENT: given; DEFAULT (or unknown): the file's (typer vendors click: compare names)
        given = source is not None and getattr(source, "name", "") not in ("DEFAULT", "DEFAULT_MAP")
        if given:
            out[option] = ctx.params[option]
        else:
            value = getattr(getattr(cfg, table), key)
            out[option] = (not value) if option == "no_multicast" else value
    return out


def _keys(auth_key: Path | None, trust: list[Path], station: str, max_age_s: float):
    from firespotter.net import auth, wire

    if auth_key is not None and not trust:
        raise FirespotterError("--auth-key without --trust: drone messages would still be unauthenticated",
                               "pass --trust with the drones' NAME.pub files (docs/security.md)")
    try:
        verifier = auth.Verifier(auth.load_public_keys(trust), max_age_s=max_age_s) if trust else None
        signer = auth.Signer.from_file(auth_key) if auth_key is not None else None
    except wire.WireError as exc:
        raise FirespotterError(f"listen: {exc}", "make keys with `firespotter keys new NAME`") from None
    if signer is not None and signer.name != station:
        raise FirespotterError(f"--auth-key {auth_key}: the key of {signer.name!r}, but --station is {station!r}",
                               f"pass --station {signer.name} (drones trust the station key by its name)")
    if verifier is None:
        typer.echo("listen: no --trust keys: drone messages and acks are unauthenticated (docs/security.md)", err=True)
    elif signer is None:
        typer.echo("listen: no --auth-key: acks are unsigned; drones with trusted_keys will ignore them", err=True)
    return verifier, signer


@hookimpl
def register_commands():
    return [CommandSpec("listen", listen, help="Ground station: receive, acknowledge and map every drone's fires.")]
