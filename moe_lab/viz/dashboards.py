"""Dashboards: ipywidgets wired to the pure figures of ``moe_lab.viz.figures``. Introduced in notebook 05.

Two dashboards:

* ``RoutingDashboard``: a synthetic router you can bend (number of experts, top-k, capacity factor,
  temperature, noise, input skew, balancing method), simulated in NumPy (``moe_lab.viz.simulate``).
* ``ModelDashboard``: the trained tiny MoE LM (``moe_lab.lm``): layer, expert, input text.

Both follow the widget pattern of ``moe_lab.viz.widgets`` (one PNG per redraw, a PNG fallback).
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from moe_lab.checks import check_int
from moe_lab.lm.corpus import DOMAINS
from moe_lab.lm.routes import route_text_batched
from moe_lab.viz import figures as viz
from moe_lab.viz.simulate import BalancingRun, simulate_balancing
from moe_lab.viz.widgets import Dashboard


class RoutingDashboard(Dashboard):
    """Synthetic routing dashboard: tokens per expert, routing heatmap, confidence, balancing.

    Introduced in notebook 05. ``display(RoutingDashboard())`` in a notebook; the app notebook
    ``app_expert_load.ipynb`` serves it with Voila.
    """

    min_height = "560px"
    css_class = "moe-routing-dashboard"

    def __init__(self, num_tokens: int = 512, seed: int = 0, heatmap_tokens: int = 48,
                 figsize: tuple[float, float] = (10.0, 6.0), quiet: bool = False):
        self.num_tokens = check_int("num_tokens", num_tokens, minimum=8)
        self.seed = check_int("seed", seed, minimum=0)
        self.heatmap_tokens = check_int("heatmap_tokens", heatmap_tokens, minimum=1)
        self.figsize = figsize
        self._kept = None  # (figure, axes) redrawn on every slider move, made by the first redraw
        style = {"description_width": "110px"}
        lay = widgets.Layout(width="330px")

        def slider(cls, value, lo, hi, step, desc, fmt=None):
            kw = {"readout_format": fmt} if fmt else {}
            return cls(value=value, min=lo, max=hi, step=step, description=desc, style=style, layout=lay,
                       continuous_update=True, **kw)

        self.controls = {
            "num_experts": slider(widgets.IntSlider, 8, 2, 16, 1, "experts E"),
            "top_k": slider(widgets.IntSlider, 2, 1, 8, 1, "top-k"),
            "capacity_factor": slider(widgets.FloatSlider, 1.25, 0.5, 3.0, 0.25, "capacity factor", ".2f"),
            "dropless": widgets.Checkbox(value=False, description="dropless (no capacity)", style=style,
                                         layout=lay),
            "temperature": slider(widgets.FloatSlider, 1.0, 0.25, 4.0, 0.25, "temperature", ".2f"),
            "noise": slider(widgets.FloatSlider, 0.0, 0.0, 2.0, 0.25, "router noise", ".2f"),
            "skew": slider(widgets.FloatSlider, 1.0, 0.0, 3.0, 0.25, "input skew", ".2f"),
            "balancing": widgets.Dropdown(options=[("none", "none"), ("aux loss (Switch)", "aux"),
                                                   ("bias (DeepSeek-V3)", "bias")], value="none",
                                          description="balancing", style=style, layout=lay),
            "steps": slider(widgets.IntSlider, 10, 0, 20, 1, "update steps"),
        }
        c = self.controls
        c["top_k"].max = c["num_experts"].value
        # top-k can never exceed the number of experts: lowering E lowers top_k's maximum (and value)
        # before the plot is redrawn (this observer is registered before interactive_output's)
        c["num_experts"].observe(self._limit_top_k, names="value")
        c["dropless"].observe(lambda ch: setattr(c["capacity_factor"], "disabled", ch["new"]), names="value")
        left = widgets.VBox([c["num_experts"], c["top_k"], c["capacity_factor"], c["dropless"]])
        mid = widgets.VBox([c["temperature"], c["noise"], c["skew"]])
        right = widgets.VBox([c["balancing"], c["steps"]])
        self._setup(widgets.HBox([left, mid, right]), quiet)

    def _limit_top_k(self, change) -> None:
        top_k = self.controls["top_k"]
        if top_k.value > change["new"]:
            top_k.value = change["new"]
        top_k.max = change["new"]

    def run(self, num_experts: int, top_k: int, capacity_factor: float, dropless: bool, temperature: float,
            noise: float, skew: float, balancing: str, steps: int) -> BalancingRun:
        """The simulation behind the plot (top_k is clipped to num_experts, whatever the caller sends)."""
        top_k = max(1, min(int(top_k), int(num_experts)))
        return simulate_balancing(balancing, steps, num_tokens=self.num_tokens, num_experts=num_experts,
                                  top_k=top_k, capacity_factor=None if dropless else capacity_factor,
                                  temperature=temperature, noise=noise, skew=skew, seed=self.seed)

    def figure(self, num_experts: int, top_k: int, capacity_factor: float, dropless: bool, temperature: float,
               noise: float, skew: float, balancing: str, steps: int):
        """A new (pyplot) figure of the four panels for these control values."""
        fig = plt.figure(figsize=self.figsize)
        self._plot(fig, self._frame(fig), num_experts, top_k, capacity_factor, dropless, temperature, noise,
                   skew, balancing, steps)
        return fig

    def _redraw(self, **values):
        """The figure of ``values`` drawn on the figure of the previous redraw (the same picture as
        ``figure(**values)``, a test compares the PNGs).

        Only the panels' artists are replaced (``viz.clear_plot``); the figure, its axes and their tick
        objects stay, and the figure's own Agg canvas keeps its renderer, which is what matplotlib's
        text-layout cache is keyed on. A new figure per slider move built its axes (~50 ms) and all
        its tick objects and text layouts again; redrawing in place makes a redraw + PNG about a
        fifth faster (median 245 -> 191 ms, measured back to back on a loaded 2-core machine). Most
        of what is left is Agg drawing the picture, half of it text.
        """
        if self._kept is None:
            # not a pyplot figure: the inline backend never shows it by itself and closing is not needed
            fig = Figure(figsize=self.figsize)
            FigureCanvasAgg(fig)
            self._kept = fig, self._frame(fig)
        else:
            for ax in self._kept[1].flat:
                viz.clear_plot(ax)
        fig, axes = self._kept
        self._plot(fig, axes, **values)
        return fig

    @staticmethod
    def _frame(fig):
        """The 2 x 2 axes. A fixed layout (no constrained layout, no colour bar): the same frame every
        time, and cheaper to draw, which keeps a slider move under ~0.3 s."""
        axes = fig.subplots(2, 2, gridspec_kw={"height_ratios": [1.1, 1.0]})
        fig.subplots_adjust(left=0.06, right=0.985, top=0.86, bottom=0.08, hspace=0.55, wspace=0.16)
        return axes

    def _plot(self, fig, axes, num_experts: int, top_k: int, capacity_factor: float, dropless: bool,
              temperature: float, noise: float, skew: float, balancing: str, steps: int) -> None:
        """Draw the four panels and the title for these control values on ``axes`` (empty, 2 x 2)."""
        top_k = max(1, min(int(top_k), int(num_experts)))
        run = self.run(num_experts, top_k, capacity_factor, dropless, temperature, noise, skew, balancing, steps)
        r = run.routing
        balanced = self.num_tokens * top_k / num_experts
        # fixed frame: up to 4x the balanced load (taller bars are cut and labelled)
        ylim = max(4.0 * balanced, 1.15 * (r.capacity or 0))
        after = f" after {steps} {balancing} steps" if balancing != "none" and steps else ""
        cap = "dropless" if r.capacity is None else f"capacity {r.capacity}"
        viz.plot_expert_load(r.load(), r.capacity, r.kept(), ax=axes[0, 0], ylim=ylim,
                             title=f"tokens per expert ({cap}){after}\n"
                                   f"dropped {r.dropped()} of {r.indices.size} slots, "
                                   f"max/mean {r.load().max() / balanced:.2f}")
        n = min(self.heatmap_tokens, self.num_tokens)
        viz.plot_routing_heatmap(r.probs[:n], r.indices[:n], r.keep[:n], ax=axes[0, 1], colorbar=False,
                                 title=f"router probability (bright = high) of the first {n} tokens\n"
                                       "dot = chosen expert, x = dropped by capacity")
        viz.plot_confidence_histogram(r.probs, top_k, ax=axes[1, 0])
        viz.plot_load_history(run.history, ax=axes[1, 1],
                              title="balancing: none" if balancing == "none" else None)
        fig.suptitle(f"{self.num_tokens} tokens, E={num_experts}, top-{top_k}, temperature {temperature:g}, "
                     f"noise {noise:g}, skew {skew:g}", fontsize=10)


SAMPLE_TEXTS = {
    "English": "In the beginning God created the heaven and the earth. And the earth was without form.",
    "Chinese": "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "Python": "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n"
              "    return total / len(values)\n",
    "arithmetic": "12+7=19\n305-48=257\n6*7=42\n81/9=9\n",
    "mixed": "x = 3  # 三\nprint(x * 4)\n3*4=12 and the answer was good.",
}
# what the kernel-side stepping feeds the text box besides the samples: edge cases a learner may type
EDGE_TEXTS = ("", "a", "\n\n", "🙂 emoji, é and ü", "天" * 150 + "the end")


class ModelDashboard(Dashboard):
    """Routing inside the trained tiny MoE LM: which expert takes each character, per layer.

    Controls: a sample text (fills the text box), the text box, the layer, the expert to highlight.
    Panels: the text coloured by first-choice expert; the load per layer for this text; the
    domain x expert specialisation of the chosen layer (``domain_counts``, e.g. from
    ``domain_expert_counts(model, corpus, first_choice=True)``).
    Introduced in notebook 05.
    """

    min_height = "600px"
    css_class = "moe-model-dashboard"

    def __init__(self, model, domain_counts: np.ndarray, *, max_chars: int = 240,
                 figsize: tuple[float, float] = (10.0, 6.4), quiet: bool = False):
        self.model = model
        cfg = model.cfg
        self.num_layers, self.num_experts, self.top_k = cfg.num_hidden_layers, cfg.num_experts, cfg.top_k
        domain_counts = np.asarray(domain_counts)
        want = (self.num_layers, len(DOMAINS), self.num_experts)
        if domain_counts.shape != want:
            raise ValueError(f"domain_counts must have shape (layers, domains, experts) = {want}, "
                             f"got {domain_counts.shape}")
        self.domain_counts = domain_counts
        self.max_chars = check_int("max_chars", max_chars, minimum=1)
        self.figsize = figsize
        self._cache: dict[str, object] = {}
        style = {"description_width": "60px"}
        self.sample = widgets.Dropdown(options=list(SAMPLE_TEXTS), value="mixed", description="sample",
                                       style=style, layout=widgets.Layout(width="220px"))
        self.controls = {
            "text": widgets.Textarea(value=SAMPLE_TEXTS["mixed"], description="text", continuous_update=False,
                                     style=style, layout=widgets.Layout(width="520px", height="72px")),
            "layer": widgets.IntSlider(value=self.num_layers - 1, min=0, max=self.num_layers - 1,
                                       description="layer", style=style, layout=widgets.Layout(width="220px")),
            "expert": widgets.Dropdown(options=[("all", -1)] + [(f"expert {e}", e) for e in range(self.num_experts)],
                                       value=-1, description="expert", style=style,
                                       layout=widgets.Layout(width="220px")),
        }
        self.sample.observe(lambda ch: setattr(self.controls["text"], "value", SAMPLE_TEXTS[ch["new"]]),
                            names="value")
        c = self.controls
        self._setup(widgets.HBox([widgets.VBox([self.sample, c["layer"], c["expert"]]), c["text"]]), quiet)

    def control_values(self, name: str, max_values: int | None = None) -> list:
        if name == "text":
            return list(SAMPLE_TEXTS.values()) + list(EDGE_TEXTS)
        return super().control_values(name, max_values)

    def routing(self, text: str):
        """The routing of ``text`` (cut to ``max_chars`` characters), cached: moving the layer or expert
        control redraws without running the model again."""
        text = text[: self.max_chars]
        if text not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[text] = route_text_batched(self.model, text)
        return self._cache[text]

    def figure(self, text: str, layer: int, expert: int):
        layer = max(0, min(int(layer), self.num_layers - 1))
        highlight = None if expert is None or int(expert) < 0 else min(int(expert), self.num_experts - 1)
        fig = plt.figure(figsize=self.figsize)
        grid = fig.add_gridspec(2, 2, height_ratios=[1.25, 1.0], left=0.07, right=0.97, top=0.93, bottom=0.08,
                                hspace=0.35, wspace=0.25)
        text_ax = fig.add_subplot(grid[0, :])
        load_ax, dom_ax = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
        shown = text[: self.max_chars]
        if shown:
            r = self.routing(shown)
            first = viz.char_experts(shown, r.top1()[layer])
            loads = np.stack([np.bincount(r.indices[li].reshape(-1), minlength=self.num_experts)
                              for li in range(self.num_layers)])
            cut = " (cut)" if len(text) > self.max_chars else ""
            viz.plot_text_experts(shown, first, self.num_experts, highlight=highlight, ax=text_ax, width=48,
                                  max_lines=8, fixed_frame=True,
                                  title=f"layer {layer}: first-choice expert of each character{cut}")
        else:  # an empty text box is allowed: say what to do instead of failing
            text_ax.axis("off")
            text_ax.text(0.5, 0.5, "type some text in the box above", ha="center", va="center", fontsize=12)
            loads = np.zeros((self.num_layers, self.num_experts), np.int64)
        viz.plot_layer_load(loads, ax=load_ax, highlight=highlight,
                            title=f"this text: load per layer (all top-{self.top_k} slots)")
        viz.plot_domain_expert_heatmap(self.domain_counts[layer], DOMAINS, ax=dom_ax, highlight=highlight,
                                       colorbar=False, title=f"held-out text, layer {layer}: domain x expert")
        return fig
