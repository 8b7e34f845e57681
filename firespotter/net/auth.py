"""Message authentication for wire v1 (docs/security.md): Ed25519 signatures, one key pair per drone and per
ground station.

Why Ed25519 rather than per-drone HMAC secrets: a ground station then holds only the drones' *public* keys, so a
compromised station (or a copy of its key folder) cannot forge messages of any drone; a drone holds its own
private key and the stations' public keys, so it can check acks without being able to forge another drone's
messages. With HMAC every verifier would hold the same secret as the signer. Costs measured here: about 0.07 ms
to sign and 0.12 ms to verify a 16 kB message.

The signature travels inside the message as its last member, `"auth": {"key", "t_ns", "sig"}`:

    {...message...,"auth":{"key":"uav-01","t_ns":1795865456066829908,"sig":"<base64, 64 bytes>"}}

and covers the exact bytes before the signature's value (the message, the key name and the signing time), with a
domain prefix. No re-encoding is needed to check it, so the same bytes verify in any language. `t_ns` is the
signing time (UTC ns, strictly increasing per signer): a receiver refuses a message signed more than `max_age_s`
ago or more than `max_future_s` ahead (stale), and one whose signature it already saw (replay). A resend from the
outbox is signed again (new `t_ns`), keeping its id, so receivers still drop it as a duplicate by id.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

from .schema import WireError

DOMAIN = b"firespotter-wire-v1\x00"
KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# The message's tail: the auth object, last member; nothing may follow it.
_TAIL = re.compile(rb',"auth":\{"key":"([A-Za-z0-9_.-]{1,64})","t_ns":([0-9]{1,20}),"sig":"([A-Za-z0-9+/]{86}==)"\}\}\Z')
_TAIL_MAX = 256  # the longest tail: a 64-character key name, 20 digits of t_ns (209 bytes)
MAX_KEY_FILE = 4096

# Rejection reasons, as counted in metrics and shown in the ground view.
REASONS = ("unsigned", "unknown_key", "wrong_key", "bad_signature", "stale", "replay")


class AuthError(WireError):
    """A message that fails authentication; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise WireError(f"message authentication needs the 'cryptography' package ({exc})",
                        ) from None
    return serialization, ed25519


# --- key files ------------------------------------------------------------------------------------------


def new_key_pair(name: str, folder: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write NAME.key (private, PKCS#8 PEM, mode 0600) and NAME.pub (public, PEM) into folder."""
    serialization, ed25519 = _crypto()
    if not KEY_NAME.match(name):
        raise WireError(f"key name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . - (the drone id)")
    folder.mkdir(parents=True, exist_ok=True)
    priv, pub = folder / f"{name}.key", folder / f"{name}.pub"
    for p in (priv, pub):
        if p.exists() and not force:
            raise WireError(f"{p} exists; refusing to overwrite a key (pass --force to replace it)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = priv.with_name(priv.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, priv)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _read_small(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise WireError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_KEY_FILE:
        raise WireError(f"{what} {path}: larger than {MAX_KEY_FILE} bytes; not a key file")
    return data


def load_private_key(path: str | os.PathLike):
    """A NAME.key file -> (name, private key). Refuses a key readable by other users."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_small(path, "private key")
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WireError(f"private key {path}: readable by other users (mode {oct(mode & 0o777)})",
                        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise WireError(f"private key {path}: not a PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise WireError(f"private key {path}: not an Ed25519 key (make one with `firespotter keys new NAME`)")
    name = path.name[: -len(".key")] if path.name.endswith(".key") else path.stem
    if not KEY_NAME.match(name):
        raise WireError(f"private key {path}: the file name must be NAME.key, NAME the drone id or station name")
    return name, key


def load_public_keys(paths: Iterable[str | os.PathLike]) -> dict:
    """NAME.pub files, or folders of them -> {name: public key}. The name is the drone id (or station name)."""
    serialization, ed25519 = _crypto()
    out = {}
    for p in paths:
        p = Path(p)
        files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
        if p.is_dir() and not files:
            raise WireError(f"trusted keys {p}: no NAME.pub files in this folder")
        for f in files:
            name = f.name[: -len(".pub")] if f.name.endswith(".pub") else f.stem
            if not KEY_NAME.match(name):
                raise WireError(f"public key {f}: the file name must be NAME.pub, NAME the drone id or station name")
            try:
                key = serialization.load_pem_public_key(_read_small(f, "public key"))
            except ValueError as exc:
                raise WireError(f"public key {f}: not a PEM public key ({exc})") from None
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise WireError(f"public key {f}: not an Ed25519 key")
            out[name] = key
    return out


# --- signing --------------------------------------------------------------------------------------------


class Signer:
    """Signs encoded messages with one private key; thread-safe (the signing time is strictly increasing)."""

    def __init__(self, name: str, key):
        self.name = name
        self.key = key
        self._last = 0
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Signer":
        return cls(*load_private_key(path))

    def sign(self, payload: bytes) -> bytes:
        """An encoded message (`wire.dumps`) -> the same message with its `auth` member appended."""
        payload = bytes(payload)
        if not payload.endswith(b"}") or b'"auth":' in payload[-_TAIL_MAX:]:
            raise WireError("sign: expected one encoded, unsigned message")
        with self._lock:
            t = max(self._last + 1, time.time_ns())
            self._last = t
        head = payload[:-1] + b',"auth":{"key":"' + self.name.encode() + b'","t_ns":' + str(t).encode() + b',"sig":"'
        sig = self.key.sign(DOMAIN + head)
        return head + base64.b64encode(sig) + b'"}}'


def split_auth(payload: bytes) -> tuple[str, int, bytes, bytes] | None:
    """-> (key name, t_ns, signed bytes, signature), or None for a message without an auth tail."""
    tail = payload[-_TAIL_MAX:]
    m = _TAIL.search(tail)
    if m is None:
        return None
    cut = len(payload) - len(tail) + m.start(3)
    return m.group(1).decode(), int(m.group(2)), payload[:cut], base64.b64decode(m.group(3))


class Verifier:
    """Checks the signature, freshness and uniqueness of messages from the holders of `keys`."""

    def __init__(self, keys: dict, *, max_age_s: float = 300.0, max_future_s: float = 30.0,
                 max_remembered: int = 20_000, clock=time.time_ns):
        self.keys = dict(keys)
        self.max_age_ns = int(max_age_s * 1e9)
        self.max_future_ns = int(max_future_s * 1e9)
        self.max_remembered = max_remembered
        self.clock = clock
        self._seen: dict[str, OrderedDict[bytes, int]] = {}
        self._lock = threading.Lock()
        self.rejected = {r: 0 for r in REASONS}

    def check(self, payload: bytes, expect_key: str | None = None) -> str:
        """Raise AuthError (counted) unless `payload` is signed by a known key (`expect_key` when given), fresh,
        and not seen before. Returns the key name."""
        name, replayed = self.check_fresh(payload, expect_key)
        if replayed:
            raise self.reject("replay", f"a message signed by {name!r} was already received")
        return name

    def check_fresh(self, payload: bytes, expect_key: str | None = None) -> tuple[str, bool]:
        """As check(), but an exact replay is returned (name, True) instead of refused: a receiver that drops
        duplicates by message id (fire messages) acknowledges it again rather than counting an attack."""
        try:
            return self._check(bytes(payload), expect_key)
        except AuthError as exc:
            with self._lock:
                self.rejected[exc.reason] += 1
            raise

    def reject(self, reason: str, detail: str) -> AuthError:
        """Count a rejection decided by the caller and return the error to raise."""
        with self._lock:
            self.rejected[reason] += 1
        return AuthError(reason, detail)

    def _check(self, payload: bytes, expect_key: str | None) -> tuple[str, bool]:
        parts = split_auth(payload)
        if parts is None:
            raise AuthError("unsigned", "no valid auth member at the end of the message")
        name, t_ns, signed, sig = parts
        if expect_key is not None and name != expect_key:
            raise AuthError("wrong_key", f"signed by {name!r}, expected {expect_key!r}")
        key = self.keys.get(name)
        if key is None:
            raise AuthError("unknown_key", f"no trusted public key named {name!r}")
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(sig, DOMAIN + signed)
        except InvalidSignature:
            raise AuthError("bad_signature", f"signature of {name!r} does not match the message") from None
        now = self.clock()
        if t_ns < now - self.max_age_ns or t_ns > now + self.max_future_ns:
            raise AuthError("stale", f"signed {(now - t_ns) / 1e9:.0f} s ago (accepted: "
                                     f"{self.max_age_ns / 1e9:.0f} s back, {self.max_future_ns / 1e9:.0f} s ahead)")
        with self._lock:
            seen = self._seen.setdefault(name, OrderedDict())
            if sig in seen:
                return name, True
            seen[sig] = t_ns
            horizon = now - self.max_age_ns
            while seen and (len(seen) > self.max_remembered or next(iter(seen.values())) < horizon):
                seen.popitem(last=False)
        return name, False
