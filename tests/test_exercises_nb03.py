"""Notebook 03's exercise checkers: the right answers pass, typical wrong answers get a precise hint."""

from __future__ import annotations

import numpy as np
import pytest

from moe_lab.core.capacity import expert_capacity
from moe_lab.core.reference import keep_numpy
from moe_lab.exercises import nb03


def test_placeholders_are_unanswered():
    for check in (nb03.check_capacity, nb03.check_keep_mask, nb03.check_padded_capacity, nb03.check_buffer_rows,
                  nb03.check_priority_keep_mask):
        for placeholder in (None, ...):
            fb = check(placeholder)
            assert not fb and "no answer yet" in fb.message


def test_capacity():
    expected = expert_capacity(1000, 16, 2, 1.25)
    assert expected == 157
    assert nb03.check_capacity(157)
    assert nb03.check_capacity(157.0)
    for answer, hint in ((156.25, "whole number"), (156, "rounded down"), (79, "forgets top_k"),
                         (125, "mean load"), (200, "too large"), ("157", "expected a number"), (True, "number")):
        fb = nb03.check_capacity(answer)
        assert not fb, answer
        assert hint in fb.message, (answer, fb.message)


def test_keep_mask():
    good = keep_numpy(nb03.EX2_INDICES, nb03.EX2_WEIGHTS, 3, 0.5, "position")
    assert nb03.ex2_capacity() == 2
    assert nb03.check_keep_mask(good)
    assert nb03.check_keep_mask(good.astype(int).tolist())
    # the example is built so that the three orders disagree
    score = keep_numpy(nb03.EX2_INDICES, nb03.EX2_WEIGHTS, 3, 0.5, "priority")
    assert not np.array_equal(good, score)
    token_major = [[1, 1], [1, 1], [0, 1], [0, 1], [0, 0], [0, 0]]
    cases = ((score, "priority"), (token_major, "token by token"), (np.ones((6, 2)), "nothing dropped"),
             ([[1, 0]] * 6, "(2, 1)"), ([[1, 0]] * 3, "shape"), ([[2, 0]] * 6, "True (kept)"),
             ("yes", "expected"))
    for answer, hint in cases:
        fb = nb03.check_keep_mask(answer)
        assert not fb
        assert hint in fb.message, (answer, fb.message)


def test_priority_keep_mask():
    good = keep_numpy(nb03.EX2_INDICES, nb03.EX2_WEIGHTS, 3, 0.5, "priority")
    # worked by hand: priorities 0.55, 0.8, 0.6, 0.7, 0.9, 0.95 -> token order 5, 4, 1, 3, 2, 0; first choices
    # of 5 (e0), 4 (e2), 1 (e1), 3 (e0), 2 (e1), 0 (e0: full); then second choices: only 5's (e2) fits
    assert good.astype(int).tolist() == [[0, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 1]]
    assert nb03.check_priority_keep_mask(good)
    assert nb03.check_priority_keep_mask(good.astype(int).tolist())
    position = keep_numpy(nb03.EX2_INDICES, nb03.EX2_WEIGHTS, 3, 0.5, "position")
    per_slot = [[0, 0], [1, 0], [1, 1], [1, 0], [1, 0], [1, 0]]  # every slot ranked by its own probability
    token_major = [[0, 0], [1, 1], [0, 0], [0, 0], [1, 1], [1, 1]]  # tokens in priority order, slots together
    cases = ((position, "\"position\" policy"), (per_slot, "its own probability"),
             (token_major, "served together"), (np.ones((6, 2)), "nothing dropped"),
             ([[1, 0]] * 6, "(0, 0)"), ([[1, 0]] * 3, "shape"), ([[2, 0]] * 6, "True (kept)"))
    for answer, hint in cases:
        assert not np.array_equal(np.asarray(answer, bool), good)
        fb = nb03.check_priority_keep_mask(answer)
        assert not fb
        assert hint in fb.message, (answer, fb.message)


def test_padded_capacity():
    assert nb03.check_padded_capacity(320)
    for answer, hint in ((301, "rounds up to a multiple of 32"), (256, "mean load"), (288, "rounded down"),
                         (352, "too large"), (300.5, "too small")):
        fb = nb03.check_padded_capacity(answer)
        assert not fb
        assert hint in fb.message, (answer, fb.message)


@pytest.mark.parametrize("answer, hint", [(8192, "real slots"), (1280, "is C"), (32768, "dense path"),
                                          (10000, "too small"), ([10240], "expected a number")])
def test_buffer_rows(answer, hint):
    assert nb03.check_buffer_rows(10240)
    fb = nb03.check_buffer_rows(answer)
    assert not fb
    assert hint in fb.message


def test_feedback_in_chinese(zh):
    fb = nb03.check_capacity(156)
    assert not fb and fb.message.startswith("156 是向下取整的结果：容量要向上取整")
    assert nb03.check_capacity(79).message == "79 漏掉了 top_k：每个 token 占 k = 2 个槽位，所以共有 N*k 个槽位。"
    assert "什么都没丢弃？专家 0 被选中了 4 次，但只有 2 个槽位。" in nb03.check_keep_mask(np.ones((6, 2))).message
    assert nb03.check_padded_capacity(352).message.startswith("352 太大了。取最大负载，向上取整到 32 的倍数")
