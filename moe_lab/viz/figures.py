"""Pictures of routing: pure functions from arrays to a matplotlib ``Figure`` (no widgets in here).

Introduced in notebook 05 (the capacity sweep in notebook 03). Every function takes plain arrays (NumPy,
lists, or MindSpore tensors), checks their shapes, draws on ``ax`` when given (so a dashboard can lay
several plots out in one figure) or on a new figure, and returns the figure. The dashboards of
``moe_lab.viz.dashboards`` only decide *which* arrays to draw; everything visible is decided here and
unit-tested without a browser. Every word they draw is a message of ``moe_lab.i18n``, looked up when the
figure is drawn: English, or Chinese after ``moe_lab.setup(lang="zh")`` (which also picks a CJK font).

    fig = plot_expert_load(load, capacity=40)           # tokens per expert, capacity line, drops
    fig = plot_routing_heatmap(probs, indices, keep)    # token x expert router probabilities
    fig = plot_confidence_histogram(probs, top_k=2)     # how sure the router is
    fig = plot_layer_load(loads)                        # [layers, experts] share of the load
    fig = plot_text_experts(text, experts, 4)           # each character coloured by its expert
    fig = plot_text_samples({"English": (text, experts)}, 4)  # several texts, one grid each
    fig = plot_domain_expert_heatmap(counts, domains)   # which expert takes which domain
    fig = plot_load_history(history)                    # max/mean load over balancing steps
    fig = plot_capacity_sweep(sweep)                    # drops and output error vs capacity factor
    clear_plot(ax)                                      # empty ax again: a fast redraw on the same axes
    update_expert_load(ax, load, capacity, ylim=500)    # the same picture by changing the artists (also
                                                        # update_routing_heatmap, _confidence_histogram, _load_history)
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib as mpl
import matplotlib.font_manager as fm
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Patch, Rectangle, StepPatch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import ScaledTranslation

from moe_lab.checks import check_int
from moe_lab.core.capacity_sweep import CapacitySweep
from moe_lab.i18n import _

DROPPED_COLOR = "#d62728"
NO_EXPERT_COLOR = "#bdbdbd"


# ---------------------------------------------------------------------------------------------
# argument checks: every error names the argument, the shape it has and the shape it needs


def _array(name: str, value, ndim: int, *, integer: bool = False, boolean: bool = False) -> np.ndarray:
    """``value`` as a NumPy array with ``ndim`` dimensions (MindSpore tensors are converted)."""
    if hasattr(value, "asnumpy"):
        value = value.asnumpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged lists
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if boolean:
        if arr.dtype != bool:
            raise TypeError(f"{name} must be a boolean array, got dtype {arr.dtype}")
        return arr
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite numbers")
    if integer:
        if not (np.issubdtype(arr.dtype, np.integer) or np.all(arr == np.round(arr))):
            raise TypeError(f"{name} must contain integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    return arr


def _same_shape(name: str, arr: np.ndarray, other_name: str, shape: tuple[int, ...]) -> None:
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have the shape of {other_name} {tuple(shape)}, got {arr.shape}")


def _nonnegative(name: str, arr: np.ndarray) -> None:
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must not be negative, got minimum {arr.min()}")


def _expert_ids(name: str, arr: np.ndarray, num_experts: int, allow_none: bool = False) -> None:
    """Expert indices must lie in [0, num_experts) (or be -1, "no expert", where allowed)."""
    low = -1 if allow_none else 0
    if arr.size and (arr.min() < low or arr.max() >= num_experts):
        allowed = f"-1 (no expert) or 0..{num_experts - 1}" if allow_none else f"0..{num_experts - 1}"
        raise ValueError(f"{name} must hold expert indices {allowed}, got values from {arr.min()} to {arr.max()}")


def _axes(ax, figsize):
    """The axes to draw on: ``ax`` itself, or a fresh figure's single axes."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


LEGEND_FONTSIZE = 7.5


def _points(size) -> float:
    """A font size from rcParams (10, "medium", ...) in points."""
    return fm.FontProperties(size=size).get_size_in_points()


def legend_below(ax, ncol: int, **kwargs):
    """The legend in rows under the x tick labels (and the x label, if any): outside the data area.

    Inside the axes a legend covered bars, the capacity line or the histogram at some settings of the
    dashboard (whichever corner it took); under the axes nothing the plot draws can reach it. Call it
    after ``set_xlabel``: the gap is measured in points from rcParams (tick, pad, label sizes), so
    it stays right whatever the axes' height.
    """
    rc = mpl.rcParams
    depth = rc["xtick.major.size"] + rc["xtick.major.pad"] + 1.3 * _points(rc["xtick.labelsize"]) + 2
    if ax.get_xlabel():
        depth += rc["axes.labelpad"] + 1.3 * _points(rc["axes.labelsize"])
    below = ax.transAxes + ScaledTranslation(0, -depth / 72, ax.figure.dpi_scale_trans)
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, ncol=ncol,
                     fontsize=LEGEND_FONTSIZE, frameon=False, borderaxespad=0.0, columnspacing=1.2,
                     handlelength=1.6, **kwargs)


def clear_plot(ax) -> None:
    """Remove what a plot function of this module drew on ``ax``, keep the axes itself.

    Drawing the same plot function, with the same kind of arguments, on the cleared axes gives the
    picture it gives on a fresh axes (a test compares the PNGs of the routing dashboard's four
    plots): each call sets again the limits, ticks, labels and title it uses. Axes settings a call
    makes only sometimes stay (e.g. the x tick labels of a heatmap with ``token_labels``, if the next
    heatmap has none). It is faster than a new axes or ``ax.cla()``, which throw away the axes' tick
    objects: building them again cost more than drawing the data. The routing dashboard redraws its
    panels this way. Introduced in notebook 05.

    Removes lines, patches, bar containers, collections, images, texts and the legend, and forgets
    the data limits (``relim``), so autoscaled axes scale to the new data only. Not handled: a colour
    bar (it is a second axes; the dashboard plots have none).
    """
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()
    for container in list(ax.containers):  # bars: removes the container (legend entry) and its patches
        container.remove()
    for artists in (ax.lines, ax.patches, ax.collections, ax.images, ax.texts, ax.artists, ax.tables):
        for artist in list(artists):
            artist.remove()
    ax.relim()  # no artists left: empty data limits, as on a fresh axes


def expert_colors(num_experts: int) -> np.ndarray:
    """One colour per expert, ``[E, 4]`` RGBA: tab10 up to 10 experts, tab20 up to 20, then a hue wheel."""
    num_experts = check_int("num_experts", num_experts, minimum=1)
    if num_experts <= 10:
        return mpl.colormaps["tab10"](np.arange(num_experts))
    if num_experts <= 20:
        return mpl.colormaps["tab20"](np.arange(num_experts))
    return mpl.colormaps["hsv"](np.arange(num_experts) / num_experts)


# ---------------------------------------------------------------------------------------------
# 1. tokens per expert, with the capacity line and the dropped slots


def _expert_load_data(load, capacity, kept):
    """Checked ``(load, capacity, kept, dropped)`` of ``plot_expert_load``'s arguments."""
    load = _array("load", load, 1, integer=True)
    _nonnegative("load", load)
    if load.size == 0:
        raise ValueError("load must have at least one expert, got shape (0,)")
    if capacity is not None:
        capacity = check_int("capacity", capacity, minimum=0)
    if kept is None:
        kept = load if capacity is None else np.minimum(load, capacity)
    else:
        kept = _array("kept", kept, 1, integer=True)
        _same_shape("kept", kept, "load", load.shape)
        _nonnegative("kept", kept)
        if np.any(kept > load):
            raise ValueError("kept must not exceed load (an expert cannot process more slots than it was sent)")
    return load, capacity, kept, load - kept


def _expert_load_title(load, capacity, dropped) -> str:
    total, n_drop = int(load.sum()), int(dropped.sum())
    mean = load.sum() / load.size
    ratio = load.max() / mean if mean > 0 else 0.0
    share = 100.0 * n_drop / total if total else 0.0
    if capacity is None:
        text = _("dropless: dropped {dropped} of {total} slots ({share:.1f}%), max/mean load {ratio:.2f}")
    else:
        text = _("capacity {capacity}: dropped {dropped} of {total} slots ({share:.1f}%), max/mean load {ratio:.2f}")
    return text.format(capacity=capacity, dropped=n_drop, total=total, share=share, ratio=ratio)


CUT_LABEL = "cut bar"  # gid of the count written over a bar taller than the frame


def _label_cut_bars(ax, load, ylim) -> None:
    """Bars cut by the fixed frame: write how tall they are at the top."""
    for e in np.flatnonzero(load > ylim):
        ax.annotate(f"{load[e]}", (e, ylim), xytext=(0, -2), textcoords="offset points", ha="center",
                    va="top", fontsize=7, fontweight="bold", gid=CUT_LABEL)


def plot_expert_load(load, capacity: int | None = None, kept=None, *, ax=None, ylim: float | None = None,
                     title: str | None = None):
    """Bars of token slots per expert: processed (coloured) + dropped (red, hatched) + capacity line.

    Args:
        load: ``[E]`` slots routed to each expert before capacity (``Routing.load()``).
        capacity: slots per expert (``Routing.capacity``), or None when dropless.
        kept: ``[E]`` slots each expert processed (``Routing.kept()``); by default
            ``min(load, capacity)``, which is what both drop policies give per expert.
        ylim: fixed top of the y axis (dashboards keep the frame still); taller bars are cut and
            their count written at the top.
    A dashed line marks perfect balance (the mean); the title gives the capacity, drops and max/mean.
    The legend sits under the axes (``legend_below``). ``update_expert_load`` redraws it in place.
    """
    load, capacity, kept, dropped = _expert_load_data(load, capacity, kept)
    num_experts = load.size
    fig, ax = _axes(ax, (6.4, 3.2))
    x = np.arange(num_experts)
    ax.bar(x, kept, color=expert_colors(num_experts), edgecolor="black", linewidth=0.5, label=_("processed"))
    ax.bar(x, dropped, bottom=kept, color="white", edgecolor=DROPPED_COLOR, hatch="///", linewidth=0.8,
           label=_("dropped"))
    # the values of the two lines are in the title, not in the legend: the legend stays the same
    # while a slider moves (a dashboard draws it once, see ``moe_lab.viz.widgets.KeptFigure``)
    ax.axhline(load.sum() / num_experts, color="0.3", linestyle="--", linewidth=1, label=_("perfect balance"))
    if capacity is not None:
        ax.axhline(capacity, color=DROPPED_COLOR, linewidth=1.5, label=_("capacity"))
    if ylim is not None:
        ax.set_ylim(0, ylim)
        _label_cut_bars(ax, load, ylim)
    ax.set_xticks(x if num_experts <= 32 else x[:: int(np.ceil(num_experts / 16))])
    ax.set_xlim(-0.6, num_experts - 0.4)
    ax.set_xlabel(_("expert"))
    ax.set_ylabel(_("token slots"))
    ax.set_title(title if title is not None else _expert_load_title(load, capacity, dropped))
    legend_below(ax, ncol=4)
    return fig


def update_expert_load(ax, load, capacity: int | None = None, kept=None, *, ylim: float,
                       title: str | None = None) -> bool:
    """Make ``ax``, drawn by ``plot_expert_load`` with a fixed ``ylim``, show these numbers by changing
    its artists (bar heights, line heights, title); the picture equals a fresh ``plot_expert_load``.

    Returns False, changing nothing, when ``ax`` holds no such plot or one of another shape (another
    number of experts, a capacity line where there is none now or the reverse) or one drawn in another
    language (``moe_lab.i18n``): draw it anew then. Introduced in notebook 05 (the routing dashboard
    redraws its first panel this way).
    """
    load, capacity, kept, dropped = _expert_load_data(load, capacity, kept)
    # the artists by their legend labels, as translated now: a plot of another language does not match
    processed, cut, balance, cap = _("processed"), _("dropped"), _("perfect balance"), _("capacity")
    bars = {c.get_label(): c for c in ax.containers}
    lines = {ln.get_label(): ln for ln in ax.lines}
    if (set(bars) != {processed, cut} or len(bars[processed]) != load.size
            or set(lines) != ({balance, cap} if capacity is not None else {balance})
            or not _in_current_language(ax, _("expert"), _("token slots"))):
        return False
    for bar, top, k, d in zip(bars[processed], bars[cut], kept, dropped, strict=True):
        bar.set_height(k)
        top.set_y(k)
        top.set_height(d)
    mean = load.sum() / load.size
    lines[balance].set_ydata([mean, mean])
    if capacity is not None:
        lines[cap].set_ydata([capacity, capacity])
    for text in [t for t in ax.texts if t.get_gid() == CUT_LABEL]:
        text.remove()
    ax.set_ylim(0, ylim)
    _label_cut_bars(ax, load, ylim)
    ax.set_title(title if title is not None else _expert_load_title(load, capacity, dropped))
    return True


# ---------------------------------------------------------------------------------------------
# 2. token x expert routing heatmap


def _heatmap_data(probs, indices, keep):
    """Checked ``(probs, indices, keep)`` of ``plot_routing_heatmap``'s arguments."""
    probs = _array("probs", probs, 2)
    n, num_experts = probs.shape
    if n == 0 or num_experts == 0:
        raise ValueError(f"probs must have at least one token and one expert, got shape {probs.shape}")
    if probs.min() < 0 or probs.max() > 1 + 1e-6:
        raise ValueError(f"probs must be probabilities in [0, 1], got values from {probs.min():.3g} "
                         f"to {probs.max():.3g}")
    if keep is not None and indices is None:
        raise ValueError("keep needs indices (it says which of the chosen experts were kept)")
    if indices is not None:
        indices = _array("indices", indices, 2, integer=True)
        if indices.shape[0] != n:
            raise ValueError(f"indices must have one row per token of probs ({n}), got shape {indices.shape}")
        _expert_ids("indices", indices, num_experts)
        keep = np.ones(indices.shape, bool) if keep is None else _array("keep", keep, 2, boolean=True)
        _same_shape("keep", keep, "indices", indices.shape)
    return probs, indices, keep


def _routing_markers(ax, indices, keep) -> None:
    """A white dot on each kept choice, a red cross on each dropped one."""
    tokens = np.repeat(np.arange(indices.shape[0]), indices.shape[1])
    chosen, kept = indices.reshape(-1), keep.reshape(-1)
    ax.scatter(tokens[kept], chosen[kept], s=10, c="white", edgecolors="black", linewidths=0.4, label=_("chosen"))
    if (~kept).any():
        ax.scatter(tokens[~kept], chosen[~kept], s=22, marker="x", c=DROPPED_COLOR, linewidths=1.2,
                   label=_("dropped"))


def plot_routing_heatmap(probs, indices=None, keep=None, *, token_labels=None, ax=None, colorbar: bool = True,
                         title: str | None = None):
    """Router probabilities as an image: one column per token, one row per expert.

    Args:
        probs: ``[N, E]`` router probabilities (rows sum to 1).
        indices: ``[N, K]`` chosen experts (optional): a white dot on each chosen cell.
        keep: ``[N, K]`` booleans (needs ``indices``): dropped choices get a red cross instead.
        token_labels: ``N`` strings for the x axis (e.g. the characters of a text).
    """
    probs, indices, keep = _heatmap_data(probs, indices, keep)
    n, num_experts = probs.shape
    if token_labels is not None:
        token_labels = [str(t) for t in token_labels]
        if len(token_labels) != n:
            raise ValueError(f"token_labels must have one label per token ({n}), got {len(token_labels)}")
    fig, ax = _axes(ax, (max(4.0, min(12.0, 0.18 * n + 2)), 0.3 * num_experts + 1.5))
    image = ax.imshow(probs.T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                      origin="lower")
    if indices is not None:
        _routing_markers(ax, indices, keep)
    if colorbar:
        fig.colorbar(image, ax=ax, label=_("router probability"), fraction=0.05, pad=0.02)
    if token_labels is not None and n <= 80:
        ax.set_xticks(np.arange(n), [repr(t)[1:-1] if t.isspace() else t for t in token_labels], fontsize=7)
    ax.set_yticks(np.arange(num_experts) if num_experts <= 16 else np.arange(0, num_experts, 4))
    ax.set_xlabel(_("token"))
    ax.set_ylabel(_("expert"))
    ax.grid(False)
    ax.set_title(title if title is not None else _heatmap_title(n))
    return fig


def _heatmap_title(n: int) -> str:
    return _("router probabilities of {n} tokens").format(n=n)


def _in_current_language(ax, xlabel: str, ylabel: str) -> bool:
    """Whether ``ax`` was drawn in the current language: its axis labels are ``xlabel`` and ``ylabel`` as
    translated now (both: a translation may equal the English word).

    The ``update_*`` functions change only the data and the title; a plot drawn before a language switch
    (``moe_lab.i18n.set_language``) must be drawn anew, or its axis labels and legend keep the old language.
    """
    return ax.get_xlabel() == xlabel and ax.get_ylabel() == ylabel


def update_routing_heatmap(ax, probs, indices=None, keep=None, *, title: str | None = None) -> bool:
    """Make ``ax``, drawn by ``plot_routing_heatmap``, show these probabilities and choices by changing
    its image data and markers (the picture equals a fresh plot). Returns False, changing nothing,
    when ``ax`` holds no heatmap of this shape or one drawn in another language. Introduced in notebook 05."""
    probs, indices, keep = _heatmap_data(probs, indices, keep)
    if (len(ax.images) != 1 or ax.images[0].get_array().shape != probs.T.shape
            or not _in_current_language(ax, _("token"), _("expert"))):
        return False
    ax.images[0].set_data(probs.T)
    for markers in [c for c in ax.collections if c.get_label() in (_("chosen"), _("dropped"))]:
        markers.remove()
    if indices is not None:
        _routing_markers(ax, indices, keep)
    ax.set_title(title if title is not None else _heatmap_title(probs.shape[0]))
    return True


# ---------------------------------------------------------------------------------------------
# 3. router confidence


def plot_confidence_histogram(probs, top_k: int = 1, *, bins: int = 20, ax=None, title: str | None = None,
                              ylim: float | None = None):
    """Histogram of the router's top-1 probability per token (and the mass of its top-k when k > 1).

    A confident router puts most tokens near 1; a uniform one near ``1/E`` (dotted line).
    ``ylim``: a fixed top of the y axis (default: fitted to the counts).
    """
    probs, top_k, edges, counts = _confidence_data(probs, top_k, bins)
    num_experts = probs.shape[1]
    fig, ax = _axes(ax, (5.0, 3.0))
    # one step patch per histogram (ax.stairs), not one rectangle per bin (ax.hist): the same picture,
    # ~20 fewer artists to build on every dashboard redraw, and ``set_data`` updates it in place
    for k, values in counts.items():  # the top-1 probability filled, the top-k mass as an outline
        style = {"fill": True, "color": "#1f77b4", "alpha": 0.8} if k == 1 else {"color": "#ff7f0e", "linewidth": 1.5}
        ax.stairs(values, edges, label=_confidence_label(k), **style)
    ax.axvline(1.0 / num_experts, color="0.3", linestyle=":", label=_uniform_label(num_experts))
    ax.set_xlim(0, 1)
    if ylim is not None:
        ax.set_ylim(0, ylim)
    ax.set_xlabel(_("probability"))
    ax.set_ylabel(_("tokens"))
    ax.set_title(title if title is not None else _confidence_title(probs))
    legend_below(ax, ncol=3)
    return fig


def _confidence_data(probs, top_k, bins):
    """Checked ``(probs, top_k, edges, {k: counts})`` of ``plot_confidence_histogram``'s arguments: the
    histograms of the top-1 probability (k = 1) and, when ``top_k`` > 1, of the top-k mass (k = ``top_k``)."""
    probs = _array("probs", probs, 2)
    n, num_experts = probs.shape
    if n == 0 or num_experts == 0:
        raise ValueError(f"probs must have at least one token and one expert, got shape {probs.shape}")
    top_k = check_int("top_k", top_k, minimum=1, maximum=num_experts)
    bins = check_int("bins", bins, minimum=1)
    ordered = -np.sort(-probs, axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = {1: np.histogram(ordered[:, 0], edges)[0]}
    if top_k > 1:
        counts[top_k] = np.histogram(ordered[:, :top_k].sum(1), edges)[0]
    return probs, top_k, edges, counts


def _confidence_label(k: int) -> str:
    """The legend label of the histogram of the top-1 probability (k = 1) or of the top-k mass."""
    return _("top-1 probability") if k == 1 else _("top-{top_k} mass").format(top_k=k)


def _uniform_label(num_experts: int) -> str:
    return _("uniform = 1/{num_experts}").format(num_experts=num_experts)


def _confidence_title(probs) -> str:
    return _("router confidence: mean top-1 = {mean:.2f}").format(mean=probs.max(1).mean())


def update_confidence_histogram(ax, probs, top_k: int = 1, *, bins: int = 20, ylim: float,
                                title: str | None = None) -> bool:
    """Make ``ax``, drawn by ``plot_confidence_histogram`` with a fixed ``ylim``, show these
    probabilities by changing its step patches (the picture equals a fresh plot). Returns False,
    changing nothing, when ``ax`` holds no such plot for this top-k, number of experts and bins, or one
    drawn in another language. Introduced in notebook 05."""
    probs, top_k, edges, counts = _confidence_data(probs, top_k, bins)
    labels = {_confidence_label(k): k for k in counts}  # as translated now: another language does not match
    steps = {p.get_label(): p for p in ax.patches if isinstance(p, StepPatch)}
    uniform = {ln.get_label() for ln in ax.lines}
    if (set(steps) != set(labels) or uniform != {_uniform_label(probs.shape[1])}
            or not _in_current_language(ax, _("probability"), _("tokens"))
            or any(len(p.get_data().edges) != len(edges) for p in steps.values())):
        return False
    for label, k in labels.items():
        steps[label].set_data(counts[k], edges)
    ax.set_ylim(0, ylim)
    ax.set_title(title if title is not None else _confidence_title(probs))
    return True


# ---------------------------------------------------------------------------------------------
# 4. expert load per layer of the trained model


def plot_layer_load(loads, *, layer_names=None, ax=None, title: str | None = None, highlight: int | None = None):
    """Grouped bars: the share of token slots each expert takes, one group of bars per layer.

    Args:
        loads: ``[L, E]`` token slots per expert in each layer (counts; each row is normalised).
        layer_names: ``L`` labels (default ``layer 0``, ``layer 1`` ...).
        highlight: an expert index whose bars keep full colour while the others fade.
    The dashed line is perfect balance, ``1/E``.
    """
    loads = _array("loads", loads, 2)
    _nonnegative("loads", loads)
    num_layers, num_experts = loads.shape
    if num_layers == 0 or num_experts == 0:
        raise ValueError(f"loads must have at least one layer and one expert, got shape {loads.shape}")
    if layer_names is None:
        layer_names = [_("layer {layer}").format(layer=i) for i in range(num_layers)]
    layer_names = [str(s) for s in layer_names]
    if len(layer_names) != num_layers:
        raise ValueError(f"layer_names must have one name per layer ({num_layers}), got {len(layer_names)}")
    if highlight is not None:
        highlight = check_int("highlight", highlight, minimum=0, maximum=num_experts - 1)
    totals = loads.sum(1, keepdims=True)
    share = np.divide(loads, totals, out=np.zeros_like(loads, dtype=float), where=totals > 0)
    fig, ax = _axes(ax, (6.4, 3.0))
    colors = expert_colors(num_experts)
    width = 0.8 / num_experts
    for e in range(num_experts):
        alpha = 1.0 if highlight is None or highlight == e else 0.25
        ax.bar(np.arange(num_layers) + (e - (num_experts - 1) / 2) * width, share[:, e], width,
               color=colors[e], alpha=alpha, edgecolor="black", linewidth=0.4,
               label=_("expert {expert}").format(expert=e))
    ax.axhline(1.0 / num_experts, color="0.3", linestyle="--", linewidth=1, label=_("perfect balance"))
    ax.set_xticks(np.arange(num_layers), layer_names)
    ax.set_ylim(0, 1)
    ax.set_ylabel(_("share of token slots"))
    worst = share.max(1) * num_experts
    ax.set_title(title if title is not None else _("expert load per layer (max/mean {ratios})").format(
        ratios=", ".join(f"{w:.2f}" for w in worst)))
    legend_below(ax, ncol=min(num_experts + 1, 5))
    return fig


# ---------------------------------------------------------------------------------------------
# 5. text coloured by the expert that took each character


def char_experts(text: str, byte_experts) -> np.ndarray:
    """Per-character experts from a byte-level model's per-byte experts (UTF-8).

    A Chinese character is 3 bytes, and each byte is routed on its own; the character gets the expert
    most of its bytes went to (ties: the earliest byte). ``byte_experts`` is ``[len(text.encode())]``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    byte_experts = _array("byte_experts", byte_experts, 1, integer=True)
    n_bytes = len(text.encode("utf-8"))
    if byte_experts.size != n_bytes:
        raise ValueError(f"byte_experts must have one entry per UTF-8 byte of text ({n_bytes}), "
                         f"got shape {byte_experts.shape}")
    out = np.empty(len(text), np.int64)
    start = 0
    for i, ch in enumerate(text):
        width = len(ch.encode("utf-8"))
        ids = byte_experts[start:start + width]
        values, counts = np.unique(ids, return_counts=True)
        best = values[counts == counts.max()]
        out[i] = ids[np.isin(ids, best)][0]  # earliest byte among the most frequent experts
        start += width
    return out


# Fonts with Chinese glyphs that learners' machines often have (Linux, macOS, Windows). matplotlib's
# default family has none, so the text plot adds whichever of these is installed.
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
                "WenQuanYi Micro Hei", "Droid Sans Fallback", "PingFang SC", "Heiti SC", "Hiragino Sans GB",
                "Microsoft YaHei", "SimHei", "Arial Unicode MS")


# file names of those fonts, to find one installed after matplotlib built its font cache
CJK_FILES = ("wqy", "notosanscjk", "notosanssc", "sourcehansans", "droidsansfallback", "pingfang", "hiragino",
             "msyh", "simhei", "arialuni")


@functools.cache
def text_families() -> list[str]:
    """Font families for non-ASCII characters: DejaVu Sans, then any installed CJK family.

    matplotlib only knows the fonts present when it built its cache; if none of ``CJK_FAMILIES`` is
    known, the system font folders are searched once and a CJK font found there is registered.
    """
    def known():
        installed = {f.name for f in fm.fontManager.ttflist}
        return [name for name in CJK_FAMILIES if name in installed]

    if not known():
        for path in fm.findSystemFonts():
            if any(key in Path(path).name.lower().replace("-", "").replace("_", "") for key in CJK_FILES):
                try:
                    fm.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # an unreadable font file: skip it
                    continue
    return ["DejaVu Sans", *known()]


def _drawable(chars: set[str], families: list[str]) -> set[str]:
    """The characters one of ``families`` can draw: the others get a placeholder instead of an empty
    box (and a matplotlib warning per missing glyph)."""
    paths = {fm.findfont(fm.FontProperties(family=name)) for name in families}
    fonts = [FT2Font(p) for p in sorted(paths)]
    return {ch for ch in chars if ch.isspace() or any(font.get_char_index(ord(ch)) for font in fonts)}


TILE_INCHES = (0.2, 0.28)  # width, height of one character's tile in a figure made here
TEXT_LEGEND_INCHES = 1.05  # room right of the grid for the legend (one "expert 12" entry per line)


def text_grid(text: str, width: int, max_lines: int) -> tuple[list[tuple[int, int, int]], int, bool]:
    """Lay ``text`` out in lines of ``width`` characters (a newline also ends a line), at most ``max_lines``.

    Returns ``(cells, lines, truncated)``: ``(row, column, index into text)`` per shown character, the
    number of lines used (at least 1) and whether characters were cut.
    """
    width = check_int("width", width, minimum=1)
    max_lines = check_int("max_lines", max_lines, minimum=1)
    cells, row, col = [], 0, 0
    for i, ch in enumerate(text):
        if row >= max_lines:
            break
        cells.append((row, col, i))
        col += 1
        if ch == "\n" or col >= width:
            row, col = row + 1, 0
    lines = max(1, min(max_lines, cells[-1][0] + 1 if cells else 1))
    return cells, lines, len(cells) < len(text)


def tile_fontsize(ax, columns: float, rows: int) -> float:
    """The font size (points) that fills a tile of ``ax`` split into ``columns`` x ``rows`` tiles.

    0.62 of the tile's height (room above and below the glyph), at most 0.9 of its width (a Chinese
    glyph is one em wide). At the old fixed 9 pt a tile of the dashboard held a ~7 px glyph.
    """
    fig = ax.figure
    box = ax.get_position()
    tile_w = box.width * fig.get_figwidth() * 72 / columns
    tile_h = box.height * fig.get_figheight() * 72 / rows
    return round(max(5.0, min(0.62 * tile_h, 0.9 * tile_w)), 1)


def _legend_columns(entries: int, height_inches: float) -> int:
    """Columns for a legend of ``entries`` lines beside a grid ``height_inches`` tall (~0.17 inch a line)."""
    return max(1, int(np.ceil(entries / max(1, int(height_inches / 0.17)))))


def plot_text_experts(text: str, experts, num_experts: int, *, highlight: int | None = None, ax=None,
                      width: int = 40, max_lines: int = 10, fixed_frame: bool = False, title: str | None = None,
                      fontsize: float | None = None):
    """The text in a grid, each character on a tile coloured by the expert that took it.

    Args:
        text: the input text.
        experts: ``[len(text)]`` expert per character (``char_experts`` converts per-byte experts);
            ``-1`` = no expert (e.g. dropped by capacity), drawn grey.
        num_experts: number of experts (fixes the colours, so expert 2 has the same colour everywhere).
        highlight: show only this expert's tiles in colour.
        width, max_lines: characters per line and lines shown (longer text is cut with an ellipsis).
        fixed_frame: keep a ``width x max_lines`` frame whatever the text length (dashboards: tiles
            keep their size as the text changes); otherwise the grid has the text's lines only.
        fontsize: of the characters; by default it fills the tiles (``tile_fontsize``).
    Newlines start a new line (shown as ``⏎``). A character no installed font can draw (e.g. Chinese
    without a CJK font) is drawn as ``□``; its tile still shows the expert. The legend sits right of
    the grid. A figure made here sizes itself to the grid (``TILE_INCHES`` per character).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    num_experts = check_int("num_experts", num_experts, minimum=1)
    experts = _array("experts", experts, 1, integer=True)
    if experts.size != len(text):
        raise ValueError(f"experts must have one entry per character of text ({len(text)}), "
                         f"got shape {experts.shape}")
    _expert_ids("experts", experts, num_experts, allow_none=True)
    if highlight is not None:
        highlight = check_int("highlight", highlight, minimum=0, maximum=num_experts - 1)
    cells, lines, truncated = text_grid(text, width, max_lines)
    rows = max_lines if fixed_frame else lines
    columns = width + 0.8  # room for the ellipsis of a cut text
    used = sorted(set(int(e) for e in experts[: len(cells)]))
    if ax is None:
        tile_w, tile_h = TILE_INCHES
        ncol = _legend_columns(len(used), rows * tile_h)
        fig_w, fig_h = columns * tile_w + ncol * TEXT_LEGEND_INCHES + 0.1, rows * tile_h + 0.45
        fig = plt.figure(figsize=(fig_w, fig_h))
        ax = fig.add_axes((0.05 / fig_w, 0.05 / fig_h, columns * tile_w / fig_w, rows * tile_h / fig_h))
    fig = ax.figure
    if fontsize is None:
        fontsize = tile_fontsize(ax, columns, rows)
    colors = expert_colors(num_experts)
    families = text_families()
    drawable = _drawable(set(text), families)
    for r, c, i in cells:
        e = int(experts[i])
        face = NO_EXPERT_COLOR if e < 0 else colors[e]
        alpha = 0.85 if highlight is None or e == highlight else 0.12
        ax.add_patch(Rectangle((c, -r - 1), 1, 1, facecolor=face, alpha=alpha, edgecolor="white", linewidth=0.5))
        ch = text[i]
        shown = "⏎" if ch == "\n" else ("·" if ch == " " else (ch if ch in drawable else "□"))
        if ch.isspace() and ch not in "\n ":
            shown = "·"
        ax.text(c + 0.5, -r - 0.5, shown, ha="center", va="center", fontsize=fontsize,
                family="monospace" if ch.isascii() else families)
    if truncated:
        ax.text(width, -rows, "…", ha="left", va="bottom", fontsize=fontsize)
    ax.set_xlim(0, columns)
    ax.set_ylim(-rows, 0)
    ax.set_aspect("auto")
    ax.axis("off")
    handles = [Patch(facecolor=NO_EXPERT_COLOR if e < 0 else colors[e],
                     label=_("none") if e < 0 else _("expert {expert}").format(expert=e)) for e in used]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=LEGEND_FONTSIZE + 0.5,
              frameon=False, borderaxespad=0.4, handlelength=1.2,
              ncol=_legend_columns(len(used), ax.get_position().height * fig.get_figheight()))
    ax.set_title(title if title is not None else _("each character coloured by the expert that took it"),
                 fontsize=10, loc="left")
    return fig


def plot_text_samples(samples: dict, num_experts: int, *, width: int = 40, max_lines: int = 6,
                      highlight: int | None = None):
    """Several texts, one grid each, stacked in one figure; each grid has its text's lines only.

    ``samples``: ``{title: (text, experts)}`` with ``experts`` as in ``plot_text_experts``. Tiles have
    the same size in every grid (``TILE_INCHES``), so no grid is stretched and none has an empty band.
    """
    if not isinstance(samples, dict) or not samples:
        raise ValueError("samples must be a non-empty dict {title: (text, experts)}")
    lines = []
    for name, pair in samples.items():
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"samples[{name!r}] must be a (text, experts) pair, got {type(pair).__name__}")
        if not isinstance(pair[0], str):
            raise TypeError(f"samples[{name!r}] text must be a str, got {type(pair[0]).__name__}")
        lines.append(text_grid(pair[0], width, max_lines)[1])
    tile_w, tile_h = TILE_INCHES
    columns = width + 0.8
    title_h = 0.4  # inches above each grid for its title
    entries = [len(set(np.asarray(experts).reshape(-1).tolist())) for _text, experts in samples.values()]
    ncol = max(_legend_columns(e, n * tile_h) for e, n in zip(entries, lines, strict=True))
    fig_w = columns * tile_w + ncol * TEXT_LEGEND_INCHES + 0.1
    fig_h = sum(n * tile_h + title_h for n in lines) + 0.05
    fig = plt.figure(figsize=(fig_w, fig_h))
    top = fig_h
    for (name, (text, experts)), n in zip(samples.items(), lines, strict=True):
        top -= title_h
        height = n * tile_h
        ax = fig.add_axes((0.05 / fig_w, (top - height) / fig_h, columns * tile_w / fig_w, height / fig_h))
        plot_text_experts(text, experts, num_experts, highlight=highlight, ax=ax, width=width,
                          max_lines=max_lines, title=str(name))
        top -= height
    return fig


# ---------------------------------------------------------------------------------------------
# 6. domain x expert specialisation


def plot_domain_expert_heatmap(counts, domains, *, ax=None, highlight: int | None = None,
                               title: str | None = None, colorbar: bool = True):
    """Which expert takes which domain: rows = domains, columns = experts, cells = share of the row.

    Args:
        counts: ``[D, E]`` token slots of each domain sent to each expert.
        domains: ``D`` domain names.
        highlight: an expert whose column is framed.
    Each cell is written as a percentage; a row of ``1/E`` everywhere means no specialisation.
    """
    counts = _array("counts", counts, 2)
    _nonnegative("counts", counts)
    num_domains, num_experts = counts.shape
    if num_domains == 0 or num_experts == 0:
        raise ValueError(f"counts must have at least one domain and one expert, got shape {counts.shape}")
    domains = [str(d) for d in domains]
    if len(domains) != num_domains:
        raise ValueError(f"domains must have one name per row of counts ({num_domains}), got {len(domains)}")
    if highlight is not None:
        highlight = check_int("highlight", highlight, minimum=0, maximum=num_experts - 1)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
    fig, ax = _axes(ax, (0.6 * num_experts + 3.0, 0.5 * num_domains + 1.5))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    for d in range(num_domains):
        for e in range(num_experts):
            ax.text(e, d, f"{100 * share[d, e]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if share[d, e] > 0.6 else "black")
    if highlight is not None:
        ax.add_patch(Rectangle((highlight - 0.5, -0.5), 1, num_domains, fill=False, edgecolor=DROPPED_COLOR,
                               linewidth=2))
    if colorbar:
        fig.colorbar(image, ax=ax, label=_("share of the domain's slots"), fraction=0.05, pad=0.02)
    ax.set_xticks(np.arange(num_experts))
    ax.set_yticks(np.arange(num_domains), domains)
    ax.set_xlabel(_("expert"))
    ax.grid(False)
    ax.set_title(title if title is not None else _("which expert takes which domain"))
    return fig


def _history_ratio(history) -> np.ndarray:
    """Max/mean load of each row of ``history`` (checked ``[steps + 1, E]``); 1.0 where nothing was routed."""
    history = _array("history", history, 2)
    _nonnegative("history", history)
    steps, num_experts = history.shape
    if steps == 0 or num_experts == 0:
        raise ValueError(f"history must have at least one step and one expert, got shape {history.shape}")
    mean = history.mean(1)
    return np.divide(history.max(1), mean, out=np.ones_like(mean, dtype=float), where=mean > 0)


def _history_frame(ax, ratio, max_steps, ylim, title) -> None:
    steps = ratio.size
    ax.set_xlim(0, max(1, steps - 1) if max_steps is None else max(1, max_steps))
    ax.set_ylim(0.9, max(4.0, float(ratio.max()) * 1.05) if ylim is None else ylim)
    ax.set_title(title if title is not None else
                 _("balancing: max/mean {start:.2f} -> {end:.2f}").format(start=ratio[0], end=ratio[-1]))


def plot_load_history(history, *, ax=None, title: str | None = None, max_steps: int | None = None,
                      ylim: float | None = None):
    """Max/mean load over balancing steps (``history``: ``[steps + 1, E]`` slots per expert per step).

    Used by the balancing panel of the routing dashboard: 1.0 is perfect balance. ``max_steps`` and
    ``ylim`` fix the frame (a dashboard keeps it while its sliders move); by default it fits the data.
    """
    ratio = _history_ratio(history)
    fig, ax = _axes(ax, (5.0, 3.0))
    ax.plot(np.arange(ratio.size), ratio, marker="o", markersize=3, color="#2ca02c", label=_("max/mean load"))
    ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label=_("perfect balance"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    _history_frame(ax, ratio, max_steps, ylim, title)
    ax.set_xlabel(_("balancing update step"))
    ax.set_ylabel(_("max / mean load"))
    legend_below(ax, ncol=2)
    return fig


def update_load_history(ax, history, *, title: str | None = None, max_steps: int | None = None,
                        ylim: float | None = None) -> bool:
    """Make ``ax``, drawn by ``plot_load_history``, show this history by changing its line (the
    picture equals a fresh plot). Returns False, changing nothing, when ``ax`` holds no such plot or one
    drawn in another language. Introduced in notebook 05."""
    ratio = _history_ratio(history)
    line, balance = _("max/mean load"), _("perfect balance")  # as translated now
    lines = {ln.get_label(): ln for ln in ax.lines}
    if set(lines) != {line, balance} or not _in_current_language(ax, _("balancing update step"), _("max / mean load")):
        return False
    lines[line].set_data(np.arange(ratio.size), ratio)
    _history_frame(ax, ratio, max_steps, ylim, title)
    return True


def plot_capacity_sweep(sweep: CapacitySweep, *, ax=None):
    """Two panels: dropped slots/tokens (%) and output error (%) vs capacity factor; returns the Figure.

    The dotted vertical line is where the capacity reaches the busiest expert's load (no drops beyond).
    With ``ax`` = a pair of axes the panels are drawn there.

    Introduced in notebook 03.
    """
    if not isinstance(sweep, CapacitySweep):
        raise TypeError(f"sweep must be a CapacitySweep (from capacity_sweep), got {type(sweep).__name__}")
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    else:
        fig = ax[0].figure
    left, right = ax
    left.plot(sweep.factors, 100 * sweep.dropped_slots, "o-", label=_("slots dropped"))
    left.plot(sweep.factors, 100 * sweep.dropped_tokens, "s--", label=_("tokens with every slot dropped"))
    left.set_xlabel(_("capacity factor"))
    left.set_ylabel(_("dropped (%)"))
    # i18n: drop_policy is a config value ("position" or "priority"), kept in English
    left.set_title(_("drops ({tokens} tokens, top-{top_k}, {drop_policy} policy)").format(
        tokens=sweep.tokens, top_k=sweep.top_k, drop_policy=sweep.drop_policy))
    left.legend(fontsize=8)
    right.plot(sweep.factors, 100 * sweep.relative_error, "o-", color="C3")
    right.set_xlabel(_("capacity factor"))
    right.set_ylabel(_("relative error vs dropless (%)"))
    right.set_title(_("output error"))
    # capacity factor at which the busiest expert fits: C = cf * N * K / E >= max load
    enough = sweep.load.max() * len(sweep.load) / (sweep.tokens * sweep.top_k)
    for a in (left, right):
        a.axvline(enough, color="grey", ls=":", lw=1)
        a.set_ylim(bottom=0)
    fig.tight_layout()
    return fig
