"""Options shared by the backends that run the project's fire networks with their frame-level head."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_GATE_THRESHOLD = 0.05


class FrameHeadOptions(BaseModel):
    """`[model] backend_options` every fire-network backend with a frame head takes (onnxruntime, torch)."""

    model_config = ConfigDict(extra="forbid")
    threads: int | None = Field(None, ge=1, description="intra-op threads; default: all cores")
    gate: bool = Field(False, description="skip the decoder on frames the frame head calls fire-free")
    gate_threshold: float = Field(DEFAULT_GATE_THRESHOLD, description="fire score below which a frame is fire-free")
