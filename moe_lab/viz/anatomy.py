"""Figures of notebook 02 ("From Mixtral to openPangu"): which experts and groups each token picks, and
training curves of the skill task. Pure functions: arrays in, a matplotlib ``Figure`` out."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch, Rectangle

from moe_lab.checks import check_int
from moe_lab.i18n import _
from moe_lab.viz.figures import legend_below


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
    ax.scatter(offset + indices.ravel(), tokens, s=14, color="#08519c", zorder=3, label=_("chosen routed expert"))
    if shared:
        ax.scatter(np.zeros(n), np.arange(n), s=14, marker="s", color="#d94801", zorder=3, label=_("shared expert"))
    ax.set_xlim(-1, offset + e)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(_block_xlabel(shared, e, g))
    ax.set_ylabel(_("token"))
    ax.set_yticks(range(n))
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(False)
    handles, labels = ax.get_legend_handles_labels()
    if g > 1:
        handles.append(Patch(color="#c6dbef"))
        labels.append(_("a group the token uses"))
    # under the x label, at a distance in points: at (0.5, -0.12) of the axes it covered the x label of a
    # figure of few tokens (3 tokens: an axes 0.8 inch tall), in both languages
    legend_below(ax, ncol=3, handles=handles, labels=labels)
    ax.set_title(title or _("{n} tokens, top-{top_k} of {num_experts} experts").format(
        n=n, top_k=indices.shape[1], num_experts=e), fontsize=10)
    fig.tight_layout()
    return fig


def _block_xlabel(shared: bool, num_experts: int, n_group: int) -> str:
    """The x label of ``plot_block_routing``: the shared column (if any), the routed experts, their groups."""
    # i18n: the x axis under a shared-expert column, a gap, then the routed experts 0..{last}
    if shared and n_group > 1:
        text = _("shared | routed experts 0-{last} in {n_group} groups")
    elif shared:
        text = _("shared | routed experts 0-{last}")
    elif n_group > 1:
        text = _("routed experts 0-{last} in {n_group} groups")
    else:
        text = _("routed experts 0-{last}")
    return text.format(last=num_experts - 1, n_group=n_group)


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
    ax.set(xlabel=_("training step"), ylabel=_("mean squared error"),
           title=_("skill task (moving average of {window} steps)").format(window=window))
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
