"""Pictures of routing: pure functions from arrays to a matplotlib ``Figure`` (no widgets in here).

Introduced in notebook 05 (the capacity sweep in notebook 03). Every function takes plain arrays (NumPy,
lists, or MindSpore tensors), checks their shapes, draws on ``ax`` when given (so a dashboard can lay
several plots out in one figure) or on a new figure, and returns the figure. The dashboards of
``moe_lab.viz.dashboards`` only decide *which* arrays to draw; everything visible is decided here and
unit-tested without a browser (the pictures of a trained model's routes are in ``moe_lab.viz.lm_routes``).
Every word they draw is a message of ``moe_lab.i18n``, looked up when the figure is drawn: English, or
Chinese after ``moe_lab.setup(lang="zh")`` (which also picks a CJK font).

    fig = plot_expert_load(load, capacity=40)           # tokens per expert, capacity line, drops
    fig = plot_routing_heatmap(probs, indices, keep)    # token x expert router probabilities
    fig = plot_confidence_histogram(probs, top_k=2)     # how sure the router is
    fig = plot_load_history(history)                    # max/mean load over balancing steps
    fig = plot_capacity_sweep(sweep)                    # drops and output error vs capacity factor
    clear_plot(ax)                                      # empty ax again: a fast redraw on the same axes
    update_expert_load(ax, load, capacity, ylim=500)    # the same picture by changing the artists (also
                                                        # update_routing_heatmap, _confidence_histogram, _load_history)
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.font_manager as fm
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import StepPatch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import ScaledTranslation

from moe_lab.checks import check_int
from moe_lab.core.capacity_sweep import CapacitySweep
from moe_lab.i18n import _

DROPPED_COLOR = "#d62728"
NO_EXPERT_COLOR = "#bdbdbd"


# ---------------------------------------------------------------------------------------------
# argument checks: every error names the argument, the shape it has and the shape it needs


def checked_array(name: str, value, ndim: int, *, integer: bool = False, boolean: bool = False) -> np.ndarray:
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


def check_nonnegative(name: str, arr: np.ndarray) -> None:
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must not be negative, got minimum {arr.min()}")


def checked_expert_ids(name: str, arr: np.ndarray, num_experts: int, allow_none: bool = False) -> None:
    """Expert indices must lie in [0, num_experts) (or be -1, "no expert", where allowed)."""
    low = -1 if allow_none else 0
    if arr.size and (arr.min() < low or arr.max() >= num_experts):
        allowed = f"-1 (no expert) or 0..{num_experts - 1}" if allow_none else f"0..{num_experts - 1}"
        raise ValueError(f"{name} must hold expert indices {allowed}, got values from {arr.min()} to {arr.max()}")


def figure_axes(ax, figsize):
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
    load = checked_array("load", load, 1, integer=True)
    check_nonnegative("load", load)
    if load.size == 0:
        raise ValueError("load must have at least one expert, got shape (0,)")
    if capacity is not None:
        capacity = check_int("capacity", capacity, minimum=0)
    if kept is None:
        kept = load if capacity is None else np.minimum(load, capacity)
    else:
        kept = checked_array("kept", kept, 1, integer=True)
        _same_shape("kept", kept, "load", load.shape)
        check_nonnegative("kept", kept)
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
    fig, ax = figure_axes(ax, (6.4, 3.2))
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
    probs = checked_array("probs", probs, 2)
    n, num_experts = probs.shape
    if n == 0 or num_experts == 0:
        raise ValueError(f"probs must have at least one token and one expert, got shape {probs.shape}")
    if probs.min() < 0 or probs.max() > 1 + 1e-6:
        raise ValueError(f"probs must be probabilities in [0, 1], got values from {probs.min():.3g} "
                         f"to {probs.max():.3g}")
    if keep is not None and indices is None:
        raise ValueError("keep needs indices (it says which of the chosen experts were kept)")
    if indices is not None:
        indices = checked_array("indices", indices, 2, integer=True)
        if indices.shape[0] != n:
            raise ValueError(f"indices must have one row per token of probs ({n}), got shape {indices.shape}")
        checked_expert_ids("indices", indices, num_experts)
        keep = np.ones(indices.shape, bool) if keep is None else checked_array("keep", keep, 2, boolean=True)
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
    fig, ax = figure_axes(ax, (max(4.0, min(12.0, 0.18 * n + 2)), 0.3 * num_experts + 1.5))
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
    fig, ax = figure_axes(ax, (5.0, 3.0))
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
    probs = checked_array("probs", probs, 2)
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


def _history_ratio(history) -> np.ndarray:
    """Max/mean load of each row of ``history`` (checked ``[steps + 1, E]``); 1.0 where nothing was routed."""
    history = checked_array("history", history, 2)
    check_nonnegative("history", history)
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
    fig, ax = figure_axes(ax, (5.0, 3.0))
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
