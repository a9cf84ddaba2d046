"""Dashboards: ipywidgets wired to the pure plots of ``moe_lab.viz``. Introduced in notebook 04.

Two dashboards:

* ``RoutingDashboard``: a synthetic router you can bend (number of experts, top-k, capacity factor,
  temperature, noise, input skew, balancing method) with a fast NumPy simulation of routing
  (``simulate_routing``) that follows the semantics of ``MoELayer`` exactly (same softmax, top-k,
  capacity formula and drop policies; a test checks it against the layer).
* ``ModelDashboard``: the trained tiny MoE LM (``moe_lab.lm``): layer, expert, input text.

The pattern (measured in JupyterLab 4.6, Voila 0.5 and static HTML): inline backend,
``interactive_output`` showing exactly one PNG per redraw (what ``plt.show()`` does, here without its
tight-bounding-box pass, see ``_show``), a fixed figure size and fixed axes (the routing dashboard
keeps one figure and redraws its axes in place, ``RoutingDashboard._redraw``),
``out.layout.min_height`` so nothing jumps while redrawing, and a PNG fallback in the display bundle
so the notebook shows a real picture where widgets cannot run (GitHub, nbviewer, exported HTML,
a freshly cloned untrusted notebook).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from moe_lab import viz
from moe_lab._checks import check_choice, check_float, check_int
from moe_lab.capacity import DROP_POLICIES, expert_capacity
from moe_lab.reference import softmax

# ---------------------------------------------------------------------------------------------
# Fast NumPy routing (same semantics as TopKRouter + MoELayer with a capacity factor)


@dataclass
class SimulatedRouting:
    """NumPy twin of ``moe_lab.router.Routing`` (arrays instead of tensors)."""

    logits: np.ndarray  # [N, E]
    probs: np.ndarray  # [N, E]
    indices: np.ndarray  # [N, K] int, best first
    weights: np.ndarray  # [N, K] combine weights (0 where dropped)
    keep: np.ndarray  # [N, K] bool
    capacity: int | None

    @property
    def num_experts(self) -> int:
        return self.probs.shape[1]

    def load(self) -> np.ndarray:
        """Slots routed to each expert before capacity: ``[E]``, sums to N*K."""
        return np.bincount(self.indices.reshape(-1), minlength=self.num_experts)

    def kept(self) -> np.ndarray:
        """Slots each expert processes after capacity: ``[E]``."""
        return np.bincount(self.indices.reshape(-1)[self.keep.reshape(-1)], minlength=self.num_experts)

    def dropped(self) -> int:
        return int((~self.keep).sum())


def keep_mask_numpy(indices: np.ndarray, weights: np.ndarray, num_experts: int, capacity: int | None,
                    drop_policy: str = "position") -> np.ndarray:
    """Vectorised twin of ``moe_lab.capacity.keep_mask``: True where slot ``(t, j)`` fits in its expert.

    Priority: "position" serves all first choices before any second choice, earlier tokens first
    (GShard); "score" serves larger combine weights first. Each expert keeps its first ``capacity``.
    """
    check_choice("drop_policy", drop_policy, DROP_POLICIES)
    n, k = indices.shape
    if capacity is None:
        return np.ones((n, k), bool)
    if drop_policy == "position":
        priority = np.arange(k)[None, :] * n + np.arange(n)[:, None]
    else:
        order = np.argsort(-weights.reshape(-1), kind="stable")
        priority = np.empty(n * k, np.int64)
        priority[order] = np.arange(n * k)
        priority = priority.reshape(n, k)
    expert = indices.reshape(-1).astype(np.int64)
    order = np.argsort(expert * (n * k) + priority.reshape(-1), kind="stable")
    counts = np.bincount(expert, minlength=num_experts)
    starts = np.cumsum(counts) - counts
    place = np.arange(n * k) - starts[expert[order]]
    keep = np.empty(n * k, bool)
    keep[order] = place < capacity
    return keep.reshape(n, k)


def route_logits(logits, top_k: int, *, capacity_factor: float | None = None, drop_policy: str = "position",
                 normalize: bool = True, selection_bias=None) -> SimulatedRouting:
    """Route router scores ``logits [N, E]`` like ``MoELayer.route``. Introduced in notebook 04.

    softmax -> top-k of ``probs + selection_bias`` -> combine weights from ``probs`` (renormalised when
    ``normalize``) -> capacity ``expert_capacity(N, E, K, capacity_factor)`` -> drop policy.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (tokens, experts), got {logits.shape}")
    n, num_experts = logits.shape
    top_k = check_int("top_k", top_k, minimum=1, maximum=num_experts)
    capacity = expert_capacity(n, num_experts, top_k, capacity_factor)
    probs = softmax(logits)
    score = probs if selection_bias is None else probs + np.asarray(selection_bias, np.float64)
    indices = np.argsort(-score, axis=1, kind="stable")[:, :top_k]
    weights = np.take_along_axis(probs, indices, 1)
    if normalize:
        weights = weights / weights.sum(1, keepdims=True)
    keep = keep_mask_numpy(indices, weights, num_experts, capacity, drop_policy)
    return SimulatedRouting(logits, probs, indices, weights * keep, keep, capacity)


def synthetic_logits(num_tokens: int, num_experts: int, *, temperature: float = 1.0, noise: float = 0.0,
                     skew: float = 0.0, seed: int = 0, offset=None) -> np.ndarray:
    """Router scores of a toy router: ``(scores + popularity + offset) / temperature + noise * N(0, 1)``.

    * scores ~ N(0, 1) per token and expert: what a random linear router gives on varied input;
    * popularity = ``skew * (1 - e / (E - 1))``: skewed input makes low-numbered experts look better
      for every token (0 = no skew);
    * ``offset`` [E]: a per-expert logit bias (what the auxiliary loss learns in ``simulate_balancing``);
    * temperature divides the logits: < 1 makes the router confident, > 1 undecided;
    * noise: Gaussian noise on the logits (noisy top-k gating, Shazeer et al. 2017, arXiv 1701.06538),
      drawn from its own stream so ``noise=0`` gives exactly the noiseless scores.
    """
    num_tokens = check_int("num_tokens", num_tokens, minimum=1)
    num_experts = check_int("num_experts", num_experts, minimum=1)
    temperature = check_float("temperature", temperature, minimum=0.0, strict=True)
    noise = check_float("noise", noise, minimum=0.0)
    skew = check_float("skew", skew, minimum=0.0)
    seed = check_int("seed", seed, minimum=0)
    rng = np.random.default_rng([seed, 0])
    scores = rng.normal(size=(num_tokens, num_experts))
    popularity = skew * (1.0 - np.arange(num_experts) / max(1, num_experts - 1))
    logits = scores + popularity
    if offset is not None:
        logits = logits + np.asarray(offset, np.float64)
    logits = logits / temperature
    if noise > 0:
        logits = logits + noise * np.random.default_rng([seed, 1]).normal(size=logits.shape)
    return logits


def simulate_routing(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float | None = None,
                     temperature: float = 1.0, noise: float = 0.0, skew: float = 0.0, seed: int = 0, *,
                     drop_policy: str = "position", selection_bias=None, offset=None) -> SimulatedRouting:
    """Route ``num_tokens`` synthetic tokens (``synthetic_logits``) like ``MoELayer``. Notebook 04."""
    logits = synthetic_logits(num_tokens, num_experts, temperature=temperature, noise=noise, skew=skew,
                              seed=seed, offset=offset)
    return route_logits(logits, top_k, capacity_factor=capacity_factor, drop_policy=drop_policy,
                        selection_bias=selection_bias)


# ---------------------------------------------------------------------------------------------
# A few balancing updates, in NumPy (the real training is in notebook 03)

BALANCING = ("none", "aux", "bias")  # a subset of moe_lab.balance.BALANCE_METHODS
AUX_LR = 2.0  # gradient step on the per-expert logit offset (the aux loss alone, no language-model loss)
BIAS_RATE = 0.02  # bias step u; DeepSeek-V3 used 0.001 over thousands of steps, we show ~10


@dataclass
class BalancingRun:
    """``history [steps + 1, E]``: slots per expert before each update; ``routing``: the last batch."""

    history: np.ndarray
    routing: SimulatedRouting
    selection_bias: np.ndarray  # [E] (method "bias")
    offset: np.ndarray  # [E] (method "aux")


def switch_loss_grad_offset(probs: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Gradient of the Switch loss ``E * sum_i f_i * P_i`` w.r.t. a per-expert logit offset ``b`` [E].

    ``f`` (fraction of slots) is a count without gradient; ``P_j = mean_t p_tj`` with
    ``dp_ti / db_j = p_ti (delta_ij - p_tj)``, so ``dL/db_j = E * mean_t p_tj (f_j - sum_i f_i p_ti)``.
    """
    num_experts = probs.shape[1]
    f = np.bincount(indices.reshape(-1), minlength=num_experts) / indices.size
    return num_experts * (probs * (f[None, :] - (probs @ f)[:, None])).mean(0)


def simulate_balancing(method: str, steps: int, *, num_tokens: int, num_experts: int, top_k: int,
                       capacity_factor: float | None = None, temperature: float = 1.0, noise: float = 0.0,
                       skew: float = 0.0, seed: int = 0, aux_lr: float = AUX_LR,
                       bias_rate: float = BIAS_RATE) -> BalancingRun:
    """``steps`` balancing updates, each on a fresh batch of tokens. Introduced in notebook 04.

    * ``"none"``: nothing changes (the load only wobbles from batch to batch);
    * ``"aux"``: one gradient step of the Switch auxiliary loss on a per-expert logit offset (the part of
      the router that is the same for every token);
    * ``"bias"``: DeepSeek-V3's rule ``b += u * sign(mean_load - load)`` on the selection bias (added
      to the probabilities only to choose experts; the combine weights stay unbiased).
    """
    check_choice("method", method, BALANCING)
    steps = check_int("steps", steps, minimum=0)
    num_experts = check_int("num_experts", num_experts, minimum=1)
    bias = np.zeros(num_experts)
    offset = np.zeros(num_experts)
    history = []
    for step in range(steps + 1):
        routing = simulate_routing(num_tokens, num_experts, top_k, capacity_factor, temperature, noise, skew,
                                   seed + step, selection_bias=bias, offset=offset)
        load = routing.load()
        history.append(load)
        if step == steps:
            break
        if method == "bias":
            bias = bias + bias_rate * np.sign(load.mean() - load)
        elif method == "aux":
            # the offset sits before the temperature division: scale the step so its effect does not
            # depend on the temperature (d logits / d offset = 1 / temperature)
            offset = offset - aux_lr * temperature * switch_loss_grad_offset(routing.probs, routing.indices)
    return BalancingRun(np.array(history), routing, bias, offset)


# ---------------------------------------------------------------------------------------------
# Display helpers


def figure_png(fig, dpi: float | None = None) -> bytes:
    """PNG bytes of ``fig`` (then closed: the figure is not shown a second time).

    Closing only concerns figures made with pyplot; a figure a dashboard keeps for its redraws is not
    one, so it stays usable. Introduced in notebook 04.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _show(fig, dpi: float) -> None:
    """Show ``fig`` once as a PNG, inside the current Output widget; outside IPython just close it.

    Same result as ``plt.show()`` with the inline backend, minus its ``bbox_inches="tight"`` pass
    (a second layout of every text): the figure has a fixed layout, and the redraw is faster.
    """
    from IPython import get_ipython
    from IPython.display import Image, display

    png = figure_png(fig, dpi)  # closes the figure: the inline backend will not show it a second time
    if get_ipython() is not None:
        display(Image(data=png, format="png"))


class WithPngFallback:
    """Display ``widget`` where widgets run; a PNG of ``fig`` everywhere else (GitHub, nbviewer, HTML).

    Introduced in notebook 04 (the widget pattern of the course).
    """

    def __init__(self, widget, fig, dpi: float | None = None):
        self.widget = widget
        self.png = base64.b64encode(figure_png(fig, dpi)).decode("ascii")

    def _repr_mimebundle_(self, **kwargs):
        data = self.widget._repr_mimebundle_(**kwargs)
        data["image/png"] = self.png
        return data


class Dashboard:
    """Base of the dashboards: ``controls`` (name -> widget), ``figure(**values)``, a PNG fallback.

    Subclasses build ``self.controls`` and implement ``figure``; ``_setup`` wires them with
    ``interactive_output``. A redraw shows ``_redraw(**values)``: by default a new ``figure``; a
    subclass may instead redraw one figure it keeps (``RoutingDashboard`` does, it is faster).
    ``renders`` counts redraws; ``step_through()`` moves every control through its range from the
    kernel side (the notebook's test cell), drawing each figure without sending it.
    ``quiet=True`` builds a dashboard that draws its figures but never shows them: the copy to step
    through. (Stepping a *displayed* dashboard makes its sliders jump in the browser, and a browser
    that lags behind can send a stale slider value back to the kernel after the stepping ended.)
    """

    min_height = "480px"
    dpi = 80  # pixels per inch of the redrawn PNG: sharp enough, and fewer pixels to draw and send
    css_class = "moe-dashboard"  # lets a browser test (or a stylesheet) find the dashboard on the page

    def _setup(self, layout, quiet: bool = False) -> None:
        import ipywidgets as widgets

        self.renders = 0
        self._quiet = self.quiet = bool(quiet)
        self.output = widgets.interactive_output(self._draw, self.controls)
        self.output.layout.min_height = self.min_height  # reserve the space: no jump while redrawing
        self.box = widgets.VBox([layout, self.output])
        self.box.add_class(self.css_class)

    def values(self) -> dict:
        return {name: w.value for name, w in self.controls.items()}

    def figure(self, **values):
        raise NotImplementedError

    def _redraw(self, **values):
        """The figure a redraw shows for ``values``: a new one here (closed once shown)."""
        return self.figure(**values)

    def _draw(self, **values) -> None:
        fig = self._redraw(**values)
        self.renders += 1
        if self._quiet:  # stepping from the kernel: build every artist, send nothing
            import matplotlib.pyplot as plt

            plt.close(fig)  # a new pyplot figure is freed; a kept figure is not pyplot's: nothing happens
        else:
            _show(fig, self.dpi)

    def _repr_mimebundle_(self, **kwargs):
        fig = self.figure(**self.values())
        return WithPngFallback(self.box, fig, self.dpi)._repr_mimebundle_(**kwargs)

    def control_values(self, name: str, max_values: int | None = None) -> list:
        """Every value control ``name`` can take now (a slider: min..max by its step)."""
        w = self.controls[name]
        if hasattr(w, "options"):
            vals = [o[1] if isinstance(o, tuple) else o for o in w.options]
        elif isinstance(w.value, bool):
            vals = [False, True]
        elif hasattr(w, "max"):
            count = int(round((w.max - w.min) / w.step)) + 1
            vals = [w.min + i * w.step for i in range(count)]
            if isinstance(w.value, int):
                vals = [int(v) for v in vals]
            else:
                vals = [round(v, 10) for v in vals]
        else:
            vals = [w.value]
        if max_values is not None and len(vals) > max_values:  # keep both ends and spread the rest
            pick = np.unique(np.linspace(0, len(vals) - 1, max_values).round().astype(int))
            vals = [vals[i] for i in pick]
        return vals

    def step_through(self, max_values: int | None = None) -> int:
        """Set every control to every value of its range (then back); returns the number of redraws.

        A callback that raises at some value fails here (and so in nbval), not in front of a learner.
        """
        start = self.values()
        before = self.renders
        self._quiet = True
        try:
            for name in self.controls:
                for v in self.control_values(name, max_values):
                    self.controls[name].value = v
                self.controls[name].value = start[name]
        finally:
            self._quiet = self.quiet
        for name, v in start.items():
            self.controls[name].value = v
        return self.renders - before


class RoutingDashboard(Dashboard):
    """Synthetic routing dashboard: tokens per expert, routing heatmap, confidence, balancing.

    Introduced in notebook 04. ``display(RoutingDashboard())`` in a notebook; the app notebook
    ``app_expert_load.ipynb`` serves it with Voila.
    """

    min_height = "560px"
    css_class = "moe-routing-dashboard"

    def __init__(self, num_tokens: int = 512, seed: int = 0, heatmap_tokens: int = 48,
                 figsize: tuple[float, float] = (10.0, 6.0), quiet: bool = False):
        import ipywidgets as widgets

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
        import matplotlib.pyplot as plt

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
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

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


# ---------------------------------------------------------------------------------------------
# The trained tiny MoE LM (moe_lab.lm): routing of a text, load per domain


def route_text_batched(model, text: str):
    """``moe_lab.lm.route_text`` in one model call: the same ``TextRouting``, faster for a dashboard.

    The text is cut into windows of ``context`` bytes exactly like ``route_text`` does; the last
    window is padded with zero bytes to the full context and all windows run as one batch. Attention
    is causal, so padding *after* a byte never changes how that byte is routed (a test checks the
    result equals ``route_text``). MindSpore on CPU runs the full-context shape several times faster
    than a new short shape. Introduced in notebook 04.
    """
    import mindspore as ms

    from moe_lab.corpus import encode
    from moe_lab.lm import TextRouting

    tokens = encode(text)
    if tokens.size == 0:
        raise ValueError("text must not be empty")
    ctx = model.cfg.context
    windows = -(-tokens.size // ctx)
    padded = np.zeros(windows * ctx, np.int32)
    padded[: tokens.size] = tokens
    _, _, probs, indices, weights = model(ms.Tensor(padded.reshape(windows, ctx), ms.int32))

    def per_byte(parts):  # tuple over layers of [windows * ctx, ...] -> [layers, T, ...]
        return np.stack([p.asnumpy()[: tokens.size] for p in parts])

    return TextRouting(text, tokens, per_byte(indices).astype(np.int64), per_byte(weights), per_byte(probs))


def domain_expert_counts(model, corpus, *, windows_per_domain: int = 8, split: str = "val",
                         first_choice: bool = False, seed: int = 0) -> np.ndarray:
    """``[layers, domains, E]``: token slots of each domain sent to each expert.

    All top-k slots (the load), or only first choices with ``first_choice=True`` (the specialisation
    measure of notebook 03, ``moe_lab.lm.domain_expert_share``). Uses ``windows_per_domain`` random
    windows of ``context`` bytes per domain of ``corpus`` (validation part by default: text the
    model never trained on), all in one model call. Introduced in notebook 04.
    """
    import mindspore as ms

    from moe_lab.corpus import DOMAINS

    windows_per_domain = check_int("windows_per_domain", windows_per_domain, minimum=1)
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    blocks = [corpus.batch(split, windows_per_domain, cfg.context, rng, domains=(d,))[0] for d in DOMAINS]
    _, _, _, indices, _ = model(ms.Tensor(np.concatenate(blocks), ms.int32))
    counts = np.zeros((cfg.n_layers, len(DOMAINS), cfg.num_experts), np.int64)
    for layer, idx in enumerate(indices):
        idx = idx.asnumpy()
        per_domain = (idx[:, :1] if first_choice else idx).reshape(len(DOMAINS), -1)
        for d in range(len(DOMAINS)):
            counts[layer, d] = np.bincount(per_domain[d], minlength=cfg.num_experts)
    return counts


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
    Introduced in notebook 04.
    """

    min_height = "600px"
    css_class = "moe-model-dashboard"

    def __init__(self, model, domain_counts: np.ndarray, *, max_chars: int = 240,
                 figsize: tuple[float, float] = (10.0, 6.4), quiet: bool = False):
        import ipywidgets as widgets

        from moe_lab.corpus import DOMAINS

        self.model = model
        cfg = model.cfg
        self.num_layers, self.num_experts, self.top_k = cfg.n_layers, cfg.num_experts, cfg.top_k
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
        import matplotlib.pyplot as plt

        from moe_lab.corpus import DOMAINS

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
