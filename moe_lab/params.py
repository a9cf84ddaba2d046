"""Counting parameters: everything a layer stores vs what one token actually uses (notebook 01).

``count_params`` reads the real ``Parameter`` tensors of any ``nn.Cell``; ``moe_layer_params`` is the
closed-form formula. Tests check that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from mindspore import nn

from moe_lab._checks import check_choice, check_int


@dataclass(frozen=True)
class ParamCount:
    """``total``: parameters stored; ``active``: parameters one token's forward pass touches."""

    total: int
    active: int

    @property
    def active_fraction(self) -> float:
        return self.active / self.total if self.total else 0.0


def expert_params(hidden_size: int, ffn_size: int, activation: str = "swiglu") -> int:
    """Weights of one expert: 3·H·F for SwiGLU (gate, up, down), 2·H·F for a plain FFN (no biases)."""
    check_int("hidden_size", hidden_size, minimum=1)
    check_int("ffn_size", ffn_size, minimum=1)
    check_choice("activation", activation, ("swiglu", "relu"))
    return (3 if activation == "swiglu" else 2) * hidden_size * ffn_size


def moe_layer_params(hidden_size: int, ffn_size: int, num_experts: int, top_k: int,
                     activation: str = "swiglu") -> ParamCount:
    """Closed form: total = H·E (router) + E·expert; active = H·E + K·expert."""
    check_int("num_experts", num_experts, minimum=1)
    check_int("top_k", top_k, minimum=1, maximum=num_experts)
    per_expert = expert_params(hidden_size, ffn_size, activation)
    router = hidden_size * num_experts
    return ParamCount(total=router + num_experts * per_expert, active=router + top_k * per_expert)


def count_params(cell: nn.Cell) -> ParamCount:
    """Count the trainable parameters of ``cell``; for every ``MoELayer`` inside, only ``top_k`` of
    its ``num_experts`` experts count as active."""
    from moe_lab.layer import MoELayer  # local import: layer imports nothing from here

    if not isinstance(cell, nn.Cell):
        raise TypeError(f"cell must be a mindspore.nn.Cell, got {type(cell).__name__}")
    total = sum(int(p.size) for p in cell.trainable_params())
    inactive = 0
    for _, sub in cell.cells_and_names():
        if isinstance(sub, MoELayer):
            per_expert = sum(int(p.size) for p in sub.experts.trainable_params()) // sub.num_experts
            inactive += (sub.num_experts - sub.top_k) * per_expert
    return ParamCount(total=total, active=total - inactive)
