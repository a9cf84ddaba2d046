"""One call at the top of every notebook: quiet logs, device, seeds, print and plot defaults.

Introduced in notebook 01 (first code cell).
"""

from __future__ import annotations

import os

# MindSpore prints WARNING lines to stderr by default; they would end up in stored outputs.
os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402

from moe_lab._checks import check_int  # noqa: E402

_DEVICE = None


def set_device(target: str = "CPU") -> str:
    """Select MindSpore's device once per process (MindSpore refuses to change it later)."""
    global _DEVICE
    if _DEVICE is None:
        ms.set_device(target)
        _DEVICE = target
    return _DEVICE


def setup(seed: int = 0, device: str | None = None) -> dict:
    """Prepare a notebook or test: device, seeds (NumPy and MindSpore), rounded printing, figure size.

    Returns a small dict describing the environment (MindSpore version, device).
    """
    seed = check_int("seed", seed, minimum=0)
    if device is None:
        from moe_lab.backend import detect_backend

        device = detect_backend().device
    set_device(device)
    ms.set_seed(seed)
    np.random.seed(seed)
    np.set_printoptions(precision=4, suppress=True, linewidth=110)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.figsize": (6.4, 3.6), "figure.dpi": 90, "axes.grid": True,
                                    "grid.alpha": 0.3})
    except ImportError:  # matplotlib is a dependency, but the core layer does not need it
        pass
    return {"mindspore": ms.__version__, "numpy": np.__version__, "device": _DEVICE}
