"""The ways to send tokens to their routed experts and combine the results (notebook 01).

Every function takes the rows ``x [N, hidden_size]``, a ``Routing`` and the ``Experts`` and returns the
routed experts' combined output ``[N, hidden_size]`` (``MoELayer.add_shared_experts`` adds the shared
experts to it). They compute the same thing and differ only in how the work is arranged:

* ``loop``:   for every token, for every chosen expert: run that expert on that one row.
              Correct, readable, and hopelessly slow (one tiny matmul per slot).
* ``dense``:  run every expert on every token, then keep only the chosen ones (mask and combine).
              Simple and static-shaped, but does ``num_experts / top_k`` times the needed work.
* ``sorted``: group the slots by expert (one sort), run each expert once on its block of rows,
              scatter the weighted results back. The work an MoE is supposed to do; what the
              Ascend fused operators do in hardware (permute -> grouped matmul -> unpermute).

``DISPATCH`` also holds ``"capacity"`` (static shapes, compiles; notebook 03, ``moe_lab.core.static``)
and ``"fused"`` (the compiled Ascend operators; notebook 08, ``moe_lab.ascend.fused``).
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from moe_lab.ascend.backend import current_backend
from moe_lab.ascend.fused import fused_moe
from moe_lab.core.experts import Experts
from moe_lab.core.routers import Routing
from moe_lab.core.static import dispatch_capacity


def dispatch_loop(x: Tensor, routing: Routing, experts: Experts) -> Tensor:
    """Per-token loop: ``out[t] = sum_j weights[t, j] * expert_{indices[t, j]}(x[t])``."""
    indices = routing.indices.asnumpy()
    keep = routing.keep.asnumpy()
    rows = []
    for t in range(x.shape[0]):
        row = ops.zeros((1, x.shape[1]), x.dtype)
        for j in range(indices.shape[1]):
            if keep[t, j]:  # a slot dropped by capacity contributes nothing
                row = row + routing.weights[t:t + 1, j:j + 1] * experts.expert(int(indices[t, j]), x[t:t + 1])
        rows.append(row)
    return ops.concat(rows, 0)


def combine_matrix(indices: Tensor, weights: Tensor, num_experts: int) -> Tensor:
    """The sparse gate as a dense ``[N, E]`` matrix: ``G[t, e]`` = weight of expert e for token t."""
    one_hot = ops.one_hot(indices, num_experts, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
    return (one_hot * weights.astype(ms.float32).expand_dims(-1)).sum(1)


def dense_moe(x: Tensor, indices: Tensor, weights: Tensor, experts: Experts) -> Tensor:
    """Every expert on every token (``[E, N, hidden]``), then ``out = sum_e G[:, e] * y_e``.

    Plain tensors in and out, static shapes: compiles under ``mindspore.jit``, gradients included.
    """
    y_all = experts.all_experts(x)
    gate = combine_matrix(indices, weights, experts.num_experts).astype(x.dtype)
    return (gate.T.expand_dims(-1) * y_all).sum(0)


def dispatch_dense(x: Tensor, routing: Routing, experts: Experts) -> Tensor:
    """The ``"dense"`` path: ``dense_moe`` on the routing's indices and (capacity-masked) weights."""
    return dense_moe(x, routing.indices, routing.weights, experts)


def dispatch_sorted(x: Tensor, routing: Routing, experts: Experts) -> Tensor:
    """Sort the kept slots by expert, run each expert once on its rows, scatter-add back.

    The expert counts are read on the host to cut the blocks, so this path has dynamic shapes and
    runs in PyNative mode (notebook 03 shows the static-shape version that compiles).
    """
    n, k = routing.indices.shape
    flat_expert = routing.indices.asnumpy().reshape(-1)
    kept = np.flatnonzero(routing.keep.asnumpy().reshape(-1))
    # stable sort of the kept slots by expert: slots of one expert stay in token order
    slots = kept[np.argsort(flat_expert[kept], kind="stable")]
    counts = np.bincount(flat_expert[slots], minlength=routing.num_experts)
    slot_ids = Tensor(slots.astype(np.int32))
    token_ids = Tensor((slots // k).astype(np.int32))
    x_sorted = ops.gather(x, token_ids, 0)
    blocks, start = [], 0
    for e, count in enumerate(counts.tolist()):
        if count:
            blocks.append(experts.expert(e, x_sorted[start:start + count]))
            start += count
    if not blocks:
        return ops.zeros_like(x)
    y_sorted = ops.concat(blocks, 0) * ops.gather(routing.weights.reshape(-1), slot_ids, 0).expand_dims(-1)
    return ops.unsorted_segment_sum(y_sorted, token_ids, n)


def dispatch_fused(x: Tensor, routing: Routing, experts: Experts) -> Tensor:
    """The ``"fused"`` path: the compiled Ascend operators on the detected board (notebook 08), refused
    with a clear error where the board has none. Under an emulated board (``MOE_LAB_BACKEND=emulate-...``)
    the reference operators of ``moe_lab.ascend.ops_ref`` run in their place, in the board's dtype."""
    return fused_moe(x, routing.indices, routing.weights, experts.w_gate, experts.w_up, experts.w_down,
                     backend=current_backend())


DISPATCH = {"loop": dispatch_loop, "dense": dispatch_dense, "sorted": dispatch_sorted, "fused": dispatch_fused,
            "capacity": dispatch_capacity}
