"""Expert parallelism at scale, simulated with NumPy: where the experts live, how many bytes move, how
uneven the load is. Introduced in notebook 05.

The model of one MoE layer on an EP group of ``ep`` devices (``devices_per_node`` per node, 8 on an
Atlas 800T A2 server):

* ``placement``: expert ``e`` lives on device ``e // (E / ep)`` (``"contiguous"``, as in MindFormers and
  in ``moe_lab.expert_parallel``) or ``e % ep`` (``"round_robin"``).
* a routing distribution ``q[e]``: the share of the token slots (token, k) that expert ``e`` receives
  (sums to 1; at most ``1/top_k`` per expert since a token picks an expert at most once).
  ``routing_shares`` builds it: uniform, Zipf-skewed, or measured counts.
* every device holds ``tokens`` tokens; each sends ``tokens * top_k`` rows of ``hidden`` values to the
  owners of their experts (dispatch) and gets as many back (combine). A row that stays on its own
  device costs nothing; one to another device of the same node crosses the intra-node links (HCCS on
  Atlas A2); the rest leaves the node (network). No node-limited routing (DeepSeek-V3) and no hierarchical
  send (the fused dispatch's "hierarchy" algorithm): these are the plain all-to-all volumes.
* load imbalance: rows each device's experts process, max / mean (1.0 = perfect).

Functions map data to numbers (``a2a_volume``, ``step_volume``, ``device_loads``, ...) and numbers to
figures (``fig_*``); ``EPDashboard`` wires them to widgets.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from moe_lab._checks import check_choice, check_float, check_int

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
# int8 dispatch (MoeDistributeDispatch quant_mode=2) also sends one float32 scale per row (dynamic_scales)
SCALE_BYTES = {"int8": 4}
PLACEMENTS = ("contiguous", "round_robin")
ROUTINGS = ("uniform", "zipf", "measured")


# ---------------------------------------------------------------------------------------------
# Placement and routing


def placement(num_experts: int, ep: int, scheme: str = "contiguous") -> np.ndarray:
    """Device of each expert, shape ``[E]``: ``E / ep`` experts per device."""
    num_experts = check_int("num_experts", num_experts, minimum=1)
    ep = check_int("ep", ep, minimum=1, maximum=num_experts)
    check_choice("scheme", scheme, PLACEMENTS)
    if num_experts % ep:
        raise ValueError(f"ep must divide num_experts={num_experts}; got ep={ep}")
    e = np.arange(num_experts)
    return e // (num_experts // ep) if scheme == "contiguous" else e % ep


def cap_shares(shares: np.ndarray, top_k: int) -> np.ndarray:
    """Limit every share to ``1/top_k`` (a token picks an expert at most once), giving the excess to the
    others in proportion ("water filling"). Needs ``len(shares) >= top_k``."""
    q = np.asarray(shares, np.float64) / np.sum(shares)
    cap = 1.0 / top_k
    for _ in range(q.size):
        over = q > cap + 1e-15
        if not over.any():
            break
        excess = (q[over] - cap).sum()
        q[over] = cap
        free = ~over & (q < cap)
        q[free] += excess * q[free] / q[free].sum() if q[free].sum() > 0 else excess / free.sum()
    return q


def routing_shares(kind: str, num_experts: int, top_k: int = 1, *, skew: float = 1.0, seed: int | None = 0,
                   counts=None) -> np.ndarray:
    """Share of the token slots per expert, shape ``[E]``, sums to 1.

    ``"uniform"``: ``1/E`` each. ``"zipf"``: the r-th most popular expert gets a share proportional to
    ``1 / r**skew`` (``skew=0`` is uniform); which expert is r-th is a random permutation drawn with
    ``seed`` (``seed=None``: expert 0 is the most popular, the worst case for a contiguous placement).
    ``"measured"``: ``counts`` (e.g. ``Routing.load()`` or the EP run's expert load) normalised.
    Shares are capped at ``1/top_k`` (``cap_shares``).
    """
    check_choice("kind", kind, ROUTINGS)
    num_experts = check_int("num_experts", num_experts, minimum=1)
    top_k = check_int("top_k", top_k, minimum=1, maximum=num_experts)
    if kind == "uniform":
        q = np.full(num_experts, 1.0 / num_experts)
    elif kind == "zipf":
        skew = check_float("skew", skew, minimum=0.0)
        by_rank = 1.0 / np.arange(1, num_experts + 1) ** skew
        order = np.arange(num_experts) if seed is None else np.random.default_rng(seed).permutation(num_experts)
        q = np.empty(num_experts)
        q[order] = by_rank
    else:
        if counts is None:
            raise ValueError("routing 'measured' needs counts (slots per expert)")
        q = np.asarray(counts, np.float64).reshape(-1)
        if q.size != num_experts or (q < 0).any() or q.sum() <= 0:
            raise ValueError(f"counts must be {num_experts} non-negative numbers with a positive sum; got {counts!r}")
    return cap_shares(q, top_k)


def device_shares(shares: np.ndarray, place: np.ndarray, ep: int) -> np.ndarray:
    """Share of the slots each device's experts receive, shape ``[ep]``."""
    return np.bincount(np.asarray(place), weights=np.asarray(shares, np.float64), minlength=ep)


def device_loads(expert_counts, place: np.ndarray, ep: int) -> np.ndarray:
    """Rows each device processes, from rows per expert (counts or expected counts)."""
    return np.bincount(np.asarray(place), weights=np.asarray(expert_counts, np.float64), minlength=ep)


def sample_expert_counts(shares: np.ndarray, slots: int, seed: int = 0) -> np.ndarray:
    """One random draw of rows per expert for ``slots`` slots (multinomial: the noise of a finite batch)."""
    return np.random.default_rng(seed).multinomial(int(slots), np.asarray(shares) / np.sum(shares))


def imbalance(loads) -> float:
    """Max over mean of the loads (1.0 = perfectly even). The slowest device sets the pace of the step."""
    loads = np.asarray(loads, np.float64)
    return float(loads.max() / loads.mean()) if loads.mean() > 0 else 1.0


# ---------------------------------------------------------------------------------------------
# All-to-all volume


@dataclass(frozen=True)
class A2AVolume:
    """Bytes per device for one MoE layer (one forward pass), averaged over the devices that send.

    ``dispatch``/``combine``: dict with ``local`` (stays on the device: free), ``intra`` (other device of
    the same node), ``inter`` (another node). ``received``: bytes each device receives (dispatch), ``[ep]``.
    """

    ep: int
    nodes: int
    tokens: int
    top_k: int
    hidden: int
    dispatch: dict
    combine: dict
    received: np.ndarray
    shares: np.ndarray  # per device

    @property
    def sent(self) -> float:
        """Bytes one device sends per layer (dispatch + combine, local rows excluded)."""
        return sum(self.dispatch[k] + self.combine[k] for k in ("intra", "inter"))

    @property
    def inter_fraction(self) -> float:
        return (self.dispatch["inter"] + self.combine["inter"]) / self.sent if self.sent else 0.0


def row_bytes(hidden: int, dtype: str) -> int:
    """Bytes of one token row on the wire: ``hidden * sizeof(dtype)`` (+ a float32 scale for int8)."""
    check_choice("dtype", dtype, tuple(DTYPE_BYTES))
    return int(hidden) * DTYPE_BYTES[dtype] + SCALE_BYTES.get(dtype, 0)


def a2a_volume(tokens: int, hidden: int, top_k: int, ep: int, *, num_experts: int = 256, shares=None,
               scheme: str = "contiguous", devices_per_node: int = 8, dispatch_dtype: str = "bfloat16",
               combine_dtype: str = "bfloat16") -> A2AVolume:
    """All-to-all bytes of one MoE layer per device (see the module docstring for the model).

    ``shares``: slots per expert (``routing_shares``), default uniform.
    """
    tokens = check_int("tokens", tokens, minimum=1)
    hidden = check_int("hidden", hidden, minimum=1)
    top_k = check_int("top_k", top_k, minimum=1, maximum=num_experts)
    devices_per_node = check_int("devices_per_node", devices_per_node, minimum=1)
    place = placement(num_experts, ep, scheme)
    q = routing_shares("uniform", num_experts, top_k) if shares is None else np.asarray(shares, np.float64)
    dev = device_shares(q, place, ep)
    node = np.arange(ep) // devices_per_node
    node_share = np.bincount(node, weights=dev)
    local = float(dev.mean())  # source s keeps dev[s]; averaged over s
    intra = float(np.mean(node_share[node] - dev))
    inter = 1.0 - local - intra
    rows = tokens * top_k
    parts = {"local": local, "intra": intra, "inter": max(inter, 0.0)}
    dispatch = {k: rows * v * row_bytes(hidden, dispatch_dtype) for k, v in parts.items()}
    combine = {k: rows * v * row_bytes(hidden, combine_dtype) for k, v in parts.items()}
    received = (ep - 1) * rows * dev * row_bytes(hidden, dispatch_dtype)
    return A2AVolume(ep, int(node.max()) + 1, tokens, top_k, hidden, dispatch, combine, received, dev)


def strategy_bytes(strategy: str, tokens: int, hidden: int, top_k: int, world_size: int,
                   dtype_bytes: int = 2) -> float:
    """Bytes one rank sends per MoE layer, dispatch + combine, token rows only (no ids, weights, padding).

    ``"allgather"``: AllGather of the ``tokens`` rows, ``(W-1) n H b``, then AllReduce of the ``[W n, H]``
    partial outputs, ``2 (W-1)/W * W n H b``. ``"alltoall"``: ``n K`` rows out and back, ``(W-1)/W`` of
    them to other ranks. Ratio allgather / alltoall = ``3 W / (2 K)``: 1.5 at W = K = 2, 12 at W = 64, K = 8.
    """
    check_choice("strategy", strategy, ("allgather", "alltoall"))
    w, rows = check_int("world_size", world_size, minimum=1), int(tokens) * int(hidden) * int(dtype_bytes)
    if strategy == "allgather":
        return float((w - 1) * rows + 2 * (w - 1) * rows)
    return 2 * (w - 1) / w * rows * int(top_k)


def step_volume(volume: A2AVolume, moe_layers: int = 58, training: bool = True) -> float:
    """Bytes one device sends per step: every MoE layer, forward and (training) backward.

    The backward pass runs both all-to-alls again in reverse, on gradients of the same shapes.
    """
    moe_layers = check_int("moe_layers", moe_layers, minimum=1)
    return volume.sent * moe_layers * (2 if training else 1)


def expert_params(hidden: int, moe_ffn: int, gated: bool = True) -> int:
    """Parameters of one routed expert in one layer: ``3 * H * F`` (SwiGLU) or ``2 * H * F``."""
    return (3 if gated else 2) * int(hidden) * int(moe_ffn)


def expert_bytes_per_device(num_experts: int, ep: int, hidden: int, moe_ffn: int, moe_layers: int,
                            dtype: str = "bfloat16") -> float:
    """Bytes of routed-expert weights one device holds: its ``E / ep`` experts in every MoE layer."""
    placement(num_experts, ep)  # checks that ep divides E
    return num_experts // ep * expert_params(hidden, moe_ffn) * moe_layers * DTYPE_BYTES[dtype]


# ---------------------------------------------------------------------------------------------
# Figures (pure: numbers -> Figure)

GIB, MIB = 2.0**30, 2.0**20


def fig_volume_vs_ep(eps, tokens: int, hidden: int, top_k: int, *, num_experts: int = 256, devices_per_node: int = 8,
                     dtype: str = "bfloat16", shares=None):
    """Stacked bars: bytes one device sends per layer (intra-node, inter-node) for several EP degrees."""
    import matplotlib.pyplot as plt

    vols = [a2a_volume(tokens, hidden, top_k, ep, num_experts=num_experts, shares=shares,
                       devices_per_node=devices_per_node, dispatch_dtype=dtype, combine_dtype=dtype) for ep in eps]
    intra = np.array([v.dispatch["intra"] + v.combine["intra"] for v in vols]) / MIB
    inter = np.array([v.dispatch["inter"] + v.combine["inter"] for v in vols]) / MIB
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    x = np.arange(len(eps))
    ax.bar(x, intra, color="tab:blue", label="intra-node (HCCS)")
    ax.bar(x, inter, bottom=intra, color="tab:red", label="inter-node (network)")
    ax.set_xticks(x, [f"EP {ep}\n{-(-ep // devices_per_node)} node(s)" for ep in eps])
    ax.set_ylabel("MiB sent per device per layer")
    ax.set_title(f"dispatch + combine, {tokens} tokens/device, top-{top_k}, hidden {hidden}, {dtype}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def fig_device_loads(loads, title: str = "", ax=None):
    """Bars: rows per device, with the mean; the title gives max / mean."""
    import matplotlib.pyplot as plt

    loads = np.asarray(loads, np.float64)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
    if loads.size <= 64:
        ax.bar(np.arange(loads.size), loads, color="tab:green", width=0.85)
    else:  # hundreds of bars draw slowly; one filled outline looks the same
        ax.stairs(loads, np.arange(loads.size + 1) - 0.5, fill=True, color="tab:green")
    ax.axhline(loads.mean(), color="black", lw=1, ls="--", label="mean")
    if loads.size <= 16:
        ax.set_xticks(np.arange(loads.size))
    ax.set_xlabel("device (EP rank)")
    ax.set_ylabel("rows processed")
    ax.set_title(f"{title}{'  ' if title else ''}max/mean = {imbalance(loads):.2f}")
    ax.set_ylim(0, max(loads.max() * 1.15, 1.0))
    ax.legend(loc="upper right")
    if own:
        fig.tight_layout()
        return fig
    return ax.figure


def fig_run(result: dict):
    """The real msrun run: rows each rank's experts processed, and bytes each rank sent, per strategy."""
    import matplotlib.pyplot as plt

    names = list(result["strategies"])
    ranks = [row["rank"] for row in result["strategies"][names[0]]["ranks"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.0))
    rows = [row["rows"] for row in result["strategies"][names[0]]["ranks"]]
    fig_device_loads(rows, "rows per rank", ax=ax1)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        sent = [row["bytes_sent"] / 1024 for row in result["strategies"][name]["ranks"]]
        ax2.bar(np.arange(len(ranks)) + i * width, sent, width, label=name)
    ax2.set_xticks(np.arange(len(ranks)) + width * (len(names) - 1) / 2, [str(r) for r in ranks])
    ax2.set_xlabel("rank")
    ax2.set_ylabel("KiB sent per forward")
    ax2.set_title("bytes sent (ring accounting)")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The dashboard (ipywidgets; the pattern of moe_lab.widgets)


@dataclass(frozen=True)
class SimResult:
    volume: A2AVolume
    per_step: float
    loads: np.ndarray  # sampled rows per device
    expected_imbalance: float
    sampled_imbalance: float


def simulate(ep: int = 32, tokens: int = 4096, top_k: int = 8, hidden: int = 7680, dtype: str = "bfloat16",
             routing: str = "uniform", skew: float = 1.0, scheme: str = "contiguous", *, num_experts: int = 256,
             moe_layers: int = 58, devices_per_node: int = 8, seed: int = 0, counts=None) -> SimResult:
    """Everything the dashboard shows for one setting (defaults: openPangu-Ultra-MoE-718B on 4 nodes)."""
    q = routing_shares(routing, num_experts, top_k, skew=skew, seed=seed, counts=counts)
    vol = a2a_volume(tokens, hidden, top_k, ep, num_experts=num_experts, shares=q, scheme=scheme,
                     devices_per_node=devices_per_node, dispatch_dtype=dtype, combine_dtype="bfloat16")
    place = placement(num_experts, ep, scheme)
    slots = tokens * top_k * ep
    loads = device_loads(sample_expert_counts(q, slots, seed), place, ep)
    return SimResult(vol, step_volume(vol, moe_layers), loads, imbalance(device_shares(q, place, ep)),
                     imbalance(loads))


def fig_sim(sim: SimResult):
    """Two panels: where one device's bytes go (per layer), and the rows per device."""
    import matplotlib.pyplot as plt

    v = sim.volume
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.2), gridspec_kw={"width_ratios": [1, 2]})
    parts = ("intra", "inter")
    colors = {"intra": "tab:blue", "inter": "tab:red"}
    bottom = np.zeros(2)
    for p in parts:
        vals = np.array([v.dispatch[p], v.combine[p]]) / MIB
        ax1.bar([0, 1], vals, bottom=bottom, color=colors[p], label=f"{p}-node")
        bottom += vals
    ax1.set_xticks([0, 1], ["dispatch", "combine"])
    ax1.set_ylabel("MiB sent per device per layer")
    ax1.set_title(f"EP {v.ep} on {v.nodes} node(s): {v.inter_fraction:.0%} leaves the node", fontsize=9)
    ax1.legend(loc="lower right", fontsize=8)
    fig_device_loads(sim.loads, "rows per device:", ax=ax2)
    ax2.set_title(f"rows per device: max/mean = {sim.sampled_imbalance:.2f} (expected {sim.expected_imbalance:.2f})",
                  fontsize=9)
    fig.tight_layout()
    return fig


def summary_line(sim: SimResult) -> str:
    v = sim.volume
    return (f"per layer: {v.sent / MIB:,.1f} MiB sent per device ({v.inter_fraction:.0%} inter-node); "
            f"per training step ({sim.per_step / GIB:,.1f} GiB per device); load max/mean {sim.sampled_imbalance:.2f}")


class WithPngFallback:
    """A widget where widgets run; a PNG of ``fig`` everywhere else (GitHub, exported HTML, untrusted)."""

    def __init__(self, widget, fig):
        import matplotlib.pyplot as plt

        self.widget = widget
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        self.png = base64.b64encode(buf.getvalue()).decode()

    def _repr_mimebundle_(self, **kwargs):
        data = self.widget._repr_mimebundle_(**kwargs)
        data["image/png"] = self.png
        return data


class EPDashboard:
    """Sliders and menus for ``simulate``; ``.display()`` shows it; ``.controls`` lists the widgets."""

    EPS = (8, 16, 32, 64, 128, 256)
    TOKENS = (512, 1024, 2048, 4096, 8192)
    TOP_KS = (1, 2, 4, 8)
    HIDDENS = (4096, 7168, 7680)

    def __init__(self, hidden: int = 7680, moe_layers: int = 58):
        import ipywidgets as w

        self.moe_layers = moe_layers
        style = {"description_width": "110px"}
        self.controls = {
            "ep": w.SelectionSlider(options=self.EPS, value=32, description="EP degree", style=style),
            "tokens": w.SelectionSlider(options=self.TOKENS, value=4096, description="tokens/device", style=style),
            "top_k": w.SelectionSlider(options=self.TOP_KS, value=8, description="top-k", style=style),
            "hidden": w.Dropdown(options=self.HIDDENS, value=hidden, description="hidden", style=style),
            "dtype": w.Dropdown(options=("bfloat16", "int8"), value="bfloat16", description="dispatch dtype",
                                style=style),
            "routing": w.Dropdown(options=("uniform", "zipf"), value="uniform", description="routing", style=style),
            "skew": w.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.5, description="Zipf skew", style=style,
                                  continuous_update=False),
            "scheme": w.Dropdown(options=PLACEMENTS, value="contiguous", description="placement", style=style),
        }
        self.text = w.Label()
        self.draws = 0
        self.out = w.interactive_output(self._draw, self.controls)  # draws once now
        self.out.layout.min_height = "330px"

    def values(self) -> dict:
        return {k: c.value for k, c in self.controls.items()}

    def simulate(self, **values) -> SimResult:
        v = {**self.values(), **values}
        return simulate(v["ep"], v["tokens"], v["top_k"], v["hidden"], v["dtype"], v["routing"], v["skew"],
                        v["scheme"], moe_layers=self.moe_layers)

    def _draw(self, **values):
        import matplotlib.pyplot as plt

        sim = self.simulate(**values)
        self.text.value = summary_line(sim)
        self.draws += 1
        fig = fig_sim(sim)
        plt.show()  # the inline backend shows and closes it; elsewhere close it ourselves
        plt.close(fig)

    def widget(self):
        import ipywidgets as w

        c = list(self.controls.values())
        return w.VBox([w.HBox([w.VBox(c[:4]), w.VBox(c[4:])]), self.text, self.out])

    def display(self):
        from IPython.display import display

        display(WithPngFallback(self.widget(), fig_sim(self.simulate())))

    def step_all(self) -> int:
        """Move every control through all its values (kernel side), then back; returns redraws done."""
        before = self.draws
        for control in self.controls.values():
            start = control.value
            if hasattr(control, "options"):
                values = [o[1] if isinstance(o, tuple) else o for o in control.options]
            else:
                values = list(np.arange(control.min, control.max + control.step / 2, control.step))
            for value in values:
                control.value = value
            control.value = start
        return self.draws - before
