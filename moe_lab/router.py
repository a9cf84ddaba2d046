"""The router (gate): linear scores -> softmax over experts -> top-k -> combine weights.

Introduced in notebook 01 (section "The router"); the selection bias is used in notebook 03
(auxiliary-loss-free balancing, DeepSeek-V3, arXiv 2412.19437 section 2.1.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from moe_lab._checks import check_int
from moe_lab.expert import init_weight


@dataclass
class Routing:
    """The routing decision for ``N`` tokens, as a report (all tensors are MindSpore tensors).

    Built by ``MoELayer.route`` in eager (PyNative) code; compiled code uses plain tuples instead.

    logits  [N, E]  router scores ``x @ W_router``
    probs   [N, E]  softmax of the logits (what the auxiliary losses use)
    indices [N, K]  chosen experts per token, best first (int32)
    weights [N, K]  combine weights of the chosen experts (renormalised if asked; 0 where dropped)
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


class TopKRouter(nn.Cell):
    """Linear gate ``W_router [hidden, E]``; softmax over experts; keep the ``top_k`` best.

    ``normalize=True`` rescales the k chosen probabilities to sum to 1 (Mixtral, Qwen3, Pangu);
    ``False`` keeps the raw softmax probabilities (Switch, DeepSeek-V2).
    ``selection_bias`` [E] is added to the scores used to *choose* experts but not to the combine
    weights; it has no gradient (it is updated by a rule, see ``moe_lab.balance``).
    """

    def __init__(self, hidden_size: int, num_experts: int, top_k: int = 2, normalize: bool = True,
                 seed: int = 0):
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.num_experts = check_int("num_experts", num_experts, minimum=1)
        self.top_k = check_int("top_k", top_k, minimum=1, maximum=self.num_experts)
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = normalize
        rng = np.random.default_rng(seed)
        self.weight = Parameter(Tensor(init_weight(rng, (hidden_size, num_experts), hidden_size)),
                                name="weight")
        self.selection_bias = Parameter(Tensor(np.zeros(num_experts, np.float32)), name="selection_bias",
                                        requires_grad=False)

    def route_tensors(self, x: Tensor, indices: Tensor | None = None):
        """Route rows ``x [N, hidden]``: the plain tuple ``(logits, probs, indices, weights)``.

        Plain tensors, not a ``Routing``: inside a graph compiled by ``mindspore.jit``, MindSpore 2.10
        silently cuts the gradients of tensors carried by a dataclass or NamedTuple (measured), so code
        that may be compiled uses this. Given ``indices``, the top-k choice is taken from them (the
        weights are still computed, with their gradient).
        """
        logits = ops.matmul(x, self.weight)
        probs = ops.softmax(logits, -1)
        if indices is None:
            _, indices = ops.topk(probs + self.selection_bias, self.top_k)
        indices = indices.astype(ms.int32)
        weights = ops.gather_elements(probs, 1, indices)
        if self.normalize:
            weights = weights / weights.sum(-1, keepdims=True)
        return logits, probs, indices, weights

    def construct(self, x: Tensor) -> Routing:
        """Route rows ``x [N, hidden]``; returns a dropless ``Routing`` report (eager code, plots)."""
        logits, probs, indices, weights = self.route_tensors(x)
        return Routing(logits, probs, indices, weights, ops.ones(indices.shape, ms.bool_))
