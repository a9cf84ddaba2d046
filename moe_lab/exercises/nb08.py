"""Checkers for the exercises of notebook 08 (Atlas boards, detection, the compiled MoE operators)."""

from __future__ import annotations

import numpy as np

from moe_lab.ascend import ops_ref as ascend_ref
from moe_lab.ascend.fused import gating_plan
from moe_lab.core.routers import SigmoidRouter
from moe_lab.exercises import Feedback, as_array, check_number, right, unanswered, wrong
from moe_lab.i18n import _

# Exercise 1: a DeepSeek-V3-style router (sigmoid, group score = sum of the two best) of this size
EX1 = dict(num_experts=64, top_k=8, n_group=4, topk_group=2)

# Exercise 2: three tokens, top-2
EX2_EXPERT_IDX = np.array([[2, 0], [0, 1], [2, 1]], np.int32)

# Exercise 3: N tokens, K slots; the pair (token n, slot k)
EX3 = dict(num_tokens=4, top_k=2, token=1, slot=1)


def gating_fits() -> bool:
    """Whether FusedAddTopKDiv can route ``EX1``'s router on an Atlas A2 (``moe_lab.ascend.fused.gating_plan``)."""
    router = SigmoidRouter(8, EX1["num_experts"], EX1["top_k"], topk_method="noaux_tc", n_group=EX1["n_group"],
                           topk_group=EX1["topk_group"], routed_scaling_factor=2.5)
    return gating_plan(router, "ascend910b").kernel == "FusedAddTopKDiv"


def check_gating_fits(answer) -> Feedback:
    """Exercise 1: can FusedAddTopKDiv route a DeepSeek-V3-style router with 64 experts in 4 groups on an A2?"""
    name = _("FusedAddTopKDiv limits")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if not isinstance(answer, bool):
        return wrong(name, _("answer True or False, got {answer}.").format(answer=repr(answer)))
    expected = gating_fits()
    if answer == expected:
        return right(name, _("no: from 32 experts on, the kernel works with exactly 8 groups, and this router has 4 "
                             "(64 experts would fit 8 groups of 8). The fused path routes it with ordinary "
                             "operators.") if not expected else _("yes: it is within every limit of the kernel."))
    return wrong(name, _("check the kernel's limits one by one: experts divisible by the groups, at most 32 per "
                         "group, and how many groups it needs from 32 experts on."))


def check_expanded_row_idx(answer) -> Feedback:
    """Exercise 2: ``expanded_row_idx`` of ``moe_init_routing_v2`` (dropless) for ``EX2_EXPERT_IDX``."""
    name = "expanded_row_idx"  # an output's name in the operator's API: the same in every language
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    n, k = EX2_EXPERT_IDX.shape
    arr, problem = as_array(name, answer, shape=(n * k,))
    if problem is not None:
        return problem
    x = np.zeros((n, 1), np.float32)
    expected = ascend_ref.moe_init_routing_v2(x, EX2_EXPERT_IDX, 0, 0, 3, 0, 0, False)[1]
    if np.array_equal(arr, expected):
        return right(name, _("{value}: pair j = n*K + k went to row expanded_row_idx[j].").format(
            value=expected.tolist()))
    order = np.argsort(EX2_EXPERT_IDX.reshape(-1), kind="stable")
    k_major = expected.reshape(n, k).T.reshape(-1)
    if np.array_equal(arr, order):
        return wrong(name, _("that is the sort order (which pair lands on each row); expanded_row_idx is its "
                             "inverse: for each pair, the row where it went."))
    if np.array_equal(arr, k_major):
        return wrong(name, _("that is the k-major order of MoeInitRouting V1 (j = k*N + n); V2 numbers the pairs "
                             "token by token (j = n*K + k)."))
    if np.array_equal(np.sort(arr), np.arange(n * k)):
        return wrong(name, _("a permutation, but not this one: sort the pairs by expert, keeping pair order among "
                             "equals (stable), then write each pair's new row at its position j."))
    return wrong(name, _("expanded_row_idx is a permutation of 0..{last} (each pair gets one row).").format(
        last=n * k - 1))


def check_k_major_index(answer) -> Feedback:
    """Exercise 3: the k-major index (what moe_finalize_routing reads) of one (token, slot) pair."""
    name = _("k-major index")
    n_tok, k, n, j = EX3["num_tokens"], EX3["top_k"], EX3["token"], EX3["slot"]
    expected = j * n_tok + n
    if not isinstance(answer, bool) and isinstance(answer, (int, np.integer)) and int(answer) == n * k + j:
        return wrong(name, _("{value} is the row-major index n*K + k (V2); k-major puts all first slots "
                             "first.").format(value=answer))
    return check_number(name, answer, expected, rel=0, hint=_("k-major: index = k * N + n."))
