"""Figures of language-model training runs (notebook 04): loss curves, each expert's share of the load,
the routers' gradients, and how an expert's gradient follows its load.

Pure functions: ``TrainResult``s (``moe_lab.lm.training``) in, a matplotlib ``Figure`` out.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from moe_lab.checks import check_int
from moe_lab.i18n import _
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
    ax.axhline(math.log(VOCAB_SIZE), color="grey", lw=0.8, ls=":", label=_("uniform guess (ln 256)"))
    ax.set(xlabel=_("training step"), ylabel=_("cross-entropy (nats/byte)"),
           title=_("training loss (moving average of {window})").format(window=window))
    ax.legend(fontsize=8)
    return fig


def plot_load_shares(results: dict, layer: int | None = None, *, window: int = 3):
    """Each expert's share of the slots over the steps, stacked: one panel per run, one row per layer
    (``layer=None``: every layer; an int: that layer only).

    Balanced routing shows ``E`` bands of equal height (dashed lines); collapse shows one or two
    bands swallowing the others. Introduced in notebook 04.
    """
    _check_results(results)
    first = next(iter(results.values()))
    layers, num_experts = first.load.shape[1], first.load.shape[2]
    rows = list(range(layers)) if layer is None else [check_int("layer", layer, minimum=0, maximum=layers - 1)]
    window = check_int("window", window, minimum=1)
    for name, result in results.items():
        if result.load.shape[1:] != (layers, num_experts):
            raise ValueError(f"results[{name!r}].load has shape {result.load.shape}, expected [steps, {layers}, "
                             f"{num_experts}] like the first run")
    fig, axes = plt.subplots(len(rows), len(results), figsize=(3.2 * len(results), 2.6 * len(rows) + 0.4),
                             sharex=True, sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10" if num_experts <= 10 else "tab20")(np.arange(num_experts))
    for row, lay in enumerate(rows):
        for ax, (name, result) in zip(axes[row], results.items(), strict=True):
            share = _smooth(result.load_share()[:, lay, :], window)
            steps = np.arange(1, len(share) + 1)
            ax.stackplot(steps, share.T, colors=colors, linewidth=0)
            for k in range(1, num_experts):
                ax.axhline(k / num_experts, color="white", lw=0.6, ls="--")
            ax.set(xlim=(1, len(share)), ylim=(0, 1))
            ax.grid(False)
            if row == 0:
                ax.set_title(name)
            if row == len(rows) - 1:
                ax.set_xlabel(_("step"))
        axes[row, 0].set_ylabel(_("layer {layer}: share of slots").format(layer=lay))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[e]) for e in range(num_experts)]
    fig.legend(handles, [f"E{e}" for e in range(num_experts)], loc="center right", fontsize=7)
    fig.subplots_adjust(right=0.9)
    return fig


def plot_router_gradients(results: dict, *, window: int = 10, ax=None):
    """Norm of the gradient on the routers' weights over the steps (moving average, sum over layers),
    one line per run, log scale. Introduced in notebook 04."""
    _check_results(results)
    window = check_int("window", window, minimum=1)
    fig, ax = (plt.subplots(figsize=(6.4, 3.0)) if ax is None else (ax.figure, ax))
    for name, result in results.items():
        values = _smooth(np.asarray(result.router_grad, dtype=np.float64).sum(-1), window)
        ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.set(xlabel=_("training step"), ylabel=_("|gradient| on the routers"), yscale="log",
           title=_("what the routers learn from (moving average of {window})").format(window=window))
    ax.legend(fontsize=8)
    return fig


def gradient_load_shares(result: TrainResult) -> tuple[np.ndarray, np.ndarray]:
    """``(load share, gradient share)``, both ``[steps, layers, E]``: each expert's share of its layer's
    slots and of its layer's expert-gradient norm, step by step. Introduced in notebook 04."""
    if not isinstance(result, TrainResult):
        raise TypeError(f"result must be a TrainResult, got {type(result).__name__}")
    load = result.load_share()
    grad = np.asarray(result.expert_grad, dtype=np.float64)
    total = grad.sum(-1, keepdims=True)
    return load, np.divide(grad, total, out=np.zeros_like(grad), where=total > 0)


def plot_gradient_vs_load(result: TrainResult, *, title: str | None = None, ax=None):
    """One dot per expert and step: its share of the tokens against its share of the experts' gradient
    (colour = layer). Dots on the diagonal: an expert learns in proportion to the tokens it gets.
    Introduced in notebook 04."""
    load, grad = gradient_load_shares(result)
    fig, ax = (plt.subplots(figsize=(3.8, 3.4)) if ax is None else (ax.figure, ax))
    for layer in range(load.shape[1]):
        ax.scatter(load[:, layer].ravel(), grad[:, layer].ravel(), s=3, alpha=0.25,
                   label=_("layer {layer}").format(layer=layer))
    top = float(max(load.max(), grad.max(), 1e-9)) * 1.05
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=_("share of the tokens"), ylabel=_("share of the expert gradient"),
           title=title or _("{balance}: gradient follows the tokens").format(balance=result.config.balance))
    ax.legend(fontsize=7, markerscale=3)
    return fig
