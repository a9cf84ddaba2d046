"""Dashboards: ipywidgets wired to the pure figures of ``moe_lab.viz.figures``. Introduced in notebook 05.

Two dashboards:

* ``RoutingDashboard``: a synthetic router you can bend (number of experts, top-k, capacity factor,
  temperature, noise, input skew, balancing method), simulated in NumPy (``moe_lab.viz.simulate``).
* ``ModelDashboard``: the trained tiny MoE LM (``moe_lab.lm``): layer, expert, input text.

Both follow the widget pattern of ``moe_lab.viz.widgets`` (one PNG per redraw, a PNG fallback).
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from moe_lab.checks import check_int
from moe_lab.i18n import N_, _, language, ngettext
from moe_lab.lm.corpus import DOMAINS
from moe_lab.lm.routes import route_text_batched
from moe_lab.viz import figures as viz
from moe_lab.viz import lm_routes
from moe_lab.viz.simulate import BalancingRun, simulate_balancing
from moe_lab.viz.widgets import Dashboard, KeptFigure, axis_below_data

# the balancing menu: value (``simulate.BALANCING``) -> label, translated where shown
BALANCING_LABELS = {"none": N_("none"), "aux": N_("aux loss (Switch)"), "bias": N_("bias (DeepSeek-V3)")}


class RoutingDashboard(Dashboard):
    """Synthetic routing dashboard: tokens per expert, routing heatmap, confidence, balancing.

    Introduced in notebook 05. ``display(RoutingDashboard())`` in a notebook; the app notebook
    ``app_expert_load.ipynb`` serves it with Voila. The tokens are ``simulate_routing(num_tokens, ...,
    seed=seed)``: with balancing "none" (or 0 update steps) the panels show exactly that routing, the
    one a notebook cell or a checker computes with the same settings.
    """

    min_height = "540px"  # the 10 x 6.6 inch figure at 80 dpi is 528 px tall
    css_class = "moe-routing-dashboard"
    HIST_STEPS = (0.3, 0.6, 1.0)  # y tops of the confidence panel (x num_tokens): 0.3 holds temperatures 0.5-1.25
    RATIO_STEPS = (4.0, 8.0, 16.0)  # y tops of the balancing panel (max/mean); 4 holds skew 3 at E=8

    def __init__(self, num_tokens: int = 512, seed: int = 0, heatmap_tokens: int = 48,
                 figsize: tuple[float, float] = (10.0, 6.6), quiet: bool = False):
        self.num_tokens = check_int("num_tokens", num_tokens, minimum=8)
        self.seed = check_int("seed", seed, minimum=0)
        self.heatmap_tokens = check_int("heatmap_tokens", heatmap_tokens, minimum=1)
        self.figsize = figsize
        self._kept: KeptFigure | None = None  # made by the first redraw, drawn again by every other one
        self._kept_style: tuple = ()  # the language and fonts it was made in
        style = {"description_width": "110px"}
        lay = widgets.Layout(width="330px")

        def slider(cls, value, lo, hi, step, desc, fmt=None):
            kw = {"readout_format": fmt} if fmt else {}
            return cls(value=value, min=lo, max=hi, step=step, description=desc, style=style, layout=lay,
                       continuous_update=True, **kw)

        self.controls = {
            "num_experts": slider(widgets.IntSlider, 8, 2, 16, 1, _("experts E")),
            "top_k": slider(widgets.IntSlider, 2, 1, 8, 1, "top-k"),
            "capacity_factor": slider(widgets.FloatSlider, 1.25, 0.5, 3.0, 0.25, _("capacity factor"), ".2f"),
            "dropless": widgets.Checkbox(value=False, description=_("dropless (no capacity)"), style=style,
                                         layout=lay),
            "temperature": slider(widgets.FloatSlider, 1.0, 0.25, 4.0, 0.25, _("temperature"), ".2f"),
            "noise": slider(widgets.FloatSlider, 0.0, 0.0, 2.0, 0.25, _("router noise"), ".2f"),
            "skew": slider(widgets.FloatSlider, 1.0, 0.0, 3.0, 0.25, _("input skew"), ".2f"),
            # the labels are translated, the values ("none", "aux", "bias") are simulate.BALANCING's
            "balancing": widgets.Dropdown(options=[(_(BALANCING_LABELS[m]), m) for m in BALANCING_LABELS],
                                          value="none", description=_("balancing"), style=style, layout=lay),
            "steps": slider(widgets.IntSlider, 10, 0, 20, 1, _("update steps")),
        }
        c = self.controls
        c["top_k"].max = c["num_experts"].value
        # top-k can never exceed the number of experts: lowering E lowers top_k's maximum (and value)
        # before the plot is redrawn (this observer is registered before the redraw's)
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
        fig = plt.figure(figsize=self.figsize, dpi=self.dpi)
        axes = self._frame(fig)
        panels, suptitle = self.panels(num_experts, top_k, capacity_factor, dropless, temperature, noise, skew,
                                       balancing, steps)
        for ax, (plot, _update, args, kwargs) in zip(axes.flat, panels, strict=True):
            plot(*args, ax=ax, **kwargs)
            ax.title.set_fontsize(10)
        fig.suptitle(suptitle, fontsize=10)
        return fig

    def render_png(self, **values) -> bytes:
        """The PNG of ``values``, drawn on the figure of the previous redraw: the same picture as
        ``figure(**values)`` (a test compares the pixels after every kind of move).

        Each panel's artists are changed in place (bar heights, image data, step values, line data,
        titles: ``viz.update_*``); a panel whose shape changed (another E, top-k, dropless) is cleared
        and plotted anew. ``KeptFigure`` then draws only the data on the kept background while the
        frame (limits, ticks, legends) is unchanged: a move of the skew, temperature, noise, capacity
        factor, balancing or steps control. Measured on the course's 2-core machine (medians of 48
        skew moves, the four ways interleaved, load average 2.7): a new figure per move 159 ms; the
        kept figure re-plotted and drawn whole 130 ms; with its background kept 48 ms; with the
        artists changed in place 37 ms, of which ~10 ms PNG encoding and ~15 ms drawing the titles.
        """
        panels, suptitle = self.panels(**values)
        # a language switch (``moe_lab.setup(lang="zh")`` after the dashboard was made) changes the words and
        # the font: start a new kept figure. The old one's renderer keeps the sizes of the texts it measured
        # (matplotlib caches them per renderer, not per font), and 0.1-pixel shifts of its tick labels in the
        # new font made 7,312 pixels differ from a new figure's
        style = (language(), tuple(mpl.rcParams["font.family"]), tuple(mpl.rcParams["font.sans-serif"]))
        fresh = self._kept is None or style != self._kept_style
        if fresh:
            self._kept = KeptFigure(self.figsize, self.dpi)
            self._kept_axes = self._frame(self._kept.figure)
            self._kept_style = style
        for ax, (plot, update, args, kwargs) in zip(self._kept_axes.flat, panels, strict=True):
            if fresh or not update(ax, *args, **kwargs):
                viz.clear_plot(ax)
                plot(*args, ax=ax, **kwargs)
            ax.title.set_fontsize(10)
        self._kept.figure.suptitle(suptitle, fontsize=10)
        return self._kept.render()

    @staticmethod
    def _frame(fig):
        """The 2 x 2 axes, a fixed layout (no constrained layout, no colour bar): the same frame every
        time, and cheaper to draw. The left margin fits 4-digit tick labels and the y label (E = 2,
        top-2 puts 2048 at the top of the first panel); legends go under each axes."""
        h = fig.get_figheight()  # inches, bottom up: legend + x label 0.8, axes 1.9, gap 1.05, axes 2.1
        axes = fig.subplots(2, 2, gridspec_kw={"height_ratios": [2.1, 1.9], "left": 0.08, "right": 0.985,
                                               "top": 5.85 / h, "bottom": 0.8 / h, "hspace": 0.525,
                                               "wspace": 0.15})
        axis_below_data(fig)
        return axes

    def panels(self, num_experts: int, top_k: int, capacity_factor: float, dropless: bool, temperature: float,
               noise: float, skew: float, balancing: str, steps: int) -> tuple[list, str]:
        """What the four panels show for these control values: ``[(plot, update, args, kwargs)]`` in the
        order top left, top right, bottom left, bottom right, and the figure's title. ``plot(*args,
        ax=ax, **kwargs)`` draws a panel; ``update(ax, *args, **kwargs)`` redraws it in place."""
        top_k = max(1, min(int(top_k), int(num_experts)))
        run = self.run(num_experts, top_k, capacity_factor, dropless, temperature, noise, skew, balancing, steps)
        r = run.routing
        balanced = self.num_tokens * top_k / num_experts
        # fixed frames: up to 4x the balanced load (taller bars are cut and labelled); the other two
        # panels' tops move in steps, so most slider moves keep the frame (and ``KeptFigure`` fast)
        ylim = max(4.0 * balanced, 1.15 * (r.capacity or 0))
        load_title = "\n".join([_load_heading(r.capacity, balancing, steps),
                                _("dropped {dropped} of {total} slots, max/mean {ratio:.2f}").format(
                                    dropped=r.dropped(), total=r.indices.size, ratio=r.load().max() / balanced)])
        load = ((r.load(), r.capacity, r.kept()), {"ylim": ylim, "title": load_title})
        n = min(self.heatmap_tokens, self.num_tokens)
        heatmap = ((r.probs[:n], r.indices[:n], r.keep[:n]),
                   {"title": "\n".join([_("router probability (bright = high), first {n} tokens").format(n=n),
                                        _("dot = chosen expert, x = dropped by capacity")])})
        ordered = -np.sort(-r.probs, axis=1)
        edges = np.linspace(0.0, 1.0, 21)
        tallest = max(np.histogram(ordered[:, 0], edges)[0].max(),
                      np.histogram(ordered[:, :top_k].sum(1), edges)[0].max())
        hist_top = next((f * self.num_tokens for f in self.HIST_STEPS if f * self.num_tokens >= 1.05 * tallest),
                        1.05 * tallest)
        ratio = run.history.max(1) / run.history.mean(1)
        ratio_top = next((t for t in self.RATIO_STEPS if t >= 1.05 * ratio.max()), 1.05 * ratio.max())
        history = ((run.history,), {"max_steps": self.controls["steps"].max, "ylim": ratio_top,
                                    "title": _("balancing: none") if balancing == "none" else None})
        panels = [(viz.plot_expert_load, viz.update_expert_load, *load),
                  (_heatmap_without_colorbar, viz.update_routing_heatmap, *heatmap),
                  (viz.plot_confidence_histogram, viz.update_confidence_histogram, (r.probs, top_k),
                   {"ylim": hist_top}),
                  (viz.plot_load_history, viz.update_load_history, *history)]
        suptitle = _("{tokens} tokens, E={num_experts}, top-{top_k}, temperature {temperature:g}, noise {noise:g}, "
                     "skew {skew:g}").format(tokens=self.num_tokens, num_experts=num_experts, top_k=top_k,
                                             temperature=temperature, noise=noise, skew=skew)
        return panels, suptitle


def _load_heading(capacity: int | None, balancing: str, steps: int) -> str:
    """First line of the load panel's title: the capacity, and the balancing steps taken (if any)."""
    if balancing == "none" or not steps:
        if capacity is None:
            return _("tokens per expert (dropless)")
        return _("tokens per expert (capacity {capacity})").format(capacity=capacity)
    # i18n: {method} is the balancing method's short name in the code, "aux" or "bias"
    if capacity is None:
        text = ngettext("tokens per expert (dropless) after {steps} {method} step",
                        "tokens per expert (dropless) after {steps} {method} steps", steps)
    else:
        text = ngettext("tokens per expert (capacity {capacity}) after {steps} {method} step",
                        "tokens per expert (capacity {capacity}) after {steps} {method} steps", steps)
    return text.format(capacity=capacity, steps=steps, method=balancing)


def _heatmap_without_colorbar(*args, **kwargs):
    """The dashboard's heatmap: no colour bar (a second axes; the title says bright = high)."""
    return viz.plot_routing_heatmap(*args, colorbar=False, **kwargs)


# name -> text; the names are the sample menu's values, and its labels once translated (``_(name)``)
SAMPLE_TEXTS = {
    N_("English"): "In the beginning God created the heaven and the earth. And the earth was without form.",
    N_("Chinese"): "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "Python": "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n"
              "    return total / len(values)\n",
    N_("arithmetic"): "12+7=19\n305-48=257\n6*7=42\n81/9=9\n",
    N_("mixed"): "x = 3  # 三\nprint(x * 4)\n3*4=12 and the answer was good.",
}
YOUR_TEXT = N_("your text")  # the sample menu's entry while the plot shows a text the learner typed
# the corpus's domains (``moe_lab.lm.corpus.DOMAINS``) as the domain panel names them, translated where shown
DOMAIN_NAMES = {"english": N_("English"), "chinese": N_("Chinese"), "python": "Python", "arithmetic": N_("arithmetic")}


class ModelDashboard(Dashboard):
    """Routing inside the trained tiny MoE LM: which expert takes each character, per layer.

    Controls: a sample text (fills the text box), the text box and its "route text" button, the
    layer, the expert to highlight. Panels: the text coloured by first-choice expert; the load per
    layer for this text; the domain x expert specialisation of the chosen layer (``domain_counts``,
    e.g. from ``domain_expert_counts(model, corpus, first_choice=True)``). Introduced in notebook 05.

    The text box is a ``Textarea``: Enter starts a new line (a newline is a character the model
    routes too). Its text reaches the kernel when the box loses focus, which the "route text" button
    (or a click anywhere outside the box) does; the plot then shows it and the sample menu says
    "your text" (or the sample's name, if the text is one).
    """

    min_height = "520px"
    css_class = "moe-model-dashboard"
    text_width, text_lines = 40, 6  # characters per line and lines of the text panel

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
        self.text = SAMPLE_TEXTS["mixed"]  # what the plot shows (the box may hold an edit not sent yet)
        self._custom_text: str | None = None  # the learner's last own text, for the "your text" entry
        self._syncing = False
        style = {"description_width": "60px"}
        # menu labels translated, values the English names (what ``sample.value`` and SAMPLE_TEXTS use)
        self.sample = widgets.Dropdown(options=[(_(name), name) for name in [*SAMPLE_TEXTS, YOUR_TEXT]],
                                       value="mixed", description=_("sample"), style=style,
                                       layout=widgets.Layout(width="220px"))
        self.text_box = widgets.Textarea(value=self.text, description=_("text"), continuous_update=False,
                                         placeholder=_("type or paste a text, then press 'route text'"),
                                         style=style, layout=widgets.Layout(width="520px", height="72px"))
        self.route_button = widgets.Button(description=_("route text"), icon="play",
                                           tooltip=_("route the text of the box through the model"),
                                           layout=widgets.Layout(width="120px"))
        experts = [(_("all"), -1)] + [(_("expert {expert}").format(expert=e), e) for e in range(self.num_experts)]
        self.controls = {
            "layer": widgets.IntSlider(value=self.num_layers - 1, min=0, max=self.num_layers - 1,
                                       description=_("layer"), style=style, layout=widgets.Layout(width="220px")),
            "expert": widgets.Dropdown(options=experts, value=-1, description=_("expert"), style=style,
                                       layout=widgets.Layout(width="220px")),
        }
        self.sample.observe(self._on_sample, names="value")
        self.text_box.observe(self._on_text, names="value")
        self.route_button.on_click(self._on_text)
        c = self.controls
        text_column = widgets.VBox([self.text_box, self.route_button])
        self._setup(widgets.HBox([widgets.VBox([self.sample, c["layer"], c["expert"]]), text_column]), quiet)

    def values(self) -> dict:
        return {"text": self.text, **super().values()}

    def _on_sample(self, change) -> None:
        if self._syncing:
            return
        text = self._custom_text if change["new"] == YOUR_TEXT else SAMPLE_TEXTS[change["new"]]
        if text is not None:
            self.text_box.value = text  # -> _on_text (nothing happens if the box already holds it)
            self._on_text()

    def _on_text(self, *_args) -> None:
        """Show the box's text (the box sent it, or the button was pressed); nothing new, no redraw."""
        text = self.text_box.value
        if text == self.text:
            return
        self.text = text
        name = next((n for n, t in SAMPLE_TEXTS.items() if t == text), YOUR_TEXT)
        if name == YOUR_TEXT:
            self._custom_text = text
        self._syncing = True  # the menu follows the text; it must not set the text back
        try:
            self.sample.value = name
        finally:
            self._syncing = False
        self.redraw()

    def step_through(self, max_values: int | None = None, texts=None) -> int:
        """``Dashboard.step_through`` for the layer and expert, then every text of ``texts`` (default:
        the samples) through the text box; returns the number of redraws."""
        before = self.renders
        super().step_through(max_values)
        start = self.text
        self._quiet = True
        try:
            for text in SAMPLE_TEXTS.values() if texts is None else texts:
                self.text_box.value = text
            self.text_box.value = start
        finally:
            self._quiet = self.quiet
        return self.renders - before

    def routing(self, text: str):
        """The routing of ``text`` (cut to ``max_chars`` characters), cached: moving the layer or expert
        control redraws without running the model again."""
        text = text[: self.max_chars]
        if text not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[text] = route_text_batched(self.model, text)
        return self._cache[text]

    def _frame(self, fig):
        """Text panel on top (tiles of ~0.2 x 0.3 inch, legend on its right), load and domain panels below."""
        w, h = fig.get_figwidth(), fig.get_figheight()
        text_ax = fig.add_axes((0.3 / w, (h - 2.2) / h, 8.55 / w, 1.8 / h))
        load_ax = fig.add_axes((0.7 / w, 0.95 / h, 3.6 / w, (h - 3.65) / h))
        dom_ax = fig.add_axes((5.9 / w, 0.95 / h, 3.95 / w, (h - 3.65) / h))
        return text_ax, load_ax, dom_ax

    def figure(self, text: str, layer: int, expert: int):
        layer = max(0, min(int(layer), self.num_layers - 1))
        highlight = None if expert is None or int(expert) < 0 else min(int(expert), self.num_experts - 1)
        fig = plt.figure(figsize=self.figsize, dpi=self.dpi)
        text_ax, load_ax, dom_ax = self._frame(fig)
        shown = text[: self.max_chars]
        if shown:
            r = self.routing(shown)
            first = lm_routes.char_experts(shown, r.top1()[layer])
            loads = np.stack([np.bincount(r.indices[li].reshape(-1), minlength=self.num_experts)
                              for li in range(self.num_layers)])
            if len(text) > self.max_chars:
                title = _("layer {layer}: first-choice expert of each character (first {chars} characters)")
            else:
                title = _("layer {layer}: first-choice expert of each character")
            lm_routes.plot_text_experts(shown, first, self.num_experts, highlight=highlight, ax=text_ax,
                                  width=self.text_width, max_lines=self.text_lines, fixed_frame=True,
                                  title=title.format(layer=layer, chars=self.max_chars))
        else:  # an empty text box is allowed: say what to do instead of failing
            text_ax.axis("off")
            text_ax.text(0.5, 0.5, _("type some text in the box above, then press 'route text'"), ha="center",
                         va="center", fontsize=12)
            loads = np.zeros((self.num_layers, self.num_experts), np.int64)
        lm_routes.plot_layer_load(loads, ax=load_ax, highlight=highlight,
                            title=_("this text: load per layer (all top-{top_k} slots)").format(top_k=self.top_k))
        lm_routes.plot_domain_expert_heatmap(self.domain_counts[layer], [_(DOMAIN_NAMES.get(d, d)) for d in DOMAINS],
                                       ax=dom_ax, highlight=highlight, colorbar=False,
                                       title=_("held-out text, layer {layer}: domain x expert").format(layer=layer))
        for ax in (load_ax, dom_ax):
            ax.title.set_fontsize(10)
        return fig
