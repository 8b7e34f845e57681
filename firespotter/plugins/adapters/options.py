"""The `[adapt] options` of bnstats, tent and ostta: one pydantic model per method, checked when the pipeline is
assembled. It imports no torch (the plugin list loads it on every start); the method's own ranges and
combinations are checked by its TTAConfig, which validation builds (torch is needed then: the adapter runs)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PUSH_INTERVAL_S = 2.0
SERVING = frozenset({"checkpoint", "push_interval_s", "sync"})  # how the adapter reaches the served model


class AdaptOptions(BaseModel):
    """The method's parameters (`firespotter.models.adapt.engine.TTAConfig`, which checks them too; a key left out
    keeps the method's default, docs/adaptation.md), then how the adapter reaches the served model
    (plugins/adapters/serving.py)."""

    model_config = ConfigDict(extra="forbid")
    METHOD: ClassVar[str] = ""

    alpha: float | None = Field(None, ge=0, le=1, description="EMA weight of a frame's BN statistics")
    layers: str | None = Field(None, description="BN layer prefixes whose statistics move (comma-separated)")
    blend_max: float | None = Field(None, ge=0, le=1, description="the most the served statistics move towards "
                                    "the stream's")
    lr: float | None = Field(None, ge=0, description="SGD learning rate on the BN affine (tent, ostta)")
    momentum: float | None = Field(None, description="SGD momentum (tent, ostta)")
    max_entropy: float | None = Field(None, description="pixels above this entropy are not reliable (tent, ostta)")
    scale: float | None = Field(None, gt=0, le=1, description="resolution factor of the gradient step's forward "
                                "passes")
    every: int | None = Field(None, ge=1, description="adapt on every N-th frame")
    reset_every: int | None = Field(None, ge=0, description="hard reset after this many updates (0 = never)")
    guard: bool | None = Field(None, description="the collapse guard on the adapted fire fraction")
    guard_low: float | None = Field(None, gt=0, lt=1, description="reset when the adapted fire fraction falls "
                                    "below this times the frozen model's")
    guard_high: float | None = Field(None, gt=1, description="reset when it rises above this times the frozen "
                                     "model's")
    guard_smoothing: float | None = Field(None, description="EMA factor of the fire fractions the guard compares")
    guard_warmup: int | None = Field(None, description="updates after a reset before the guard may fire")
    threshold: float | None = Field(None, ge=0, description="shift detector: adapt only while the stream is "
                                    "this far from the training data (0 = always)")
    detect_smoothing: float | None = Field(None, gt=0, le=1, description="EMA weight of a frame's distance in "
                                           "the shift detector")

    checkpoint: str | None = Field(None, description="onnxruntime: the PyTorch checkpoint of the served graph")
    push_interval_s: float = Field(DEFAULT_PUSH_INTERVAL_S, description="onnxruntime: at most one session swap "
                                   "per this many seconds")
    sync: bool = Field(False, description="onnxruntime: adapt every frame on the inference thread (repeatable)")

    @model_validator(mode="after")
    def _method_accepts_them(self) -> "AdaptOptions":
        self.config()
        return self

    def method_options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude=set(SERVING))

    def config(self):
        """The method's TTAConfig (ranges checked); a ValueError naming the option when it refuses one."""
        from firespotter.models.adapt.engine import AdaptError, TTAConfig

        where = "[adapt] options"
        try:
            return TTAConfig.from_options(self.METHOD, self.method_options(), where)
        except AdaptError as exc:
            raise ValueError(exc.message.removeprefix(f"{where}: ")) from None


def options_for(method: str) -> type[AdaptOptions]:
    return type(f"{method.title()}Options", (AdaptOptions,), {"METHOD": method, "__module__": __name__,
                                                              "__doc__": f"`[adapt] options` of {method}."})
