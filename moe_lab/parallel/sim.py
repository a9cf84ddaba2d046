"""Expert parallelism at scale, simulated with NumPy: where the experts live, how many bytes move, how
uneven the load is. Introduced in notebook 06.

The model of one MoE layer on an EP group of ``ep`` devices (``devices_per_node`` per node, 8 on an
Atlas 800T A2 server):

* ``placement``: expert ``e`` lives on device ``e // (E / ep)`` (``"contiguous"``, as in MindFormers and
  in ``moe_lab.parallel.layer``) or ``e % ep`` (``"round_robin"``).
* a routing distribution ``q[e]``: the share of the token slots (token, k) that expert ``e`` receives
  (sums to 1; at most ``1/top_k`` per expert since a token picks an expert at most once).
  ``routing_shares`` builds it: uniform, Zipf-skewed, or measured counts.
* every device holds ``tokens`` tokens; each sends ``tokens * top_k`` rows of ``hidden_size`` values to the
  owners of their experts (dispatch) and gets as many back (combine). A row that stays on its own
  device costs nothing; one to another device of the same node crosses the intra-node links (HCCS on
  Atlas A2); the rest leaves the node (network). ``a2a_volume`` counts this plain all-to-all.
* nodes a token reaches (``nodes_reached``, ``network_copies``): a dispatch that sends one copy of a token
  to each node holding one of its experts, which forwards it inside the node (DeepSeek-V3, arXiv
  2412.19437 section 3.2.2), crosses the network once per such node, not once per expert. Group-limited
  routing with one group per node (``n_group`` = nodes, ``topk_group`` = M) bounds that to M copies.
  These take routing decisions (the ``indices`` of a real router); ``expected_nodes_reached`` is the
  closed form for a router without groups that picks its ``top_k`` experts uniformly at random.
* load imbalance: rows each device's experts process, max / mean (1.0 = perfect).

Functions map data to numbers (``a2a_volume``, ``step_volume``, ``device_loads``, ...); the figures and
the dashboard that wires them to widgets are in ``moe_lab.viz.ep``.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from moe_lab.checks import check_bool, check_choice, check_float, check_int
from moe_lab.core.params import expert_params
from moe_lab.i18n import _
from moe_lab.parallel.layer import ranks_reached

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
# int8 dispatch (MoeDistributeDispatch quant_mode=2) also sends one float32 scale per row (dynamic_scales)
SCALE_BYTES = {"int8": 4}
PLACEMENTS = ("contiguous", "round_robin")
ROUTINGS = ("uniform", "zipf", "measured")
GIB, MIB = 2.0**30, 2.0**20


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
    for _step in range(q.size):
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
# Nodes a token reaches (node-limited routing)


def nodes_reached(indices, num_experts: int, nodes: int) -> np.ndarray:
    """Distinct nodes holding each token's chosen experts, shape ``[N]``.

    ``indices [N, K]``: the router's choices; node ``n`` holds the contiguous experts
    ``[n E / nodes, (n + 1) E / nodes)`` (contiguous placement, ``devices_per_node`` devices each).
    """
    nodes = check_int("nodes", nodes, minimum=1)
    return ranks_reached(indices, num_experts, nodes)


def expected_nodes_reached(num_experts: int, top_k: int, nodes: int) -> float:
    """Mean of ``nodes_reached`` when a token's ``top_k`` experts are ``top_k`` different experts drawn
    uniformly at random (no group limit): ``nodes * (1 - C(E - E/nodes, K) / C(E, K))``, since a node is
    missed only when all K experts fall among the other nodes' ``E - E/nodes``."""
    num_experts = check_int("num_experts", num_experts, minimum=1)
    top_k = check_int("top_k", top_k, minimum=1, maximum=num_experts)
    nodes = check_int("nodes", nodes, minimum=1, maximum=num_experts)
    if num_experts % nodes:
        raise ValueError(f"nodes must divide num_experts={num_experts}; got nodes={nodes}")
    others = num_experts - num_experts // nodes
    return nodes * (1.0 - comb(others, top_k) / comb(num_experts, top_k))


def network_copies(indices, num_experts: int, nodes: int, source_nodes, *, per_node: bool = True) -> np.ndarray:
    """Copies of each token that cross the network in one dispatch (the combine sends as many back), ``[N]``.

    ``source_nodes [N]``: the node each token starts on. ``per_node=False``: one row per chosen expert
    (the plain all-to-all): the experts that are not on the token's own node. ``per_node=True``: one copy
    per node that holds one of its experts, forwarded inside that node (DeepSeek-V3's dispatch): the
    distinct nodes other than its own. Group-limited routing with one group per node keeps the second
    at most ``topk_group``.
    """
    check_bool("per_node", per_node)
    nodes = check_int("nodes", nodes, minimum=1)
    reached = nodes_reached(indices, num_experts, nodes)  # also checks indices and nodes
    ids = np.asarray(indices.asnumpy() if hasattr(indices, "asnumpy") else indices).astype(np.int64)
    src = np.asarray(source_nodes).reshape(-1)
    if src.shape != (ids.shape[0],) or src.min(initial=0) < 0 or src.max(initial=0) >= nodes:
        raise ValueError(f"source_nodes must be {ids.shape[0]} node numbers in [0, {nodes}), got shape {src.shape}")
    on_own_node = ids // (num_experts // nodes) == src[:, None]
    if not per_node:
        return (~on_own_node).sum(1)
    return reached - on_own_node.any(1)


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
    hidden_size: int
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


def row_bytes(hidden_size: int, dtype: str) -> int:
    """Bytes of one token row on the wire: ``hidden_size * sizeof(dtype)`` (+ a float32 scale for int8)."""
    check_choice("dtype", dtype, tuple(DTYPE_BYTES))
    return int(hidden_size) * DTYPE_BYTES[dtype] + SCALE_BYTES.get(dtype, 0)


def a2a_volume(tokens: int, hidden_size: int, top_k: int, ep: int, *, num_experts: int = 256, shares=None,
               scheme: str = "contiguous", devices_per_node: int = 8, dispatch_dtype: str = "bfloat16",
               combine_dtype: str = "bfloat16") -> A2AVolume:
    """All-to-all bytes of one MoE layer per device (see the module docstring for the model).

    ``shares``: slots per expert (``routing_shares``), default uniform.
    """
    tokens = check_int("tokens", tokens, minimum=1)
    hidden_size = check_int("hidden_size", hidden_size, minimum=1)
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
    dispatch = {k: rows * v * row_bytes(hidden_size, dispatch_dtype) for k, v in parts.items()}
    combine = {k: rows * v * row_bytes(hidden_size, combine_dtype) for k, v in parts.items()}
    received = (ep - 1) * rows * dev * row_bytes(hidden_size, dispatch_dtype)
    return A2AVolume(ep, int(node.max()) + 1, tokens, top_k, hidden_size, dispatch, combine, received, dev)


def strategy_bytes(strategy: str, tokens: int, hidden_size: int, top_k: int, world_size: int,
                   dtype_bytes: int = 2) -> float:
    """Bytes one rank sends per MoE layer, dispatch + combine, token rows only (no ids, weights, padding).

    ``"allgather"``: AllGather of the ``tokens`` rows, ``(W-1) n H b``, then AllReduce of the ``[W n, H]``
    partial outputs, ``2 (W-1)/W * W n H b``. ``"alltoall"``: ``n K`` rows out and back, ``(W-1)/W`` of
    them to other ranks. Ratio allgather / alltoall = ``3 W / (2 K)``: 1.5 at W = K = 2, 12 at W = 64, K = 8.
    """
    check_choice("strategy", strategy, ("allgather", "alltoall"))
    w, rows = check_int("world_size", world_size, minimum=1), int(tokens) * int(hidden_size) * int(dtype_bytes)
    if strategy == "allgather":
        return float((w - 1) * rows + 2 * (w - 1) * rows)
    return 2 * (w - 1) / w * rows * int(top_k)


def step_volume(volume: A2AVolume, moe_layers: int = 58, training: bool = True) -> float:
    """Bytes one device sends per step: every MoE layer, forward and (training) backward.

    The backward pass runs both all-to-alls again in reverse, on gradients of the same shapes.
    """
    moe_layers = check_int("moe_layers", moe_layers, minimum=1)
    return volume.sent * moe_layers * (2 if training else 1)


def expert_bytes_per_device(num_experts: int, ep: int, hidden_size: int, intermediate_size: int, moe_layers: int,
                            dtype: str = "bfloat16") -> float:
    """Bytes of routed-expert weights one device holds: its ``E / ep`` experts in every MoE layer."""
    placement(num_experts, ep)  # checks that ep divides E
    return num_experts // ep * expert_params(hidden_size, intermediate_size) * moe_layers * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class SimResult:
    volume: A2AVolume
    per_step: float
    loads: np.ndarray  # sampled rows per device
    expected_imbalance: float
    sampled_imbalance: float


def simulate(ep: int = 32, tokens: int = 4096, top_k: int = 8, hidden_size: int = 7680, dtype: str = "bfloat16",
             routing: str = "uniform", skew: float = 1.0, scheme: str = "contiguous", *, num_experts: int = 256,
             moe_layers: int = 58, devices_per_node: int = 8, seed: int = 0, counts=None) -> SimResult:
    """Everything the dashboard shows for one setting (defaults: openPangu-Ultra-MoE-718B on 4 nodes)."""
    q = routing_shares(routing, num_experts, top_k, skew=skew, seed=seed, counts=counts)
    vol = a2a_volume(tokens, hidden_size, top_k, ep, num_experts=num_experts, shares=q, scheme=scheme,
                     devices_per_node=devices_per_node, dispatch_dtype=dtype, combine_dtype="bfloat16")
    place = placement(num_experts, ep, scheme)
    slots = tokens * top_k * ep
    loads = device_loads(sample_expert_counts(q, slots, seed), place, ep)
    return SimResult(vol, step_volume(vol, moe_layers), loads, imbalance(device_shares(q, place, ep)),
                     imbalance(loads))


def summary_line(sim: SimResult) -> str:
    """One line under the dashboard's figure (notebook 06), in the package's language."""
    v = sim.volume
    return _("per layer: {sent} MiB sent per device ({inter} inter-node); per training step ({step} GiB per "
             "device); load max/mean {imbalance}").format(sent=f"{v.sent / MIB:,.1f}", inter=f"{v.inter_fraction:.0%}",
                                                          step=f"{sim.per_step / GIB:,.1f}",
                                                          imbalance=f"{sim.sampled_imbalance:.2f}")
