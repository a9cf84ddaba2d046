"""Checkers for the exercises of notebook 06 (expert parallelism).

The setting of exercises 1-3 is openPangu-Ultra-MoE-718B (256 routed experts, top-8, hidden 7680, bf16)
on the README's 4 Atlas 800T A2 nodes of 8 NPUs (EP degree 32), ``TOKENS`` tokens per NPU, uniform routing.
"""

from __future__ import annotations

import numpy as np

from moe_lab.exercises import Feedback, check_number, known_slip, right, unanswered, wrong
from moe_lab.parallel.sim import a2a_volume, device_loads, placement

EXPERTS, TOP_K, HIDDEN, BYTES, EP, PER_NODE, TOKENS = 256, 8, 7680, 2, 32, 8, 4096


def check_experts_per_npu(answer) -> Feedback:
    """Exercise 1: routed experts each NPU holds in one MoE layer (256 experts, EP 32)."""
    name = "experts per NPU"
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    near = {256: "that is every expert: expert parallelism splits them over the 32 NPUs.",
            32: "that is the number of NPUs; divide the experts by it.",
            64: "that is 256 / 4 nodes: the experts are split over all 32 NPUs, not over nodes.",
            1: "one expert per NPU would need 256 NPUs (EP 256)."}
    slip = known_slip(name, answer, near)  # a wrong Feedback is falsy: test for None, not with `or`
    return slip if slip is not None else check_number(name, answer, EXPERTS // EP, rel=0,
                                                      hint="num_experts / EP degree.")


def expected_dispatch_bytes() -> float:
    """The answer of exercise 2, from the simulator (uniform routing)."""
    dispatch = a2a_volume(TOKENS, HIDDEN, TOP_K, EP, num_experts=EXPERTS, devices_per_node=PER_NODE).dispatch
    return dispatch["intra"] + dispatch["inter"]


def check_dispatch_bytes(answer) -> Feedback:
    """Exercise 2: bytes one NPU sends in the dispatch of one MoE layer (4096 tokens, top-8, bf16)."""
    name = "dispatch bytes"
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    rows_bytes = TOKENS * TOP_K * HIDDEN * BYTES
    near = {rows_bytes: "rows whose expert lives on the same NPU (1/32 of them) are not sent.",
            rows_bytes * 2: "twice too much, and the 1/32 of rows that stay on the NPU are not sent.",
            rows_bytes * (EP - 1) / EP * 2: "twice the answer: that is dispatch + combine, or 4 bytes per value "
                                            "(bf16 has 2).",
            TOKENS * HIDDEN * BYTES * (EP - 1) / EP: "each token is sent once per chosen expert: times top_k = 8.",
            rows_bytes * (EP - PER_NODE) / EP: "that is only the inter-node part; rows to the 7 other NPUs of "
                                               "the node are sent too."}
    slip = known_slip(name, answer, near)
    return slip if slip is not None else check_number(
        name, answer, expected_dispatch_bytes(), rel=1e-6,
        hint="tokens x top_k x hidden x 2 bytes, times the share of rows that leave the NPU (31/32).")


def check_inter_node_share(answer) -> Feedback:
    """Exercise 3: share of ALL of an NPU's token slots (stay-home ones included) that leave its node."""
    name = "inter-node share"
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    near = {24 / 31: "that is the share of the rows that are SENT; the question counts all slots, "
                     "including the 1/32 that stay on the NPU.",
            7 / 32: "that is the share that stays in the node on another NPU.",
            8 / 32: "that is the share that stays in the node (own NPU included); the rest leaves it.",
            31 / 32: "that is the share that leaves the NPU; some of it stays in the node."}
    slip = known_slip(name, answer, near)
    return slip if slip is not None else check_number(
        name, answer, (EP - PER_NODE) / EP, rel=1e-9,
        hint="uniform routing: a slot's expert is on any of the 32 NPUs with equal probability; 24 of them "
             "are on other nodes.")


def check_rank_load(fn) -> Feedback:
    """Exercise 4: ``fn(expert_counts, world_size)`` -> rows per rank, contiguous placement."""
    name = "rank load"
    missing = unanswered(name, fn)
    if missing is not None:
        return missing
    if not callable(fn):
        return wrong(name, f"expected a function fn(expert_counts, world_size), got {type(fn).__name__}.")
    rng = np.random.default_rng(5)
    for e, w in ((8, 2), (8, 4), (12, 3), (16, 16), (6, 1)):
        counts = rng.integers(0, 20, size=e)
        try:
            got = fn(counts.copy(), w)
            if got is None:
                return wrong(name, "your function returns None: return the rows of each rank.")
            got = np.asarray(got.asnumpy() if hasattr(got, "asnumpy") else got, np.float64).reshape(-1)
        except Exception as exc:  # the learner's code may fail in any way: report it, do not crash
            return wrong(name, f"your function raised {type(exc).__name__}: {exc}")
        want = device_loads(counts, placement(e, w), w)
        if got.shape != (w,):
            return wrong(name, f"for {e} experts on {w} ranks expected {w} numbers, got shape {got.shape}.")
        if np.allclose(got, device_loads(counts, placement(e, w, "round_robin"), w)) and not np.allclose(got, want):
            return wrong(name, "that is a round-robin placement (expert e on rank e % W); here rank r owns the "
                               "contiguous block r*E/W ... (r+1)*E/W - 1.")
        if not np.allclose(got, want):
            return wrong(name, f"for counts {counts.tolist()} on {w} ranks expected {want.astype(int).tolist()}, "
                               f"got {got.tolist()}.")
    return right(name, "rank r sums the counts of its E/W contiguous experts.")
