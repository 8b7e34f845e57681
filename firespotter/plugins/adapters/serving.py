"""How an adapter reaches the served model: through the segmenter's `adaptable()` capability, never its internals.

- an AdaptableModule (the torch backend): the engine adapts that module in place on the inference thread,
  right after predict; the BN statistics blend inside the serving forward itself (no extra pass).
- an AdaptableGraph (onnxruntime): a PyTorch shadow built from the graph's checkpoint is adapted on a
  background thread, so inference never waits for training; at most every `push_interval_s` its norm state
  is folded into the ONNX graph, the segmenter builds a new session off the hot path (`build_session`), and
  `observe` swaps it in between frames (`replace_session`). A frame that arrives while the shadow is busy is not queued (counted as
  `shadow_skipped`): the shadow samples the stream, it never slows it. `sync = true` instead adapts every
  frame on the inference thread and swaps before the next one: slower, but a replay is then repeatable
  (with `push_interval_s = 0`), as replay is without adaptation.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from firespotter.models.adapt.engine import AdaptError, TTAConfig, TTAEngine, to_input
from firespotter.runtime.protocols import AdaptableGraph, AdaptableModule, AdapterBase, Preprocess

from .options import AdaptOptions

log = logging.getLogger("firespotter.adapt")


def make_adapter(name: str, segmenter, options: AdaptOptions):
    cfg = options.config()
    target = segmenter.adaptable()
    if isinstance(target, AdaptableModule):
        return InPlaceAdapter(name, target, cfg)
    if isinstance(target, AdaptableGraph):
        return ShadowAdapter(name, target, cfg, options.checkpoint, max(0.0, options.push_interval_s), options.sync)
    raise AdaptError(f"adapter {name!r} cannot adapt a {type(segmenter).__name__} (backend "
                     f"{segmenter.info().get('backend', '?')}): it needs the torch or onnxruntime backend",
                     "use --backend torch or --backend onnxruntime")


def _prep(p: Preprocess, device: str) -> tuple:
    return (p.size, p.mean, p.std, device)


class _Base(AdapterBase):
    name: str
    engine: TTAEngine

    @property
    def resets(self) -> int:
        return self.engine.resets

    @property
    def last_update(self) -> dict[str, Any]:
        return dict(self.engine.last)


class InPlaceAdapter(_Base):
    def __init__(self, name: str, target: AdaptableModule, cfg: TTAConfig):
        self.name = name
        self._prep = _prep(target.preprocess, target.device)
        self.engine = TTAEngine(target.module, cfg, stats_in_forward=True)

    def observe(self, batch, prediction) -> dict[str, Any] | None:
        if not self.engine.adapts_next():
            self.engine.skip()  # bnstats, or a frame between updates: the serving forward blended the stats
            return None
        return self.engine.observe(to_input(batch, *self._prep))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "where": "in place (torch)", **self.engine.summary()}

    def close(self) -> None:
        self.engine.close()


class ShadowAdapter(_Base):
    def __init__(self, name: str, target: AdaptableGraph, cfg: TTAConfig, checkpoint, push_interval_s: float,
                 sync: bool = False):
        import onnx

        from firespotter.models.adapt.onnx_sync import OnnxNormSync
        from firespotter.models.checkpoint import load_checkpoint, model_from_checkpoint

        self.name = name
        self.target = target
        onnx_path = Path(target.graph)  # the graph actually served
        ckpt_path = Path(checkpoint).expanduser() if checkpoint else target.checkpoint
        if ckpt_path is None or not ckpt_path.is_file():
            raise AdaptError(f"adapter {name!r} on onnxruntime trains a PyTorch shadow, but there is no checkpoint "
                             f"{ckpt_path} beside {onnx_path.name}",
                             "set [adapt] options.checkpoint to the model's .pt, or use --backend torch")
        module = model_from_checkpoint(load_checkpoint(ckpt_path))
        self.sync = OnnxNormSync(onnx.load(str(onnx_path)), module, str(onnx_path))
        self.engine = TTAEngine(module, cfg, stats_in_forward=False)
        self._prep = _prep(target.preprocess, "cpu")
        self.push_interval_s = push_interval_s
        self.swaps = self.shadow_frames = self.shadow_skipped = self.push_errors = 0
        self._ready = None  # a built session waiting for the next frame boundary
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._last_push = time.monotonic()
        # What the served session holds: the source state until the first push. While the detector keeps the
        # shadow at the source (unshifted flight), there is nothing new to push and no session is rebuilt.
        self._served_adapted = False
        self._served_updates = 0
        self.inline = sync
        self._thread = None
        if not sync:
            self._thread = threading.Thread(target=self._work, name=f"adapt-{name}", daemon=True)
            self._thread.start()

    def observe(self, batch, prediction) -> dict[str, Any] | None:
        if self.inline:
            self._update(batch)
        session, self._ready = self._ready, None
        if session is not None:  # between frames: the frame just served used the old session, the next the new
            self.target.replace_session(session)
            self.swaps += 1
        if not self.inline:
            try:
                self._queue.put_nowait(batch.copy())
            except queue.Full:
                self.shadow_skipped += 1
        return None

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            self._update(batch)

    def _update(self, batch) -> None:
        try:
            self.engine.observe(to_input(batch, *self._prep) if self.engine.needs_input() else None)
            self.shadow_frames += 1
            adapted = self.engine.stats.active or self.engine.since_reset > 0
            changed = adapted or self._served_adapted or self.engine.updates != self._served_updates
            if (changed and self._ready is None
                    and time.monotonic() - self._last_push >= self.push_interval_s):
                self._ready = self._build_session()
                self._last_push = time.monotonic()
                self._served_adapted, self._served_updates = adapted, self.engine.updates
        except Exception as exc:  # a failed update never stops serving; the old session keeps running
            self.push_errors += 1
            log.error("adapter %s: shadow update failed: %s: %s", self.name, exc.__class__.__name__, exc)

    def _build_session(self):
        return self.target.build_session(self.sync.build())

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "where": "PyTorch shadow -> onnxruntime sessions", "swaps": self.swaps,
                "shadow_frames": self.shadow_frames, "shadow_skipped": self.shadow_skipped,
                "push_errors": self.push_errors, "push_interval_s": self.push_interval_s, "sync": self.inline,
                **self.engine.summary()}

    def close(self) -> None:
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=30)
            except queue.Full:
                pass
            self._thread.join(timeout=30)
        self.engine.close()
