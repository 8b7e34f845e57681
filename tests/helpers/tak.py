"""TAK receivers for the tak sink's tests: a TCP (optionally TLS) server and a UDP (unicast or multicast) socket
on 127.0.0.1 that parse every CoT event twice, with takproto (XML -> TAK protocol protobuf -> TakMessage, as a
TAK client's mesh would carry it) and with ElementTree for the shape vertices TAK keeps as xmlDetail."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import takproto


@dataclass
class Event:
    type: str
    uid: str
    how: str
    lat: float
    lon: float
    time_ms: int
    start_ms: int
    stale_ms: int
    callsign: str
    links: list[tuple[float, float]] = field(default_factory=list)  # (lat, lon) vertices
    link_uids: list[str] = field(default_factory=list)
    fs: dict = field(default_factory=dict)  # our <_firespotter> detail
    xml: bytes = b""


def _ms(iso: str) -> int:
    t = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)  # as takproto reads it: truncated to the millisecond


def parse_mesh(data: bytes) -> Event:
    """A TAK Protocol Version 1 mesh datagram (protobuf): vertices and our detail come from its xmlDetail."""
    assert data[:3] == b"\xbf\x01\xbf", data[:8]
    msg = takproto.parse_proto(bytearray(data))
    ev = msg.cotEvent
    detail = ET.fromstring(f"<detail>{ev.detail.xmlDetail}</detail>")
    links = [tuple(float(v) for v in link.get("point").split(",")) for link in detail.iter("link") if link.get("point")]
    fs = detail.find("_firespotter")
    return Event(ev.type, ev.uid, ev.how, ev.lat, ev.lon, ev.sendTime, ev.startTime, ev.staleTime,
                 ev.detail.contact.callsign, links, [link.get("uid") for link in detail.iter("link") if link.get("uid")],
                 dict(fs.attrib) if fs is not None else {}, data)


def parse_event(xml: bytes) -> Event:
    if xml[:1] == b"\xbf":
        return parse_mesh(xml)
    msg = takproto.parse_proto(takproto.xml2proto(xml.decode("utf-8")))
    if msg is None:
        raise ValueError(f"takproto could not parse {xml[:200]!r}")
    ev = msg.cotEvent
    root = ET.fromstring(xml)
    assert root.tag == "event" and root.get("version") == "2.0", xml[:200]
    # both parsers agree on what they both read
    assert (root.get("type"), root.get("uid")) == (ev.type, ev.uid)
    assert ev.startTime == _ms(root.get("start")) and ev.staleTime == _ms(root.get("stale"))
    links = [tuple(float(v) for v in link.get("point").split(",")) for link in root.iter("link") if link.get("point")]
    link_uids = [link.get("uid") for link in root.iter("link") if link.get("uid")]
    fs = root.find("detail/_firespotter")
    return Event(ev.type, ev.uid, ev.how, ev.lat, ev.lon, ev.sendTime, ev.startTime, ev.staleTime,
                 ev.detail.contact.callsign, links, link_uids, dict(fs.attrib) if fs is not None else {}, xml)


class _Collector:
    def __init__(self):
        self.events: list[Event] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def feed_one(self, xml: bytes) -> None:
        try:
            e = parse_event(xml)
        except Exception as exc:  # recorded: the test fails on any unparsable event
            with self.lock:
                self.errors.append(f"{exc.__class__.__name__}: {exc} in {xml[:300]!r}")
            return
        with self.lock:
            self.events.append(e)

    def of_type(self, cot_type: str) -> list[Event]:
        with self.lock:
            return [e for e in self.events if e.type == cot_type]


class TcpReceiver(_Collector):
    """A TAK-server-like endpoint: accepts connections, reads a stream of CoT events, splits at </event>."""

    def __init__(self, port: int = 0, ssl_ctx: ssl.SSLContext | None = None):
        super().__init__()
        self.ssl_ctx = ssl_ctx
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.peer_certs: list[dict] = []
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.srv.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except (socket.timeout, OSError):
                continue
            if self.ssl_ctx is not None:
                try:
                    conn.settimeout(5)
                    conn = self.ssl_ctx.wrap_socket(conn, server_side=True)
                    self.peer_certs.append(conn.getpeercert())
                except (ssl.SSLError, OSError) as exc:
                    with self.lock:
                        self.errors.append(f"TLS handshake: {exc}")
                    conn.close()
                    continue
            self.connections += 1
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        buf = b""
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"</event>" in buf:
                one, buf = buf.split(b"</event>", 1)
                self.feed_one(one.strip() + b"</event>")

    def drop_clients(self):
        """The server hangs up on everyone (a restart): the sink must notice and reconnect."""
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns.clear()

    def close(self):
        self._stop.set()
        self.drop_clients()
        self.srv.close()


class UdpReceiver(_Collector):
    """One datagram = one event. group: join that multicast group on the loopback interface."""

    def __init__(self, group: str | None = None):
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if group:
            self.sock.bind(("", 0))
            mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1"))
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                continue
            self.feed_one(data if data[:1] == b"\xbf" else data.strip())

    def close(self):
        self._stop.set()
        self.sock.close()


def make_pki(root: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (as a TAK server issues
    them), written as PEM files under root."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = dt.datetime.now(dt.timezone.utc)
    root.mkdir(parents=True, exist_ok=True)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject_key, cn, issuer_key, issuer_name, *, ca=False, san=None, usage=None):
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer_name)
             .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(path, obj):
        if hasattr(obj, "private_bytes"):
            data = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        else:
            data = obj.public_bytes(serialization.Encoding.PEM)
        path.write_bytes(data)
        return path

    ca_key = key()
    ca = cert(ca_key, "firespotter test CA", ca_key, name("firespotter test CA"), ca=True)
    srv_key, cli_key = key(), key()
    srv = cert(srv_key, "localhost", ca_key, ca.subject,
               san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
               usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    cli = cert(cli_key, "uav-01", ca_key, ca.subject, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    return {"ca": write(root / "ca.pem", ca), "server_cert": write(root / "server.pem", srv),
            "server_key": write(root / "server.key", srv_key), "client_cert": write(root / "client.pem", cli),
            "client_key": write(root / "client.key", cli_key)}


def server_context(pki: dict[str, Path]) -> ssl.SSLContext:
    """A TAK server's TLS: its own certificate, client certificates required and checked against the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["server_cert"], pki["server_key"])
    ctx.load_verify_locations(pki["ca"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
