"""Which hardware runs the course. (Minimal: CPU only; the Atlas detection lands with notebook 07.)"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu"
    device: str  # MindSpore device target
    soc: str | None = None


def detect_backend() -> Backend:
    return Backend(name="cpu", device="CPU")
