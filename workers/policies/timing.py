"""Per-stage wall-clock timings that are honest on CUDA (synchronise before reading the clock)."""
from __future__ import annotations

import time

import torch


class Stopwatch:
    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.last = time.perf_counter()

    def lap(self, timings: dict[str, float] | None, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + (now - self.last) * 1000.0
        self.last = now
