"""The `tak` sink's link to a TAK server or network: TCP, TLS (client certificate) or UDP (multicast SA).

URLs follow PyTAK's COT_URL conventions: `tcp://host:8087`, `tls://host:8089`, `udp://239.2.3.1:6969`
(`+wo` accepted and implied: the sink only writes). TLS contexts come from PyTAK's `get_ssl_ctx` with its
`PYTAK_TLS_*` settings, so a certificate that works with PyTAK tools works here.

Why not PyTAK's asyncio workers: they queue in memory and drop the oldest when full; fire events must go
through the outbox (stored before sending, kept across outages and restarts). This is a plain thread: one
connect loop with backoff and a reader that notices the server hanging up (TAK streams have no per-message
acknowledgement, so a write counts as delivered once the connection outlived it; see the sink).
"""

from __future__ import annotations

import configparser
import logging
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from firespotter.runtime.errors import ConfigError, FirespotterError

log = logging.getLogger("firespotter.sinks.tak")

SCHEMES = ("tcp", "tls", "ssl", "udp")
DEFAULT_PORTS = {"tcp": 8087, "tls": 8089, "ssl": 8089, "udp": 6969}


@dataclass(frozen=True)
class CotUrl:
    scheme: str  # tcp | tls | udp
    host: str
    port: int

    @property
    def multicast(self) -> bool:
        try:
            return self.scheme == "udp" and 224 <= int(self.host.split(".")[0]) <= 239
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_url(url: str) -> CotUrl:
    """'tls://tak.example:8089' -> CotUrl; a ConfigError naming what is wrong otherwise."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower().replace("+wo", "")
    if scheme not in SCHEMES:
        raise ConfigError(f"tak url {url!r}: scheme must be one of tcp://, tls://, udp:// (got {parsed.scheme or 'none'!r})",
                          "e.g. tls://tak.example.org:8089 or udp://239.2.3.1:6969")
    if not parsed.hostname:
        raise ConfigError(f"tak url {url!r}: no host", "e.g. tcp://127.0.0.1:8087")
    try:
        port = parsed.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ConfigError(f"tak url {url!r}: {exc}") from None
    return CotUrl("tls" if scheme == "ssl" else scheme, parsed.hostname, port)


def tls_context(certfile: Path, keyfile: Path | None, cafile: Path | None, password: str | None,
                check_hostname: bool = True, where: str = "tak sink") -> ssl.SSLContext:
    """PyTAK's TLS context (client certificate required, as TAK servers require), with its errors turned into
    one line that names the file and what to do."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytak.client_functions import get_ssl_ctx

    cfg = configparser.ConfigParser()
    section = {"PYTAK_TLS_CLIENT_CERT": str(certfile)}
    if keyfile:
        section["PYTAK_TLS_CLIENT_KEY"] = str(keyfile)
    if cafile:
        section["PYTAK_TLS_CLIENT_CAFILE"] = str(cafile)
    if password:
        section["PYTAK_TLS_CLIENT_PASSWORD"] = password
    if not check_hostname:
        section["PYTAK_TLS_DONT_CHECK_HOSTNAME"] = "1"
    cfg.read_dict({"tak": section})
    for label, path in (("certfile", certfile), ("keyfile", keyfile), ("cafile", cafile)):
        if path is not None and not Path(path).is_file():
            raise FirespotterError(f"{where}: {label} {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Disabled TLS Server Common Name Verification": it is an option
            ctx = get_ssl_ctx(cfg["tak"])
    except Exception as exc:
        cause = exc.__cause__ or exc
        reason = getattr(cause, "reason", None) or str(cause).splitlines()[0] if str(cause) else cause.__class__.__name__
        raise FirespotterError(
            f"{where}: the TLS client certificate {certfile} does not load ({reason})",
            "give a PEM certificate with keyfile (or a .p12 with password_env) as your TAK server issued it") from None
    if not cafile:  # PyTAK loads only an explicit CA file: without one, trust what the system trusts
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    # A TAK server's identity is always checked (against cafile or the system's CAs).
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class CotLink:
    """One connection, reconnected with backoff by its own thread. `send` raises ConnectionError when the link
    is down (the caller keeps the message); `generation` changes on every (re)connect and every loss."""

    def __init__(self, url: CotUrl, *, ssl_ctx: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 connect_timeout_s: float = 5.0, min_backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 multicast_ttl: int = 1, multicast_interface: str | None = None, name: str = "tak",
                 on_change=None):
        if url.scheme == "tls" and ssl_ctx is None:
            raise ValueError("a tls:// link needs an SSL context")
        self.url = url
        self.ssl_ctx = ssl_ctx
        self.server_hostname = server_hostname or url.host
        self.connect_timeout_s = connect_timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.multicast_ttl = multicast_ttl
        self.multicast_interface = multicast_interface
        self.name = name
        self.on_change = on_change  # called (connected: bool) from the link thread
        self.error: str | None = None
        self.failures = 0
        self.generation = 0
        self.bytes_sent = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def start(self) -> None:
        if self.url.scheme == "udp":
            self._open_udp()
            return
        self._thread = threading.Thread(target=self._run, name=f"tak-link-{self.name}", daemon=True)
        self._thread.start()

    def _open_udp(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if self.url.multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.multicast_ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if self.multicast_interface:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.multicast_interface))
        self._sock = sock
        self.generation += 1
        self._up.set()

    def send(self, data: bytes, datagrams: list[bytes] | None = None) -> int:
        """Write `data` (a stream) or each of `datagrams` (UDP); returns the generation it was written in."""
        with self._lock:
            sock = self._sock
            if sock is None or not self._up.is_set():
                raise ConnectionError(self.error or f"not connected to {self.url}")
            try:
                if self.url.scheme == "udp":
                    for d in datagrams if datagrams is not None else [data]:
                        sock.sendto(d, (self.url.host, self.url.port))
                        self.bytes_sent += len(d)
                else:
                    sock.sendall(data)
                    self.bytes_sent += len(data)
                return self.generation
            except OSError as exc:
                if self.url.scheme == "udp":  # no connection to lose (e.g. no route yet): the caller retries
                    self.error = f"send to {self.url} failed: {exc}"
                    raise ConnectionError(self.error) from None
                self._lost(f"write to {self.url} failed: {exc}")
                raise ConnectionError(self.error) from None

    def _lost(self, why: str) -> None:
        """Caller holds the lock (or is the only user): drop the socket; the link thread reconnects."""
        if self._up.is_set():
            log.warning("tak sink %s: %s; reconnecting, fire events wait in the outbox", self.name, why)
        self.error = why
        self._up.clear()
        self.generation += 1
        if self._sock is not None and self.url.scheme != "udp":
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        if self.on_change:
            self.on_change(False)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.url.host, self.url.port), timeout=self.connect_timeout_s)
        try:
            if self.url.scheme == "tls":
                sock = self.ssl_ctx.wrap_socket(sock, server_hostname=self.server_hostname)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.settimeout(0.5)
        except BaseException:
            sock.close()
            raise
        return sock

    def _run(self) -> None:
        backoff = self.min_backoff_s
        while not self._stop.is_set():
            try:
                sock = self._connect()
            except (OSError, ssl.SSLError) as exc:
                self.failures += 1
                self.error = f"cannot connect to TAK server {self.url}: {exc}"
                if self.on_change:
                    self.on_change(False)
                if self.failures <= 3 or self.failures % 20 == 0:
                    log.error("tak sink %s: %s (attempt %d); retrying in %.1f s, fire events wait in the outbox",
                              self.name, self.error, self.failures, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            with self._lock:
                self._sock = sock
                self.generation += 1
                self.error = None
                self._up.set()
            if self.failures:
                log.warning("tak sink %s: connected to %s after %d failed attempts", self.name, self.url, self.failures)
            self.failures = 0
            backoff = self.min_backoff_s
            if self.on_change:
                self.on_change(True)
            self._read_until_closed(sock)

    def _read_until_closed(self, sock: socket.socket) -> None:
        # A TAK server sends pings and other clients' events; they are read and dropped. An empty read or an
        # error means the server went away: every write since then may be lost, so the link says so at once.
        while not self._stop.is_set():
            with self._lock:
                if self._sock is not sock:
                    return  # a failed write already dropped it
            try:
                data = sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError) as exc:
                with self._lock:
                    if self._sock is sock:
                        self._lost(f"connection to {self.url} lost: {exc}")
                return
            if not data:
                with self._lock:
                    if self._sock is sock:
                        self._lost(f"TAK server {self.url} closed the connection")
                return

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._up.clear()
            if self._sock is not None:
                try:
                    self._sock.close()
                except OSError:
                    pass
                self._sock = None
        if self._thread is not None:
            self._thread.join(2.0)
