from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from firespotter.runtime.plugins import new_registry
from firespotter.runtime.types import Frame, InputSpec, PrecisionLabel, SourceState

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FIRESPOTTER_SHARED", REPO.parent / "shared"))
REAL_DEV = SHARED / "data" / "fire-real" / "dev"


@pytest.fixture
def registry():
    return new_registry()


@pytest.fixture
def real_dev():
    if not (REAL_DEV / "images").is_dir():
        pytest.skip(f"real fire data not found at {REAL_DEV} (only in the team's workspace; set FIRESPOTTER_SHARED)")
    return REAL_DEV


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    """Run the installed CLI in a subprocess: the real entry point, real exit codes and stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "firespotter", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


class ListSource:
    """Frames from a list, optionally at a fixed rate (a camera)."""

    expected_frames = None

    def __init__(self, images, fps: float | None = None, source_id: str = "test"):
        self.images = images
        self.fps = fps
        self.source_id = source_id
        self.state = SourceState.CONNECTING
        self.closed = False

    def __iter__(self):
        self.state = SourceState.STREAMING
        period = 1.0 / self.fps if self.fps else 0.0
        next_due = time.monotonic()
        for i, image in enumerate(self.images):
            if period:
                delay = next_due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_due += period
            yield Frame(image, i, time.monotonic_ns(), time.time_ns(), self.source_id, meta={"name": f"f{i:04d}"})
        self.state = SourceState.ENDED

    def close(self):
        self.closed = True


class FakeSegmenter:
    """Predicts fire where red > 200, after sleeping `delay_s` (a slow model)."""

    model_id = "fake-1"
    input_spec = InputSpec()
    precision = PrecisionLabel()

    def __init__(self, delay_s: float = 0.0, fail_on: set[int] | None = None, nan: bool = False):
        self.delay_s = delay_s
        self.calls = 0
        self.fail_on = fail_on or set()
        self.nan = nan

    def predict(self, batch):
        self.calls += 1
        if self.calls - 1 in self.fail_on:
            raise RuntimeError("boom")
        if self.delay_s:
            time.sleep(self.delay_s)
        prob = (batch[..., 0] > 200).astype(np.float32)
        if self.nan:
            prob[:] = np.nan
        return prob

    def info(self):
        return {}


class RecordingSink:
    needs_image = False

    def __init__(self, name="rec", delay_s: float = 0.0):
        self.name = name
        self.seqs: list[int] = []
        self.results = []
        self.flushed = 0
        self.closed = False
        self.delay_s = delay_s

    def send(self, result):
        if self.delay_s:
            time.sleep(self.delay_s)
        self.seqs.append(result.seq)
        self.results.append(result)

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed = True


class RaisingSink(RecordingSink):
    def send(self, result):
        raise ConnectionError("link down")


def frames_with_fire(n: int, size: int = 64) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 1] = 80
        if i % 2 == 0:
            img[10:20, 10 + (i % 30) : 20 + (i % 30), 0] = 255
        out.append(img)
    return out


def make_dist(root, dist: str, ep_name: str, module: str, source: str, version: str = "1.2.3"):
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[firespotter]\n{ep_name} = {module}\n")


def synthetic_clip(path: Path, width: int, height: int, frames: int, seed: int, fps: int = 12) -> Path:
    """A short H.264 flight of the synthetic scene at `path`, as recorded footage reaches `replay`."""
    from firespotter.models.synthetic import SyntheticScene
    from firespotter.runtime.video import VideoWriter

    scene = SyntheticScene(width, height, frames=frames, seed=seed)
    with VideoWriter(path, width, height, fps=fps) as w:
        for i in range(frames):
            w.write(scene.render(i)[0])
    return path
