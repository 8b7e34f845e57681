"""The ground view's HTTP side (`firespotter listen --http ADDR`): one page (static/index.html + app.js, Leaflet
vendored beside it, no build step), Server-Sent Events, the fire map's GeoJSON/KML exports and local tiles.

Served by the standard library (ThreadingHTTPServer): bound to 127.0.0.1 unless told otherwise; any other
address needs an access token (query `?token=`, then a cookie; or `Authorization: Bearer`). Without a token the
Host header must be a loopback name (DNS rebinding).
"""

from __future__ import annotations

import hmac
import http.cookies
import ipaddress
import logging
import math
import queue
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from firespotter.runtime.errors import FirespotterError

from .events import sse
from .export import to_json
from .tiles import EMPTY_TILE

if TYPE_CHECKING:  # annotations only: the server serves whatever view it is given
    from .view import GroundView

log = logging.getLogger("firespotter.groundview")

STATIC = Path(__file__).with_name("static")
TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{16,256}")
COOKIE = "firespotter_gv"
COOKIE_MAX_AGE_S = 12 * 3600  # one shift: the browser forgets the token after it
REQUEST_TIMEOUT_S = 15.0  # a connection silent this long (half-sent request, stuck reader) is closed
MAX_CONNECTIONS = 64  # at once; more are refused at once rather than each holding a thread
_SECRET = re.compile(r"(token=|[Bb]earer\s+|firespotter_gv=)[^\s&;\"']+")


def redact(text: str) -> str:
    """Every access token out of a log line (query, Authorization header, cookie)."""
    return _SECRET.sub(lambda m: m.group(1) + "[redacted]", text)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def parse_http_addr(addr: str) -> tuple[str, int]:
    """--http: "PORT", "HOST:PORT" or "[V6]:PORT" -> (host, port); the host defaults to 127.0.0.1."""
    a = addr.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", a) or re.fullmatch(r"([^:\s]*):(\d+)", a) or re.fullmatch(r"()(\d+)", a)
    if not m:
        raise FirespotterError(f"--http {addr!r}: expected PORT or HOST:PORT", "e.g. --http 8765 or --http 127.0.0.1:8765")
    host, port = m.group(1) or "127.0.0.1", int(m.group(2))
    if not 0 <= port <= 65535:
        raise FirespotterError(f"--http {addr!r}: port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Anything wider than loopback serves the fleet's positions and fires to the network: it needs a token."""
    if token:
        if not TOKEN_RE.fullmatch(token):
            raise FirespotterError("--token: expected 16-256 characters of A-Z a-z 0-9 . _ ~ - (at least 16: a "
                                   "short token can be guessed)",
                                   "e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")
        return
    if not is_loopback(host):
        raise FirespotterError(f"--http {host}: serving beyond this machine needs an access token",
                               "set FIRESPOTTER_LISTEN_TOKEN (or --token), or bind 127.0.0.1 and use an SSH tunnel")



_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".png": "image/png", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
          "": "text/plain; charset=utf-8"}
_UNAUTHORIZED = (b"<!doctype html><meta charset=utf-8><title>firespotter ground view</title>"
                 b"<p>This ground station needs its access token: open <code>/?token=...</code>.</p>")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    gv: "GroundViewServer"
    slots: threading.BoundedSemaphore
    refused = 0

    def process_request(self, request, client_address):
        # A connection cap: past it, a connection is closed at once instead of holding one more thread.
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            if self.refused <= 3 or self.refused % 100 == 0:
                log.warning("ground view: %d connections open; refused one from %s (%d refused so far)",
                            MAX_CONNECTIONS, client_address[0], self.refused)
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "firespotter-groundview"
    sys_version = ""
    server: _HTTPServer
    timeout = REQUEST_TIMEOUT_S  # the socket's timeout for every read and write of this connection

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("%s %s", self.address_string(), redact(format % args))

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        except Exception as exc:
            log.warning("ground view: %s: %s: %s", redact(self.path[:200]), exc.__class__.__name__, redact(str(exc)))
            try:
                self._send(500, b"internal error\n", "text/plain; charset=utf-8")
            except OSError:
                pass

    # -- plumbing

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, to_json(obj), "application/json", {"Cache-Control": "no-store"})

    def _token(self, q: dict[str, list[str]]) -> str | None:
        if q.get("token"):
            return q["token"][0]
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        raw = self.headers.get("Cookie")
        if raw:
            try:
                c = http.cookies.SimpleCookie(raw)
            except http.cookies.CookieError:
                return None
            if COOKIE in c:
                return c[COOKIE].value
        return None

    def _host_ok(self, gv: "GroundViewServer") -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        m = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(:\d+)?", host)
        name = m.group(1) if m else host
        return name in LOOPBACK_NAMES or name == gv.host.lower() or name == f"[{gv.host.lower()}]"

    def _t(self, q: dict[str, list[str]], view: GroundView) -> float | None:
        raw = (q.get("t") or [""])[0]
        if raw in ("", "live", "now"):
            return None
        try:
            t = float(raw)
        except ValueError:
            raise _BadRequest(f"t={raw[:40]!r}: expected UNIX seconds or 'live'") from None
        if not math.isfinite(t):
            raise _BadRequest("t: not a number")
        now = view.clock()
        return min(max(t, now - view.history_s), now)

    # -- routes

    def _route(self) -> None:
        gv: GroundViewServer = self.server.gv
        view = gv.view
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        path = url.path
        if path == "/healthz":
            return self._send(200, b"ok\n", "text/plain; charset=utf-8")
        if gv.token is None and not self._host_ok(gv):
            return self._send(403, b"unexpected Host header\n", "text/plain; charset=utf-8")
        if gv.token is not None:
            tok = self._token(q)
            if not tok or not hmac.compare_digest(tok.encode(), gv.token.encode()):
                return self._send(401, _UNAUTHORIZED, "text/html; charset=utf-8", {"WWW-Authenticate": "Bearer"})
            if q.get("token") and path in ("/", "/index.html"):  # into a cookie, out of the address bar
                return self._send(303, b"", "text/plain", {
                    "Location": "./",
                    "Set-Cookie": f"{COOKIE}={gv.token}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict"})
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html", page=True)
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/events":
                return self._events(gv)
            if path == "/api/state":
                return self._json(view.snapshot())
            if path == "/api/fires":
                t = self._t(q, view)
                return self._json(view.fires_at(view.clock() if t is None else t, live=t is None))
            if path in ("/export/firemap.geojson", "/export/firemap.kml"):
                t = self._t(q, view)
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(view.clock() if t is None else t))
                if path.endswith(".kml"):
                    body, ctype, ext = view.firemap_kml(t), "application/vnd.google-earth.kml+xml", "kml"
                else:
                    body, ctype, ext = to_json(view.firemap(t)), "application/geo+json", "geojson"
                return self._send(200, body, ctype, {"Cache-Control": "no-store", "Content-Disposition":
                                                     f'attachment; filename="firemap-{view.station}-{stamp}.{ext}"'})
            m = re.fullmatch(r"/tiles/(\d{1,2})/(\d{1,9})/(\d{1,9})(?:\.\w+)?", path)
            if m and view.tiles is not None and view.tiles.kind != "url":
                tile = view.tiles.get(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                body, ctype = tile if tile else (EMPTY_TILE, "image/png")
                return self._send(200, body, ctype, {"Cache-Control": "max-age=3600"})
        except _BadRequest as exc:
            return self._send(400, f"{exc}\n".encode(), "text/plain; charset=utf-8")
        return self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _static(self, rel: str, page: bool = False) -> None:
        root = STATIC.resolve()
        f = (root / rel).resolve()
        if root not in f.parents or not f.is_file():
            return self._send(404, b"not found\n", "text/plain; charset=utf-8")
        headers = {"Cache-Control": "no-cache"}
        if page:
            headers["Content-Security-Policy"] = self.server.gv.csp
            headers["X-Frame-Options"] = "DENY"
        self._send(200, f.read_bytes(), _TYPES.get(f.suffix.lower(), "application/octet-stream"), headers)

    def _events(self, gv: "GroundViewServer") -> None:
        client = gv.view.bus.subscribe()
        if client is None:
            return self._send(503, b"too many pages open\n", "text/plain; charset=utf-8", {"Retry-After": "5"})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.wfile.write(b"retry: 2000\n\n" + sse("snapshot", gv.view.snapshot()))  # after subscribing: no gap
            last = time.monotonic()
            while not gv.stopping.is_set() and not client.evicted:
                try:
                    item = client.take(timeout=0.5)
                except queue.Empty:
                    if time.monotonic() - last > 15.0:
                        self.wfile.write(b": keepalive\n\n")
                        last = time.monotonic()
                    continue
                self.wfile.write(item)
                last = time.monotonic()
        finally:
            gv.view.bus.unsubscribe(client)
            self.close_connection = True


class _BadRequest(Exception):
    pass


class GroundViewServer:
    """The HTTP side: binds at construction (a clear error for a port in use), serves on start()."""

    def __init__(self, view: GroundView, host: str = "127.0.0.1", port: int = 8765, token: str | None = None):
        self.view = view
        self.host = host
        self.token = token or None
        check_exposure(host, self.token)
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        try:
            self.httpd = cls((host, port), _Handler)
        except OSError as exc:
            raise FirespotterError(f"--http {host}:{port}: cannot listen ({exc.strerror or exc})",
                                   "another program uses the port? pick another with --http PORT") from None
        self.httpd.gv = self
        self.httpd.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.port = int(self.httpd.server_address[1])
        self.stopping = threading.Event()
        img = "'self' data:" + (f" {view.tiles.csp_origin}" if view.tiles and view.tiles.csp_origin else "")
        self.csp = (f"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src {img}; "
                    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "GroundViewServer":
        self._threads = [threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.25},
                                          name="groundview-http", daemon=True),
                         threading.Thread(target=self._ticker, name="groundview-tick", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _ticker(self) -> None:
        last_prune = time.monotonic()
        while not self.stopping.wait(0.5):
            try:
                self.view.tick()
                if time.monotonic() - last_prune > 10.0:
                    self.view.prune()
                    last_prune = time.monotonic()
            except Exception as exc:  # never let the page go stale over one bad state
                log.warning("ground view tick: %s: %s", exc.__class__.__name__, exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stopping.set()
        if self._threads:  # shutdown() waits for serve_forever: only when it runs
            try:
                self.httpd.shutdown()
            except Exception as exc:
                log.debug("shutdown: %s", exc)
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=3.0)
        if self.view.tiles is not None:
            self.view.tiles.close()
