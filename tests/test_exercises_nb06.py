"""Notebook 06's exercise checkers: right answers pass, typical slips get a precise hint."""

import numpy as np
import pytest

from moe_lab.exercises import nb06
from moe_lab.parallel.sim import network_copies

CHECKS = (nb06.check_experts_per_npu, nb06.check_dispatch_bytes, nb06.check_inter_node_share,
          nb06.check_max_network_bytes)


@pytest.mark.parametrize("check", CHECKS)
def test_placeholders_and_wrong_types_are_not_right(check):
    fb = check(None)
    assert not fb and "no answer yet" in fb.message
    assert not check(...)
    assert "expected a number" in check("8").message


def test_experts_per_npu():
    assert nb06.check_experts_per_npu(4)
    assert nb06.check_experts_per_npu(256 // 64)
    assert "divide the experts" in nb06.check_experts_per_npu(64).message
    assert "over all 64 NPUs" in nb06.check_experts_per_npu(32).message
    assert "4 nodes (32 NPUs)" in nb06.check_experts_per_npu(8).message
    assert not nb06.check_experts_per_npu(5)


def test_dispatch_bytes():
    answer = 2048 * 8 * 7680 * 2 * 63 / 64
    assert answer == pytest.approx(nb06.expected_dispatch_bytes())
    assert nb06.check_dispatch_bytes(answer)
    assert nb06.check_dispatch_bytes(int(answer))
    assert "same NPU" in nb06.check_dispatch_bytes(2048 * 8 * 7680 * 2).message
    assert "dispatch + combine" in nb06.check_dispatch_bytes(2 * answer).message
    assert "top_k" in nb06.check_dispatch_bytes(answer / 8).message
    assert "inter-node part" in nb06.check_dispatch_bytes(2048 * 8 * 7680 * 2 * 56 / 64).message
    assert "32 NPUs" in nb06.check_dispatch_bytes(2048 * 8 * 7680 * 2 * 31 / 32).message
    assert "too large" in nb06.check_dispatch_bytes(answer * 1.5).message


def test_inter_node_share():
    assert nb06.check_inter_node_share(0.875)
    assert nb06.check_inter_node_share(56 / 64)
    assert "SENT" in nb06.check_inter_node_share(56 / 63).message
    assert "another NPU" in nb06.check_inter_node_share(7 / 64).message
    assert "4 nodes" in nb06.check_inter_node_share(0.75).message
    assert not nb06.check_inter_node_share(0.5)


def test_max_network_bytes():
    assert nb06.check_max_network_bytes(30720)
    assert nb06.expected_max_network_bytes() == 2 * 7680 * 2
    assert "plain all-to-all" in nb06.check_max_network_bytes(8 * 7680 * 2).message
    assert "7 other nodes" in nb06.check_max_network_bytes(7 * 7680 * 2).message
    assert "DeepSeek-V3" in nb06.check_max_network_bytes(4 * 7680 * 2).message
    assert "own" in nb06.check_max_network_bytes(7680 * 2).message
    assert "too large" in nb06.check_max_network_bytes(40000).message


def test_max_network_bytes_is_reached_by_some_routing():
    """The answer is attained: a token on node 0 whose 8 experts are on nodes 3 and 5 (2 groups) sends 2
    copies, and no group-limited choice (experts on at most 2 nodes) sends more."""
    experts_per_node = 256 // 8
    worst = np.array([[3 * experts_per_node + i for i in range(4)] + [5 * experts_per_node + i for i in range(4)]])
    copies = network_copies(worst, 256, 8, [0])
    assert copies.tolist() == [2]
    assert copies[0] * 7680 * 2 == nb06.expected_max_network_bytes()
    rng = np.random.default_rng(0)
    for _ in range(200):  # random group-limited choices: 2 nodes, 8 experts among their 64
        groups = rng.choice(8, 2, replace=False)
        pool = np.concatenate([np.arange(g * experts_per_node, (g + 1) * experts_per_node) for g in groups])
        choice = rng.choice(pool, 8, replace=False)[None]
        assert network_copies(choice, 256, 8, [rng.integers(8)])[0] * 7680 * 2 <= nb06.expected_max_network_bytes()


def test_feedback_in_chinese(zh):
    fb = nb06.check_experts_per_npu(32)
    assert not fb and fb.message.startswith("32——这是 256 / 8 个节点：专家分布在全部 64 个 NPU 上")
    sent = nb06.check_dispatch_bytes(2048 * 8 * 7680 * 2)
    assert sent.message == "251,658,240——专家就在本 NPU 上的行（占 1/64）不需要发送。"
    assert str(nb06.check_inter_node_share(0.5)).startswith("[跨节点占比] 还不对：0.5 太小了。均匀路由")
