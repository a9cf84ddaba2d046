"""Figures of notebook 07 as pure functions (data -> matplotlib Figure), and its budget dashboard.

Introduced in notebook 07. ``memory_bar_figure`` draws the stacked memory bar of one serving budget with
the capacity of whole servers marked; ``params_figure`` compares total and active parameters of several
models with the owners' published figures; ``BudgetDashboard`` wires a model, a weight format, a context,
a batch and a device to ``memory_bar_figure`` (the widget pattern of ``moe_lab.viz.widgets``). None needs a
browser, so tests call them directly.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from moe_lab.budget.hardware import Device, device_names, load_device
from moe_lab.budget.memory import DTYPES, GB, ServingBudget, devices_needed, serving_memory
from moe_lab.budget.spec import load_model, model_ids
from moe_lab.i18n import N_, _, ngettext
from moe_lab.viz.figures import legend_below
from moe_lab.viz.widgets import Dashboard

PART_COLORS = {"weights": "#4C72B0", "kv_cache": "#DD8452", "workspace": "#55A868"}
PART_LABELS = {"weights": N_("weights"), "kv_cache": N_("KV cache"), "workspace": N_("workspace")}  # _() when shown


def memory_bar_figure(budget: ServingBudget, device: Device, devices: int, reserve: float = 0.10) -> Figure:
    """One stacked horizontal bar (weights, KV cache, workspace in GB) against the usable memory of
    ``devices`` devices; dashed lines mark whole servers when the device's node size is known."""
    if not isinstance(budget, ServingBudget):
        raise TypeError(f"budget must be a ServingBudget, got {type(budget).__name__}")
    usable = device.memory_gb * (1.0 - reserve)
    parts = budget.parts_gb()
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    left = 0.0
    for key, value in parts.items():
        ax.barh([0], [value], left=left, color=PART_COLORS[key],
                label=f"{_(PART_LABELS[key])} {value:,.1f} GB")
        left += value
    capacity = devices * usable
    ax.axvline(capacity, color="black", lw=1.5, zorder=3,
               label=_("{devices:,} x {device} usable = {gb:,.0f} GB").format(devices=devices, device=device.name,
                                                                               gb=capacity))
    per_node = device.devices_per_node
    right = capacity
    if per_node:
        nodes = math.ceil(devices / per_node)
        for k in range(1, nodes + 1):  # server boundaries, drawn over the bar
            ax.axvline(k * per_node * usable, color="0.8", ls="--", lw=1.2, zorder=3,
                       label=_("one server = {per_node} x {gb:,.1f} GB").format(per_node=per_node, gb=usable)
                       if k == 1 else None)
        right = nodes * per_node * usable
    total = budget.total / GB
    ax.set_xlim(0, max(total, right) * 1.05)
    ax.set_yticks([])
    ax.set_xlabel(_("GB (1e9 bytes)"))
    ax.set_title(_budget_title(budget, total, devices, device, per_node), fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=2, fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.03, right=0.97, top=0.88, bottom=0.5)
    return fig


def _budget_title(budget: ServingBudget, total: float, devices: int, device: Device, per_node: int | None) -> str:
    """The memory bar's title: model, format, context x batch, total GB -> devices (and server nodes)."""
    values = {"model": budget.name, "dtype": budget.dtype, "context": budget.context, "batch": budget.batch,
              "total": total, "devices": devices, "device": device.name}
    if not per_node:
        return _("{model}, {dtype}, context {context:,} x batch {batch:,}: {total:,.0f} GB -> "
                 "{devices:,} x {device}").format(**values)
    nodes = math.ceil(devices / per_node)
    return ngettext("{model}, {dtype}, context {context:,} x batch {batch:,}: {total:,.0f} GB -> "
                    "{devices:,} x {device} = {nodes:,} node",
                    "{model}, {dtype}, context {context:,} x batch {batch:,}: {total:,.0f} GB -> "
                    "{devices:,} x {device} = {nodes:,} nodes", nodes).format(nodes=nodes, **values)


def message_figure(text: str) -> Figure:
    """A figure of the same size as ``memory_bar_figure`` that says why there is no bar."""
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, wrap=True)
    return fig


def params_figure(rows: list[dict]) -> Figure:
    """Total and active parameters (billions, log scale) per model, with published figures as markers.

    ``rows``: dicts with ``name``, ``total``, ``active`` and optionally ``published_total``,
    ``published_active`` (parameter counts, not billions).
    """
    if not rows:
        raise ValueError("rows must contain at least one model")
    names = [r["name"] for r in rows]
    y = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.2))
    ax.barh([i + 0.2 for i in y], [r["total"] / 1e9 for r in rows], height=0.4, color="#4C72B0", label=_("total"))
    ax.barh([i - 0.2 for i in y], [r["active"] / 1e9 for r in rows], height=0.4, color="#DD8452",
            label=_("active per token"))
    pub_t = [(i + 0.2, r["published_total"] / 1e9) for i, r in enumerate(rows) if r.get("published_total")]
    pub_a = [(i - 0.2, r["published_active"] / 1e9) for i, r in enumerate(rows) if r.get("published_active")]
    if pub_t:
        ax.plot([v for _pos, v in pub_t], [p for p, _v in pub_t], "k|", ms=12, mew=2, label=_("published"))
    if pub_a:
        ax.plot([v for _pos, v in pub_a], [p for p, _v in pub_a], "k|", ms=12, mew=2)
    ax.set_xscale("log")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(_("parameters (billions, log scale)"))
    # under the axes: inside ("lower right") it covered the longest bars (kimi-k2's 1,000B total), in both languages
    legend_below(ax, ncol=3)
    fig.tight_layout()
    return fig


class BudgetDashboard(Dashboard):
    """Model, weight format, context, batch and device -> the memory bar of ``memory_bar_figure``.

    ``display(BudgetDashboard())`` shows it; ``figure(**values)`` is the picture for any setting. A context
    longer than the model reads (``max_position_embeddings``) draws a message instead of a bar.
    """

    CONTEXTS = tuple(2**i for i in range(10, 18))
    BATCHES = (1, 2, 4, 8, 16, 32, 64)
    min_height = "300px"
    css_class = "moe-budget-dashboard"

    def __init__(self, model: str = "openpangu-ultra-moe-718b", context: int = 32768, batch: int = 8,
                 device: str = "atlas-800i-a2", quiet: bool = False):
        self.controls = {
            "model": widgets.Dropdown(options=model_ids(), value=model, description=_("model")),
            "dtype": widgets.Dropdown(options=list(DTYPES), value="bf16", description="dtype"),
            "context": widgets.SelectionSlider(options=self.CONTEXTS, value=context, description=_("context"),
                                               continuous_update=False),
            "batch": widgets.SelectionSlider(options=self.BATCHES, value=batch, description=_("batch"),
                                             continuous_update=False),
            "device": widgets.Dropdown(options=device_names(), value=device, description=_("device")),
        }
        c = self.controls
        self._setup(widgets.VBox([widgets.HBox([c["model"], c["dtype"], c["device"]]),
                                  widgets.HBox([c["context"], c["batch"]])]), quiet)

    def figure(self, model, dtype, context, batch, device):
        spec = load_model(model)
        limit = spec.max_position_embeddings
        if limit and context > limit:
            return message_figure(_("{model} reads at most {limit:,} tokens (max_position_embeddings):\n"
                                    "pick a context of at most {limit:,}").format(model=model, limit=limit))
        dev = load_device(device)
        budget = serving_memory(spec, dtype, context, batch)
        return memory_bar_figure(budget, dev, devices_needed(budget.total, dev))
