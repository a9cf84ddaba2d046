"""Checkers for the exercises of notebook 01 (the top-2 MoE layer)."""

from __future__ import annotations

import numpy as np

from moe_lab.core.params import expert_params, moe_layer_params
from moe_lab.exercises import Feedback, check_number, known_slip, right, unanswered, wrong
from moe_lab.i18n import _

# Exercise 1: one Mixtral-8x7B MoE feed-forward layer (hidden 4096, expert FFN 14336, SwiGLU, 8 experts, top-2)
MIXTRAL_LAYER = dict(hidden_size=4096, intermediate_size=14336, num_experts=8, top_k=2)


def check_active_params(answer) -> Feedback:
    """Exercise 1: parameters one token uses in one Mixtral-8x7B MoE FFN layer, router included."""
    name = _("active parameters")
    expected = moe_layer_params(**MIXTRAL_LAYER).active
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    h, f, e, k = MIXTRAL_LAYER.values()
    near = {
        moe_layer_params(**MIXTRAL_LAYER).total: _("that is the total: a token only runs its top_k experts."),
        k * expert_params(h, f): _("add the router: every token multiplies by the [hidden, num_experts] gate."),
        h * e + k * 2 * h * f: _("a SwiGLU expert has three matrices (gate, up, down), not two."),
        h * e + expert_params(h, f): _("top-2: the token runs two experts."),
    }
    slip = known_slip(name, answer, near)
    if slip is not None:
        return slip
    return check_number(name, answer, expected, rel=0,
                        hint=_("count router + top_k x (3 x hidden_size x intermediate_size)."))


def _reference_top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    indices = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    weights = np.take_along_axis(probs, indices, -1)
    return indices, weights / weights.sum(-1, keepdims=True)


def check_top_k_weights(fn) -> Feedback:
    """Exercise 2: ``fn(probs, k) -> (indices, weights)``, best expert first, weights renormalised."""
    name = _("top-k weights")
    missing = unanswered(name, fn)
    if missing is not None:
        return missing
    if not callable(fn):
        return wrong(name, _("expected a function fn(probs, k), got {type}.").format(type=type(fn).__name__))
    rng = np.random.default_rng(7)
    for n, e, k in ((5, 4, 2), (3, 8, 3), (6, 6, 1)):
        logits = rng.normal(size=(n, e))
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        try:
            got = fn(probs.copy(), k)
            if got is None:
                return wrong(name, _("your function returns None: return (indices, weights)."))
            indices, weights = (np.asarray(a.asnumpy() if hasattr(a, "asnumpy") else a) for a in got)
        except Exception as exc:  # the learner's code may fail in any way: report it, do not crash
            return wrong(name, _("your function raised {error}: {detail}").format(error=type(exc).__name__,
                                                                                  detail=exc))
        want_i, want_w = _reference_top_k(probs, k)
        if indices.shape != (n, k) or weights.shape != (n, k):
            return wrong(name, _("for {n} tokens and k={k} expected shapes ({n}, {k}), got {indices} and "
                                 "{weights}.").format(n=n, k=k, indices=indices.shape, weights=weights.shape))
        if not np.array_equal(np.sort(indices, -1), np.sort(want_i, -1)):
            return wrong(name, _("some chosen experts are wrong: pick the k largest probabilities per row."))
        if not np.array_equal(indices, want_i):
            return wrong(name, _("right experts, wrong order: put the most probable expert first."))
        if np.allclose(weights, np.take_along_axis(probs, want_i, -1)) and k > 1:
            return wrong(name, _("the weights are the raw probabilities: divide by their sum over the k chosen."))
        if not np.allclose(weights, want_w, atol=1e-6):
            return wrong(name, _("the weights should be the chosen probabilities divided by their sum."))
    return right(name, _("indices best first and renormalised weights, for every k."))


# Exercise 3: DeepSeekMoE 16B's routed experts (data/models/deepseek-moe-16b/config.json)
EX3 = {"num_experts": 64, "top_k": 6}


def check_dense_work_ratio(answer) -> Feedback:
    """Exercise 3: how many times more routed-expert FLOPs the "dense" path does than "sorted" (E=64, K=6)."""
    e, k = EX3["num_experts"], EX3["top_k"]
    name = _("dense work ratio")
    slip = known_slip(name, answer, {k / e: _("that is the fraction the sorted path computes of dense's work; the "
                                              "question asks the other way round."),
                                     e: _("dense runs every expert on a token, but sorted runs more than one expert "
                                          "per token too.")})
    if slip is not None:
        return slip
    return check_number(name, answer, e / k, rel=1e-3,
                        hint=_("dense runs all num_experts experts per token; sorted runs top_k of them."))
