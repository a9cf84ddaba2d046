"""What a capacity factor costs: dropped slots and output error as the capacity shrinks.

Introduced in notebook 03 (section "Dropped tokens vs capacity factor"). The routing is computed once
(dropless); for each capacity factor the keep mask of ``moe_lab.core.capacity`` decides which slots drop
and the static-shape path of ``moe_lab.core.static`` computes the output (plus the shared experts, which
never drop), which is compared with the dropless output of the same layer.

    sweep = capacity_sweep(layer, x, [0.25, 0.5, 1.0, 1.25, 2.0])
    fig = moe_lab.viz.figures.plot_capacity_sweep(sweep)

An empty batch (0 tokens) gives a sweep with capacity 0 and nothing dropped, like the layer, whose
every path returns an empty output for 0 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mindspore import Tensor, ops

from moe_lab.checks import check_choice, check_float
from moe_lab.core.capacity import DROP_POLICIES, expert_capacity, keep_mask
from moe_lab.core.static import capacity_moe, padded_capacity


@dataclass(frozen=True)
class CapacitySweep:
    """Per capacity factor: ``capacity`` (slots per expert), ``dropped_slots`` (fraction of the N*K
    slots), ``dropped_tokens`` (fraction of tokens that lost every slot), ``relative_error``
    (``||y - y_dropless|| / ||y_dropless||``). ``load`` is the dropless load per expert. With 0 tokens
    every fraction is 0 (nothing was dropped).

    Introduced in notebook 03."""

    factors: np.ndarray
    capacity: np.ndarray
    dropped_slots: np.ndarray
    dropped_tokens: np.ndarray
    relative_error: np.ndarray
    load: np.ndarray
    drop_policy: str
    tokens: int
    top_k: int


def _rows(layer, x) -> Tensor:
    """``x`` as ``[tokens, hidden_size]``, with the layer's own shape rules and clear errors."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a mindspore.Tensor, got {type(x).__name__}")
    if x.ndim not in (2, 3) or x.shape[-1] != layer.hidden_size:
        raise ValueError(f"x must have shape (tokens, hidden_size) or (batch, seq, hidden_size) with "
                         f"hidden_size={layer.hidden_size}, got shape {x.shape}")
    return x.reshape(-1, layer.hidden_size)


def capacity_sweep(layer, x: Tensor, factors, drop_policy: str = "position") -> CapacitySweep:
    """Drop statistics and output error of ``layer`` on ``x`` for every capacity factor in ``factors``.

    The layer's own ``capacity_factor`` is ignored: its router and experts are reused as they are.
    ``drop_policy`` is ``"position"`` or ``"priority"`` (``moe_lab.core.capacity``); the priority policy
    ranks tokens by their largest routing probability, as the layer does.

    Introduced in notebook 03.
    """
    check_choice("drop_policy", drop_policy, DROP_POLICIES)
    factors = [check_float("factors[]", f, minimum=0.0, strict=True) for f in factors]
    if not factors:
        raise ValueError("factors must hold at least one capacity factor, got an empty list")
    rows = _rows(layer, x)
    n, e, k = rows.shape[0], layer.num_experts, layer.top_k
    caps = np.array([expert_capacity(n, e, k, cf) for cf in factors])
    if n == 0:  # nothing routed, nothing dropped; the layer's output would be empty too
        zero = np.zeros(len(factors))
        return CapacitySweep(np.array(factors), caps, zero, zero.copy(), zero.copy(), np.zeros(e, np.int64),
                             drop_policy, 0, k)
    routing = layer.router(rows)  # dropless: every slot kept
    ex = layer.experts
    load = routing.load()
    full = capacity_moe(rows, routing.indices, routing.weights, routing.keep, ex.w_gate, ex.w_up, ex.w_down,
                        padded_capacity(int(load.max()), n))
    full = layer.add_shared_experts(rows, full).asnumpy().astype(np.float64)
    norm = float(np.linalg.norm(full))
    # the chosen experts' routing probabilities: what the "priority" policy ranks tokens by
    scores = ops.gather_elements(routing.probs, 1, routing.indices)
    slots, tokens, errors = [], [], []
    for capacity in caps.tolist():
        keep = keep_mask(routing.indices, scores, e, capacity, drop_policy)
        weights = routing.weights * keep.astype(routing.weights.dtype)
        # a buffer of `capacity` rows per expert, as a capacity layer would compile it
        y = capacity_moe(rows, routing.indices, weights, keep, ex.w_gate, ex.w_up, ex.w_down, max(capacity, 1))
        y = layer.add_shared_experts(rows, y)
        kept = keep.asnumpy()
        slots.append(float((~kept).mean()))
        tokens.append(float((~kept.any(1)).mean()))
        errors.append(float(np.linalg.norm(y.asnumpy().astype(np.float64) - full) / norm) if norm > 0 else 0.0)
    return CapacitySweep(np.array(factors), caps, np.array(slots), np.array(tokens), np.array(errors),
                         load, drop_policy, n, k)
