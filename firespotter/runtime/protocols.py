"""The contract between the engine and its components: every member the engine uses, kind by kind.

Each kind is a Protocol listing what the engine calls. The optional members have defaults in the kind's small
base class (SourceBase, SegmenterBase, AdapterBase, ProcessorBase, SinkBase): subclass it and override what you
need. When a pipeline is assembled, `conform()` checks every component once against its contract: a missing
required member is a PluginError naming it; a component that lacks only optional members (written before they
were declared here) is seen through a thin view that adds the base class's defaults. From then on the engine
calls every member directly; it never probes a component with getattr or hasattr.

Backends declare capabilities on their segmenter, which adapters use instead of a backend's internals:
`frame_head` (predict_scored gives one fire score per frame) and `adaptable()`: an AdaptableModule (a PyTorch
network served in place, the torch backend) or an AdaptableGraph (an ONNX graph whose session can be replaced
between frames, ONNX Runtime), or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from .errors import PluginError
from .types import Frame, InputSpec, PrecisionLabel, Prediction, Result, SourceState

# A callable that sees every Result leaving the pipeline (frozen), on the post-processing thread, before the
# sinks get it: the `on_result` hook, the daemon's metrics, the progress display. The one observer channel.
ResultObserver = Callable[[Result], None]


# --- capabilities a segmenter declares ----------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How a backend feeds its network: each N×H×W×3 uint8 RGB frame resized to `size` (height, width; None: as
    it comes), scaled to [0, 1], then (x - mean) / std, as an N×3×H×W float32 tensor."""

    size: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class AdaptableModule:
    """Capability: the segmenter serves `module` (a torch.nn.Module) as it is, on the inference thread, so that
    updating its parameters or batch-norm state between frames changes the next prediction."""

    module: Any
    preprocess: Preprocess
    device: str


@dataclass(frozen=True)
class AdaptableGraph:
    """Capability: the segmenter serves `graph` (an ONNX file) through a session an adapter may replace.

    `checkpoint`: where the PyTorch checkpoint that graph was exported from sits by convention (a `.pt` beside
    the model's ONNX file; it may not exist). `build_session(onnx_bytes)`: a session for an updated copy of the
    graph, with the segmenter's own serving options; callable from any thread. `replace_session(session)`:
    serve it from the next frame on; call it between frames, on the inference thread."""

    graph: Path
    checkpoint: Path | None
    preprocess: Preprocess
    build_session: Callable[[bytes], Any]
    replace_session: Callable[[Any], None]


# --- the kinds ----------------------------------------------------------------------------------------------


@runtime_checkable
class Source(Protocol):
    """Iterates Frames. Never invents frames: on loss it changes `state` instead of yielding black images.
    Optional (SourceBase): `state`, `fps`, `expected_frames`, `carries_poses`, `skipped`."""

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        """Stop; safe from any thread and more than once. A source blocked on a lost stream lets go."""
        ...

    state: SourceState  # travels in every Result, so "no fire" is never confused with "no picture"
    fps: float | None  # the source's rate: live pacing, the `geo` processor, sinks (through `info`)
    expected_frames: int | None  # for the progress display
    carries_poses: bool  # frames come with a Pose (Frame.pose): implies the `geo` processor
    skipped: Sequence[str]  # inputs that could not be read (reported in the summary, not fatal)


class SourceBase:
    """Defaults of a Source's optional members: always streaming, rate and length unknown, no poses, nothing
    skipped. Subclass it and implement `__iter__` and `close` (or use FrameSource, which does more)."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("state", "fps", "expected_frames", "carries_poses", "skipped")

    state: SourceState = SourceState.STREAMING
    fps: float | None = None
    expected_frames: int | None = None
    carries_poses: bool = False
    skipped: Sequence[str] = ()


@runtime_checkable
class Model(Protocol):
    """A fire model before it is bound to a backend: artifacts by format, preprocessing, labels."""

    model_id: str
    input_spec: InputSpec

    def formats(self) -> tuple[str, ...]: ...

    def artifact(self, fmt: str) -> Any: ...


@runtime_checkable
class Segmenter(Protocol):
    """A model bound to a backend: what the pipeline calls per frame.
    Optional (SegmenterBase): `frame_head`, `predict_scored`, `adaptable`, `close`."""

    model_id: str
    input_spec: InputSpec
    precision: PrecisionLabel

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """batch: N×H×W×3 uint8 RGB -> N×H'×W' float32 fire probability in [0, 1]."""
        ...

    def info(self) -> dict[str, Any]: ...

    frame_head: bool  # predict_scored gives a frame-level fire score (a classification head)

    def predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """-> (probabilities as predict, one fire score in [0, 1] per frame or None without a frame head).
        The pipeline calls this one and puts the score into every Result."""
        ...

    def adaptable(self) -> AdaptableModule | AdaptableGraph | None:
        """How an adapter may update what this segmenter serves; None: it cannot. Raises a FirespotterError
        when it could, but not as configured (e.g. split graphs)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (sessions, device memory) when the segmenter is no longer used."""
        ...


class SegmenterBase:
    """Defaults of a Segmenter's optional members: no frame head (predict_scored is predict with no score) and
    nothing an adapter can update. Subclass it and implement `predict` and `info`."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("frame_head", "predict_scored", "adaptable", "close")

    frame_head: bool = False

    def predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.predict(batch), None  # type: ignore[attr-defined]

    def adaptable(self) -> AdaptableModule | AdaptableGraph | None:
        return None

    def close(self) -> None:
        pass


@runtime_checkable
class Adapter(Protocol):
    """Sees each input with its Prediction on the inference thread; may update the segmenter (through its
    `adaptable()` capability); reports what it changed. Optional (AdapterBase): `summary`, `resets`,
    `last_update`."""

    name: str

    def observe(self, batch: np.ndarray, prediction: Prediction) -> dict[str, Any] | None: ...

    def close(self) -> None: ...

    def summary(self) -> dict[str, Any] | None:
        """JSON for the run's summary (`adapters`), or None for nothing."""
        ...

    resets: int  # times it restored the original model (a metric)
    last_update: Mapping[str, Any]  # its latest adaptation step: update, selected, entropy, ... (metrics)


class AdapterBase:
    """Defaults of an Adapter's optional members: no summary, no resets, no update to report."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("summary", "resets", "last_update")

    resets: int = 0
    last_update: Mapping[str, Any] = MappingProxyType({})

    def summary(self) -> dict[str, Any] | None:
        return None


@runtime_checkable
class Processor(Protocol):
    """A step on the post-processing thread, after inference and before the sinks: it may complete the
    Result in place (a pose, geo polygons); after the last processor the Result is frozen (read-only) and goes
    to the observers and every sink as it is. Optional (ProcessorBase): `stats`, `close`."""

    def process(self, result: Result) -> None: ...

    def stats(self) -> dict[str, Any]:
        """Counters for the run's summary (`processors.<name>`)."""
        ...

    def close(self) -> None: ...


class ProcessorBase:
    """Defaults of a Processor's optional members. Subclass it and implement `process(result)` (not defined here,
    so that a processor without one is refused at assembly); override `stats()` to report counters in the run's
    summary (`processors.<name>`) and `close()` to release files or threads. The post thread calls all three."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("stats", "close")

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


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
    """Receives Results on its own thread. The Result is frozen (Result.freeze): a sink reads it and never
    changes it (nor georeferences it). Optional (SinkBase): `needs_image`, `start`, `stats`, `outbox_depth`,
    `outbox_health`, `auth_rejected`."""

    name: str

    def send(self, result: Result) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    needs_image: bool  # ask the pipeline to attach the frame's pixels to every Result

    def start(self, info: dict[str, Any]) -> None:
        """Before the first result, with the pipeline's description (e.g. a video sink learns the rate)."""
        ...

    def stats(self) -> dict[str, Any] | None:
        """Delivery counters for the run's summary (`sinks.<name>.delivery`), or None for none."""
        ...

    def outbox_depth(self) -> int | None:
        """Messages waiting for acknowledgement (a metric), or None where there is no outbox."""
        ...

    def outbox_health(self) -> dict[str, Any] | None:
        """The outbox's state for /metrics and /readyz (degraded, recovered, salvaged, lost), or None where there
        is no outbox."""
        ...

    def auth_rejected(self) -> Mapping[str, int]:
        """Acknowledgements refused by authentication, by reason (a metric); empty where nothing is checked."""
        ...


class SinkBase:
    """Defaults of a Sink's optional members: no pixels, nothing to do at start, no delivery counters, no
    outbox, no authentication. Subclass it and implement `send`, `flush` and `close`, and set `name`."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("needs_image", "start", "stats", "outbox_depth", "outbox_health",
                                           "auth_rejected")

    needs_image: bool = False

    def start(self, info: dict[str, Any]) -> None:
        pass

    def stats(self) -> dict[str, Any] | None:
        return None

    def outbox_depth(self) -> int | None:
        return None

    def outbox_health(self) -> dict[str, Any] | None:
        return None

    def auth_rejected(self) -> Mapping[str, int]:
        return MappingProxyType({})


# --- checking a component against its contract -------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """A kind's required members and the base class holding the defaults of its optional ones."""

    kind: str
    required: tuple[str, ...]
    base: type | None = None

    @property
    def optional(self) -> tuple[str, ...]:
        return self.base.OPTIONAL if self.base is not None else ()


SOURCE = Contract("source", ("__iter__", "close"), SourceBase)
MODEL = Contract("model", ("model_id", "input_spec", "formats", "artifact"))
SEGMENTER = Contract("segmenter", ("model_id", "input_spec", "precision", "predict", "info"), SegmenterBase)
ADAPTER = Contract("adapter", ("name", "observe", "close"), AdapterBase)
PROCESSOR = Contract("processor", ("process",), ProcessorBase)
SINK = Contract("sink", ("name", "send", "flush", "close"), SinkBase)

C = TypeVar("C")


class _Completed:
    """A component seen with the defaults of the optional members it lacks; everything else is its own
    (reads, writes and iteration go to it)."""

    __slots__ = ("component",)

    def __init__(self, component: Any):
        object.__setattr__(self, "component", component)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "component"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.component, name, value)

    def __iter__(self):
        return iter(self.component)

    def __repr__(self) -> str:
        return repr(self.component)


_views: dict[tuple[type, tuple[str, ...]], type] = {}


def _default(base: type, member: str) -> Any:
    for klass in base.__mro__:
        if member in vars(klass):
            return vars(klass)[member]
    raise AttributeError(member)  # pragma: no cover - every OPTIONAL member has a default


def declares(component: Any, contract: Contract, member: str) -> bool:
    """Whether `component` implements the optional `member` itself, rather than having the base class's default
    (e.g. a sink with an outbox of its own: its `outbox_depth`, not SinkBase's "none")."""
    seen = component.component if isinstance(component, _Completed) else component
    own = getattr(type(seen), member, None)
    return hasattr(seen, member) and own is not _default(contract.base, member)


def conform(component: C, contract: Contract, name: str = "") -> C:
    """`component` as the engine calls it, checked against `contract` once, when the pipeline is assembled.
    Raises PluginError naming every missing required member; returns the component itself when it has every
    optional member too, else a view of it that adds the base class's defaults for the ones it lacks."""
    if isinstance(component, _Completed):
        return component
    label = f"{contract.kind} {name!r}" if name else contract.kind
    missing = [m for m in contract.required if not hasattr(component, m)]
    if missing:
        hint = f"subclass firespotter.runtime.protocols.{contract.base.__name__}, " if contract.base else ""
        raise PluginError(f"{label} ({type(component).__name__}) does not implement {', '.join(missing)} of the "
                          f"{contract.kind} contract", f"{hint}see docs/plugins.md")
    lacking = tuple(m for m in contract.optional if not hasattr(component, m))
    if not lacking:
        return component
    key = (contract.base, lacking)
    view = _views.get(key)
    if view is None:
        members = {m: _default(contract.base, m) for m in lacking}
        view = _views[key] = type(f"{contract.base.__name__}View", (_Completed,), {"__slots__": (), **members})
    return view(component)  # type: ignore[return-value]
