"""Static-shape dispatch: every expert gets a buffer of ``capacity`` rows, so the graph compiles.

Introduced in notebook 03 (section "A static-shape path that compiles").

The ``sorted`` path of notebook 01 reads the expert counts on the host to cut one block per expert:
its shapes depend on the data, so ``mindspore.jit`` cannot compile it. Production systems either use a
grouped matmul that takes the counts as a tensor (Ascend's ``GroupedMatmul``, see ``moe_lab.ascend.ops_ref``)
or fix the shapes with an expert capacity ``C`` (GShard, Switch Transformer). This module does the
second, with ops that exist on every backend:

1. plan: sort the kept slots by expert (one integer sort) and give each a row in an ``[E, C]`` buffer;
2. gather the token rows into the buffer ``[E, C, hidden]`` (rows past an expert's count are padding);
3. run all experts at once with batched matmuls against the stacked weights ``[E, hidden, ffn]``;
4. combine: every token gathers back its ``top_k`` result rows and sums them with its routing weights.

Step 4 is a gather, not a scatter-add: each token knows where its slots went, so no two writes collide
(deterministic, and its gradient is a single segment sum).

Dropless layers need a capacity too: ``padded_capacity`` takes the largest expert load of the batch,
rounded up to a multiple of ``PAD_MULTIPLE`` rows, so that only a few shapes are ever compiled and no
slot is dropped. At 4096 tokens, 8 experts, top-2 the largest load is a few percent above the mean
(the benchmark's layer: 1058 slots for a mean of 1024, padded to 1088): ~6% padded rows, against 25%
for a fixed ``capacity_factor=1.25``. A smaller multiple pads less (8 would give 1064 rows here) but
compiles more shapes as the loads vary from batch to batch.

Choices measured on the course's 2-core CPU (MindSpore 2.10, ``benchmarks/``):

* one ``ops.bmm`` over ``[E, C, H]`` beats eight per-expert matmuls on exact-size blocks (sliced weights
  and eight graph launches cost more than the few padded rows save);
* the combine as a batched ``[1, K] x [K, H]`` product per token is several times faster than a
  broadcast multiply followed by a sum over K (a reduction over a middle axis is slow on CPU);
* slicing big tensors inside a graph (``StridedSlice``) is slow on CPU: the path uses gathers and reshapes.
"""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from moe_lab.checks import check_int
from moe_lab.core.experts import Experts
from moe_lab.core.routers import Routing

PAD_MULTIPLE = 32


def padded_capacity(max_load: int, num_tokens: int, multiple: int = PAD_MULTIPLE) -> int:
    """Dropless capacity: ``max_load`` rounded up to ``multiple``, never more than ``num_tokens``.

    An expert sees each token at most once (top-k picks distinct experts), so ``num_tokens`` rows
    always suffice. Rounding up means that batches with slightly different loads share one compiled
    shape. Introduced in notebook 03.
    """
    check_int("max_load", max_load, minimum=0)
    check_int("num_tokens", num_tokens, minimum=1)
    check_int("multiple", multiple, minimum=1)
    return max(1, min(num_tokens, multiple * math.ceil(max_load / multiple)))


def dispatch_plan(indices: Tensor, keep: Tensor, num_experts: int, capacity: int) -> tuple[Tensor, Tensor]:
    """Where every slot goes in the ``[E, C]`` buffer, with static shapes only.

    Args:
        indices: ``[N, K]`` chosen experts.  keep: ``[N, K]`` bool, False for slots dropped by capacity.
        num_experts: ``E``.  capacity: ``C``, rows per expert (at least the largest kept count).

    Returns:
        ``buffer_token [E*C]`` int32: the token whose row fills each buffer row (padding rows read
        token 0; their results are never gathered back), and ``slot_row [N*K]`` int32: the buffer
        row of each slot ``j = t*K + k`` (row-major), 0 for dropped slots (their weight is 0).
    Introduced in notebook 03.
    """
    n, k = indices.shape
    nk = n * k
    expert = indices.reshape(-1).astype(ms.int32)
    kept = keep.reshape(-1)
    # dropped slots get the pseudo-expert E, so they sort after every kept slot and own no buffer row;
    # the key is unique (expert * NK + slot), so the unstable sort gives an exact order
    owner = ops.where(kept, expert, ops.full_like(expert, num_experts))
    slot = ops.arange(nk, dtype=ms.int32)
    _, order = ops.sort(owner * nk + slot)
    order = order.astype(ms.int32)
    # ops.bincount returns float32 on CPU: cast before using the counts as offsets
    counts = ops.bincount(owner, minlength=num_experts + 1).astype(ms.int32)[:num_experts]
    starts = ops.cumsum(counts, 0) - counts
    # buffer row (e, c) holds the sorted slot starts[e] + c when c < counts[e]
    column = ops.arange(capacity, dtype=ms.int32).reshape(1, capacity)
    source = starts.reshape(num_experts, 1) + column
    valid = column < counts.reshape(num_experts, 1)
    source = ops.where(valid, source, ops.zeros_like(source)).reshape(-1)
    buffer_token = ops.where(valid.reshape(-1), ops.gather(order, source, 0) // k, ops.zeros_like(source))
    # rank of each slot in the sorted order (inverse permutation), then its row in the buffer
    rank = ops.tensor_scatter_update(ops.zeros(nk, ms.int32), order.reshape(-1, 1), slot)
    place = rank - ops.gather(starts, ops.minimum(owner, num_experts - 1), 0)
    slot_row = ops.where(kept, expert * capacity + place, ops.zeros_like(place))
    return buffer_token, slot_row


def experts_batched(x_buffer: Tensor, w_gate: Tensor | None, w_up: Tensor, w_down: Tensor) -> Tensor:
    """All experts on their buffers at once: ``[E, C, H] -> [E, C, H]`` with ``ops.bmm``. Notebook 03."""
    up = ops.bmm(x_buffer, w_up)
    hidden = ops.silu(ops.bmm(x_buffer, w_gate)) * up if w_gate is not None else ops.relu(up)
    return ops.bmm(hidden, w_down)


def capacity_moe(x: Tensor, indices: Tensor, weights: Tensor, keep: Tensor, w_gate: Tensor | None,
                 w_up: Tensor, w_down: Tensor, capacity: int) -> Tensor:
    """The static-shape MoE on rows ``x [N, H]``: plan, gather, batched experts, weighted combine.

    ``capacity`` must be at least the number of kept slots of every expert (the keep mask of
    ``moe_lab.capacity`` guarantees it for ``capacity_factor`` layers; ``padded_capacity`` for
    dropless ones). Compiles with ``mindspore.jit`` when ``capacity`` is a Python int.
    Introduced in notebook 03.
    """
    n, k = indices.shape
    num_experts, hidden = w_up.shape[0], x.shape[1]
    buffer_token, slot_row = dispatch_plan(indices, keep, num_experts, capacity)
    x_buffer = ops.gather(x, buffer_token, 0).reshape(num_experts, capacity, hidden)
    y_buffer = experts_batched(x_buffer, w_gate, w_up, w_down).reshape(num_experts * capacity, hidden)
    y_slots = ops.gather(y_buffer, slot_row, 0).reshape(n, k, hidden)
    gate = ops.where(keep, weights, ops.zeros_like(weights)).astype(x.dtype)
    # out[t] = sum_j gate[t, j] * y_slots[t, j] as one batched [1, K] x [K, H] product per token:
    # on CPU this is several times faster than a broadcast multiply followed by a sum over K
    return ops.bmm(gate.reshape(n, 1, k), y_slots).reshape(n, hidden)


def dropless_capacity(routing: Routing) -> int:
    """``padded_capacity`` of a routing decision (reads the expert loads on the host). Notebook 03."""
    return padded_capacity(int(routing.kept().max()), int(routing.indices.shape[0]))


def dispatch_capacity(x: Tensor, routing: Routing, experts: Experts) -> Tensor:
    """``DISPATCH["capacity"]``: the static-shape path with the layer's capacity, or padded if dropless.

    With a ``capacity_factor`` the buffer has ``routing.capacity`` rows per expert and the keep mask
    decides which slots ride along; without one, ``dropless_capacity`` picks the padded size.
    Introduced in notebook 03.
    """
    capacity = routing.capacity if routing.capacity is not None else dropless_capacity(routing)
    return capacity_moe(x, routing.indices, routing.weights, routing.keep, experts.w_gate, experts.w_up,
                        experts.w_down, capacity)


def buffer_fill(routing: Routing, capacity: int | None = None) -> np.ndarray:
    """Per expert, the fraction of its ``C`` buffer rows that hold a real slot (the rest is padding
    compute). Introduced in notebook 03."""
    capacity = routing.capacity if capacity is None else capacity
    if capacity is None:
        capacity = dropless_capacity(routing)
    return routing.kept() / float(capacity)
