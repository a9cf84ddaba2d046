"""Expert capacity: how many token slots each expert may take, and which slots are dropped.

Introduced in notebook 03. ``capacity = ceil(capacity_factor * tokens * top_k / num_experts)``
(GShard, arXiv 2006.16668; Switch Transformer, arXiv 2101.03961 section 2.2).

Which slots survive when an expert is over capacity (``drop_policy``):

* ``"position"``: first choices of all tokens go before any second choice, and within one choice
  earlier tokens go first (GShard's order). A token's top-1 is never dropped for another's top-2.
* ``"priority"``: batch-prioritised routing (V-MoE, arXiv 2106.05974, section 3.2; the authors' code
  ``vmoe/moe.py``): tokens are ranked once by their priority, the largest routing weight among their
  choices, and served in that order, choice by choice: every token's first choice (best token first), then
  every second choice in the same token order. Confident tokens keep their slots when an expert is full.
  Exactly equal weights (rare) keep token order (a stable sort).

A dropped slot contributes zero to the output (its combine weight is set to 0); a token whose slots
are all dropped leaves the layer as zeros (the residual connection around the layer carries it).
"""

from __future__ import annotations

import math

import mindspore as ms
from mindspore import Tensor, ops

from moe_lab.checks import check_choice, check_float, check_int

DROP_POLICIES = ("position", "priority")


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float | None) -> int | None:
    """Token slots per expert, or ``None`` (dropless) when ``capacity_factor`` is None."""
    check_int("num_tokens", num_tokens, minimum=0)
    check_int("num_experts", num_experts, minimum=1)
    check_int("top_k", top_k, minimum=1, maximum=num_experts)
    capacity_factor = check_float("capacity_factor", capacity_factor, minimum=0.0, strict=True, allow_none=True)
    if capacity_factor is None:
        return None
    # round before ceil so that e.g. 1.1 * 100 * 2 / 4 = 55.00000000000001 gives 55, not 56
    return int(math.ceil(round(capacity_factor * num_tokens * top_k / num_experts, 9)))


def token_rank(priority: Tensor) -> Tensor:
    """Each token's place when tokens are sorted by ``priority`` [N], largest first, ties in token order:
    ``rank[t] = #{s: p_s > p_t} + #{s < t: p_s = p_t}``. Written as comparisons rather than a sort, because
    MindSpore's sort does not promise to keep the order of equal keys; N x N booleans (16 MB at 4096 tokens)."""
    n = priority.shape[0]
    ids = ops.arange(n, dtype=ms.int32)
    above = priority.reshape(1, n) > priority.reshape(n, 1)
    tied_before = (priority.reshape(1, n) == priority.reshape(n, 1)) & (ids.reshape(1, n) < ids.reshape(n, 1))
    return (above | tied_before).astype(ms.int32).sum(1)


def slot_priority(indices: Tensor, scores: Tensor, drop_policy: str = "position") -> Tensor:
    """Priority rank of every slot ``(token, k)``, 0 = served first; shape ``[N, K]`` int32.

    ``scores [N, K]``: each slot's routing score (the ``"priority"`` policy ranks a token by its largest)."""
    check_choice("drop_policy", drop_policy, DROP_POLICIES)
    n, k = indices.shape
    choice = ops.arange(k, dtype=ms.int32).reshape(1, k) * n
    if drop_policy == "position":  # slot (t, j) at j * N + t: all first choices, then all second choices...
        return choice + ops.arange(n, dtype=ms.int32).reshape(n, 1)
    # the same choice-by-choice order, with tokens in priority order: slot (t, j) at j * N + rank(t)
    return choice + token_rank(scores.astype(ms.float32).max(axis=1)).reshape(n, 1)


def keep_mask(indices: Tensor, scores: Tensor, num_experts: int, capacity: int,
              drop_policy: str = "position") -> Tensor:
    """Boolean ``[N, K]``: True where the slot fits in its expert's ``capacity``.

    ``scores [N, K]`` are the chosen experts' routing scores (only the ``"priority"`` policy reads them).
    Sort the slots by (expert, priority); a slot's position inside its expert's run is its place in
    the queue; it is kept when that place is below the capacity. Static shapes, so it also compiles.
    """
    n, k = indices.shape
    nk = n * k
    priority = slot_priority(indices, scores, drop_policy).reshape(-1)
    expert = indices.reshape(-1).astype(ms.int32)
    _, order = ops.sort(expert * nk + priority)  # unique keys: the order is exact
    sorted_expert = ops.gather(expert, order, 0)
    counts = ops.bincount(expert, minlength=num_experts).astype(ms.int32)
    starts = ops.cumsum(counts, 0) - counts
    place = ops.arange(nk, dtype=ms.int32) - ops.gather(starts, sorted_expert, 0)
    keep_sorted = place < capacity
    keep = ops.zeros(nk, ms.bool_)
    keep = ops.tensor_scatter_update(keep, order.reshape(-1, 1), keep_sorted)
    return keep.reshape(n, k)
