"""An independent NumPy implementation of the MoE block, in float64 (notebook 01, "three ways").

It shares no code with the MindSpore layer: only the weights are copied. Tests and notebooks compare
every MindSpore path against it, and it is the one NumPy router of the package (the routing
simulator of notebook 05's dashboard and the exercise checkers use ``route_logits_numpy``).

Each router of ``moe_lab.core.routers`` has its twin here, a score function in ``SCORE_FUNCTIONS``
plus the distribution the balancing losses use in ``BALANCE_PROBS``; selection (bias, groups,
top-k) and the weights (gather, renormalise, scale) are written once, as plain loops and sorts.
"""

from __future__ import annotations

import math

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def silu(z: np.ndarray) -> np.ndarray:
    return z / (1.0 + np.exp(-z))


SCORE_FUNCTIONS = {"softmax": softmax, "sigmoid": sigmoid}
BALANCE_PROBS = {"softmax": lambda s: s, "sigmoid": lambda s: s / s.sum(-1, keepdims=True)}


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` ("float64", "float32", "float16" or "bfloat16", round to nearest even),
    returned as float64: what a router computing in that dtype sees (notebook 02's precision lesson)."""
    x = np.asarray(x, np.float64)
    if dtype == "float64":
        return x
    if dtype in ("float32", "float16"):
        return x.astype(dtype).astype(np.float64)
    if dtype == "bfloat16":  # the top 16 bits of a float32, rounded to nearest even
        bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.astype(np.uint32).view(np.float32).astype(np.float64)
    raise ValueError(f"dtype must be one of 'float64', 'float32', 'float16', 'bfloat16'; got {dtype!r}")


def select_numpy(choice: np.ndarray, top_k: int, topk_method: str = "greedy", n_group: int = 1,
                 topk_group: int = 1) -> np.ndarray:
    """Top-k of ``choice [N, E]`` (already bias-corrected) within the allowed groups, best first.

    Group score: the best expert (``group_limited_greedy``) or the sum of the two best (``noaux_tc``);
    a token may only use the experts of its ``topk_group`` best groups.
    """
    n, e = choice.shape
    choice = np.array(choice, np.float64)
    if topk_method != "greedy" and n_group > 1:
        per_group = e // n_group
        for t in range(n):
            groups = choice[t].reshape(n_group, per_group)
            best_two = -np.sort(-groups, axis=1)[:, :2]
            score = best_two[:, 0] if topk_method == "group_limited_greedy" else best_two.sum(1)
            keep = np.argsort(-score, kind="stable")[:topk_group]
            for g in range(n_group):
                if g not in keep:
                    choice[t, g * per_group:(g + 1) * per_group] = -np.inf
    return np.argsort(-choice, axis=-1, kind="stable")[:, :top_k]


def route_logits_numpy(logits, top_k: int, *, scoring_func: str = "softmax", norm_topk_prob: bool = True,
                       routed_scaling_factor: float = 1.0, topk_method: str = "greedy", n_group: int = 1,
                       topk_group: int = 1, selection_bias=None, dtype: str = "float64"):
    """Route from router logits ``[N, E]``: ``(probs [N,E], indices [N,K], weights [N,K])``, best first.

    ``dtype`` rounds the logits and the scores to that precision first (notebook 02: bf16 vs fp32).
    """
    logits = round_to(logits, dtype)
    scores = round_to(SCORE_FUNCTIONS[scoring_func](logits), dtype)
    choice = scores if selection_bias is None else scores + np.asarray(selection_bias, np.float64)
    indices = select_numpy(choice, top_k, topk_method, n_group, topk_group)
    weights = np.take_along_axis(scores, indices, -1)
    if norm_topk_prob:
        weights = weights / weights.sum(-1, keepdims=True)
    return BALANCE_PROBS[scoring_func](scores), indices, weights * routed_scaling_factor


def route_numpy(x, router_weight, top_k, normalize=True, selection_bias=None, **router):
    """Route rows ``x [N, H]`` through the gate ``router_weight [H, E]`` (see ``route_logits_numpy``)."""
    logits = np.asarray(x, np.float64) @ np.asarray(router_weight, np.float64)
    return route_logits_numpy(logits, top_k, norm_topk_prob=normalize, selection_bias=selection_bias, **router)


def keep_numpy(indices, scores, num_experts, capacity_factor, drop_policy="position"):
    """Capacity as a plain queue per expert, written as a loop over slots in priority order.

    ``"position"``: first choices of tokens 0..N-1, then their second choices, ... ``"priority"`` (V-MoE):
    the same, with the tokens sorted by their largest score ``max_j scores[t, j]`` (a stable sort)."""
    n, k = indices.shape
    keep = np.ones((n, k), bool)
    if capacity_factor is None:
        return keep
    capacity = math.ceil(round(capacity_factor * n * k / num_experts, 9))
    tokens = list(range(n))
    if drop_policy == "priority":
        tokens = sorted(tokens, key=lambda t: -max(scores[t]))  # Python's sort is stable
    order = [(t, j) for j in range(k) for t in tokens]
    used = np.zeros(num_experts, int)
    for t, j in order:
        e = indices[t, j]
        keep[t, j] = used[e] < capacity
        used[e] += 1
    return keep


def expert_numpy(x, w_gate, w_up, w_down):
    up = x @ w_up
    hidden = silu(x @ w_gate) * up if w_gate is not None else np.maximum(up, 0.0)
    return hidden @ w_down


def shared_numpy(x, w_gate, w_up, w_down, w_shared_gate=None):
    """The always-on shared FFN; Qwen2-MoE scales it by ``sigmoid(x @ w_shared_gate)`` per token."""
    out = expert_numpy(x, w_gate, w_up, w_down)
    if w_shared_gate is not None:
        out = out * sigmoid(x @ np.asarray(w_shared_gate, np.float64))
    return out


def moe_forward_numpy(x, router_weight, w_gate, w_up, w_down, top_k, normalize=True,
                      capacity_factor=None, drop_policy="position", selection_bias=None, shared=None, **router):
    """MoE forward for ``x [N, H]`` with stacked expert weights ``w_* [E, ...]`` (``w_gate`` may be None).

    ``router`` takes the keywords of ``route_logits_numpy``; ``shared`` is a dict of the shared FFN's
    weights (``w_gate``, ``w_up``, ``w_down``, ``w_shared_gate``) or None.
    """
    x = np.asarray(x, np.float64)
    probs, indices, weights = route_numpy(x, router_weight, top_k, normalize, selection_bias, **router)
    keep = keep_numpy(indices, np.take_along_axis(probs, indices, -1), w_up.shape[0], capacity_factor, drop_policy)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(top_k):
            if keep[t, j]:
                e = indices[t, j]
                gate = None if w_gate is None else np.asarray(w_gate[e], np.float64)
                out[t] += weights[t, j] * expert_numpy(x[t:t + 1], gate, np.asarray(w_up[e], np.float64),
                                                       np.asarray(w_down[e], np.float64))[0]
    if shared is not None:
        out += shared_numpy(x, *(None if shared.get(k) is None else np.asarray(shared[k], np.float64)
                                 for k in ("w_gate", "w_up", "w_down", "w_shared_gate")))
    return out


def layer_forward_numpy(layer, x) -> np.ndarray:
    """Run the NumPy reference with the weights and settings of a ``MoELayer`` on ``x`` (array or Tensor)."""
    x = x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)
    shape = x.shape
    w = layer.experts.numpy_weights()
    r = layer.router
    shared = None if layer.shared_experts is None else layer.shared_experts.numpy_weights()
    out = moe_forward_numpy(x.reshape(-1, layer.hidden_size), r.weight.asnumpy(), w["w_gate"], w["w_up"],
                            w["w_down"], layer.top_k, r.norm_topk_prob, layer.capacity_factor, layer.drop_policy,
                            r.selection_bias.asnumpy(), shared, scoring_func=r.scoring_func,
                            routed_scaling_factor=r.routed_scaling_factor, topk_method=r.topk_method,
                            n_group=r.n_group, topk_group=r.topk_group)
    return out.reshape(shape)
