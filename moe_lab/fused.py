"""The ``"fused"`` dispatch path: the Ascend production pipeline on the layer's own stacked weights.

Introduced in notebook 07. What MindFormers' inference ``MoELayer`` and vllm-mindspore's ``fused_moe``
run on Atlas boards (MindFormers and vllm-mindspore, notebook 07), after the router has chosen:

    MoeInitRoutingV2      sort the (token, slot) pairs by expert; expanded_x [N*K, H], counts [E]
    GroupedMatmulV4 x2    gate and up projections, one grouped matmul each (group_list = counts)
    activation            SwiGLU (silu(gate) * up) or ReLU
    GroupedMatmulV4       down projection
    MoeTokenUnpermute     gather each pair's row back to its token, weighted sum with the router weights

in half precision (bf16 on Atlas A2/A3, fp16 on the 310P, which has no bf16). The operators are passed in
as a ``Kernels`` set: ``compiled_kernels()`` are MindSpore's, used only where ``moe_lab.backend`` detected
a board that has them; ``REFERENCE_KERNELS`` are the NumPy ones of ``moe_lab.ascend_ref``, so the same
pipeline code runs (and is tested) on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from moe_lab import ascend_ref
from moe_lab.backend import Backend, current_backend, require_fused
from moe_lab.expert import Experts
from moe_lab.router import Routing

DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


@dataclass(frozen=True)
class Kernels:
    """The three operators of the pipeline, with the call signatures of MindSpore's functions."""

    name: str
    moe_init_routing_v2: Callable
    grouped_matmul_v4: Callable
    moe_token_unpermute: Callable


def _as_tensors(value):
    """NumPy results of the reference operators -> MindSpore tensors (lists and tuples kept)."""
    if isinstance(value, np.ndarray):
        return Tensor(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_as_tensors(v) for v in value)
    return value


def _tensor_op(fn: Callable) -> Callable:
    def op(*args, **kwargs):
        return _as_tensors(fn(*args, **kwargs))

    op.__name__ = op.__qualname__ = fn.__name__
    op.__doc__ = fn.__doc__
    return op


REFERENCE_KERNELS = Kernels(
    name="moe_lab.ascend_ref (NumPy reference, runs anywhere)",
    moe_init_routing_v2=_tensor_op(ascend_ref.moe_init_routing_v2),
    grouped_matmul_v4=_tensor_op(ascend_ref.grouped_matmul),
    moe_token_unpermute=_tensor_op(ascend_ref.moe_token_unpermute),
)


def compiled_kernels() -> Kernels:
    """MindSpore's compiled Ascend operators. Importing them is harmless anywhere; calling them is only
    done after ``require_fused`` (a CPU would fail late or get an empty tuple back)."""
    from mindspore.ops.auto_generate import grouped_matmul_v4

    return Kernels(name="mindspore.ops (compiled CANN kernels, Ascend)",
                   moe_init_routing_v2=ops.moe_init_routing_v2,
                   grouped_matmul_v4=grouped_matmul_v4,
                   moe_token_unpermute=ops.moe_token_unpermute)


def fused_moe(x: Tensor, routing: Routing, experts: Experts, *, kernels: Kernels | None = None,
              compute_dtype: str | None = None, backend: Backend | None = None, trace: dict | None = None) -> Tensor:
    """Run the fused pipeline on rows ``x [N, H]`` routed by ``routing``; returns ``[N, H]`` in x's dtype.

    ``kernels=None`` uses the compiled operators and refuses (clear RuntimeError) where the backend has
    none. ``compute_dtype`` ("bfloat16", "float16", "float32"; default: the backend's) is the dtype of the
    operators' inputs. Capacity: dropped slots have weight 0 in ``routing``, so they add nothing.
    ``trace``, if a dict, receives the intermediate tensors (notebook 07 prints them).
    """
    if kernels is None:
        backend = require_fused(backend)
        kernels = compiled_kernels()
        compute_dtype = compute_dtype or backend.compute_dtype
    compute_dtype = compute_dtype or "float32"
    if compute_dtype not in DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(map(repr, DTYPES))}; got {compute_dtype!r}")
    dtype = DTYPES[compute_dtype]
    num_experts = experts.num_experts
    hidden = x.astype(dtype)
    # dropless (active_num=0, drop_pad_mode=0), tokens per expert as counts (flag 2)
    expanded_x, expanded_row_idx, tokens_per_expert = kernels.moe_init_routing_v2(
        hidden, routing.indices.astype(ms.int32), 0, 0, num_experts, 0, 2, False)
    group_list = tokens_per_expert.astype(ms.int64)

    def grouped(rows: Tensor, weight: Tensor) -> Tensor:
        # one matmul per expert over its block of rows; group_list_type=1: group_list holds counts
        return kernels.grouped_matmul_v4([rows.astype(dtype)], [weight.astype(dtype)], group_list=group_list,
                                         split_item=3, group_type=0, group_list_type=1)[0]

    up = grouped(expanded_x, experts.w_up)
    if experts.w_gate is not None:
        act = ops.silu(grouped(expanded_x, experts.w_gate).astype(ms.float32)) * up.astype(ms.float32)
    else:
        act = ops.relu(up.astype(ms.float32))
    y = grouped(act, experts.w_down)
    out = kernels.moe_token_unpermute(y.astype(dtype), expanded_row_idx, routing.weights.astype(dtype))
    if trace is not None:
        trace.update(expanded_x=expanded_x, expanded_row_idx=expanded_row_idx, tokens_per_expert=tokens_per_expert,
                     expert_out=y, out=out)
    return out.astype(x.dtype)


def dispatch_fused(x: Tensor, routing: Routing, experts: Experts) -> Tensor:
    """The ``DISPATCH["fused"]`` entry: compiled operators on the detected board, refused elsewhere."""
    return fused_moe(x, routing, experts, backend=current_backend())
