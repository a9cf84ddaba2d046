"""Counting parameters: everything a layer stores vs what one token actually uses (notebook 01).

``count_params`` reads the real ``Parameter`` tensors of any ``nn.Cell``; ``moe_layer_params`` is the
closed-form formula (notebook 02 adds shared experts). Tests check that the two agree with each other
and, per layer, with ``moe_lab.budget``'s count of real configs.

Only trainable parameters count: the selection bias (DeepSeek-V3's ``e_score_correction_bias``) is set by
a rule, not by gradients, and is a buffer (``moe_lab.budget`` reports it apart).
"""

from __future__ import annotations

from dataclasses import dataclass

from mindspore import nn

from moe_lab.checks import check_bool, check_choice, check_int
from moe_lab.core.experts import ACTIVATIONS
from moe_lab.core.layer import MoELayer, shared_width


@dataclass(frozen=True)
class ParamCount:
    """``total``: parameters stored; ``active``: parameters one token's forward pass touches."""

    total: int
    active: int

    @property
    def active_fraction(self) -> float:
        return self.active / self.total if self.total else 0.0


def expert_params(hidden_size: int, intermediate_size: int, activation: str = "swiglu") -> int:
    """Weights of one expert: 3·H·F for SwiGLU (gate, up, down), 2·H·F for a plain FFN (no biases)."""
    check_int("hidden_size", hidden_size, minimum=1)
    check_int("intermediate_size", intermediate_size, minimum=1)
    check_choice("activation", activation, ACTIVATIONS)
    return (3 if activation == "swiglu" else 2) * hidden_size * intermediate_size


def moe_layer_params(hidden_size: int, intermediate_size: int, num_experts: int, top_k: int,
                     activation: str = "swiglu", *, n_shared_experts: int = 0,
                     shared_expert_intermediate_size: int | None = None,
                     shared_expert_gate: bool = False) -> ParamCount:
    """Closed form: total = H·E (router) + E·expert + shared; active = H·E + K·expert + shared.

    The shared FFN (width ``n_shared_experts · intermediate_size``, or ``shared_expert_intermediate_size``)
    is always active; Qwen2-MoE's gate adds ``H`` weights.
    """
    check_int("num_experts", num_experts, minimum=1)
    check_int("top_k", top_k, minimum=1, maximum=num_experts)
    check_bool("shared_expert_gate", shared_expert_gate)
    per_expert = expert_params(hidden_size, intermediate_size, activation)
    width = shared_width(intermediate_size, n_shared_experts, shared_expert_intermediate_size)
    shared = 0
    if width:
        shared = expert_params(hidden_size, width, activation) + (hidden_size if shared_expert_gate else 0)
    router = hidden_size * num_experts
    return ParamCount(total=router + num_experts * per_expert + shared, active=router + top_k * per_expert + shared)


def count_params(cell: nn.Cell) -> ParamCount:
    """Count the trainable parameters of ``cell``; for every ``MoELayer`` inside, only ``top_k`` of
    its ``num_experts`` routed experts count as active (shared experts are always active)."""
    if not isinstance(cell, nn.Cell):
        raise TypeError(f"cell must be a mindspore.nn.Cell, got {type(cell).__name__}")
    total = sum(int(p.size) for p in cell.trainable_params())
    inactive = 0
    for _, sub in cell.cells_and_names():
        if isinstance(sub, MoELayer):
            per_expert = sum(int(p.size) for p in sub.experts.trainable_params()) // sub.num_experts
            inactive += (sub.num_experts - sub.top_k) * per_expert
    return ParamCount(total=total, active=total - inactive)
