"""The component interfaces plugins implement. Small on purpose: each member is one the engine calls."""

from __future__ import annotations

from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from .types import Frame, InputSpec, PrecisionLabel, Prediction, Result, SourceState


@runtime_checkable
class Source(Protocol):
    """Iterates Frames. Never invents frames: on loss it changes `state` instead of yielding black images."""

    source_id: str

    @property
    def state(self) -> SourceState: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    # Optional: `expected_frames` (int | None) and `fps` (float | None), used for progress and pacing;
    # `carries_poses` (bool): frames come with a Pose, so the `geo` processor is implied.


@runtime_checkable
class Model(Protocol):
    """A fire model before it is bound to a backend: artifacts by format, preprocessing, labels."""

    model_id: str
    input_spec: InputSpec

    def formats(self) -> tuple[str, ...]: ...

    def artifact(self, fmt: str) -> Any: ...


@runtime_checkable
class Segmenter(Protocol):
    """A model bound to a backend: the thing the pipeline calls per frame."""

    input_spec: InputSpec
    model_id: str
    precision: PrecisionLabel

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """batch: N×H×W×3 uint8 RGB -> N×H'×W' float32 fire probability in [0, 1]."""
        ...

    def info(self) -> dict[str, Any]: ...

    # Optional: predict_scored(batch) -> (prob N×H'×W', fire_score N) for models with a frame-level head;
    # the pipeline prefers it and puts the score into every Result.


@runtime_checkable
class Adapter(Protocol):
    """Sees each input with its Prediction; may update the segmenter; reports what it changed."""

    name: str

    def observe(self, batch: np.ndarray, prediction: Prediction) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


@runtime_checkable
class Processor(Protocol):
    """A step on the post-processing thread, after inference and before the sinks: it may complete the
    Result in place (a pose, geo polygons); after the last processor the Result is frozen (read-only) and goes
    to the hooks, observers and every sink as it is."""

    def process(self, result: Result) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@runtime_checkable
class TelemetryReader(Protocol):
    """Camera poses over time, for the `geo` processor."""

    def pose_for(self, item: Any, fps: float | None = None) -> Any:
        """A Frame or Result -> its Pose (or None: no pose is better than a wrong one). `fps`: the source's
        rate, for readers that match by time in the video."""
        ...

    def __len__(self) -> int:
        """Poses known so far (logged at start)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Receives Results on its own thread. `needs_image` asks the pipeline to attach the frame's pixels.
    The Result is frozen (Result.freeze): a sink reads it and never changes it (nor georeferences it)."""

    name: str
    needs_image: bool

    def send(self, result: Result) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
