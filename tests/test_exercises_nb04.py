"""Exercise checkers of notebook 04: right answers pass, typical wrong answers get a helpful message."""

import numpy as np

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
    assert nb04.check_group_loss(1.0).correct
    assert "Switch loss over single experts" in nb04.check_group_loss(4.0).message
    assert "too large" in nb04.check_group_loss(2).message
    assert "placeholder" in nb04.check_group_loss(None).message
    assert "expected a number" in nb04.check_group_loss("1").message
