"""``MoELayer``: a router and a bank of experts, run through a chosen dispatch path.

Introduced in notebook 01; capacity is added in notebook 02; the selection bias of the router is
trained in notebook 03.

    layer = MoELayer(hidden_size=16, ffn_size=32, num_experts=4, top_k=2)
    y = layer(x)                      # x: [tokens, hidden] or [batch, seq, hidden]
    y = layer(x, dispatch="loop")     # same weights, same answer, another way to compute it
    routing = layer.route(x)          # probabilities, chosen experts, weights (for plots)
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

from moe_lab._checks import check_choice, check_float, check_int
from moe_lab.backend import current_backend
from moe_lab.capacity import DROP_POLICIES, expert_capacity, keep_mask
from moe_lab.dispatch import DISPATCH, dense_moe
from moe_lab.expert import ACTIVATIONS, Experts
from moe_lab.router import Routing, TopKRouter

FLOAT_DTYPES = (ms.float16, ms.bfloat16, ms.float32, ms.float64)


class MoELayer(nn.Cell):
    """A sparse Mixture-of-Experts feed-forward layer (Shazeer et al. 2017, arXiv 1701.06538).

    Args:
        hidden_size: model width ``H`` (input and output size).
        ffn_size: hidden width ``F`` of each expert.
        num_experts: number of experts ``E``.
        top_k: experts per token ``K`` (1 <= K <= E).
        activation: ``"swiglu"`` (modern MoEs) or ``"relu"`` (the plain FFN of the article).
        normalize_top_k: rescale the K chosen probabilities to sum to 1.
        capacity_factor: ``None`` = dropless; otherwise each expert takes at most
            ``ceil(capacity_factor * tokens * top_k / num_experts)`` slots (see ``moe_lab.capacity``).
        drop_policy: which slots win when an expert is full: ``"position"`` or ``"score"``.
        seed: seed of the NumPy generator that draws the initial weights.
    """

    def __init__(self, hidden_size: int, ffn_size: int, num_experts: int, top_k: int = 2, *,
                 activation: str = "swiglu", normalize_top_k: bool = True,
                 capacity_factor: float | None = None, drop_policy: str = "position", seed: int = 0):
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.ffn_size = check_int("ffn_size", ffn_size, minimum=1)
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.top_k = check_int("top_k", top_k, minimum=1, maximum=self.num_experts)
        check_choice("activation", activation, ACTIVATIONS)
        self.capacity_factor = check_float("capacity_factor", capacity_factor, minimum=0.0, strict=True,
                                           allow_none=True)
        self.drop_policy = check_choice("drop_policy", drop_policy, DROP_POLICIES)
        # "fused" (compiled Ascend operators) on Atlas A2/A3, "sorted" elsewhere: notebook 07, moe_lab.backend
        self.default_dispatch = current_backend().default_dispatch
        # different seeds for router and experts, derived from one, so layers built with the same
        # seed are identical and the router is not correlated with the expert weights
        self.router = TopKRouter(hidden_size, num_experts, top_k, normalize=normalize_top_k, seed=seed * 2 + 1)
        self.experts = Experts(num_experts, hidden_size, ffn_size, activation, seed=seed * 2 + 2)

    @property
    def activation(self) -> str:
        return self.experts.activation

    def _flatten(self, x) -> Tensor:
        """Check ``x`` and return it as ``[tokens, hidden]``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a mindspore.Tensor, got {type(x).__name__}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"x must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")
        if x.dtype != self.router.weight.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer's weights are {self.router.weight.dtype}; "
                            f"cast x to {self.router.weight.dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(f"x must have shape (tokens, hidden) or (batch, seq, hidden), got shape {x.shape}")
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"x's last dimension must be hidden_size={self.hidden_size}, got shape {x.shape}")
        return x.reshape(-1, self.hidden_size)

    def route_tensors(self, rows: Tensor, indices: Tensor | None = None):
        """Routing of ``rows [N, hidden]`` with capacity applied, as plain tensors
        ``(logits, probs, indices, weights, keep)``: the one routing implementation, safe to compile."""
        logits, probs, indices, weights = self.router.route_tensors(rows, indices)
        capacity = expert_capacity(rows.shape[0], self.num_experts, self.top_k, self.capacity_factor)
        if capacity is None:
            keep = ops.ones(indices.shape, ms.bool_)
        else:
            keep = keep_mask(indices, weights, self.num_experts, capacity, self.drop_policy)
            weights = weights * keep.astype(weights.dtype)
        return logits, probs, indices, weights, keep

    def route(self, x: Tensor) -> Routing:
        """The routing decision for ``x`` (flattened to ``[tokens, hidden]``), capacity applied."""
        rows = self._flatten(x)
        capacity = expert_capacity(rows.shape[0], self.num_experts, self.top_k, self.capacity_factor)
        return Routing(*self.route_tensors(rows), capacity=capacity)

    def forward(self, x: Tensor, dispatch: str | None = None) -> tuple[Tensor, Routing]:
        """Output and the ``Routing`` report together, for eager code (plots, notebook 03's metrics)."""
        dispatch = self.default_dispatch if dispatch is None else dispatch
        check_choice("dispatch", dispatch, tuple(DISPATCH))
        routing = self.route(x)
        out = DISPATCH[dispatch](self._flatten(x), routing, self.experts)
        return out.reshape(x.shape), routing

    def forward_tensors(self, x: Tensor):
        """The ``"dense"`` path with its routing as plain tensors: ``(out, logits, probs, indices, weights,
        keep)``. Use it (or ``layer(x, dispatch="dense")``) in code compiled by ``mindspore.jit``: a
        ``Routing`` dataclass inside a compiled graph loses its gradients in MindSpore 2.10 (measured)."""
        rows = self._flatten(x)
        logits, probs, indices, weights, keep = self.route_tensors(rows)
        out = dense_moe(rows, indices, weights, self.experts)
        return out.reshape(x.shape), logits, probs, indices, weights, keep

    def construct(self, x: Tensor, dispatch: str | None = None) -> Tensor:
        dispatch = self.default_dispatch if dispatch is None else dispatch
        if dispatch == "dense":  # plain tensors all the way: compiles under mindspore.jit with gradients
            return self.forward_tensors(x)[0]
        return self.forward(x, dispatch)[0]
