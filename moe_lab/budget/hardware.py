"""Accelerators for the memory budget, read from ``data/hardware.json`` (notebook 07).

Introduced in notebook 07. Every figure in the JSON cites a source; where sources disagree the figure is
a range, and ``Device`` keeps both ends (``bandwidth_gbps = (low, high)``) so that a roofline can say
"between x and y tokens/s". Figures nobody could verify are ``None``, never guessed.

    dev = load_device("atlas-800i-a2")
    dev.memory_gb, dev.bandwidth_gbps, dev.tflops, dev.devices_per_node
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from moe_lab.budget.spec import DATA_DIR

HARDWARE_JSON = DATA_DIR / "hardware.json"


def figure_range(entry: dict | None) -> tuple[float, float] | None:
    """``{"value": v}`` -> ``(v, v)``; ``{"min": a, "max": b}`` -> ``(a, b)``; unverified -> ``None``."""
    if not entry:
        return None
    if entry.get("value") is not None:
        return float(entry["value"]), float(entry["value"])
    if entry.get("min") is not None and entry.get("max") is not None:
        return float(entry["min"]), float(entry["max"])
    return None


@dataclass(frozen=True)
class Device:
    """One accelerator (NPU, GPU or card). Ranges are ``(low, high)``; ``None`` means not verified."""

    name: str
    label: str
    memory_gb: float
    bandwidth_gbps: tuple[float, float] | None
    tflops: tuple[float, float] | None
    tflops_kind: str
    devices_per_node: int | None

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


@lru_cache(maxsize=1)
def _raw() -> dict:
    return json.loads(HARDWARE_JSON.read_text(encoding="utf-8"))


def device_names() -> list[str]:
    """Names accepted by ``load_device`` and the CLI's ``--device``."""
    return sorted(_raw()["devices"])


def load_device(name: str) -> Device:
    """The ``Device`` called ``name`` (see ``device_names()``)."""
    devices = _raw()["devices"]
    if name not in devices:
        raise ValueError(f"unknown device {name!r}; valid devices: {', '.join(sorted(devices))}")
    d = devices[name]
    memory = figure_range(d.get("memory_gb"))
    if memory is None:
        raise ValueError(f"device {name!r} has no verified memory size")
    # BF16 where a source gives it, else FP16 (Ascend sources give FP16 only): say which in tflops_kind
    tflops, kind = figure_range(d.get("bf16_tflops")), "bf16"
    if tflops is None:
        tflops, kind = figure_range(d.get("fp16_tflops")), "fp16"
    per_node = figure_range(d.get("devices_per_node"))
    return Device(name=name, label=d.get("label", name), memory_gb=memory[0],
                  bandwidth_gbps=figure_range(d.get("bandwidth_gbps")), tflops=tflops,
                  tflops_kind=kind if tflops else "none", devices_per_node=int(per_node[0]) if per_node else None)
