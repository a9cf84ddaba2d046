"""Figures of notebook 07 as pure functions (data -> matplotlib Figure), plus the PNG-fallback wrapper.

Introduced in notebook 07. ``memory_bar_figure`` draws the stacked memory bar of one serving budget with
the capacity of whole servers marked; ``params_figure`` compares total and active parameters of several
models with the owners' published figures. Neither needs a browser, so tests call them directly.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from moe_lab.budget.hardware import Device
from moe_lab.budget.memory import GB, ServingBudget

PART_COLORS = {"weights": "#4C72B0", "kv_cache": "#DD8452", "workspace": "#55A868"}
PART_LABELS = {"weights": "weights", "kv_cache": "KV cache", "workspace": "workspace"}


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
        ax.barh([0], [value], left=left, color=PART_COLORS[key], label=f"{PART_LABELS[key]} {value:,.1f} GB")
        left += value
    capacity = devices * usable
    ax.axvline(capacity, color="black", lw=1.5, zorder=3,
               label=f"{devices} x {device.name} usable = {capacity:,.0f} GB")
    per_node = device.devices_per_node
    right = capacity
    if per_node:
        nodes = math.ceil(devices / per_node)
        for k in range(1, nodes + 1):  # server boundaries, drawn over the bar
            ax.axvline(k * per_node * usable, color="0.8", ls="--", lw=1.2, zorder=3,
                       label=f"one server = {per_node} x {usable:,.1f} GB" if k == 1 else None)
        right = nodes * per_node * usable
    total = budget.total / GB
    ax.set_xlim(0, max(total, right) * 1.05)
    ax.set_yticks([])
    ax.set_xlabel("GB (1e9 bytes)")
    node_txt = f" = {math.ceil(devices / per_node)} nodes" if per_node else ""
    ax.set_title(f"{budget.name}, {budget.dtype}, context {budget.context:,} x batch {budget.batch}: "
                 f"{total:,.0f} GB -> {devices} x {device.name}{node_txt}", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=2, fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.03, right=0.97, top=0.88, bottom=0.5)
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
    ax.barh([i + 0.2 for i in y], [r["total"] / 1e9 for r in rows], height=0.4, color="#4C72B0", label="total")
    ax.barh([i - 0.2 for i in y], [r["active"] / 1e9 for r in rows], height=0.4, color="#DD8452",
            label="active per token")
    pub_t = [(i + 0.2, r["published_total"] / 1e9) for i, r in enumerate(rows) if r.get("published_total")]
    pub_a = [(i - 0.2, r["published_active"] / 1e9) for i, r in enumerate(rows) if r.get("published_active")]
    if pub_t:
        ax.plot([v for _, v in pub_t], [p for p, _ in pub_t], "k|", ms=12, mew=2, label="published")
    if pub_a:
        ax.plot([v for _, v in pub_a], [p for p, _ in pub_a], "k|", ms=12, mew=2)
    ax.set_xscale("log")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("parameters (billions, log scale)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
