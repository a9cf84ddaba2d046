"""``MoELayer``: a router, a bank of routed experts and optional shared experts, run through a dispatch path.

Introduced in notebook 01; notebook 02 builds the blocks of real models with it (``from_config``,
``load_checkpoint_weights``); capacity is added in notebook 03; the selection bias is trained in notebook 04.

    layer = MoELayer(hidden_size=16, intermediate_size=32, num_experts=4, top_k=2)
    y = layer(x)                      # x: [tokens, hidden_size] or [batch, seq, hidden_size]
    y = layer(x, dispatch="loop")     # same weights, same answer, another way to compute it
    routing = layer.route(x)          # probabilities, chosen experts, weights (for plots)
    layer = MoELayer.from_config(json.load(open("config.json")), hidden_size=64, moe_intermediate_size=32)

The block, as Hugging Face's ``DeepseekV3MoE.forward`` writes it: router -> routed experts -> plus the
shared experts. ``route_tensors`` and ``add_shared_experts`` are the only two places that assemble it;
every path (the dispatch functions, ``CompiledMoE``, the expert-parallel layer) goes through them.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from moe_lab.ascend.backend import current_backend, require_fused
from moe_lab.ascend.fused import GatingPlan, fused_route, gating_plan, kernels_for
from moe_lab.checks import check_choice, check_float, check_int
from moe_lab.core import config as moe_config
from moe_lab.core.capacity import DROP_POLICIES, expert_capacity, keep_mask
from moe_lab.core.dispatch import DISPATCH, dense_moe
from moe_lab.core.experts import ACTIVATIONS, Experts, SharedExperts
from moe_lab.core.routers import ROUTERS, Router, Routing

FLOAT_DTYPES = (ms.float16, ms.bfloat16, ms.float32, ms.float64)


class MoELayer(nn.Cell):
    """A sparse Mixture-of-Experts feed-forward layer (Shazeer et al. 2017, arXiv 1701.06538).

    Args:
        hidden_size: model width ``H`` (input and output size).
        intermediate_size: hidden width ``F`` of each routed expert (``moe_intermediate_size`` in configs).
        num_experts: number of routed experts ``E``.
        top_k: experts per token ``K`` (``num_experts_per_tok``).
        activation: ``"swiglu"`` (modern MoEs) or ``"relu"`` (the plain FFN of the article).
        scoring_func: ``"softmax"`` or ``"sigmoid"`` (the router class, ``moe_lab.core.routers.ROUTERS``).
        norm_topk_prob: rescale the K chosen scores to sum to 1.
        routed_scaling_factor: multiplies the routed experts' combine weights.
        topk_method, n_group, topk_group: group-limited selection (``moe_lab.core.routers``); by default
            ``"greedy"`` when ``n_group`` is 1, else DeepSeek-V3's ``"noaux_tc"`` for sigmoid scores and
            DeepSeek-V2's ``"group_limited_greedy"`` for softmax.
        n_shared_experts: always-on shared experts, one FFN of width ``n_shared_experts * intermediate_size``
            unless ``shared_expert_intermediate_size`` gives the width (Qwen2-MoE).
        shared_expert_gate: scale the shared output by ``sigmoid(x @ w_shared_gate)`` (Qwen2-MoE).
        router: a ``Router`` to use instead of building one from the arguments above.
        shared_experts: a ``SharedExperts`` cell to use instead of building one.
        capacity_factor: ``None`` = dropless; otherwise each expert takes at most
            ``ceil(capacity_factor * tokens * top_k / num_experts)`` slots (see ``moe_lab.core.capacity``).
        drop_policy: which slots win when an expert is full: ``"position"`` or ``"priority"``.
        seed: seed of the NumPy generators that draw the initial weights.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int = 2, *,
                 activation: str = "swiglu", scoring_func: str = "softmax", norm_topk_prob: bool = True,
                 routed_scaling_factor: float = 1.0, topk_method: str | None = None, n_group: int = 1,
                 topk_group: int = 1, n_shared_experts: int = 0, shared_expert_intermediate_size: int | None = None,
                 shared_expert_gate: bool = False, router: Router | None = None,
                 shared_experts: SharedExperts | None = None, capacity_factor: float | None = None,
                 drop_policy: str = "position", seed: int = 0):
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.intermediate_size = check_int("intermediate_size", intermediate_size, minimum=1)
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.top_k = check_int("top_k", top_k, minimum=1, maximum=self.num_experts)
        check_choice("activation", activation, ACTIVATIONS)
        self.capacity_factor = check_float("capacity_factor", capacity_factor, minimum=0.0, strict=True,
                                           allow_none=True)
        self.drop_policy = check_choice("drop_policy", drop_policy, DROP_POLICIES)
        # "fused" (compiled Ascend operators) on Atlas A2/A3, "sorted" elsewhere: notebook 08, moe_lab.ascend
        self.default_dispatch = current_backend().default_dispatch
        # the checkpoint naming of load_checkpoint_weights; from_config sets the config's family
        self.checkpoint_family: str | None = None
        # different seeds for router, experts and shared experts, derived from one, so layers built with
        # the same seed are identical and no part is correlated with another
        if router is None:
            check_choice("scoring_func", scoring_func, tuple(ROUTERS))
            if topk_method is None:
                topk_method = "greedy" if n_group == 1 else (
                    "noaux_tc" if scoring_func == "sigmoid" else "group_limited_greedy")
            router = ROUTERS[scoring_func](hidden_size, num_experts, top_k, norm_topk_prob=norm_topk_prob,
                                           routed_scaling_factor=routed_scaling_factor, topk_method=topk_method,
                                           n_group=n_group, topk_group=topk_group, seed=seed * 2 + 1)
        elif not isinstance(router, Router):
            raise TypeError(f"router must be a moe_lab Router (SoftmaxRouter, SigmoidRouter, ...), "
                            f"got {type(router).__name__}")
        elif (router.hidden_size, router.num_experts, router.top_k) != (hidden_size, num_experts, top_k):
            raise ValueError(f"router has hidden_size={router.hidden_size}, num_experts={router.num_experts}, "
                             f"top_k={router.top_k}; the layer has {hidden_size}, {num_experts}, {top_k}")
        self.router = router
        self.experts = Experts(num_experts, hidden_size, intermediate_size, activation, seed=seed * 2 + 2)
        if shared_experts is None:
            width = shared_width(intermediate_size, n_shared_experts, shared_expert_intermediate_size)
            shared_experts = (SharedExperts(hidden_size, width, gated=shared_expert_gate, activation=activation,
                                            seed=[seed, 3]) if width else None)
        elif not isinstance(shared_experts, SharedExperts):
            raise TypeError(f"shared_experts must be a moe_lab SharedExperts, got {type(shared_experts).__name__}")
        elif shared_experts.hidden_size != hidden_size:
            raise ValueError(f"shared_experts has hidden_size={shared_experts.hidden_size}, the layer {hidden_size}")
        self.shared_experts = shared_experts

    # ----------------------------------------------------------------------------- configs and checkpoints

    @classmethod
    def from_config(cls, config: dict, *, seed: int = 0, capacity_factor: float | None = None,
                    drop_policy: str = "position", **overrides) -> MoELayer:
        """The MoE block of a Hugging Face ``config.json`` (a dict), with the config's own field names.

        ``overrides`` replace config fields before reading, by their config names: e.g.
        ``MoELayer.from_config(cfg, hidden_size=64, moe_intermediate_size=32, n_routed_experts=16)``
        keeps the structure (scores, top-k, groups, scaling, shared experts) at a size a CPU runs.
        Families: DeepSeek (V2, V3, DeepSeekMoE), Kimi K2, openPangu-Ultra-MoE, Mixtral, Qwen2-MoE, Qwen3-MoE.
        """
        return cls.from_block_config(moe_config.moe_block_config(config, **overrides), seed=seed,
                                     capacity_factor=capacity_factor, drop_policy=drop_policy)

    @classmethod
    def from_block_config(cls, block: moe_config.MoEBlockConfig, *, seed: int = 0,
                          capacity_factor: float | None = None, drop_policy: str = "position") -> MoELayer:
        """The layer of a ``MoEBlockConfig`` (what ``from_config`` reads; ``moe_lab.budget`` makes them too)."""
        if not isinstance(block, moe_config.MoEBlockConfig):
            raise TypeError(f"block must be a MoEBlockConfig, got {type(block).__name__}")
        layer = cls(**block.layer_kwargs(), capacity_factor=capacity_factor, drop_policy=drop_policy, seed=seed)
        layer.checkpoint_family = block.family if block.family in moe_config.CHECKPOINT_FAMILIES else None
        return layer

    def load_checkpoint_weights(self, arrays, prefix: str = "", family: str | None = None) -> MoELayer:
        """Load this block's weights from NumPy arrays named as in the model's released checkpoint.

        ``arrays`` maps names to arrays (a dict, or an opened ``.npz``); ``prefix`` is what precedes
        ``mlp.`` / ``block_sparse_moe.`` (e.g. ``"model.layers.3."``). ``family`` defaults to the one
        ``from_config`` recorded. A missing key or a wrong shape is a ``ValueError`` naming the key and
        both shapes; nothing is changed unless every key loads.
        """
        family = family or self.checkpoint_family
        if family is None:
            raise ValueError(f"family must be one of {', '.join(map(repr, moe_config.CHECKPOINT_FAMILIES))} "
                             "(the checkpoint naming); layers built by from_config know theirs")
        values = moe_config.checkpoint_values(self, arrays, prefix, family)
        for param, value in values:
            param.set_data(Tensor(value.astype(np.float32)))
        return self

    # ----------------------------------------------------------------------------- the block

    @property
    def activation(self) -> str:
        return self.experts.activation

    def _flatten(self, x) -> Tensor:
        """Check ``x`` and return it as ``[tokens, hidden_size]``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a mindspore.Tensor, got {type(x).__name__}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"x must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")
        if x.dtype != self.experts.w_up.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer's weights are {self.experts.w_up.dtype}; "
                            f"cast x to {self.experts.w_up.dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(f"x must have shape (tokens, hidden_size) or (batch, seq, hidden_size), "
                             f"got shape {x.shape}")
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"x's last dimension must be hidden_size={self.hidden_size}, got shape {x.shape}")
        return x.reshape(-1, self.hidden_size)

    def route_tensors(self, rows: Tensor, indices: Tensor | None = None, router_out: tuple | None = None):
        """Routing of ``rows [N, hidden_size]`` with capacity applied, as plain tensors
        ``(logits, probs, indices, weights, keep)``: the one routing implementation, safe to compile.
        ``router_out`` is the router's result when it was computed elsewhere (the fused path's gating kernel)."""
        logits, probs, indices, weights = router_out if router_out is not None else self.router.route_tensors(
            rows, indices)
        capacity = expert_capacity(rows.shape[0], self.num_experts, self.top_k, self.capacity_factor)
        if capacity is None:
            keep = ops.ones(indices.shape, ms.bool_)
        else:
            # "priority" ranks tokens by their largest routing probability (V-MoE), not by the combine
            # weights: renormalised top-1 weights are all 1.0 and would rank nothing
            keep = keep_mask(indices, ops.gather_elements(probs, 1, indices), self.num_experts, capacity,
                             self.drop_policy)
            weights = weights * keep.astype(weights.dtype)
        return logits, probs, indices, weights, keep

    def add_shared_experts(self, rows: Tensor, routed: Tensor) -> Tensor:
        """The block's output: the routed experts' combined output plus the shared experts' (if any)."""
        if self.shared_experts is None:
            return routed
        return routed + self.shared_experts(rows)

    def _empty_routing(self, rows: Tensor) -> Routing:
        n, k, e = 0, self.top_k, self.num_experts
        return Routing(ops.zeros((n, e), ms.float32), ops.zeros((n, e), ms.float32), ops.zeros((n, k), ms.int32),
                       ops.zeros((n, k), ms.float32), ops.ones((n, k), ms.bool_),
                       expert_capacity(0, e, k, self.capacity_factor))

    def gating_plan(self) -> GatingPlan:
        """Which gating kernel the ``"fused"`` path routes with on this board, and why (notebook 08)."""
        backend = current_backend()
        return gating_plan(self.router, backend.soc if backend.can_run_fused else None)

    def route(self, x: Tensor, dispatch: str | None = None, trace: dict | None = None) -> Routing:
        """The routing decision for ``x`` (flattened to ``[tokens, hidden_size]``), capacity applied.

        With ``dispatch="fused"`` the router runs as the board's gating kernel where one fits (``gating_plan``).
        """
        rows = self._flatten(x)
        if rows.shape[0] == 0:
            return self._empty_routing(rows)
        capacity = expert_capacity(rows.shape[0], self.num_experts, self.top_k, self.capacity_factor)
        router_out = None
        if dispatch == "fused":
            backend = require_fused(current_backend())
            router_out = fused_route(rows, self.router, self.gating_plan(), kernels_for(backend), trace)
        return Routing(*self.route_tensors(rows, router_out=router_out), capacity=capacity)

    def forward(self, x: Tensor, dispatch: str | None = None) -> tuple[Tensor, Routing]:
        """Output and the ``Routing`` report together, for eager code (plots, notebook 04's metrics).

        An empty batch (0 tokens) gives an empty output on every path."""
        dispatch = self.default_dispatch if dispatch is None else dispatch
        check_choice("dispatch", dispatch, tuple(DISPATCH))
        rows = self._flatten(x)
        routing = self.route(x, dispatch)
        if rows.shape[0] == 0:
            return ops.zeros(x.shape, x.dtype), routing
        routed = DISPATCH[dispatch](rows, routing, self.experts)
        return self.add_shared_experts(rows, routed).reshape(x.shape), routing

    def forward_tensors(self, x: Tensor):
        """The ``"dense"`` path with its routing as plain tensors: ``(out, logits, probs, indices, weights,
        keep)``. Use it (or ``layer(x, dispatch="dense")``) in code compiled by ``mindspore.jit``: a
        ``Routing`` dataclass inside a compiled graph loses its gradients in MindSpore 2.10 (measured)."""
        rows = self._flatten(x)
        logits, probs, indices, weights, keep = self.route_tensors(rows)
        out = self.add_shared_experts(rows, dense_moe(rows, indices, weights, self.experts))
        return out.reshape(x.shape), logits, probs, indices, weights, keep

    def construct(self, x: Tensor, dispatch: str | None = None) -> Tensor:
        dispatch = self.default_dispatch if dispatch is None else dispatch
        if dispatch == "dense" and 0 not in x.shape[:-1]:  # plain tensors: compiles under mindspore.jit
            return self.forward_tensors(x)[0]
        return self.forward(x, dispatch)[0]


def shared_width(intermediate_size: int, n_shared_experts: int, shared_expert_intermediate_size: int | None) -> int:
    """Width of the shared FFN: ``shared_expert_intermediate_size`` if given (Qwen2-MoE), else
    ``n_shared_experts * intermediate_size`` (DeepSeek, openPangu); 0 = no shared experts."""
    n_shared_experts = check_int("n_shared_experts", n_shared_experts, minimum=0)
    if shared_expert_intermediate_size is not None:
        return check_int("shared_expert_intermediate_size", shared_expert_intermediate_size, minimum=1)
    return n_shared_experts * intermediate_size
