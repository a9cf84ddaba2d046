"""Feed-forward experts: one ``Expert`` for reading, ``Experts`` (stacked weights) for fast dispatch.

Introduced in notebook 01 (section "The experts"). Weights are drawn from a NumPy generator so that
the same seed gives the same weights on every machine and the NumPy reference can reuse them.
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from moe_lab._checks import check_choice, check_int

ACTIVATIONS = ("swiglu", "relu")


def init_weight(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights, like ``nn.Dense``'s default scale."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def ffn(x: Tensor, w_gate: Tensor | None, w_up: Tensor, w_down: Tensor) -> Tensor:
    """The expert computation on a block of rows ``x``: SwiGLU when ``w_gate`` is given, else ReLU.

    SwiGLU (Shazeer 2020, used by Mixtral, DeepSeek, Qwen, Pangu): ``(silu(x W_gate) * x W_up) W_down``.
    ReLU (the article's plain FFN): ``relu(x W_up) W_down``.
    """
    up = ops.matmul(x, w_up)
    hidden = ops.silu(ops.matmul(x, w_gate)) * up if w_gate is not None else ops.relu(up)
    return ops.matmul(hidden, w_down)


class Expert(nn.Cell):
    """One feed-forward expert ``hidden_size -> ffn_size -> hidden_size`` (no biases).

    Also serves as the dense FFN baseline: a dense layer is an "MoE" with one expert always chosen.
    """

    def __init__(self, hidden_size: int, ffn_size: int, activation: str = "swiglu", seed: int = 0):
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.ffn_size = check_int("ffn_size", ffn_size, minimum=1)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        rng = np.random.default_rng(seed)
        h, f = self.hidden_size, self.ffn_size
        self.w_gate = (Parameter(Tensor(init_weight(rng, (h, f), h)), name="w_gate")
                       if activation == "swiglu" else None)
        self.w_up = Parameter(Tensor(init_weight(rng, (h, f), h)), name="w_up")
        self.w_down = Parameter(Tensor(init_weight(rng, (f, h), f)), name="w_down")

    def construct(self, x: Tensor) -> Tensor:
        return ffn(x, self.w_gate, self.w_up, self.w_down)


class Experts(nn.Cell):
    """``num_experts`` experts whose weights are stacked: ``w_up[e]`` is expert ``e``'s up projection.

    Stacking (instead of a list of ``Expert`` cells) is what production MoE code does: one tensor per
    projection feeds batched and grouped matmuls (``ops.bmm``, Ascend's ``GroupedMatmul``) directly.
    Shapes: ``w_gate, w_up: [E, hidden, ffn]``, ``w_down: [E, ffn, hidden]``.
    """

    def __init__(self, num_experts: int, hidden_size: int, ffn_size: int, activation: str = "swiglu",
                 seed: int = 0):
        super().__init__()
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.ffn_size = check_int("ffn_size", ffn_size, minimum=1)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        rng = np.random.default_rng(seed)
        e, h, f = self.num_experts, self.hidden_size, self.ffn_size
        self.w_gate = (Parameter(Tensor(init_weight(rng, (e, h, f), h)), name="w_gate")
                       if activation == "swiglu" else None)
        self.w_up = Parameter(Tensor(init_weight(rng, (e, h, f), h)), name="w_up")
        self.w_down = Parameter(Tensor(init_weight(rng, (e, f, h), f)), name="w_down")

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Run expert ``e`` alone on the rows ``x`` of shape ``[n, hidden]``."""
        w_gate = self.w_gate[e] if self.w_gate is not None else None
        return ffn(x, w_gate, self.w_up[e], self.w_down[e])

    def all_experts(self, x: Tensor) -> Tensor:
        """Every expert on every row: ``[n, hidden] -> [E, n, hidden]`` (the "dense" path's work)."""
        xb = ops.broadcast_to(x.expand_dims(0), (self.num_experts, x.shape[0], x.shape[1]))
        up = ops.bmm(xb, self.w_up)
        hidden = ops.silu(ops.bmm(xb, self.w_gate)) * up if self.w_gate is not None else ops.relu(up)
        return ops.bmm(hidden, self.w_down)

    def numpy_weights(self) -> dict[str, np.ndarray | None]:
        """The weights as NumPy arrays (for the independent NumPy reference and for plots)."""
        return {
            "w_gate": None if self.w_gate is None else self.w_gate.asnumpy(),
            "w_up": self.w_up.asnumpy(),
            "w_down": self.w_down.asnumpy(),
        }
