"""Feed-forward experts: ``Expert`` (one FFN), ``Experts`` (a bank with stacked weights), ``SharedExperts``.

Introduced in notebook 01 (section "The experts"); shared experts in notebook 02 ("From Mixtral to
openPangu"). Weights are drawn from a NumPy generator so that the same seed gives the same weights on
every machine and the independent NumPy reference (``moe_lab.core.reference``) can reuse them.

Shapes follow the matmul ``x @ W`` (rows are tokens): ``w_gate, w_up [hidden_size, intermediate_size]``,
``w_down [intermediate_size, hidden_size]``; a bank stacks them over a leading expert axis. Released
checkpoints store ``torch.nn.Linear`` weights as ``[out, in]``: ``moe_lab.core.config`` transposes.
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from moe_lab.checks import check_bool, check_choice, check_int

ACTIVATIONS = ("swiglu", "relu")


def init_weight(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights, like ``nn.Dense``'s default scale."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def ffn(x: Tensor, w_gate: Tensor | None, w_up: Tensor, w_down: Tensor) -> Tensor:
    """The expert computation on a block of rows ``x``: SwiGLU when ``w_gate`` is given, else ReLU.

    SwiGLU (Shazeer 2020, used by Mixtral, DeepSeek, Qwen, openPangu): ``(silu(x W_gate) * x W_up) W_down``.
    ReLU (the article's plain FFN): ``relu(x W_up) W_down``.
    """
    up = ops.matmul(x, w_up)
    hidden = ops.silu(ops.matmul(x, w_gate)) * up if w_gate is not None else ops.relu(up)
    return ops.matmul(hidden, w_down)


def ffn_weights(rng: np.random.Generator, shape_prefix: tuple[int, ...], hidden_size: int, intermediate_size: int,
                activation: str) -> dict[str, np.ndarray | None]:
    """Initial ``w_gate`` (None for ReLU), ``w_up``, ``w_down`` drawn in this order from ``rng``."""
    h, f = hidden_size, intermediate_size
    return {"w_gate": init_weight(rng, (*shape_prefix, h, f), h) if activation == "swiglu" else None,
            "w_up": init_weight(rng, (*shape_prefix, h, f), h),
            "w_down": init_weight(rng, (*shape_prefix, f, h), f)}


def _parameters(cell: nn.Cell, weights: dict[str, np.ndarray | None]) -> None:
    for name, value in weights.items():
        setattr(cell, name, None if value is None else Parameter(Tensor(value), name=name))


class Expert(nn.Cell):
    """One feed-forward expert ``hidden_size -> intermediate_size -> hidden_size`` (no biases).

    Also serves as the dense FFN baseline: a dense layer is an "MoE" with one expert always chosen.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str = "swiglu", seed: int = 0):
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.intermediate_size = check_int("intermediate_size", intermediate_size, minimum=1)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        _parameters(self, ffn_weights(np.random.default_rng(seed), (), hidden_size, intermediate_size, activation))

    def construct(self, x: Tensor) -> Tensor:
        return ffn(x, self.w_gate, self.w_up, self.w_down)


class Experts(nn.Cell):
    """``num_experts`` experts whose weights are stacked: ``w_up[e]`` is expert ``e``'s up projection.

    Stacking (instead of a list of ``Expert`` cells) is what production MoE code does: one tensor per
    projection feeds batched and grouped matmuls (``ops.bmm``, Ascend's ``GroupedMatmul``) directly.
    Shapes: ``w_gate, w_up: [E, hidden_size, intermediate_size]``, ``w_down: [E, intermediate_size, hidden_size]``.
    """

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, activation: str = "swiglu",
                 seed: int = 0):
        super().__init__()
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.intermediate_size = check_int("intermediate_size", intermediate_size, minimum=1)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        _parameters(self, ffn_weights(np.random.default_rng(seed), (num_experts,), hidden_size, intermediate_size,
                                      activation))

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Run expert ``e`` alone on the rows ``x`` of shape ``[n, hidden_size]``."""
        w_gate = self.w_gate[e] if self.w_gate is not None else None
        return ffn(x, w_gate, self.w_up[e], self.w_down[e])

    def all_experts(self, x: Tensor) -> Tensor:
        """Every expert on every row: ``[n, hidden_size] -> [E, n, hidden_size]`` (the "dense" path's work)."""
        xb = ops.broadcast_to(x.expand_dims(0), (self.num_experts, x.shape[0], x.shape[1]))
        up = ops.bmm(xb, self.w_up)
        hidden = ops.silu(ops.bmm(xb, self.w_gate)) * up if self.w_gate is not None else ops.relu(up)
        return ops.bmm(hidden, self.w_down)

    def numpy_weights(self) -> dict[str, np.ndarray | None]:
        """The weights as NumPy arrays (for the independent NumPy reference and for plots)."""
        return {"w_gate": None if self.w_gate is None else self.w_gate.asnumpy(),
                "w_up": self.w_up.asnumpy(), "w_down": self.w_down.asnumpy()}


class SharedExperts(nn.Cell):
    """Always-on experts that every token passes through, beside the routed ones (notebook 02).

    DeepSeekMoE (arXiv 2401.06066) isolates ``n_shared_experts`` shared experts to hold common knowledge;
    DeepSeek-V3 and openPangu-Ultra-MoE-718B have one, DeepSeekMoE 16B and DeepSeek-V2 two. Since every
    token uses all of them, they are one FFN of width ``n_shared_experts * moe_intermediate_size``
    (this is how the checkpoints store them: ``mlp.shared_experts.gate_proj`` ...).

    ``gated=True`` is Qwen2-MoE's variant: the shared FFN's output is scaled per token by
    ``sigmoid(x @ w_shared_gate)``, a learned gate ``[hidden_size, 1]`` (checkpoint ``mlp.shared_expert_gate``).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, *, gated: bool = False, activation: str = "swiglu",
                 seed: int = 0):
        super().__init__()
        self.gated = check_bool("gated", gated)
        self.mlp = Expert(hidden_size, intermediate_size, activation, seed=seed)
        self.hidden_size, self.intermediate_size = self.mlp.hidden_size, self.mlp.intermediate_size
        # the gate's own stream, independent of the FFN's (which uses ``seed`` itself)
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        self.w_shared_gate = (Parameter(Tensor(init_weight(rng, (hidden_size, 1), hidden_size)), name="w_shared_gate")
                              if gated else None)

    def construct(self, x: Tensor) -> Tensor:
        out = self.mlp(x)
        if self.w_shared_gate is not None:
            out = out * ops.sigmoid(ops.matmul(x, self.w_shared_gate))
        return out

    def numpy_weights(self) -> dict[str, np.ndarray | None]:
        """``w_gate``, ``w_up``, ``w_down`` of the shared FFN and ``w_shared_gate`` (None when ungated)."""
        return {"w_gate": None if self.mlp.w_gate is None else self.mlp.w_gate.asnumpy(),
                "w_up": self.mlp.w_up.asnumpy(), "w_down": self.mlp.w_down.asnumpy(),
                "w_shared_gate": None if self.w_shared_gate is None else self.w_shared_gate.asnumpy()}
