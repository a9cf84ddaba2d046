"""Figures and the dashboard of expert parallelism at scale (notebook 06): bytes per device, load per
device, a real msrun run. Numbers come from ``moe_lab.parallel.sim``; this module only draws and wires.

Legends sit outside the axes (``LEGEND_OUTSIDE``) and the mean line is named in the title: a legend
inside a bar chart covers whichever bars happen to be under it (``tests/test_ep_sim.py`` checks that
no legend overlaps a bar)."""

from __future__ import annotations

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np

from moe_lab.i18n import N_, _, ngettext
from moe_lab.parallel.sim import (
    MIB,
    PLACEMENTS,
    SimResult,
    a2a_volume,
    imbalance,
    simulate,
    summary_line,
)
from moe_lab.viz.widgets import Dashboard

LEGEND_OUTSIDE = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
# the dashboard's menus: value (``moe_lab.parallel.sim``'s names) -> label, translated where shown
ROUTING_LABELS = {"uniform": N_("uniform"), "zipf": N_("Zipf")}
PLACEMENT_LABELS = {"contiguous": N_("contiguous"), "round_robin": N_("round-robin")}
LINK_LABELS = {"intra": N_("intra-node"), "inter": N_("inter-node")}


def _options(values, labels: dict) -> list[tuple[str, str]]:
    """Menu options ``(translated label, value)``; a value without a label shows as itself."""
    return [(_(labels[v]) if v in labels else str(v), v) for v in values]

# ---------------------------------------------------------------------------------------------
# Figures (pure: numbers -> Figure)

def fig_volume_vs_ep(eps, tokens: int, hidden_size: int, top_k: int, *, num_experts: int = 256,
                     devices_per_node: int = 8, dtype: str = "bfloat16", shares=None):
    """Stacked bars: bytes one device sends per layer (intra-node, inter-node) for several EP degrees."""
    vols = [a2a_volume(tokens, hidden_size, top_k, ep, num_experts=num_experts, shares=shares,
                       devices_per_node=devices_per_node, dispatch_dtype=dtype, combine_dtype=dtype) for ep in eps]
    intra = np.array([v.dispatch["intra"] + v.combine["intra"] for v in vols]) / MIB
    inter = np.array([v.dispatch["inter"] + v.combine["inter"] for v in vols]) / MIB
    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    x = np.arange(len(eps))
    ax.bar(x, intra, color="tab:blue", label=_("intra-node (HCCS)"))
    ax.bar(x, inter, bottom=intra, color="tab:red", label=_("inter-node (network)"))
    # i18n: a tick label in two lines: the EP degree, then the number of server nodes it spans
    ax.set_xticks(x, [ngettext("EP {ep}\n{nodes} node", "EP {ep}\n{nodes} nodes", v.nodes).format(ep=ep, nodes=v.nodes)
                      for ep, v in zip(eps, vols, strict=True)])
    ax.set_ylabel(_("MiB sent per device per layer"))
    title = _("dispatch + combine, {tokens} tokens/device, top-{top_k}, hidden_size {hidden_size}, {dtype}")
    ax.set_title(title.format(tokens=tokens, top_k=top_k, hidden_size=hidden_size, dtype=dtype), fontsize=9)
    ax.legend(**LEGEND_OUTSIDE, fontsize=8)
    fig.tight_layout()
    return fig


def fig_device_loads(loads, title: str = "", ax=None):
    """Bars: rows per device, with the mean as a dashed line; the title (``title``, then max / mean) says so."""
    loads = np.asarray(loads, np.float64)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
    if loads.size <= 64:
        ax.bar(np.arange(loads.size), loads, color="tab:green", width=0.85)
    else:  # hundreds of bars draw slowly; one filled outline looks the same
        ax.stairs(loads, np.arange(loads.size + 1) - 0.5, fill=True, color="tab:green")
    ax.axhline(loads.mean(), color="black", lw=1, ls="--")
    if loads.size <= 16:
        ax.set_xticks(np.arange(loads.size))
    ax.set_xlabel(_("device (EP rank)"))
    ax.set_ylabel(_("rows processed"))
    if title:
        # i18n: {title} is what the bars show, e.g. "rows per rank:"
        heading = _("{title}  max/mean = {ratio:.2f} (dashed: mean)")
    else:
        heading = _("max/mean = {ratio:.2f} (dashed: mean)")
    ax.set_title(heading.format(title=title, ratio=imbalance(loads)))
    ax.set_ylim(0, max(loads.max() * 1.15, 1.0))
    if own:
        fig.tight_layout()
        return fig
    return ax.figure


def fig_run(result: dict):
    """The real msrun run: rows each rank's experts processed, and bytes each rank sent, per strategy."""
    names = list(result["strategies"])
    ranks = [row["rank"] for row in result["strategies"][names[0]]["ranks"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.8, 3.0))
    rows = [row["rows"] for row in result["strategies"][names[0]]["ranks"]]
    fig_device_loads(rows, _("rows per rank:"), ax=ax1)
    ax1.title.set_fontsize(9)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        sent = [row["bytes_sent"] / 1024 for row in result["strategies"][name]["ranks"]]
        ax2.bar(np.arange(len(ranks)) + i * width, sent, width, label=name)
    ax2.set_xticks(np.arange(len(ranks)) + width * (len(names) - 1) / 2, [str(r) for r in ranks])
    ax2.set_xlabel(_("rank (process)"))
    ax2.set_ylabel(_("KiB sent per forward"))
    ax2.set_title(_("bytes sent (ring accounting)"), fontsize=9)
    ax2.legend(**LEGEND_OUTSIDE, title=_("strategy"), fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig


def fig_sim(sim: SimResult):
    """Two panels: where one device's bytes go (per layer), and the rows per device."""
    v = sim.volume
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.2), gridspec_kw={"width_ratios": [1, 2]})
    parts = ("intra", "inter")
    colors = {"intra": "tab:blue", "inter": "tab:red"}
    bottom = np.zeros(2)
    for p in parts:
        vals = np.array([v.dispatch[p], v.combine[p]]) / MIB
        ax1.bar([0, 1], vals, bottom=bottom, color=colors[p], label=_(LINK_LABELS[p]))
        bottom += vals
    ax1.set_xticks([0, 1], [_("dispatch"), _("combine")])
    ax1.set_ylabel(_("MiB sent per device per layer"))
    ax1.set_title(ngettext("EP {ep} on {nodes} node: {share:.0%} leaves the node",
                           "EP {ep} on {nodes} nodes: {share:.0%} leaves the node", v.nodes).format(
                               ep=v.ep, nodes=v.nodes, share=v.inter_fraction), fontsize=9)
    ax1.legend(**LEGEND_OUTSIDE, fontsize=8)
    fig_device_loads(sim.loads, ax=ax2)
    ax2.set_title(_("rows per device: max/mean = {ratio:.2f} (expected {expected:.2f}; dashed: mean)").format(
        ratio=sim.sampled_imbalance, expected=sim.expected_imbalance), fontsize=9)
    fig.tight_layout()
    return fig


class EPDashboard(Dashboard):
    """Sliders and menus for ``moe_lab.parallel.sim.simulate`` (the widget pattern of ``moe_lab.viz.widgets``).

    ``display(EPDashboard())`` shows it; ``.controls`` lists the widgets; ``figure(**values)`` is the
    picture for any setting. Introduced in notebook 06.
    """

    EPS = (8, 16, 32, 64, 128, 256)
    TOKENS = (512, 1024, 2048, 4096, 8192)
    TOP_KS = (1, 2, 4, 8)
    HIDDEN_SIZES = (4096, 7168, 7680)
    min_height = "330px"
    css_class = "moe-ep-dashboard"

    def __init__(self, hidden_size: int = 7680, moe_layers: int = 58, quiet: bool = False):
        self.moe_layers = moe_layers
        style = {"description_width": "110px"}
        # menus show translated labels; their values stay the simulator's names ("uniform", "round_robin", ...)
        self.controls = {
            "ep": w.SelectionSlider(options=self.EPS, value=32, description=_("EP degree"), style=style),
            "tokens": w.SelectionSlider(options=self.TOKENS, value=4096, description=_("tokens/device"),
                                        style=style),
            "top_k": w.SelectionSlider(options=self.TOP_KS, value=8, description="top-k", style=style),
            "hidden_size": w.Dropdown(options=self.HIDDEN_SIZES, value=hidden_size, description="hidden_size",
                                      style=style),
            "dtype": w.Dropdown(options=("bfloat16", "int8"), value="bfloat16", description=_("dispatch dtype"),
                                style=style),
            "routing": w.Dropdown(options=_options(("uniform", "zipf"), ROUTING_LABELS), value="uniform",
                                  description=_("routing"), style=style),
            "skew": w.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.5, description=_("Zipf skew"), style=style,
                                  continuous_update=False),
            "scheme": w.Dropdown(options=_options(PLACEMENTS, PLACEMENT_LABELS), value="contiguous",
                                 description=_("placement"), style=style),
        }
        c = list(self.controls.values())
        self._setup(w.HBox([w.VBox(c[:4]), w.VBox(c[4:])]), quiet)

    def simulate(self, **values) -> SimResult:
        v = {**self.values(), **values}
        return simulate(v["ep"], v["tokens"], v["top_k"], v["hidden_size"], v["dtype"], v["routing"], v["skew"],
                        v["scheme"], moe_layers=self.moe_layers)

    def figure(self, **values):
        sim = self.simulate(**values)
        fig = fig_sim(sim)
        fig.text(0.5, 0.005, summary_line(sim), ha="center", va="bottom", fontsize=8)
        fig.subplots_adjust(bottom=0.2)
        return fig
