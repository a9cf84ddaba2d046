"""Checkers for the exercises of notebook 08 (Atlas boards, detection, the compiled MoE operators)."""

from __future__ import annotations

import numpy as np

from moe_lab.ascend import ops_ref as ascend_ref
from moe_lab.ascend.backend import Backend, tier_of_soc
from moe_lab.exercises import Feedback, as_array, check_number, right, unanswered, wrong

DISPATCH_PATHS = ("loop", "dense", "sorted", "fused", "capacity")

# Exercise 2: three tokens, top-2
EX2_EXPERT_IDX = np.array([[2, 0], [0, 1], [2, 1]], np.int32)

# Exercise 3: N tokens, K slots; the pair (token n, slot k)
EX3 = dict(num_tokens=4, top_k=2, token=1, slot=1)


def check_orange_pi_dispatch(answer) -> Feedback:
    """Exercise 1: the default dispatch path of MoELayer on an Orange Pi AIpro (SoC ascend310b)."""
    name = "Orange Pi dispatch"
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if not isinstance(answer, str):
        return wrong(name, f"expected a dispatch path name (a string such as 'dense'), got {type(answer).__name__}.")
    tier = tier_of_soc("ascend310b")
    expected = Backend(name=f"ascend-{tier}", device="Ascend", soc="ascend310b", tier=tier).default_dispatch
    answer = answer.strip().lower()
    if answer == expected:
        return right(name, f"'{expected}': the 310B registers no fused MoE operator, so the layer sorts by expert "
                           "with ordinary operators (which do run on the NPU).")
    if answer == "fused":
        return wrong(name, "'fused' needs MoeInitRoutingV2, GroupedMatmulV4 and MoeTokenUnpermute: look at the "
                           "ascend310b column of the table.")
    if answer in ("cpu", "ascend", "auto", "npu-basic"):
        return wrong(name, f"'{answer}' is a backend or tier, not a dispatch path; the paths are "
                           f"{', '.join(DISPATCH_PATHS[:4])}.")
    if answer in ("loop", "dense"):
        return wrong(name, f"'{answer}' works everywhere, but it is not the default: which path does only the "
                           "work an MoE needs, with ordinary operators?")
    return wrong(name, f"{answer!r} is not a dispatch path; the paths are {', '.join(DISPATCH_PATHS[:4])}.")


def check_expanded_row_idx(answer) -> Feedback:
    """Exercise 2: ``expanded_row_idx`` of ``moe_init_routing_v2`` (dropless) for ``EX2_EXPERT_IDX``."""
    name = "expanded_row_idx"
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
        return right(name, f"{expected.tolist()}: pair j = n*K + k went to row expanded_row_idx[j].")
    order = np.argsort(EX2_EXPERT_IDX.reshape(-1), kind="stable")
    k_major = expected.reshape(n, k).T.reshape(-1)
    if np.array_equal(arr, order):
        return wrong(name, "that is the sort order (which pair lands on each row); expanded_row_idx is its "
                           "inverse: for each pair, the row where it went.")
    if np.array_equal(arr, k_major):
        return wrong(name, "that is the k-major order of MoeInitRouting V1 (j = k*N + n); V2 numbers the pairs "
                           "token by token (j = n*K + k).")
    if np.array_equal(np.sort(arr), np.arange(n * k)):
        return wrong(name, "a permutation, but not this one: sort the pairs by expert, keeping pair order "
                           "among equals (stable), then write each pair's new row at its position j.")
    return wrong(name, f"expanded_row_idx is a permutation of 0..{n * k - 1} (each pair gets one row).")


def check_k_major_index(answer) -> Feedback:
    """Exercise 3: the k-major index (what moe_finalize_routing reads) of one (token, slot) pair."""
    name = "k-major index"
    n_tok, k, n, j = EX3["num_tokens"], EX3["top_k"], EX3["token"], EX3["slot"]
    expected = j * n_tok + n
    if not isinstance(answer, bool) and isinstance(answer, (int, np.integer)) and int(answer) == n * k + j:
        return wrong(name, f"{answer} is the row-major index n*K + k (V2); k-major puts all first slots first.")
    return check_number(name, answer, expected, rel=0, hint="k-major: index = k * N + n.")
