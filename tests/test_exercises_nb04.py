"""Exercise checkers of notebook 04: right answers pass, typical wrong answers get a helpful message (in English
and, with the ``zh`` fixture, in Chinese: that test passes once the Chinese catalog has the messages)."""

import re

import numpy as np

from moe_lab import balance as B
from moe_lab.exercises import nb04


def good_switch_loss(probs, indices):
    e = probs.shape[1]
    f = np.bincount(np.asarray(indices).ravel(), minlength=e) / np.asarray(indices).size
    return e * (f * probs.mean(0)).sum()


def test_switch_loss_right():
    fb = nb04.check_switch_loss(good_switch_loss)
    assert fb.correct, fb


def test_switch_loss_typical_mistakes():
    assert "placeholder" in nb04.check_switch_loss(None).message
    assert "expected a function" in nb04.check_switch_loss(3.0).message

    def no_e(probs, indices):
        return good_switch_loss(probs, indices) / probs.shape[1]

    def per_token(probs, indices):  # counts divided by N instead of N*K
        e = probs.shape[1]
        f = np.bincount(indices.ravel(), minlength=e) / indices.shape[0]
        return e * (f * probs.mean(0)).sum()

    def only_p(probs, indices):
        return probs.shape[1] * (probs.mean(0) ** 2).sum()

    def crashes(probs, indices):
        raise RuntimeError("boom")

    assert "multiply by num_experts" in nb04.check_switch_loss(no_e).message
    assert "N*K slots" in nb04.check_switch_loss(per_token).message
    assert "use both factors" in nb04.check_switch_loss(only_p).message
    fb = nb04.check_switch_loss(crashes)
    assert not fb.correct and "RuntimeError: boom" in fb.message
    fb = nb04.check_switch_loss(lambda p, i: 0.5)
    assert not fb.correct and "expected" in fb.message


def test_max_switch_loss():
    assert nb04.check_max_switch_loss(4).correct
    assert nb04.check_max_switch_loss(4.0).correct
    assert "two different experts" in nb04.check_max_switch_loss(8).message
    assert "smallest value" in nb04.check_max_switch_loss(1.0).message
    assert "too small" in nb04.check_max_switch_loss(2).message
    assert "placeholder" in nb04.check_max_switch_loss(None).message


def test_bias_update():
    assert nb04.check_bias_update([-0.001, 0.001, 0.0, 0.0]).correct
    assert nb04.check_bias_update(np.array([-0.001, 0.001, 0, 0])).correct
    assert "signs are flipped" in nb04.check_bias_update([0.001, -0.001, 0, 0]).message
    assert "not in proportion" in nb04.check_bias_update([-0.04, 0.04, 0, 0]).message
    assert "expected shape (4,)" in nb04.check_bias_update([0.0, 0.0]).message
    assert "placeholder" in nb04.check_bias_update(None).message
    assert not nb04.check_bias_update([0.0, 0.0, 0.0, 0.0]).correct


def test_group_loss():
    assert nb04.check_group_loss(1.25).correct
    assert nb04.check_group_loss(5 / 4).correct
    assert "Switch loss over single experts" in nb04.check_group_loss(5.0).message
    assert "balanced groups" in nb04.check_group_loss(1.0).message
    assert "too large" in nb04.check_group_loss(2).message
    assert "placeholder" in nb04.check_group_loss(None).message
    assert "expected a number" in nb04.check_group_loss("1").message


def test_scope_loss():
    assert nb04.check_scope_loss((8, 4)).correct
    assert nb04.check_scope_loss(np.array([8.0, 4.0])).correct
    assert "swapped" in nb04.check_scope_loss([4, 8]).message
    assert "experts 2-7 get no token" in nb04.check_scope_loss((8, 1)).message
    assert "inside one sequence" in nb04.check_scope_loss((4, 4)).message
    fb = nb04.check_scope_loss((2, 4))
    assert not fb.correct and "over each sequence" in fb.message
    assert "expected shape (2,)" in nb04.check_scope_loss(8).message
    assert "placeholder" in nb04.check_scope_loss(None).message


HAN = re.compile(r"[\u4e00-\u9fff]")


def test_feedback_in_chinese(zh):
    """With ``moe_lab.setup(lang="zh")`` the names and messages are Chinese and keep their numbers."""
    probs, indices = nb04._cases()[0]
    want = f"{B.switch_loss_numpy(probs, indices):.6f}"
    fb = nb04.check_switch_loss(lambda p, i: 0.5)
    assert str(fb).startswith("[Switch 损失] 还不对：") and HAN.search(fb.message)
    assert all(part in fb.message for part in ("N=8", "E=4", "top_k=1", want, "0.500000")), fb.message

    def per_token(probs, indices):
        e = probs.shape[1]
        return e * (np.bincount(indices.ravel(), minlength=e) / indices.shape[0] * probs.mean(0)).sum()

    assert "top_k=2" in nb04.check_switch_loss(per_token).message and "N*K" in nb04.check_switch_loss(per_token).message
    assert nb04.check_max_switch_loss(2).message.startswith("2 太小了。两个专家平分全部槽位")
    fb = nb04.check_bias_update([0.0, 0.0, 0.0, 0.0])
    assert HAN.search(fb.message) and "80" in fb.message and "b_i = u * sign(mean_load - load_i)" in fb.message
    fb = nb04.check_group_loss(5.0)
    assert str(fb).startswith("[组级均衡损失] 还不对：5 是按单个专家计算的 Switch 损失")
    fb = nb04.check_scope_loss((2, 4))
    assert HAN.search(fb.message) and "2 和 4" in fb.message
    right = nb04.check_scope_loss((8, 4))
    assert right.correct and HAN.search(str(right)) and "（E）" in right.message
