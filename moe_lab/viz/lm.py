"""Figures of a language-model training run (notebook 04): loss curves and each expert's share of the load.

Pure functions: ``TrainResult``s (``moe_lab.lm.training``) in, a matplotlib ``Figure`` out.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from moe_lab.checks import check_int
from moe_lab.lm.corpus import VOCAB_SIZE
from moe_lab.lm.training import TrainResult


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along axis 0 (the first values average what exists so far)."""
    values = np.asarray(values, dtype=np.float64)
    csum = np.cumsum(values, axis=0)
    out = csum.copy()
    out[window:] = csum[window:] - csum[:-window]
    counts = np.minimum(np.arange(1, len(values) + 1), window).reshape((-1,) + (1,) * (values.ndim - 1))
    return out / counts


def _check_results(results) -> dict:
    if not isinstance(results, dict) or not results:
        raise TypeError("results must be a non-empty dict {name: TrainResult}")
    for name, result in results.items():
        if not isinstance(result, TrainResult):
            raise TypeError(f"results[{name!r}] must be a TrainResult, got {type(result).__name__}")
    return results


def plot_losses(results: dict, *, window: int = 5, ax=None):
    """Training cross-entropy (nats/byte, moving average) of several runs on one axes. Notebook 04."""
    _check_results(results)
    window = check_int("window", window, minimum=1)
    fig, ax = (plt.subplots(figsize=(6.4, 3.2)) if ax is None else (ax.figure, ax))
    for name, result in results.items():
        ax.plot(np.arange(1, len(result.ce) + 1), _smooth(result.ce, window), label=name)
    ax.axhline(math.log(VOCAB_SIZE), color="grey", lw=0.8, ls=":", label="uniform guess (ln 256)")
    ax.set(xlabel="training step", ylabel="cross-entropy (nats/byte)",
           title=f"training loss (moving average of {window})")
    ax.legend(fontsize=8)
    return fig


def plot_load_shares(results: dict, layer: int = 0, *, window: int = 3):
    """One panel per run: each expert's share of the slots over the steps, stacked (layer ``layer``).

    Balanced routing shows ``E`` bands of equal height (dashed lines); collapse shows one or two
    bands swallowing the others. Introduced in notebook 04.
    """
    _check_results(results)
    first = next(iter(results.values()))
    layers, num_experts = first.load.shape[1], first.load.shape[2]
    layer = check_int("layer", layer, minimum=0, maximum=layers - 1)
    window = check_int("window", window, minimum=1)
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.0), sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10" if num_experts <= 10 else "tab20")(np.arange(num_experts))
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        if result.load.shape[1:] != (layers, num_experts):
            raise ValueError(f"results[{name!r}].load has shape {result.load.shape}, expected [steps, {layers}, "
                             f"{num_experts}] like the first run")
        share = _smooth(result.load_share()[:, layer, :], window)
        steps = np.arange(1, len(share) + 1)
        ax.stackplot(steps, share.T, colors=colors, linewidth=0)
        for k in range(1, num_experts):
            ax.axhline(k / num_experts, color="white", lw=0.6, ls="--")
        ax.set(title=name, xlabel="step", xlim=(1, len(share)), ylim=(0, 1))
        ax.grid(False)
    axes[0, 0].set_ylabel(f"layer {layer}: share of slots")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[e]) for e in range(num_experts)]
    fig.legend(handles, [f"E{e}" for e in range(num_experts)], loc="center right", fontsize=7)
    fig.subplots_adjust(right=0.9)
    return fig
