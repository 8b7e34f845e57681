"""Per-stage timing samples and their summaries. One writer thread per StageTimes; cheap appends."""

from __future__ import annotations

import random
from array import array

import numpy as np


class StageTimes:
    """Milliseconds per call for one stage. Keeps up to `cap` samples (8 bytes each) for percentiles and
    histograms; past that, a uniform sample of the whole run (reservoir sampling, seeded), so a daemon that runs
    for months stays bounded in memory (the soak showed every-sample growth) while n, mean and max stay exact."""

    def __init__(self, cap: int = 20_000) -> None:
        self.samples = array("d")
        self.cap = cap
        self.n = 0
        self.total = 0.0
        self.max = float("-inf")
        self._rng = random.Random(0)

    def add(self, ms: float) -> None:
        self.n += 1
        self.total += ms
        if ms > self.max:
            self.max = ms
        if len(self.samples) < self.cap:
            self.samples.append(ms)
        else:
            j = self._rng.randrange(self.n)
            if j < self.cap:
                self.samples[j] = ms

    def __len__(self) -> int:
        return self.n

    def summary(self) -> dict[str, float]:
        if not self.n:
            return {"n": 0}
        a = np.frombuffer(self.samples, dtype=np.float64)
        return {
            "n": int(self.n),
            "mean": round(self.total / self.n, 4),
            "p50": round(float(np.percentile(a, 50)), 4),
            "p95": round(float(np.percentile(a, 95)), 4),
            "max": round(float(self.max), 4),
        }
