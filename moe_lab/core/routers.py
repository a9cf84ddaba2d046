"""Routers (gates): which experts each token goes to, and with what weight.

Introduced in notebook 01 (the softmax top-k router); notebook 02 adds sigmoid scores, group-limited
selection and the routed scaling factor of DeepSeek-V3 and openPangu; notebook 04 trains the
selection bias (auxiliary-loss-free balancing, DeepSeek-V3, arXiv 2412.19437 section 2.1.2).

Every router is a small cell with one graph-safe contract, four plain tensors:

    logits, probs, indices, weights = router.route_tensors(x)    # x: [N, hidden_size]

    logits  [N, E] float32  ``x @ W_router``, always computed in float32 (whatever the layer's dtype)
    probs   [N, E] float32  each token's distribution over experts, the one the balancing losses use:
                            the softmax, or for sigmoid scores the scores divided by their sum
    indices [N, K] int32    the chosen experts, best first
    weights [N, K] float32  their combine weights (gathered from the scores, renormalised over the K
                            if ``norm_topk_prob``, times ``routed_scaling_factor``)

The steps are methods, so a new router overrides only what differs: ``score`` (logits -> scores),
``balance_probs`` (scores -> probs) and, rarely, ``select``. Selection (``select``) adds the
``selection_bias`` (no gradient, moved by a rule; DeepSeek-V3's ``e_score_correction_bias``) to the
scores, keeps the best ``topk_group`` of ``n_group`` expert groups when ``topk_method`` asks for it,
and takes the top ``top_k``. The weights always come from the unbiased scores.

``topk_method`` (the config word of DeepSeek's configs):

* ``"greedy"``: plain top-k over all experts (Mixtral, Qwen, Switch, DeepSeek-V2-Lite, Kimi K2, openPangu).
* ``"group_limited_greedy"``: DeepSeek-V2: a group's score is its best expert's score; only the experts
  of the ``topk_group`` best groups may be chosen (experts of a group live on one device).
* ``"noaux_tc"``: DeepSeek-V3: a group's score is the sum of its two best (bias-corrected) scores.

Adding a router is one class here (registered in ``ROUTERS`` by its ``scoring_func``) plus its twin
in ``moe_lab.core.reference``; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from moe_lab.checks import check_bool, check_choice, check_float, check_int
from moe_lab.core.experts import init_weight

SCORING_FUNCS = ("softmax", "sigmoid")
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
NORM_EPS = 1e-20  # DeepSeek-V3's denominator guard: exactly 0 effect at float32 for any real sum


@dataclass
class Routing:
    """The routing decision for ``N`` tokens, as a report (all tensors are MindSpore tensors).

    Built by ``MoELayer.route`` in eager (PyNative) code; compiled code uses plain tuples instead.

    logits  [N, E]  router scores ``x @ W_router`` (float32)
    probs   [N, E]  each token's distribution over the experts (what the balancing losses use)
    indices [N, K]  chosen experts per token, best first (int32)
    weights [N, K]  combine weights of the chosen experts (0 where dropped)
    keep    [N, K]  False where a slot was dropped by expert capacity (all True when dropless)
    capacity        token slots per expert, or None when dropless
    """

    logits: Tensor
    probs: Tensor
    indices: Tensor
    weights: Tensor
    keep: Tensor
    capacity: int | None = None

    @property
    def num_experts(self) -> int:
        return int(self.probs.shape[-1])

    def load(self) -> np.ndarray:
        """Token slots routed to each expert, before capacity: shape [E], sums to N*K."""
        return np.bincount(self.indices.asnumpy().reshape(-1), minlength=self.num_experts)

    def kept(self) -> np.ndarray:
        """Token slots each expert actually processes, after capacity: shape [E]."""
        idx = self.indices.asnumpy().reshape(-1)
        return np.bincount(idx[self.keep.asnumpy().reshape(-1)], minlength=self.num_experts)

    def dropped(self) -> int:
        """Number of (token, expert) slots dropped by capacity."""
        return int((~self.keep.asnumpy()).sum())


def check_groups(num_experts: int, top_k: int, topk_method: str, n_group: int, topk_group: int) -> None:
    """Validate a group-limited setting; every error names the argument, its value and what is allowed."""
    check_choice("topk_method", topk_method, TOPK_METHODS)
    n_group = check_int("n_group", n_group, minimum=1)
    topk_group = check_int("topk_group", topk_group, minimum=1)
    if topk_group > n_group:
        raise ValueError(f"topk_group must be <= n_group={n_group}, got topk_group={topk_group}")
    if num_experts % n_group:
        raise ValueError(f"n_group must divide the number of experts {num_experts}, got n_group={n_group}")
    if topk_method == "greedy" and n_group > 1:
        raise ValueError(f"topk_method='greedy' chooses among all experts, so n_group must be 1, got {n_group}; "
                         "use 'group_limited_greedy' or 'noaux_tc' for group-limited routing")
    if topk_method == "noaux_tc" and n_group > 1 and num_experts // n_group < 2:
        raise ValueError(f"topk_method='noaux_tc' scores a group by its two best experts, so each of the "
                         f"n_group={n_group} groups needs >= 2 experts; got {num_experts // n_group}")
    reachable = topk_group * (num_experts // n_group)
    if top_k > reachable:
        raise ValueError(f"top_k must be <= the {reachable} experts that topk_group={topk_group} of "
                         f"n_group={n_group} groups hold; got top_k={top_k}")


class Router(nn.Cell):
    """The common part of every router: a linear gate ``W_router [hidden_size, E]``, the selection bias,
    group-limited top-k selection, and the combine weights. Subclasses define ``score``.

    Args:
        hidden_size: model width ``H``.  num_experts: ``E``.  top_k: experts per token ``K``.
        norm_topk_prob: rescale the K chosen scores to sum to 1.
        routed_scaling_factor: multiplies the combine weights (DeepSeek-V3 and openPangu: 2.5).
        topk_method, n_group, topk_group: group-limited selection (module docstring).
        seed: seed of the NumPy generator of the initial gate weights.
    """

    scoring_func: str = ""

    def __init__(self, hidden_size: int, num_experts: int, top_k: int = 2, *, norm_topk_prob: bool = True,
                 routed_scaling_factor: float = 1.0, topk_method: str = "greedy", n_group: int = 1,
                 topk_group: int = 1, seed: int = 0):
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.top_k = check_int("top_k", top_k, minimum=1, maximum=self.num_experts)
        self.norm_topk_prob = check_bool("norm_topk_prob", norm_topk_prob)
        self.routed_scaling_factor = check_float("routed_scaling_factor", routed_scaling_factor, minimum=0.0,
                                                 strict=True)
        check_groups(self.num_experts, self.top_k, topk_method, n_group, topk_group)
        self.topk_method, self.n_group, self.topk_group = topk_method, n_group, topk_group
        rng = np.random.default_rng(seed)
        self.weight = Parameter(Tensor(init_weight(rng, (hidden_size, num_experts), hidden_size)), name="weight")
        self.selection_bias = Parameter(Tensor(np.zeros(num_experts, np.float32)), name="selection_bias",
                                        requires_grad=False)

    @property
    def group_limited(self) -> bool:
        return self.topk_method != "greedy" and self.n_group > 1

    def score(self, logits: Tensor) -> Tensor:
        """Scores ``[N, E]`` from logits: what the combine weights are gathered from."""
        raise NotImplementedError(f"{type(self).__name__} must define score(logits)")

    def balance_probs(self, scores: Tensor) -> Tensor:
        """Each token's distribution over experts, for the balancing losses (scores that sum to 1 already)."""
        return scores

    def select(self, scores: Tensor) -> Tensor:
        """Chosen experts ``[N, K]`` int32, best first: top-k of ``scores + selection_bias`` within the
        allowed groups."""
        choice = scores + self.selection_bias
        if self.group_limited:
            n, per_group = choice.shape[0], self.num_experts // self.n_group
            grouped = choice.reshape(n, self.n_group, per_group)
            if self.topk_method == "noaux_tc":
                group_scores = ops.topk(grouped, 2)[0].sum(-1)
            else:
                group_scores = grouped.max(axis=-1)
            _, best = ops.topk(group_scores, self.topk_group)
            allowed = ops.one_hot(best, self.n_group, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32)).sum(1)
            allowed = ops.broadcast_to(allowed.expand_dims(-1), (n, self.n_group, per_group)).reshape(n, -1)
            choice = ops.where(allowed > 0, choice, ops.full_like(choice, float("-inf")))
        _, indices = ops.topk(choice, self.top_k)
        return indices.astype(ms.int32)

    def route_tensors(self, x: Tensor, indices: Tensor | None = None):
        """Route rows ``x [N, hidden_size]``: the plain tuple ``(logits, probs, indices, weights)``.

        Plain tensors, not a ``Routing``: inside a graph compiled by ``mindspore.jit``, MindSpore 2.10
        silently cuts the gradients of tensors carried by a dataclass or NamedTuple (measured), so code
        that may be compiled uses this. Given ``indices``, the top-k choice is taken from them (the
        weights are still computed, with their gradient).
        """
        # float32 whatever x's dtype: in bfloat16 close scores tie or swap (notebook 02 counts the flips)
        logits = ops.matmul(x.astype(ms.float32), self.weight.astype(ms.float32))
        scores = self.score(logits)
        if indices is None:
            indices = self.select(ops.stop_gradient(scores))
        indices = indices.astype(ms.int32)
        weights = ops.gather_elements(scores, 1, indices)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdims=True) + NORM_EPS)
        if self.routed_scaling_factor != 1.0:
            weights = weights * self.routed_scaling_factor
        return logits, self.balance_probs(scores), indices, weights

    def construct(self, x: Tensor) -> Routing:
        """Route rows ``x [N, hidden_size]``; returns a dropless ``Routing`` report (eager code, plots)."""
        logits, probs, indices, weights = self.route_tensors(x)
        return Routing(logits, probs, indices, weights, ops.ones(indices.shape, ms.bool_))

    def extend_repr(self) -> str:
        groups = f", {self.topk_method}, n_group={self.n_group}, topk_group={self.topk_group}" \
            if self.topk_method != "greedy" else ""
        return (f"{self.scoring_func}, hidden_size={self.hidden_size}, num_experts={self.num_experts}, "
                f"top_k={self.top_k}, norm_topk_prob={self.norm_topk_prob}, "
                f"routed_scaling_factor={self.routed_scaling_factor:g}{groups}")


class SoftmaxRouter(Router):
    """Softmax over the experts, then top-k (Mixtral, Qwen, Switch, DeepSeek-V2, DeepSeekMoE).

    ``norm_topk_prob=True`` renormalises the K chosen probabilities (Mixtral, Qwen3); ``False`` keeps
    the raw softmax probabilities (Switch, DeepSeek-V2, Qwen1.5/2-MoE). Notebook 01.
    """

    scoring_func = "softmax"

    def score(self, logits: Tensor) -> Tensor:
        return ops.softmax(logits, -1)


class SigmoidRouter(Router):
    """Independent sigmoid score per expert, then top-k (DeepSeek-V3, Kimi K2, openPangu-Ultra-MoE-718B).

    The scores do not compete and do not sum to 1, so the K chosen ones are renormalised
    (``norm_topk_prob``) and scaled by ``routed_scaling_factor``. For the balancing losses a token's
    distribution is its scores divided by their sum (DeepSeek-V3's sequence-wise loss does the same).
    Notebook 02.
    """

    scoring_func = "sigmoid"

    def score(self, logits: Tensor) -> Tensor:
        return ops.sigmoid(logits)

    def balance_probs(self, scores: Tensor) -> Tensor:
        return scores / scores.sum(-1, keepdims=True)


ROUTERS = {cls.scoring_func: cls for cls in (SoftmaxRouter, SigmoidRouter)}


def make_router(scoring_func: str, hidden_size: int, num_experts: int, top_k: int = 2, **kwargs) -> Router:
    """The router class registered for ``scoring_func`` (``ROUTERS``), built with ``kwargs``."""
    check_choice("scoring_func", scoring_func, tuple(ROUTERS))
    return ROUTERS[scoring_func](hidden_size, num_experts, top_k, **kwargs)
