"""Figures of notebook 02 ("From Mixtral to openPangu"): which experts and groups each token picks, and
training curves of the skill task. Pure functions: arrays in, a matplotlib ``Figure`` out."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch, Rectangle

from moe_lab.checks import check_int


def plot_block_routing(indices, num_experts: int, n_group: int = 1, *, shared: bool = True, ax=None,
                       title: str | None = None):
    """Tokens (rows) x routed experts (columns): a dot for every chosen expert, the experts' groups as
    alternating bands with the groups a token uses shaded, and a first column for the always-on shared expert.
    """
    indices = np.asarray(indices.asnumpy() if hasattr(indices, "asnumpy") else indices)
    if indices.ndim != 2 or indices.shape[0] == 0:
        raise ValueError(f"indices must have shape (tokens, top_k) with at least one token, got {indices.shape}")
    e = check_int("num_experts", num_experts, minimum=1)
    g = check_int("n_group", n_group, minimum=1)
    if e % g or indices.min() < 0 or indices.max() >= e:
        raise ValueError(f"n_group must divide num_experts={e} and indices must be in [0, {e - 1}]")
    n, size = indices.shape[0], e // g
    offset = 2 if shared else 0  # the shared column, then a gap
    fig, ax = (plt.subplots(figsize=(9.0, 0.28 * n + 1.6)) if ax is None else (ax.figure, ax))
    for group in range(g):  # group bands; the groups each token uses, shaded
        ax.add_patch(Rectangle((offset + group * size - 0.5, -0.5), size, n, color="0.93" if group % 2 else "1.0",
                               zorder=0))
    for t, row in enumerate(indices):
        for group in np.unique(row // size):
            ax.add_patch(Rectangle((offset + group * size - 0.5, t - 0.5), size, 1, color="#c6dbef", zorder=1))
    tokens = np.repeat(np.arange(n), indices.shape[1])
    ax.scatter(offset + indices.ravel(), tokens, s=14, color="#08519c", zorder=3, label="chosen routed expert")
    if shared:
        ax.scatter(np.zeros(n), np.arange(n), s=14, marker="s", color="#d94801", zorder=3, label="shared expert")
    ax.set_xlim(-1, offset + e)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(("shared | " if shared else "") + f"routed experts 0-{e - 1}" + (f" in {g} groups" if g > 1 else ""))
    ax.set_ylabel("token")
    ax.set_yticks(range(n))
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(False)
    handles, labels = ax.get_legend_handles_labels()
    if g > 1:
        handles.append(Patch(color="#c6dbef"))
        labels.append("a group the token uses")
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8, frameon=False)
    ax.set_title(title or f"{n} tokens, top-{indices.shape[1]} of {e} experts", fontsize=10)
    fig.tight_layout()
    return fig


def plot_training(histories: dict, *, window: int = 20, ax=None):
    """Training loss (moving average of ``window`` steps) of several runs of the skill task."""
    if not isinstance(histories, dict) or not histories:
        raise TypeError("histories must be a non-empty dict {name: loss array}")
    window = check_int("window", window, minimum=1)
    fig, ax = (plt.subplots(figsize=(6.4, 3.2)) if ax is None else (ax.figure, ax))
    for name, loss in histories.items():
        loss = np.asarray(loss, np.float64)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, len(loss) + 1), smooth, label=name)
    ax.set(xlabel="training step", ylabel="mean squared error", title=f"skill task (moving average of {window})")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
