"""Checkers for the exercises of notebook 06 (expert parallelism).

The setting of every exercise is openPangu-Ultra-MoE-718B (256 routed experts, top-8, hidden 7680, bf16)
on ``NODES`` Atlas 800T A2 nodes of 8 NPUs (EP degree 64, twice the model card's 4 nodes, so that no
number of the notebook's worked example is an answer), ``TOKENS`` tokens per NPU, uniform routing.
Exercise 4 adds a group-limited router with one group per node and ``TOPK_GROUP`` groups per token.
"""

from __future__ import annotations

from moe_lab.exercises import Feedback, check_number, known_slip, unanswered
from moe_lab.i18n import _
from moe_lab.parallel.sim import a2a_volume, row_bytes

EXPERTS, TOP_K, HIDDEN, BYTES = 256, 8, 7680, 2
PER_NODE, NODES, TOKENS, TOPK_GROUP = 8, 8, 2048, 2
EP = PER_NODE * NODES


def check_experts_per_npu(answer) -> Feedback:
    """Exercise 1: routed experts each NPU holds in one MoE layer (256 experts, EP 64)."""
    name = _("experts per NPU")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    near = {EXPERTS: _("that is every expert: expert parallelism splits them over the 64 NPUs."),
            EP: _("that is the number of NPUs; divide the experts by it."),
            EXPERTS // NODES: _("that is 256 / 8 nodes: the experts are split over all 64 NPUs, not over nodes."),
            EXPERTS // 32: _("that is the layout of 4 nodes (32 NPUs); here there are 8 nodes."),
            1: _("one expert per NPU would need 256 NPUs (EP 256).")}
    slip = known_slip(name, answer, near)  # a wrong Feedback is falsy: test for None, not with `or`
    return slip if slip is not None else check_number(name, answer, EXPERTS // EP, rel=0,
                                                      hint=_("num_experts / EP degree."))


def expected_dispatch_bytes() -> float:
    """The answer of exercise 2, from the simulator (uniform routing)."""
    dispatch = a2a_volume(TOKENS, HIDDEN, TOP_K, EP, num_experts=EXPERTS, devices_per_node=PER_NODE).dispatch
    return dispatch["intra"] + dispatch["inter"]


def check_dispatch_bytes(answer) -> Feedback:
    """Exercise 2: bytes one NPU sends in the dispatch of one MoE layer (2048 tokens, top-8, bf16, EP 64)."""
    name = _("dispatch bytes")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    rows_bytes = TOKENS * TOP_K * HIDDEN * BYTES
    near = {rows_bytes: _("rows whose expert lives on the same NPU (1/64 of them) are not sent."),
            rows_bytes * 2: _("twice too much, and the 1/64 of rows that stay on the NPU are not sent."),
            rows_bytes * (EP - 1) / EP * 2: _("twice the answer: that is dispatch + combine, or 4 bytes per value "
                                              "(bf16 has 2)."),
            TOKENS * HIDDEN * BYTES * (EP - 1) / EP: _("each token is sent once per chosen expert: times top_k = 8."),
            rows_bytes * (EP - PER_NODE) / EP: _("that is only the inter-node part; rows to the 7 other NPUs of the "
                                                 "node are sent too."),
            rows_bytes * 31 / 32: _("that is the share sent on 32 NPUs; here there are 64.")}
    slip = known_slip(name, answer, near)
    return slip if slip is not None else check_number(
        name, answer, expected_dispatch_bytes(), rel=1e-6,
        hint=_("tokens x top_k x hidden x 2 bytes, times the share of rows that leave the NPU."))


def check_inter_node_share(answer) -> Feedback:
    """Exercise 3: share of ALL of an NPU's token slots (stay-home ones included) that leave its node."""
    name = _("inter-node share")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    near = {(EP - PER_NODE) / (EP - 1): _("that is the share of the rows that are SENT; the question counts all "
                                          "slots, including the 1/64 that stay on the NPU."),
            (PER_NODE - 1) / EP: _("that is the share that stays in the node on another NPU."),
            PER_NODE / EP: _("that is the share that stays in the node (own NPU included); the rest leaves it."),
            (EP - 1) / EP: _("that is the share that leaves the NPU; some of it stays in the node."),
            24 / 32: _("that is the share on 4 nodes; here there are 8.")}
    slip = known_slip(name, answer, near)
    return slip if slip is not None else check_number(
        name, answer, (EP - PER_NODE) / EP, rel=1e-9,
        hint=_("uniform routing: a slot's expert is on any of the 64 NPUs with equal probability; how many of "
               "them are on other nodes?"))


def expected_max_network_bytes() -> int:
    """The answer of exercise 4: one copy per node, at most ``TOPK_GROUP`` nodes, none of them its own."""
    return TOPK_GROUP * row_bytes(HIDDEN, "bfloat16")


def check_max_network_bytes(answer) -> Feedback:
    """Exercise 4: the most bytes one token can send across the network in one dispatch, with group-limited
    routing (one group per node, ``topk_group`` = 2) and one copy per target node."""
    name = _("network bytes per token")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    row = HIDDEN * BYTES
    near = {TOP_K * row: _("that is one row per chosen expert, the plain all-to-all; here a node gets one copy."),
            (NODES - 1) * row: _("that is one copy to each of the 7 other nodes (or 7 of the 8 rows): the group "
                                 "limit allows only 2 nodes, and a node gets one copy."),
            4 * row: _("that is 4 copies (DeepSeek-V3's limit of 4 nodes), or 2 copies at 4 bytes per value; "
                       "here topk_group = 2, and bf16 has 2 bytes per value."),
            row: _("that is one copy: the case where one of the 2 nodes is the token's own (or 2 copies at 1 byte "
                   "per value); the question asks for the most, with 2 bytes per bf16 value.")}
    slip = known_slip(name, answer, near)
    return slip if slip is not None else check_number(
        name, answer, expected_max_network_bytes(), rel=1e-9,
        hint=_("how many nodes can a token's experts be on, how many copies cross the network, and how many "
               "bytes is one copy?"))
