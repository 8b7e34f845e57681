"""Per-stage timing samples and their summaries. One writer thread per StageTimes; cheap appends."""

from __future__ import annotations

from array import array

import numpy as np


class StageTimes:
    """Milliseconds per call for one stage. Keeps every sample (8 bytes each) for percentiles and histograms."""

    def __init__(self) -> None:
        self.samples = array("d")

    def add(self, ms: float) -> None:
        self.samples.append(ms)

    def __len__(self) -> int:
        return len(self.samples)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {"n": 0}
        a = np.frombuffer(self.samples, dtype=np.float64)
        return {
            "n": int(a.size),
            "mean": round(float(a.mean()), 4),
            "p50": round(float(np.percentile(a, 50)), 4),
            "p95": round(float(np.percentile(a, 95)), 4),
            "max": round(float(a.max()), 4),
        }
