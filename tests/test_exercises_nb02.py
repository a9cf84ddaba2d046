"""Notebook 02's exercise checkers: the right answers pass, typical wrong answers get a precise hint."""

import math

import numpy as np

from moe_lab.exercises import nb02


def test_combination_ratio():
    right = math.comb(384, 8) / math.comb(256, 8)
    assert nb02.check_combination_ratio(right) and nb02.check_combination_ratio(round(right, 3))
    assert "no answer yet" in str(nb02.check_combination_ratio(None))
    assert "approximation" in nb02.check_combination_ratio(1.5 ** 8).message
    assert "numbers of experts" in nb02.check_combination_ratio(1.5).message
    assert "difference" in nb02.check_combination_ratio(math.comb(384, 8) - math.comb(256, 8)).message


def test_combine_weights():
    s = np.asarray(nb02.EX2_SCORES)
    assert nb02.check_combine_weights(s / s.sum() * 2.5)
    assert nb02.check_combine_weights((s / s.sum() * 2.5).round(4).tolist())
    assert "not scaled" in nb02.check_combine_weights(s / s.sum()).message
    assert "not renormalised" in nb02.check_combine_weights(s * 2.5).message
    assert "softmax" in nb02.check_combine_weights(np.exp(s) / np.exp(s).sum()).message
    assert "expected shape (8,)" in nb02.check_combine_weights([1, 2]).message
    assert "divide each score" in nb02.check_combine_weights(np.ones(8)).message


def test_shared_params():
    h, f = 3584, 20480
    assert nb02.shared_params() == 3 * h * f + h
    assert nb02.check_shared_params(3 * h * f + h)
    assert "not its gate" in nb02.check_shared_params(3 * h * f).message
    assert "three matrices" in nb02.check_shared_params(2 * h * f + h).message
    assert "too large" in nb02.check_shared_params(10 ** 12).message


def test_feedback_in_chinese(zh):
    s = np.asarray(nb02.EX2_SCORES)
    fb = nb02.check_combine_weights(s / s.sum())
    assert not fb and "没有缩放" in fb.message and "routed_scaling_factor 2.5" in fb.message
    gate = nb02.check_shared_params(3 * 3584 * 20480)
    assert gate.message == "220,200,960 算上了专家的三个矩阵，但没有算它的门控（hidden_size x 1）。"
    assert str(gate).startswith("[共享专家参数量] 还不对：")
