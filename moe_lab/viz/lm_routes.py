"""Pictures of a trained model's routes: each layer's expert load, a text coloured by the expert that took
each character, and which expert takes which domain. Pure functions from arrays to a matplotlib ``Figure``.

Introduced in notebook 05 (the tiny MoE language model of notebook 04, and the app's model dashboard). The
conventions are those of ``moe_lab.viz.figures``: plain arrays in, shapes checked, ``ax`` optional, every
word a message of ``moe_lab.i18n``.

    fig = plot_layer_load(loads)                        # [layers, experts] share of the load
    fig = plot_text_experts(text, experts, 4)           # each character coloured by its expert
    fig = plot_text_samples({"English": (text, experts)}, 4)  # several texts, one grid each
    fig = plot_domain_expert_heatmap(counts, domains)   # which expert takes which domain
"""

from __future__ import annotations

import matplotlib.font_manager as fm
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Patch, Rectangle

from moe_lab.checks import check_int
from moe_lab.env import cjk_fonts
from moe_lab.i18n import _
from moe_lab.viz.figures import (
    DROPPED_COLOR,
    LEGEND_FONTSIZE,
    NO_EXPERT_COLOR,
    check_nonnegative,
    checked_array,
    checked_expert_ids,
    expert_colors,
    figure_axes,
    legend_below,
)

# ---------------------------------------------------------------------------------------------
# 1. expert load per layer


def plot_layer_load(loads, *, layer_names=None, ax=None, title: str | None = None, highlight: int | None = None):
    """Grouped bars: the share of token slots each expert takes, one group of bars per layer.

    Args:
        loads: ``[L, E]`` token slots per expert in each layer (counts; each row is normalised).
        layer_names: ``L`` labels (default ``layer 0``, ``layer 1`` ...).
        highlight: an expert index whose bars keep full colour while the others fade.
    The dashed line is perfect balance, ``1/E``.
    """
    loads = checked_array("loads", loads, 2)
    check_nonnegative("loads", loads)
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
    fig, ax = figure_axes(ax, (6.4, 3.0))
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
# 2. text coloured by the expert that took each character


def char_experts(text: str, byte_experts) -> np.ndarray:
    """Per-character experts from a byte-level model's per-byte experts (UTF-8).

    A Chinese character is 3 bytes, and each byte is routed on its own; the character gets the expert
    most of its bytes went to (ties: the earliest byte). ``byte_experts`` is ``[len(text.encode())]``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    byte_experts = checked_array("byte_experts", byte_experts, 1, integer=True)
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


def text_families() -> list[str]:
    """Font families for the characters of a text plot: DejaVu Sans, then every installed CJK font."""
    return ["DejaVu Sans", *cjk_fonts()]


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
    experts = checked_array("experts", experts, 1, integer=True)
    if experts.size != len(text):
        raise ValueError(f"experts must have one entry per character of text ({len(text)}), "
                         f"got shape {experts.shape}")
    checked_expert_ids("experts", experts, num_experts, allow_none=True)
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
# 3. domain x expert specialisation


def plot_domain_expert_heatmap(counts, domains, *, ax=None, highlight: int | None = None,
                               title: str | None = None, colorbar: bool = True):
    """Which expert takes which domain: rows = domains, columns = experts, cells = share of the row.

    Args:
        counts: ``[D, E]`` token slots of each domain sent to each expert.
        domains: ``D`` domain names.
        highlight: an expert whose column is framed.
    Each cell is written as a percentage; a row of ``1/E`` everywhere means no specialisation.
    """
    counts = checked_array("counts", counts, 2)
    check_nonnegative("counts", counts)
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
    fig, ax = figure_axes(ax, (0.6 * num_experts + 3.0, 0.5 * num_domains + 1.5))
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
