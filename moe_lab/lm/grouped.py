"""Dropless grouped dispatch with static shapes: each token runs through its chosen experts only, and the
whole computation compiles under ``mindspore.jit`` with gradients.

Introduced in notebook 04: the tiny language model trains with it (``moe_lab.lm.model.Block``).

Notebook 01's ``"dense"`` path runs every expert on every token (``E / K`` times the needed work: 8x for
top-1 over 8 experts); notebook 03's ``"capacity"`` path compiles but needs an expert capacity, which
either drops tokens or is read on the host. Here the rows are grouped by expert into *blocks* of
``block_rows`` rows, each block belonging to one expert (an expert's last block is padded), the way
block-sparse MoE kernels (MegaBlocks, Gale et al. 2022, arXiv 2211.15841) lay them out:

1. rank every slot among the slots of its expert (a cumulative sum of the one-hot choice);
2. give expert ``e`` ``ceil(count_e / block_rows)`` consecutive blocks; slot ``j`` lands in row
   ``first_row[e] + rank[j]``;
3. gather the token rows into ``[blocks, block_rows, hidden]`` and each block's expert weights into
   ``[blocks, hidden, intermediate]``, run all blocks with batched matmuls;
4. every token gathers back its ``top_k`` result rows and sums them with its combine weights.

The number of blocks is fixed by the shapes alone, ``floor((N*K + E*(block_rows - 1)) / block_rows)``
(every expert wastes at most ``block_rows - 1`` padded rows), so no token is ever dropped and nothing is
read on the host. The output equals ``MoELayer``'s for the same routing (a test checks it, gradients
included).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, ops

from moe_lab.checks import check_int
from moe_lab.core.static import experts_batched

# Rows per block. One layer of notebook 04's model (512 tokens, 8 experts, top-1, hidden 64,
# intermediate 128), forward + backward under mindspore.jit on 2 CPU cores, medians of 15 interleaved
# rounds: dense 6.9 ms; blocks of 16 rows 2.9 ms, 32 rows 2.4 ms, 64 rows 2.4 ms, 128 rows 2.7 ms.
# Small blocks gather more weight copies, large ones pad more rows.
BLOCK_ROWS = 64


def num_blocks(num_slots: int, num_experts: int, block_rows: int) -> int:
    """Blocks that always suffice for ``num_slots`` slots over ``num_experts`` experts (static)."""
    return (num_slots + num_experts * (block_rows - 1)) // block_rows


def grouped_plan(indices: Tensor, num_experts: int, block_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """Where every slot goes: ``(slot_row [N*K], buffer_token [blocks*block_rows], block_expert [blocks])``.

    ``slot_row[t*K + k]`` is the buffer row of token ``t``'s ``k``-th choice; ``buffer_token`` is the
    token whose row fills each buffer row (padding rows read token 0 and are never gathered back);
    ``block_expert`` is the expert of each block (unused blocks at the end get the last expert).
    Static shapes and integer ops only. Introduced in notebook 04.
    """
    n, k = indices.shape
    nk = n * k
    blocks = num_blocks(nk, num_experts, block_rows)
    expert = indices.reshape(-1).astype(ms.int32)
    one_hot = ops.one_hot(expert, num_experts, Tensor(1, ms.int32), Tensor(0, ms.int32))   # [NK, E]
    # rank of each slot among its expert's slots, in slot order (a cumulative count)
    rank = (ops.cumsum(one_hot, 0) * one_hot).sum(1) - 1
    counts = one_hot.sum(0)
    padded = (counts + (block_rows - 1)) // block_rows * block_rows
    ends = ops.cumsum(padded, 0)
    first_row = ends - padded
    slot_row = ops.gather(first_row, expert, 0) + rank
    token = ops.arange(nk, dtype=ms.int32) // k
    buffer_token = ops.tensor_scatter_update(ops.zeros(blocks * block_rows, ms.int32), slot_row.reshape(-1, 1),
                                             token)
    block_start = ops.arange(blocks, dtype=ms.int32) * block_rows
    # block b belongs to the first expert whose padded range ends after the block's first row
    block_expert = (ends.reshape(1, num_experts) <= block_start.reshape(blocks, 1)).astype(ms.int32).sum(1)
    block_expert = ops.minimum(block_expert, num_experts - 1)
    return slot_row, buffer_token, block_expert


def grouped_moe(x: Tensor, indices: Tensor, weights: Tensor, w_gate: Tensor | None, w_up: Tensor, w_down: Tensor,
                block_rows: int = BLOCK_ROWS) -> Tensor:
    """The routed experts' combined output ``[N, hidden]`` for rows ``x [N, hidden]``, dropless.

    ``indices, weights [N, K]`` as ``Router.route_tensors`` returns them; ``w_gate`` (None for ReLU
    experts), ``w_up``, ``w_down`` the stacked expert weights of ``moe_lab.core.experts.Experts``.
    Compiles under ``mindspore.jit``; gradients reach ``x``, the weights and the combine weights.
    Introduced in notebook 04.
    """
    block_rows = check_int("block_rows", block_rows, minimum=1)
    n, k = indices.shape
    num_experts, hidden = w_up.shape[0], x.shape[1]
    # an expert sees each token at most once, so blocks longer than N rows only add padding
    block_rows = min(block_rows, n)
    slot_row, buffer_token, block_expert = grouped_plan(indices, num_experts, block_rows)
    blocks = block_expert.shape[0]
    x_blocks = ops.gather(x, buffer_token, 0).reshape(blocks, block_rows, hidden)
    gate = None if w_gate is None else ops.gather(w_gate, block_expert, 0)
    y_blocks = experts_batched(x_blocks, gate, ops.gather(w_up, block_expert, 0), ops.gather(w_down, block_expert, 0))
    y_slots = ops.gather(y_blocks.reshape(blocks * block_rows, hidden), slot_row, 0)
    if k == 1:
        return y_slots * weights.astype(x.dtype)
    # out[t] = sum_j weights[t, j] * y_slots[t, j] as one batched [1, K] x [K, H] product per token
    # (moe_lab.core.static measured it several times faster on CPU than a multiply and a sum over K)
    return ops.bmm(weights.astype(x.dtype).reshape(n, 1, k), y_slots.reshape(n, k, hidden)).reshape(n, hidden)
