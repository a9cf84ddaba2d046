"""The ``"fused"`` dispatch path: the Ascend production pipeline on a layer's stacked expert weights.

Introduced in notebook 08. What MindFormers' inference ``MoELayer`` and vllm-mindspore's ``fused_moe``
run on Atlas boards, after the router has chosen:

    gating                MoeGatingTopKSoftmax (softmax routers) or FusedAddTopKDiv (sigmoid routers with
                          bias, groups, renormalisation and scaling: DeepSeek-V3, openPangu) where the board
                          has the kernel and the router fits its limits (``gating_plan``); ordinary ops otherwise
    MoeInitRoutingV2      sort the (token, slot) pairs by expert; expanded_x [N*K, H], counts [E]
    GroupedMatmulV4 x2    gate and up projections, one grouped matmul each (group_list = counts)
    activation            SwiGLU (silu(gate) * up) or ReLU
    GroupedMatmulV4       down projection
    MoeTokenUnpermute     gather each pair's row back to its token, weighted sum with the router weights

The operators are passed in as a ``Kernels`` set (``kernels_for(backend)``): MindSpore's compiled ones
on a detected board that has them; on an emulated board (``MOE_LAB_BACKEND=emulate-910b`` ...) the NumPy
ones of ``moe_lab.ascend.ops_ref``, rounded to the board's dtype at every operator boundary as the
kernels' outputs are, and refused for an operator the emulated SoC does not have. The same pipeline
code therefore runs in CI as on a board. Inputs and outputs are plain tensors (no layer, no routing
report): ``moe_lab.core.dispatch.dispatch_fused`` adapts it to a ``MoELayer``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from mindspore.ops.auto_generate import MoeGatingTopKSoftmax, format_cast, fused_add_topk_div, grouped_matmul_v4

from moe_lab.ascend import ops_ref
from moe_lab.ascend.backend import Backend, op_support, require_fused, support_label
from moe_lab.checks import check_choice
from moe_lab.i18n import _

DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


@dataclass(frozen=True)
class Kernels:
    """The three operators of the pipeline, with the call signatures of MindSpore's functions."""

    name: str
    moe_init_routing_v2: Callable
    grouped_matmul_v4: Callable
    moe_token_unpermute: Callable
    moe_gating_top_k_softmax: Callable
    fused_add_topk_div: Callable


def _as_tensors(value, dtype):
    """NumPy results of the reference operators -> MindSpore tensors (lists and tuples kept); floating
    results are returned in ``dtype``, the dtype a compiled kernel would return them in."""
    if isinstance(value, np.ndarray):
        tensor = Tensor(value)
        return tensor.astype(dtype) if dtype is not None and np.issubdtype(value.dtype, np.floating) else tensor
    if isinstance(value, (list, tuple)):
        return type(value)(_as_tensors(v, dtype) for v in value)
    return value


def _float_dtype(args):
    """The dtype of the first floating tensor argument (the operator's data input)."""
    for arg in args:
        arg = arg[0] if isinstance(arg, (list, tuple)) and arg else arg
        if isinstance(arg, Tensor) and arg.dtype in (ms.float16, ms.bfloat16, ms.float32):
            return arg.dtype
    return None


def _tensor_op(fn: Callable, operator: str, soc: str | None = None) -> Callable:
    """A reference operator with the compiled one's call convention; on an emulated ``soc``, refused
    when the SoC has no such kernel (``data/ascend_ops.json``)."""

    def op(*args, **kwargs):
        if soc is not None and op_support(soc, operator).startswith(("no", "unknown")):
            raise RuntimeError(f"the emulated {soc} board has no {operator} kernel ({op_support(soc, operator)} in "
                               "data/ascend_ops.json): a real board would refuse this call too")
        return _as_tensors(fn(*args, **kwargs), _float_dtype(args))

    op.__name__ = op.__qualname__ = fn.__name__
    op.__doc__ = fn.__doc__
    return op


def reference_kernels(soc: str | None = None) -> Kernels:
    """The NumPy reference operators; for an emulated ``soc``, limited to the operators it has."""
    where = f"emulating {soc}" if soc else "runs anywhere"
    return Kernels(name=f"moe_lab.ascend.ops_ref (NumPy reference, {where})",
                   moe_init_routing_v2=_tensor_op(ops_ref.moe_init_routing_v2, "MoeInitRoutingV2", soc),
                   grouped_matmul_v4=_tensor_op(ops_ref.grouped_matmul, "GroupedMatmulV4", soc),
                   moe_token_unpermute=_tensor_op(ops_ref.moe_token_unpermute, "MoeTokenUnpermute", soc),
                   moe_gating_top_k_softmax=_tensor_op(ops_ref.moe_gating_top_k_softmax, "MoeGatingTopKSoftmax", soc),
                   fused_add_topk_div=_tensor_op(ops_ref.fused_add_topk_div, "FusedAddTopKDiv", soc))


REFERENCE_KERNELS = reference_kernels()

# MindSpore's compiled Ascend operators. Importing them is harmless anywhere; calling them is only done
# after require_fused on a real board (a CPU would fail late or get an empty tuple back).
COMPILED_KERNELS = Kernels(name="mindspore.ops (compiled CANN kernels, Ascend)",
                           moe_init_routing_v2=ops.moe_init_routing_v2, grouped_matmul_v4=grouped_matmul_v4,
                           moe_token_unpermute=ops.moe_token_unpermute,
                           moe_gating_top_k_softmax=lambda x, finished, k: MoeGatingTopKSoftmax()(x, finished, k),
                           fused_add_topk_div=fused_add_topk_div)


def kernels_for(backend: Backend) -> Kernels:
    """The kernels of ``backend``'s fused path: compiled on a board, reference ones on an emulated board."""
    backend = require_fused(backend)
    return reference_kernels(backend.soc) if backend.emulated else COMPILED_KERNELS


def fused_moe(x: Tensor, indices: Tensor, weights: Tensor, w_gate: Tensor | None, w_up: Tensor, w_down: Tensor, *,
              kernels: Kernels | None = None, compute_dtype: str | None = None, backend: Backend | None = None,
              trace: dict | None = None) -> Tensor:
    """Run the fused pipeline on rows ``x [N, H]`` routed to ``indices [N, K]`` with ``weights [N, K]``.

    Returns the routed experts' combined output ``[N, H]`` in x's dtype. ``kernels=None`` uses the
    kernels of ``backend`` (``kernels_for``) and refuses (clear RuntimeError) where it has none.
    ``compute_dtype`` ("float32", "bfloat16", "float16"; default: the backend's, float32 with explicit
    kernels) is the dtype of the operators' inputs. Capacity: dropped slots have weight 0, so they add
    nothing. ``trace``, if a dict, receives the intermediate tensors (notebook 08 prints them).
    """
    if kernels is None:
        backend = require_fused(backend)
        kernels = kernels_for(backend)
        compute_dtype = compute_dtype or backend.compute_dtype
    compute_dtype = check_choice("compute_dtype", compute_dtype or "float32", tuple(DTYPES))
    dtype = DTYPES[compute_dtype]
    num_experts = w_up.shape[0]
    hidden = x.astype(dtype)
    # dropless (active_num=0, drop_pad_mode=0), tokens per expert as counts (flag 2)
    expanded_x, expanded_row_idx, tokens_per_expert = kernels.moe_init_routing_v2(
        hidden, indices.astype(ms.int32), 0, 0, num_experts, 0, 2, False)
    group_list = tokens_per_expert.astype(ms.int64)

    def grouped(rows: Tensor, weight: Tensor) -> Tensor:
        # one matmul per expert over its block of rows; group_list_type=1: group_list holds counts
        return kernels.grouped_matmul_v4([rows.astype(dtype)], [weight.astype(dtype)], group_list=group_list,
                                         split_item=3, group_type=0, group_list_type=1)[0]

    if backend is not None and backend.soc == "ascend310p" and not backend.emulated:
        # the 310P's grouped matmul takes its weights in the FRACTAL_NZ layout only (CANN's aclnn doc; what
        # vllm-mindspore does); format 29 = FRACTAL_NZ. Not run on a board.
        w_gate, w_up, w_down = (None if w is None else format_cast(w.astype(dtype), 29)
                                for w in (w_gate, w_up, w_down))
    up = grouped(expanded_x, w_up)
    if w_gate is not None:
        act = ops.silu(grouped(expanded_x, w_gate).astype(ms.float32)) * up.astype(ms.float32)
    else:
        act = ops.relu(up.astype(ms.float32))
    y = grouped(act, w_down)
    out = kernels.moe_token_unpermute(y.astype(dtype), expanded_row_idx, weights.astype(dtype))
    if trace is not None:
        trace.update(expanded_x=expanded_x, expanded_row_idx=expanded_row_idx, tokens_per_expert=tokens_per_expert,
                     expert_out=y, out=out)
    return out.astype(x.dtype)


# ----------------------------------------------------------------------------- the router on the board


@dataclass(frozen=True)
class GatingPlan:
    """Which compiled gating kernel routes a router on a board (``kernel`` None: ordinary ops), and why (``reason``,
    in the package's language: notebook 08 prints it)."""

    kernel: str | None
    reason: str
    params: tuple = ()  # FusedAddTopKDiv's (group_num, group_topk, n, is_norm, scale)


def gating_plan(router, soc: str | None) -> GatingPlan:
    """Decide, from the router's settings and the SoC's operator table, which gating kernel fits.

    ``MoeGatingTopKSoftmax`` takes a softmax router without selection bias or groups (its renormalisation and
    scale are applied after it); ``FusedAddTopKDiv`` a sigmoid router within its limits (it normalises and
    scales only together, so a router that scales without renormalising cannot use it). Decided before any
    call, never by trying one.
    """
    if soc is None:
        return GatingPlan(None, _("no Ascend SoC: the router runs as ordinary operators"))
    biased = bool(np.any(router.selection_bias.asnumpy() != 0))
    e, k = router.num_experts, router.top_k
    if router.scoring_func == "softmax":
        if op_support(soc, "MoeGatingTopKSoftmax") != "yes":
            return GatingPlan(None, _("{soc} has no MoeGatingTopKSoftmax kernel").format(soc=soc))
        if router.group_limited or biased:
            return GatingPlan(None, _("MoeGatingTopKSoftmax has neither a selection bias nor group-limited "
                                      "selection"))
        return GatingPlan("MoeGatingTopKSoftmax", _("softmax top-k in one kernel"))
    if router.scoring_func != "sigmoid":
        return GatingPlan(None, _("no gating kernel for {scoring_func} scores").format(
            scoring_func=repr(router.scoring_func)))
    if op_support(soc, "FusedAddTopKDiv") != "yes":
        return GatingPlan(None, _("FusedAddTopKDiv is {support} on {soc}").format(
            support=support_label(op_support(soc, "FusedAddTopKDiv")), soc=soc))
    if not router.norm_topk_prob and router.routed_scaling_factor != 1.0:
        return GatingPlan(None, _("FusedAddTopKDiv scales the weights only when it renormalises them"))
    if router.group_limited:
        group_num, group_topk = router.n_group, router.topk_group
        n = 2 if router.topk_method == "noaux_tc" else 1
    else:  # no group limit: every group is kept (8 groups from 32 experts on, as the kernel requires)
        group_num = 8 if e >= 32 else 1
        group_topk, n = group_num, 1
    if e % group_num or e < group_num * n or e > 32 * group_num or (e >= 32 and group_num != 8):
        return GatingPlan(None, _("{num_experts} experts in {n_group} groups are outside FusedAddTopKDiv's limits (a "
                                  "multiple of the groups, at most 32 per group, 8 groups from 32 experts on)").format(
            num_experts=e, n_group=group_num))
    if k > e:
        return GatingPlan(None, _("top_k exceeds the experts"))
    scale = router.routed_scaling_factor if router.norm_topk_prob else 1.0
    return GatingPlan("FusedAddTopKDiv", _("sigmoid, bias, {topk_group} of {n_group} groups (score: top-{n} sum), "
                                           "top-k, renormalise and scale in one kernel").format(
                          topk_group=group_topk, n_group=group_num, n=n),
                      (group_num, group_topk, n, router.norm_topk_prob, scale))


def fused_route(x: Tensor, router, plan: GatingPlan, kernels: Kernels, trace: dict | None = None):
    """Route rows ``x`` with the kernel of ``plan``: the router contract ``(logits, probs, indices, weights)``.

    The gate matmul (float32) and the reported ``probs`` are ordinary operators; the choice and the combine
    weights come from the kernel. ``plan.kernel`` None: the router's own ``route_tensors``.
    """
    if plan.kernel is None:
        return router.route_tensors(x)
    logits = ops.matmul(x.astype(ms.float32), router.weight.astype(ms.float32))
    scores = router.score(logits)
    if plan.kernel == "MoeGatingTopKSoftmax":
        weights, indices, _ = kernels.moe_gating_top_k_softmax(logits, None, router.top_k)
        weights = weights.astype(ms.float32)
        if router.norm_topk_prob:
            weights = weights / weights.sum(-1, keepdims=True)
        weights = weights * router.routed_scaling_factor
    else:
        group_num, group_topk, n, is_norm, scale = plan.params
        weights, indices = kernels.fused_add_topk_div(logits, router.selection_bias.astype(ms.float32), group_num,
                                                      group_topk, n, router.top_k, 0, is_norm, scale)
    if trace is not None:
        trace.update(gating_kernel=plan.kernel, gating_indices=indices, gating_weights=weights)
    return logits, router.balance_probs(scores), indices.astype(ms.int32), weights.astype(ms.float32)
