"""Notebook 08's exercise checkers: the right answers pass, typical wrong answers get a helpful message."""

import numpy as np
from mindspore import Tensor

from moe_lab.exercises import nb08


def test_gating_fits():
    assert nb08.gating_fits() is False  # 64 experts need 8 groups in FusedAddTopKDiv; the router has 4
    assert nb08.check_gating_fits(False)
    assert "limits one by one" in nb08.check_gating_fits(True).message
    assert "True or False" in nb08.check_gating_fits("no").message
    assert "no answer yet" in nb08.check_gating_fits(None).message


def test_expanded_row_idx():
    right = [4, 0, 1, 2, 5, 3]
    assert nb08.check_expanded_row_idx(right)
    assert nb08.check_expanded_row_idx(np.array(right))
    assert nb08.check_expanded_row_idx(Tensor(np.array(right, np.int32)))
    assert "sort order" in nb08.check_expanded_row_idx([1, 2, 3, 5, 0, 4]).message
    assert "k-major" in nb08.check_expanded_row_idx([4, 1, 5, 0, 2, 3]).message
    assert "stable" in nb08.check_expanded_row_idx([0, 1, 2, 3, 4, 5]).message
    assert "permutation of 0..5" in nb08.check_expanded_row_idx([0, 0, 0, 0, 0, 0]).message
    assert "shape" in nb08.check_expanded_row_idx([4, 0, 1]).message
    assert "no answer yet" in nb08.check_expanded_row_idx(...).message


def test_k_major_index():
    assert nb08.check_k_major_index(5)
    row_major = nb08.check_k_major_index(3)
    assert not row_major and "row-major" in row_major.message
    assert not nb08.check_k_major_index(6)
    assert "expected a number" in nb08.check_k_major_index("5").message
    assert "no answer yet" in nb08.check_k_major_index(None).message


def test_feedback_in_chinese(zh):
    fb = nb08.check_k_major_index(3)
    assert not fb and fb.message.startswith("3 是行优先（row-major）索引 n*K + k（V2）")
    assert "逐条检查该算子的限制" in nb08.check_gating_fits(True).message
    assert "0..5 的一个排列" in nb08.check_expanded_row_idx([0, 0, 0, 0, 0, 0]).message
    assert str(nb08.check_gating_fits(False)).startswith("[FusedAddTopKDiv 的限制] 正确：不能：")
