"""Notebook 06's exercise checkers: right answers pass, typical slips get a precise hint."""

import numpy as np
import pytest

from moe_lab.exercises import nb06


def test_placeholders_are_unanswered():
    for check in (nb06.check_experts_per_npu, nb06.check_dispatch_bytes, nb06.check_inter_node_share,
                  nb06.check_rank_load):
        fb = check(None)
        assert not fb and "no answer yet" in fb.message
        assert not check(...)


def test_experts_per_npu():
    assert nb06.check_experts_per_npu(8)
    assert nb06.check_experts_per_npu(256 // 32)
    assert "divide the experts" in nb06.check_experts_per_npu(32).message
    assert "over all 32 NPUs" in nb06.check_experts_per_npu(64).message
    assert not nb06.check_experts_per_npu(7)
    assert "expected a number" in nb06.check_experts_per_npu("8").message


def test_dispatch_bytes():
    answer = 4096 * 8 * 7680 * 2 * 31 / 32
    assert answer == pytest.approx(nb06.expected_dispatch_bytes())
    assert nb06.check_dispatch_bytes(answer)
    assert nb06.check_dispatch_bytes(int(answer))
    assert "same NPU" in nb06.check_dispatch_bytes(4096 * 8 * 7680 * 2).message
    assert "dispatch + combine" in nb06.check_dispatch_bytes(2 * answer).message
    assert "top_k" in nb06.check_dispatch_bytes(answer / 8).message
    assert "inter-node part" in nb06.check_dispatch_bytes(4096 * 8 * 7680 * 2 * 24 / 32).message
    assert "too large" in nb06.check_dispatch_bytes(answer * 1.5).message


def test_inter_node_share():
    assert nb06.check_inter_node_share(0.75)
    assert nb06.check_inter_node_share(24 / 32)
    assert "SENT" in nb06.check_inter_node_share(24 / 31).message
    assert "another NPU" in nb06.check_inter_node_share(7 / 32).message
    assert not nb06.check_inter_node_share(0.5)


def test_rank_load():
    def contiguous(counts, w):
        return np.asarray(counts).reshape(w, -1).sum(1)

    def round_robin(counts, w):
        return np.asarray(counts).reshape(-1, w).sum(0)

    assert nb06.check_rank_load(contiguous)
    assert nb06.check_rank_load(lambda c, w: [int(v) for v in contiguous(c, w)])  # a list is fine
    assert "round-robin" in nb06.check_rank_load(round_robin).message
    assert "returns None" in nb06.check_rank_load(lambda c, w: None).message
    assert "raised ZeroDivisionError" in nb06.check_rank_load(lambda c, w: 1 / 0).message
    assert "expected 2 numbers" in nb06.check_rank_load(lambda c, w: np.asarray(c)).message
    assert "expected a function" in nb06.check_rank_load(3).message
    fb = nb06.check_rank_load(lambda c, w: contiguous(c, w) + 1)
    assert not fb and "expected" in fb.message
