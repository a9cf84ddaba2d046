"""CPU reference implementations of MindSpore 2.10's compiled Ascend MoE operators, in NumPy.

Introduced in notebook 03 (the permute -> grouped matmul -> unpermute pipeline) and used again in
notebook 08 (the ``"fused"`` path runs the same pipeline code with these in place of the compiled ops,
on an emulated board).

The compiled operators (``mindspore.ops.moe_token_permute``, ``ops.auto_generate.MoeInitRoutingV2``,
``GroupedMatmulV4``, ...) launch CANN kernels that exist only on Atlas boards; on a CPU they fail late
or return an empty tuple (measured with MindSpore 2.10 on CPU; notebook 08). Each function here is named
after one operator, takes the same arguments (MindSpore tensors or NumPy arrays) and returns NumPy
arrays with the operator's semantics, so a learner can print every index on a laptop. Sources: the
operator docstrings in the MindSpore 2.10 wheel and the CANN ops-transformer docs
(``moe/*/docs/aclnn*.md``); ``tests/test_ascend_ref.py`` reproduces every docstring example.

Notation: N tokens (rows), H hidden, E experts, K top-k. Two orders of the N*K (token, slot) pairs:

* row-major  ``j = n*K + k`` (token after token): ``moe_init_routing_v2``, ``moe_token_permute``,
  ``moe_token_unpermute``;
* k-major    ``j = k*N + n`` (slot after slot):   ``moe_gating_top_k_softmax``'s ``row_idx``,
  ``moe_init_routing`` (V1), ``moe_finalize_routing``.

Mixing the two families (V2's ``expanded_row_idx`` into ``moe_finalize_routing``) raises no error and
gives a wrong answer: the "index-order trap" of notebook 03.

Half precision: float16 inputs are computed in float32 and the result is rounded back to float16, which
is what the kernels' fp32 accumulation does up to rounding. bfloat16 MindSpore tensors (NumPy has no
bfloat16) are computed in float32 and returned as float32.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np

from moe_lab.checks import check_choice, check_int

__all__ = [
    "fused_add_topk_div",
    "grouped_matmul",
    "moe_compute_expert_tokens",
    "moe_finalize_routing",
    "moe_gating_top_k_softmax",
    "moe_init_routing",
    "moe_init_routing_v2",
    "moe_token_permute",
    "moe_token_unpermute",
]


# ----------------------------------------------------------------------------------------------- helpers
def _np(name: str, value, *, ndim: tuple[int, ...] | None = None, integer: bool = False) -> np.ndarray:
    """A MindSpore tensor / array / list as a NumPy array, with a clear error for the wrong kind."""
    if hasattr(value, "asnumpy"):  # a mindspore.Tensor; bfloat16 has no NumPy dtype: go through float32
        if value.dtype == ms.bfloat16:
            value = value.astype(ms.float32)
        value = value.asnumpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a Tensor or array, got {type(value).__name__}") from err
    if arr.dtype == object:
        raise TypeError(f"{name} must be a Tensor or array of numbers, got {type(value).__name__}")
    if integer and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype (int32/int64), got {arr.dtype}")
    if not integer and not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must have a numeric dtype, got {arr.dtype}")
    if ndim is not None and arr.ndim not in ndim:
        dims = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name} must be {dims}, got shape {arr.shape}")
    return arr


def _float(arr: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    """Compute dtype (float32 for half/int inputs, float64 kept) and the dtype to return."""
    out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)
    work = np.float64 if arr.dtype == np.float64 else np.float32
    return arr.astype(work), out_dtype


def _check_experts(name: str, expert_idx: np.ndarray, num_experts: int) -> None:
    if expert_idx.size and (expert_idx.min() < 0 or expert_idx.max() >= num_experts):
        raise ValueError(f"{name} values must be in [0, {num_experts - 1}] (expert_num={num_experts}), "
                         f"got min {expert_idx.min()} and max {expert_idx.max()}")


def _inverse(order: np.ndarray) -> np.ndarray:
    """``inv[order[i]] = i``: where each element went (the operators' ``expanded_row_idx``)."""
    inv = np.empty(order.size, np.int32)
    inv[order] = np.arange(order.size, dtype=np.int32)
    return inv


# ----------------------------------------------------------------------------------------------- gating
def moe_gating_top_k_softmax(x, finished=None, k: int = 1):
    """``MoeGatingTopKSoftmax()(x, finished, k)``: softmax over experts, then the k best.

    Returns ``(y [.., k] (x's dtype), expert_idx [.., k] int32, row_idx [.., k] int32)``, best first
    (ties: lower expert id first). ``row_idx`` is **k-major**: ``row_idx[n, j] = j*N + n`` for the N rows
    (``N`` = all leading dimensions), the order ``moe_init_routing`` (V1) and ``moe_finalize_routing``
    expect. Rows with ``finished=True`` get ``expert_idx = E`` (no valid expert; CANN doc) and keep ``y``.
    """
    x = _np("x", x, ndim=(2, 3))
    num_experts = x.shape[-1]
    k = check_int("k", k, minimum=0, maximum=num_experts)
    z, out_dtype = _float(x)
    z = z - z.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    expert_idx = np.argsort(-probs, axis=-1, kind="stable")[..., :k].astype(np.int32)
    y = np.take_along_axis(probs, expert_idx, -1).astype(out_dtype)
    if finished is not None:
        finished = _np("finished", finished).astype(bool)
        if finished.shape != x.shape[:-1]:
            raise ValueError(f"finished must have shape {x.shape[:-1]} (x.shape[:-1]), got {finished.shape}")
        expert_idx = np.where(finished[..., None], np.int32(num_experts), expert_idx)
    rows = int(np.prod(x.shape[:-1]))
    row_idx = np.arange(rows * k, dtype=np.int32).reshape(k, rows).T.reshape(*x.shape[:-1], k)
    return y, expert_idx, row_idx


def fused_add_topk_div(x, add_num, group_num: int, group_topk: int, n: int, k: int, activate_type: int = 0,
                       is_norm: bool = True, scale: float = 2.5):
    """``ops.auto_generate.fused_add_topk_div``: DeepSeek-V3's sigmoid router in one kernel (Atlas A2).

    The 2.10 docstring is empty; the semantics are those of the kernel's source (ascend-transformer-boost
    ``fused_add_topk_div.h``) and its documented limits (ms_custom_ops ``fused_add_topk_div_doc.md``):

    1. ``s = sigmoid(x)`` (``activate_type`` 0, the only one), ``sb = s + add_num`` (the selection bias);
    2. a group's score is the sum of its ``n`` best ``sb`` (``n=2``: DeepSeek-V3; ``n=1``: the best one);
       the ``group_topk`` best of the ``group_num`` groups are kept, the others multiplied by 0;
    3. ``indices``: the top ``k`` of the masked ``sb``, best first;
    4. ``weight``: gathered from the **unbiased** ``s``; if ``is_norm``, divided by their sum (no epsilon) and
       multiplied by ``scale``; without ``is_norm`` the weights are neither normalised nor scaled.

    Returns ``(weight [N, k] float32, indices [N, k] int32)``. Limits checked here: ``b`` (experts) divisible by
    ``group_num``, ``group_topk <= group_num``, ``k <= b``, ``b >= group_num * n``, ``b <= 32 * group_num``, and
    ``group_num == 8`` when ``b >= 32``.
    """
    x = _np("x", x, ndim=(2,))
    add_num = _np("add_num", add_num, ndim=(1,))
    b = x.shape[1]
    group_num = check_int("group_num", group_num, minimum=1)
    group_topk = check_int("group_topk", group_topk, minimum=1, maximum=group_num)
    n = check_int("n", n, minimum=1)
    k = check_int("k", k, minimum=1, maximum=b)
    check_choice("activate_type", activate_type, (0,))
    if add_num.shape != (b,):
        raise ValueError(f"add_num must have shape ({b},) (one bias per expert), got {add_num.shape}")
    if b % group_num or b < group_num * n or b > 32 * group_num or (b >= 32 and group_num != 8):
        raise ValueError(f"fused_add_topk_div needs experts ({b}) divisible by group_num ({group_num}), >= group_num*n "
                         f"({group_num * n}), <= 32*group_num, and group_num == 8 when there are >= 32 experts")
    xf = x.astype(np.float32)
    s = 1.0 / (1.0 + np.exp(-xf))
    sb = s + add_num.astype(np.float32)
    grouped = sb.reshape(len(sb), group_num, b // group_num)
    group_score = -np.sort(-grouped, axis=-1)[..., :n].sum(-1)
    keep = np.argsort(-group_score, axis=-1, kind="stable")[:, :group_topk]
    mask = np.zeros((len(sb), group_num), np.float32)
    np.put_along_axis(mask, keep, 1.0, -1)
    masked = (grouped * mask[..., None]).reshape(len(sb), b)
    indices = np.argsort(-masked, axis=-1, kind="stable")[:, :k].astype(np.int32)
    weight = np.take_along_axis(s, indices, -1)
    if is_norm:
        weight = weight / weight.sum(-1, keepdims=True) * np.float32(scale)
    return weight.astype(np.float32), indices


# ----------------------------------------------------------------------------------------------- routing
def moe_init_routing(x, row_idx, expert_idx, active_num: int):
    """``moe_init_routing`` (V1): sort the (token, slot) pairs by expert, k-major bookkeeping.

    ``sorted_e, sorted_row = keyValueSort(expert_idx, row_idx)`` (ties: smaller ``row_idx`` first);
    ``expanded_row_idx[sorted_row[i]] = i``; ``expanded_x[i] = x[sorted_row[i] % N]``.
    Returns ``(expanded_x [min(N, active_num)*K, H], expanded_row_idx [N*K] int32,
    expanded_expert_idx [N*K] int32 (sorted expert ids))``. With the ``row_idx`` of
    ``moe_gating_top_k_softmax`` (k-major), ``expanded_row_idx`` is indexed by ``k*N + n``.
    """
    x = _np("x", x, ndim=(2,))
    row_idx = _np("row_idx", row_idx, ndim=(2,), integer=True)
    expert_idx = _np("expert_idx", expert_idx, ndim=(2,), integer=True)
    active_num = check_int("active_num", active_num, minimum=0)
    n, k = expert_idx.shape
    if n != x.shape[0] or row_idx.shape != expert_idx.shape:
        raise ValueError(f"x [N, H], row_idx and expert_idx [N, K] must agree on N and K; got x {x.shape}, "
                         f"row_idx {row_idx.shape}, expert_idx {expert_idx.shape}")
    flat_e, flat_row = expert_idx.reshape(-1), row_idx.reshape(-1)
    order = np.lexsort((flat_row, flat_e))  # primary key: expert; secondary: row_idx
    sorted_row = flat_row[order]
    expanded_row_idx = np.empty(n * k, np.int32)
    expanded_row_idx[sorted_row] = np.arange(n * k, dtype=np.int32)
    expanded_x = x[sorted_row % n][: min(n, active_num) * k]
    return expanded_x, expanded_row_idx, flat_e[order].astype(np.int32)


def moe_init_routing_v2(x, expert_idx, active_num: int = 0, expert_capacity: int = 0, expert_num: int = 0,
                        drop_pad_mode: int = 0, expert_tokens_count_or_cumsum_flag: int = 0,
                        expert_tokens_before_capacity_flag: bool = False):
    """``ops.moe_init_routing_v2``: sort the (token, slot) pairs by expert, **row-major** bookkeeping.

    A stable sort of ``expert_idx.reshape(-1)`` (pair ``j = n*K + k``) gives ``order``;
    ``expanded_row_idx[order[i]] = i`` and ``expanded_x[i] = x[order[i] // K]``.

    * dropless (``drop_pad_mode=0, active_num=0``): ``expanded_x [N*K, H]``;
    * active (``drop_pad_mode=0, active_num>0``): only the first ``min(active_num, N*K)`` rows;
    * drop/pad (``drop_pad_mode=1``): ``expanded_x [E, C, H]``: expert e's first C pairs (in pair order),
      zero rows after; ``expanded_row_idx[j] = e*C + position`` or -1 for a dropped pair.

    Returns what the MindSpore function returns: ``(expanded_x, expanded_row_idx)``, plus
    ``expert_tokens`` when asked: cumulative counts (flag 1) or counts (flag 2) in dropless/active mode,
    or the counts before capacity (``expert_tokens_before_capacity_flag``) in drop/pad mode.
    """
    x = _np("x", x, ndim=(2,))
    expert_idx = _np("expert_idx", expert_idx, ndim=(2,), integer=True)
    active_num = check_int("active_num", active_num, minimum=0)
    expert_capacity = check_int("expert_capacity", expert_capacity, minimum=0)
    expert_num = check_int("expert_num", expert_num, minimum=0)
    drop_pad_mode = check_choice("drop_pad_mode", drop_pad_mode, (0, 1))
    flag = check_choice("expert_tokens_count_or_cumsum_flag", expert_tokens_count_or_cumsum_flag, (0, 1, 2))
    if not isinstance(expert_tokens_before_capacity_flag, bool):
        raise TypeError(f"expert_tokens_before_capacity_flag must be True or False, "
                        f"got {expert_tokens_before_capacity_flag!r}")
    n, k = expert_idx.shape
    if n != x.shape[0]:
        raise ValueError(f"x and expert_idx must have the same number of rows, got {x.shape} and {expert_idx.shape}")
    flat = expert_idx.reshape(-1)
    needs_range = drop_pad_mode == 1 or flag > 0
    if needs_range:
        if expert_num < 1:
            raise ValueError(f"expert_num must be >= 1 in drop/pad mode or when expert tokens are asked for, "
                             f"got {expert_num}")
        _check_experts("expert_idx", flat, expert_num)
    elif flat.size and flat.min() < 0:
        raise ValueError(f"expert_idx values must be >= 0, got min {flat.min()}")
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=expert_num).astype(np.int32) if needs_range else None
    if drop_pad_mode == 0:
        expanded_row_idx = _inverse(order)
        expanded_x = x[order // k]
        if active_num > 0:
            expanded_x = expanded_x[: min(active_num, n * k)]
        if flag == 0:
            return expanded_x, expanded_row_idx
        return expanded_x, expanded_row_idx, (np.cumsum(counts).astype(np.int32) if flag == 1 else counts)
    if not 0 < expert_capacity <= n:
        raise ValueError(f"expert_capacity must be in (0, {n}] (0 < C <= NUM_ROWS) in drop/pad mode, "
                         f"got {expert_capacity}")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_e = flat[order]
    position = np.arange(n * k) - starts[sorted_e]  # rank of the pair among its expert's pairs
    kept = position < expert_capacity
    expanded_x = np.zeros((expert_num, expert_capacity, x.shape[1]), x.dtype)
    expanded_x[sorted_e[kept], position[kept]] = x[order[kept] // k]
    expanded_row_idx = np.full(n * k, -1, np.int32)
    expanded_row_idx[order[kept]] = (sorted_e[kept] * expert_capacity + position[kept]).astype(np.int32)
    if expert_tokens_before_capacity_flag:
        return expanded_x, expanded_row_idx, counts
    return expanded_x, expanded_row_idx


def moe_compute_expert_tokens(sorted_experts, num_expert: int):
    """``moe_compute_expert_tokens``: for each expert, the end offset of its rows in the sorted list.

    ``out[i] = #{j : sorted_experts[j] <= i}`` (a binary search per expert), i.e. the cumulative counts
    that ``grouped_matmul``'s cumulative ``group_list`` wants. Shape ``[num_expert]``: for
    ``([0, 0, 1, 2, 2], 5)`` it is ``[2, 3, 5, 5, 5]`` (the 2.10 docstring prints ``[2, 3, 5]``, cut short).
    """
    sorted_experts = _np("sorted_experts", sorted_experts, ndim=(1,), integer=True)
    num_expert = check_int("num_expert", num_expert, minimum=1)
    if np.any(np.diff(sorted_experts) < 0):
        raise ValueError("sorted_experts must be sorted in ascending order (the output of moe_init_routing)")
    _check_experts("sorted_experts", sorted_experts, num_expert)
    return np.searchsorted(sorted_experts, np.arange(num_expert), side="right").astype(sorted_experts.dtype)


# ----------------------------------------------------------------------------------------------- experts
def grouped_matmul(x, weight, bias=None, group_list=None, *, split_item: int = 3, group_type: int = 0,
                   group_list_type: int = 0, **unused):
    """``GroupedMatmul`` / ``grouped_matmul_v4`` in MoE mode (``split_item=3, group_type=0``).

    ``x = [X [M, K_in]]`` (rows sorted by expert), ``weight = [W [E, K_in, N_out]]``, ``bias = [B [E, N_out]]``
    or None. Rows of group g get ``Y[rows_g] = X[rows_g] @ W[g] (+ B[g])``. ``group_list [E]``:
    ``group_list_type=0`` cumulative end rows (GroupedMatmul V1 always; last value <= M),
    ``group_list_type=1`` rows per group (GroupedMatmulV4; what MindFormers and vllm-mindspore use).
    Rows past the last group are left at zero. Returns a list with one array ``[M, N_out]``, like the
    operator (bare arrays are accepted for ``x`` and ``weight`` too). Other arguments of the operator
    (quantisation scales, ...) must be None.
    """
    if split_item != 3 or group_type != 0:
        raise ValueError(f"only the MoE mode split_item=3, group_type=0 is implemented, got split_item={split_item}, "
                         f"group_type={group_type}")
    for name, value in unused.items():
        if value is not None:
            raise ValueError(f"{name} (quantisation/activation argument) is not supported by the reference; "
                             f"got {type(value).__name__}")
    group_list_type = check_choice("group_list_type", group_list_type, (0, 1))
    x = _np("x", x[0] if isinstance(x, (list, tuple)) else x, ndim=(2,))
    w = _np("weight", weight[0] if isinstance(weight, (list, tuple)) else weight, ndim=(3,))
    if group_list is None:
        raise ValueError("group_list is required in MoE mode (split_item=3)")
    groups = _np("group_list", group_list, ndim=(1,), integer=True).astype(np.int64)
    if groups.size != w.shape[0]:
        raise ValueError(f"group_list must have one entry per expert (weight.shape[0]={w.shape[0]}), "
                         f"got {groups.size}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x [M, K] and weight [E, K, N] must agree on K, got {x.shape} and {w.shape}")
    if group_list_type == 1:
        if np.any(groups < 0):
            raise ValueError(f"group_list counts must be >= 0, got {groups.tolist()}")
        ends = np.cumsum(groups)
    else:
        if np.any(np.diff(groups) < 0) or (groups.size and groups[0] < 0):
            raise ValueError(f"a cumulative group_list must be non-decreasing and >= 0, got {groups.tolist()}")
        ends = groups
    if ends.size and ends[-1] > x.shape[0]:
        raise ValueError(f"group_list covers {int(ends[-1])} rows but x has only {x.shape[0]}")
    b = None
    if bias is not None:
        b = _np("bias", bias[0] if isinstance(bias, (list, tuple)) else bias, ndim=(2,))
    xf, out_dtype = _float(x)
    wf, _ = _float(w)
    y = np.zeros((x.shape[0], w.shape[2]), xf.dtype)
    start = 0
    for g, end in enumerate(ends.tolist()):
        y[start:end] = xf[start:end] @ wf[g] + (0.0 if b is None else b[g])
        start = end
    return [y.astype(out_dtype)]


# ----------------------------------------------------------------------------------------------- permute
def moe_token_permute(tokens, indices, num_out_tokens: int | None = None, padded_mode: bool = False):
    """``ops.moe_token_permute``: group the rows by expert (row-major pairs, stable).

    ``indices [N, K]`` (or ``[N]``, K = 1): the expert of each pair. Returns ``(permuted_tokens [N*K, H],
    sorted_indices [N*K] int32)`` where ``sorted_indices[j]`` is the row where pair ``j = n*K + k`` went
    (``permuted_tokens[sorted_indices[j]] = tokens[j // K]``), the map ``moe_token_unpermute`` takes.
    ``num_out_tokens`` keeps only the first rows (the ones not dropped by capacity).
    """
    tokens = _np("tokens", tokens, ndim=(2,))
    indices = _np("indices", indices, ndim=(1, 2), integer=True)
    if padded_mode is not False:
        raise ValueError(f"padded_mode must be False (the operator supports nothing else), got {padded_mode!r}")
    if indices.shape[0] != tokens.shape[0]:
        raise ValueError(f"tokens [N, H] and indices [N, K] must agree on N, got {tokens.shape} and {indices.shape}")
    k = 1 if indices.ndim == 1 else indices.shape[1]
    if k > 512:
        raise ValueError(f"indices' second dimension (top-k) must be <= 512, got {k}")
    order = np.argsort(indices.reshape(-1), kind="stable")
    permuted = tokens[order // k]
    if num_out_tokens is not None:
        num_out_tokens = check_int("num_out_tokens", num_out_tokens, minimum=0)
        permuted = permuted[:num_out_tokens]
    return permuted, _inverse(order)


def moe_token_unpermute(permuted_tokens, sorted_indices, probs=None, padded_mode: bool = False,
                        restore_shape=None):
    """``ops.moe_token_unpermute``: gather every pair's row back to its token and sum with weights.

    ``out[n] = sum_k probs[n, k] * permuted_tokens[sorted_indices[n*K + k]]`` (row-major pairs; the
    ``expanded_row_idx`` of ``moe_init_routing_v2`` or the ``sorted_indices`` of ``moe_token_permute``).
    Without ``probs``, K = 1. A pair whose row is past the end of ``permuted_tokens`` (dropped by
    ``num_out_tokens``) contributes zero (assumption from Megatron's unpermute; not run on a board).
    """
    tokens = _np("permuted_tokens", permuted_tokens, ndim=(2,))
    sorted_indices = _np("sorted_indices", sorted_indices, ndim=(1,), integer=True)
    if padded_mode is not False:
        raise ValueError(f"padded_mode must be False (the only mode supported), got {padded_mode!r}")
    if restore_shape is not None:
        raise ValueError("restore_shape is only used in padded mode, which is not supported")
    if np.unique(sorted_indices).size != sorted_indices.size:
        raise ValueError("sorted_indices must not repeat a value (the operator's result is undefined then)")
    if sorted_indices.size and sorted_indices.min() < 0:
        raise ValueError(f"sorted_indices must be >= 0, got min {sorted_indices.min()}")
    tf, out_dtype = _float(tokens)
    if probs is None:
        n, k = sorted_indices.size, 1
        weights = np.ones((n, 1), tf.dtype)
    else:
        weights = _np("probs", probs, ndim=(2,)).astype(tf.dtype)
        n, k = weights.shape
        if n * k != sorted_indices.size:
            raise ValueError(f"probs [N, K] must have N*K = len(sorted_indices) = {sorted_indices.size}, "
                             f"got shape {weights.shape}")
    padded = np.concatenate([tf, np.zeros((1, tf.shape[1]), tf.dtype)])  # row M = the zero row
    rows = np.minimum(sorted_indices, tokens.shape[0]).reshape(n, k)
    out = (padded[rows] * weights[..., None]).sum(1)
    return out.astype(out_dtype)


def moe_finalize_routing(expanded_x, x1, x2=None, bias=None, scales=None, expanded_row_idx=None,
                         expanded_expert_idx=None):
    """``moe_finalize_routing``: the combine step paired with ``moe_init_routing`` (V1), **k-major**.

    ``out[n] = x1[n] + x2[n] + sum_k scales[n, k] * (expanded_x[expanded_row_idx[n + k*N]] + bias[e_nk])``
    with ``e_nk = expanded_expert_idx[n, k]``. ``x2``, ``bias`` and ``scales`` may be None (0, 0, 1) here;
    the MindSpore operator needs ``bias`` (its shape check rejects None).
    """
    ex = _np("expanded_x", expanded_x, ndim=(2,))
    x1 = _np("x1", x1, ndim=(2,))
    if expanded_row_idx is None or expanded_expert_idx is None:
        raise ValueError("expanded_row_idx and expanded_expert_idx are required")
    eri = _np("expanded_row_idx", expanded_row_idx, ndim=(1,), integer=True)
    eei = _np("expanded_expert_idx", expanded_expert_idx, ndim=(2,), integer=True)
    n, k = eei.shape
    if x1.shape != (n, ex.shape[1]) or eri.size != n * k:
        raise ValueError(f"expected x1 [N, H] = [{n}, {ex.shape[1]}] and expanded_row_idx [N*K] = [{n * k}], "
                         f"got {x1.shape} and {eri.shape}")
    if eri.size and (eri.min() < 0 or eri.max() >= ex.shape[0]):
        raise ValueError(f"expanded_row_idx values must be in [0, {ex.shape[0] - 1}], "
                         f"got min {eri.min()} and max {eri.max()}")
    xf, out_dtype = _float(ex)
    out = x1.astype(xf.dtype).copy()
    if x2 is not None:
        out += _np("x2", x2, ndim=(2,)).astype(xf.dtype)
    sc = np.ones((n, k), xf.dtype) if scales is None else _np("scales", scales, ndim=(2,)).astype(xf.dtype)
    b = None if bias is None else _np("bias", bias, ndim=(2,)).astype(xf.dtype)
    for j in range(k):
        rows = xf[eri[j * n:(j + 1) * n]]  # k-major: the pair (n, j) is entry j*N + n
        if b is not None:
            rows = rows + b[eei[:, j]]
        out += sc[:, j:j + 1] * rows
    return out.astype(out_dtype)
