"""A content-addressed cache of built artifacts (quantized ONNX, optimized graphs, TensorRT engines).

An artifact's address is the hash of everything that decides its bytes: the source model's sha256, the
backend, the precision, the library versions, the device and its compute capability, and the calibration set's
hash. A hit loads without building; a miss builds into a temporary folder with a visible progress line and moves
it into place atomically; every load re-checks the sha256 of every file against the manifest, so a stale or
tampered artifact is refused with the file named and the way to rebuild.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import FirespotterError
from .types import PrecisionLabel

MANIFEST = "manifest.json"


class ArtifactError(FirespotterError):
    """A cached artifact that cannot be trusted (hash mismatch, missing file, unreadable manifest)."""


def _plain_name(name: str) -> bool:
    """A file name with no folder part (no '/', '\\', '..'): it resolves inside the artifact's folder."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(paths: Iterable[Path]) -> str:
    """One hash for a set of files (e.g. a calibration set): names and contents, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    return h.hexdigest()


def library_versions(names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """(name, version) of each installed distribution; absent ones are recorded as such."""
    out = []
    for name in sorted(set(names)):
        try:
            out.append((name, md.version(name)))
        except md.PackageNotFoundError:
            out.append((name, "absent"))
    return tuple(out)


@dataclass(frozen=True)
class ArtifactKey:
    model_sha256: str
    backend: str
    precision: str
    device: str = "cpu"
    compute_capability: str | None = None
    versions: tuple[tuple[str, str], ...] = ()
    calibration_sha256: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # anything else that changes the bytes (opset, input size, ...)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["versions"] = dict(self.versions)
        d["options"] = dict(self.options)
        return d

    def digest(self) -> str:
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Artifact:
    dir: Path
    manifest: dict[str, Any]
    built: bool = False  # True when this call built it (a miss)
    build_s: float = 0.0

    def path(self, name: str) -> Path:
        """A file of this artifact: only one its manifest hashes (checked at load), inside its folder."""
        if name not in self.manifest.get("files", {}) or not _plain_name(name):
            raise ArtifactError(f"artifact {self.dir}: {name!r} is not one of the files its manifest hashes")
        return self.dir / name

    @property
    def labels(self) -> PrecisionLabel:
        m = self.manifest["labels"]
        return PrecisionLabel(m["precision_exec"], int(m["weight_bits"]), bool(m["simulated"]))


def default_cache_dir() -> Path:
    """$FIRESPOTTER_CACHE_DIR, systemd's $CACHE_DIRECTORY (the daemon's unit sets it), else ~/.cache/firespotter."""
    for var in ("FIRESPOTTER_CACHE_DIR", "CACHE_DIRECTORY"):
        if os.environ.get(var):
            return Path(os.environ[var].split(":")[0])
    return Path.home() / ".cache" / "firespotter"


@dataclass
class ArtifactCache:
    root: Path = field(default_factory=default_cache_dir)
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    def dir_for(self, key: ArtifactKey) -> Path:
        digest = key.digest()
        return Path(self.root) / digest[:2] / digest

    def get(self, key: ArtifactKey) -> Artifact | None:
        """The verified artifact, None on a miss; ArtifactError when it exists but cannot be trusted."""
        folder = self.dir_for(key)
        manifest_path = folder / MANIFEST
        if not manifest_path.exists():
            return None
        rebuild = f"delete {folder} (or run the build again with --rebuild) to rebuild it"
        try:
            manifest = json.loads(manifest_path.read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"artifact manifest {manifest_path} is unreadable: {exc}", rebuild) from None
        if not isinstance(files, dict) or not all(isinstance(n, str) and _plain_name(n) for n in files):
            raise ArtifactError(f"artifact manifest {manifest_path}: every file must be a plain name inside {folder}",
                                rebuild)
        roles = manifest.get("roles") or {}
        stray = {r: n for r, n in roles.items() if n not in files} if isinstance(roles, dict) else {"roles": roles}
        if stray:
            raise ArtifactError(f"artifact manifest {manifest_path}: roles {stray} name files it does not hash; "
                                "an artifact loads only hashed files inside its own folder", rebuild)
        if manifest.get("key") != key.as_dict():
            raise ArtifactError(f"artifact {folder} was built for another key than the one it is filed under", rebuild)
        for name, expected in files.items():
            path = folder / name
            if not path.is_file():
                raise ArtifactError(f"artifact file {path} is missing", rebuild)
            actual = sha256_file(path)
            if actual != expected:
                raise ArtifactError(f"artifact file {path} does not match its manifest (sha256 {actual[:12]}…, "
                                    f"expected {expected[:12]}…): stale or tampered, refusing to load it", rebuild)
        return Artifact(folder, manifest)

    def build(self, key: ArtifactKey, builder: Callable[[Path], dict[str, Any] | None], labels: PrecisionLabel,
              *, describe: str) -> Artifact:
        """Run `builder(tmp_dir)` (it writes the files and may return extra manifest fields, e.g. accuracy),
        then file the result under the key. Replaces whatever was there."""
        folder = self.dir_for(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.progress(f"building {describe} -> {folder} ...")
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        try:
            extra = builder(tmp) or {}
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            if not files:
                raise ArtifactError(f"building {describe} produced no file")
            build_s = time.perf_counter() - t0
            manifest = {
                "key": key.as_dict(),
                "labels": labels.as_dict(),
                "files": files,
                "describe": describe,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_s": round(build_s, 3),
                **extra,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)  # atomic on one filesystem: a reader sees the old or the new, never half
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.progress(f"built {describe} in {build_s:.1f} s")
        return Artifact(folder, manifest, built=True, build_s=build_s)

    def get_or_build(self, key: ArtifactKey, builder: Callable[[Path], dict[str, Any] | None],
                     labels: PrecisionLabel, *, describe: str, rebuild: bool = False) -> Artifact:
        if not rebuild:
            hit = self.get(key)
            if hit is not None:
                return hit
        return self.build(key, builder, labels, describe=describe)
