"""moe_lab.balance: auxiliary losses, bias balancing and load metrics (notebook 04)."""

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import moe_lab
from moe_lab import balance as B
from moe_lab.core.routers import SoftmaxRouter

moe_lab.setup(seed=0)


def t(a, dtype=np.float32):
    return Tensor(np.asarray(a, dtype=dtype))


def balanced_routing(n=16, e=4, k=1):
    """Uniform probabilities and a round-robin choice: every expert gets exactly n*k/e slots."""
    probs = np.full((n, e), 1.0 / e, np.float32)
    indices = (np.arange(n * k).reshape(n, k) % e).astype(np.int32)
    return probs, indices


@pytest.mark.parametrize("e,k", [(4, 1), (4, 2), (8, 2), (8, 8)])
def test_switch_loss_is_one_at_perfect_balance(e, k):
    probs, indices = balanced_routing(16, e, k)
    assert float(B.switch_loss(t(probs), t(indices, np.int32)).asnumpy()) == pytest.approx(1.0, abs=1e-6)
    assert B.switch_loss_numpy(probs, indices) == pytest.approx(1.0, abs=1e-12)


def test_switch_loss_grows_with_skew_up_to_num_experts():
    e, n = 4, 32
    values = []
    for hot in (0.25, 0.5, 0.75, 1.0):  # share of the tokens (and probability mass) on expert 0
        probs = np.full((n, e), (1 - hot) / (e - 1), np.float32)
        probs[:, 0] = hot
        indices = np.where(np.arange(n) < hot * n, 0, 1 + np.arange(n) % (e - 1)).astype(np.int32)[:, None]
        values.append(float(B.switch_loss(t(probs), t(indices, np.int32)).asnumpy()))
    assert values[0] == pytest.approx(1.0, abs=1e-5)
    assert all(b > a for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(e, abs=1e-5)  # one expert takes every token with probability 1


@pytest.mark.parametrize("e,k", [(4, 1), (8, 2), (8, 3), (6, 6)])
def test_switch_loss_is_at_most_num_experts_over_top_k(e, k):
    """f_i <= 1/K (K different experts per token), so the loss is at most E/K; K experts taking every slot
    with all the probability reach it."""
    n = 12
    indices = np.tile(np.arange(k), (n, 1)).astype(np.int32)  # every token picks experts 0..K-1
    probs = np.zeros((n, e), np.float32)
    probs[:, :k] = 1.0 / k
    assert float(B.switch_loss(t(probs), t(indices, np.int32)).asnumpy()) == pytest.approx(e / k, rel=1e-6)
    rng = np.random.default_rng(e * 10 + k)
    for _ in range(50):  # random routings never exceed it
        logits = rng.normal(size=(n, e)) * rng.uniform(0.1, 10)
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        ix = np.argsort(-p, -1)[:, :k]
        assert B.switch_loss_numpy(p, ix) <= e / k + 1e-9


def test_scoped_switch_loss():
    e, seq, length = 4, 4, 8
    # every token of sequence s goes to expert s with probability 0.7 (0.1 elsewhere)
    idx = np.repeat(np.arange(seq), length).astype(np.int32)[:, None]
    p = np.full((seq * length, e), 0.1, np.float32)
    p[np.arange(seq * length), idx[:, 0]] = 0.7
    per_sequence = float(B.scoped_switch_loss(t(p), t(idx, np.int32), seq).asnumpy())
    whole = float(B.scoped_switch_loss(t(p), t(idx, np.int32), 1).asnumpy())
    assert per_sequence == pytest.approx(e * 0.7, rel=1e-6)  # each sequence alone: f = 1 on one expert
    assert whole == pytest.approx(1.0, rel=1e-6)  # the batch is balanced
    assert whole == pytest.approx(float(B.switch_loss(t(p), t(idx, np.int32)).asnumpy()), rel=1e-6)
    assert B.scoped_switch_loss_numpy(p, idx, seq) == pytest.approx(per_sequence, rel=1e-6)
    # by hand on random top-2 routing: the mean over segments of each segment's Switch loss
    rng = np.random.default_rng(3)
    pr = rng.dirichlet(np.ones(6), size=24).astype(np.float32)
    ix = np.argsort(-pr, -1)[:, :2].astype(np.int32)
    by_hand = np.mean([B.switch_loss_numpy(pr[i:i + 8], ix[i:i + 8]) for i in (0, 8, 16)])
    assert float(B.scoped_switch_loss(t(pr), t(ix, np.int32), 3).asnumpy()) == pytest.approx(by_hand, rel=1e-5)
    # the gradient reaches the probabilities
    g = ms.grad(lambda q: B.scoped_switch_loss(q, t(ix, np.int32), 3))(t(pr))
    assert np.abs(g.asnumpy()).sum() > 0
    with pytest.raises(ValueError, match="num_segments must divide the 24 tokens, got num_segments=5"):
        B.scoped_switch_loss(t(pr), t(ix, np.int32), 5)
    with pytest.raises(ValueError, match="num_segments must be >= 1"):
        B.scoped_switch_loss_numpy(pr, ix, 0)


def test_group_loss_is_deepseekmoe_device_level_loss():
    """DeepSeekMoE eqs. 13-17 written out (f_j = E/(K T) * count_j, f'_g = mean of f_j over the group,
    P'_g = sum of P_j) equal G * sum_g F_g * P_g."""
    rng = np.random.default_rng(7)
    e, k, n = 8, 2, 40
    for groups in (2, 4):
        p = rng.dirichlet(np.ones(e) * 0.5, size=n)
        ix = np.argsort(-p, -1)[:, :k]
        f = e / (k * n) * np.bincount(ix.ravel(), minlength=e)
        members = np.arange(e).reshape(groups, -1)
        deepseek = sum(f[m].mean() * p.mean(0)[m].sum() for m in members)
        assert B.group_loss_numpy(p, ix, groups) == pytest.approx(deepseek, rel=1e-12)


def test_switch_loss_matches_numpy_twin_on_random_routing():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 6)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    indices = np.argsort(-probs, -1)[:, :2].astype(np.int32)
    ms_value = float(B.switch_loss(t(probs), t(indices, np.int32)).asnumpy())
    assert ms_value == pytest.approx(B.switch_loss_numpy(probs, indices), rel=1e-5)
    # by hand: E * sum_i f_i P_i with f over the N*K slots
    f = np.bincount(indices.ravel(), minlength=6) / indices.size
    assert ms_value == pytest.approx(6 * (f * probs.mean(0)).sum(), rel=1e-5)


def test_z_loss_values():
    # logsumexp of E zeros is log E
    assert float(B.z_loss(t(np.zeros((3, 4)))).asnumpy()) == pytest.approx(math.log(4) ** 2, rel=1e-6)
    logits = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    lse = np.log(np.exp(logits).sum(-1))
    assert float(B.z_loss(t(logits)).asnumpy()) == pytest.approx((lse ** 2).mean(), rel=1e-6)
    assert B.z_loss_numpy(logits) == pytest.approx((lse ** 2).mean(), rel=1e-12)
    # large logits do not overflow (the log-sum-exp is shifted by the max)
    big = np.array([[1000.0, 999.0]])
    assert float(B.z_loss(t(big)).asnumpy()) == pytest.approx(B.z_loss_numpy(big), rel=1e-6)
    assert np.isfinite(B.z_loss_numpy(big))


def test_group_loss_properties():
    e, g = 8, 2
    probs, indices = balanced_routing(32, e, 2)
    assert float(B.group_loss(t(probs), t(indices, np.int32), g).asnumpy()) == pytest.approx(1.0, abs=1e-6)
    # inside-group imbalance is free: all of group 0's tokens go to expert 0, group 1's to expert 4
    idx = np.where(np.arange(32) % 2 == 0, 0, 4).astype(np.int32)[:, None]
    p = np.zeros((32, e), np.float32)
    p[np.arange(32), idx[:, 0]] = 1.0
    assert float(B.group_loss(t(p), t(idx, np.int32), g).asnumpy()) == pytest.approx(1.0, abs=1e-6)
    assert float(B.switch_loss(t(p), t(idx, np.int32)).asnumpy()) == pytest.approx(4.0, abs=1e-5)
    # between-group imbalance is penalised: everything in group 0
    idx0 = (np.arange(32) % 4).astype(np.int32)[:, None]
    p0 = np.zeros((32, e), np.float32)
    p0[np.arange(32), idx0[:, 0]] = 1.0
    assert float(B.group_loss(t(p0), t(idx0, np.int32), g).asnumpy()) == pytest.approx(2.0, abs=1e-5)
    # one group per expert is the Switch loss; NumPy twin agrees
    rng = np.random.default_rng(1)
    pr = rng.dirichlet(np.ones(e), size=20).astype(np.float32)
    ix = np.argsort(-pr, -1)[:, :2].astype(np.int32)
    assert float(B.group_loss(t(pr), t(ix, np.int32), e).asnumpy()) == pytest.approx(
        float(B.switch_loss(t(pr), t(ix, np.int32)).asnumpy()), rel=1e-5)
    assert float(B.group_loss(t(pr), t(ix, np.int32), 4).asnumpy()) == pytest.approx(
        B.group_loss_numpy(pr, ix, 4), rel=1e-5)


def test_gradients_reach_the_router_and_not_the_selection_bias():
    router = SoftmaxRouter(8, 4, top_k=2, seed=3)
    x = t(np.random.default_rng(0).normal(size=(64, 8)))

    def loss(x):
        routing = router(x)
        return B.switch_loss(routing.probs, routing.indices) + B.z_loss(routing.logits)

    g_weight, g_bias = ms.grad(loss, None, [router.weight, router.selection_bias])(x)
    assert np.abs(g_weight.asnumpy()).sum() > 1e-4
    assert np.all(g_bias.asnumpy() == 0.0)
    # the expert fraction f is a count: no gradient flows through it
    probs = t(np.full((4, 2), 0.5))
    g_f = ms.grad(lambda p: (B.expert_fraction(t([[0], [1], [1], [1]], np.int32), 2) * p.sum()).sum())(probs)
    assert np.allclose(g_f.asnumpy(), 1.0)  # d/dp of sum(f) * sum(p) = sum(f) = 1, f itself is constant
    assert id(router.selection_bias) not in {id(p) for p in router.trainable_params()}


def test_bias_update_rule_and_direction():
    load = t([10.0, 2.0, 5.0, 3.0])
    delta = B.bias_update(load, 0.01).asnumpy()
    assert np.allclose(delta, [-0.01, 0.01, 0.0, 0.01])  # mean is 5: overloaded down, underloaded up
    assert np.allclose(B.bias_update(t([3.0, 3.0]), 0.5).asnumpy(), 0.0)


def test_bias_updates_move_load_toward_balance():
    """A router skewed towards expert 0: repeated sign-rule updates spread the load."""
    router = SoftmaxRouter(8, 4, top_k=1, seed=0)
    router.selection_bias.set_data(t([0.5, 0.0, 0.0, 0.0]))  # start badly: expert 0 takes almost all
    x = t(np.random.default_rng(1).normal(size=(256, 8)))
    first = B.tokens_per_expert(router(x).indices, 4)
    for _ in range(100):
        load = B.expert_load(router(x).indices, 4)
        B.update_selection_bias(router, load, 0.01)
    last = B.tokens_per_expert(router(x).indices, 4)
    assert B.max_over_mean(first) > 2.0
    assert B.max_over_mean(last) < 1.5
    assert B.coefficient_of_variation(last) < B.coefficient_of_variation(first) / 2
    bias = router.selection_bias.asnumpy()
    assert bias[0] < 0.5 and (bias[1:] > 0).all()  # the favourite pushed down, the others up


def test_bias_update_inside_jit():
    router = SoftmaxRouter(8, 4, top_k=2, seed=0)
    x = t(np.random.default_rng(2).normal(size=(32, 8)))

    @ms.jit
    def step(x):
        load = B.expert_load(router(x).indices, 4)
        B.update_selection_bias(router, load, 0.01)
        return load

    load = step(x).asnumpy()
    assert load.sum() == 64
    assert np.allclose(router.selection_bias.asnumpy(), 0.01 * np.sign(load.mean() - load))


def test_metrics():
    assert B.max_over_mean([5, 5, 5, 5]) == 1.0
    assert B.max_over_mean([20, 0, 0, 0]) == 4.0
    assert B.coefficient_of_variation([5, 5, 5, 5]) == 0.0
    assert B.coefficient_of_variation([20, 0, 0, 0]) == pytest.approx(math.sqrt(3))
    assert B.drop_rate([10, 2, 4, 4], capacity=5) == pytest.approx(5 / 20)
    assert B.drop_rate([5, 5, 5, 5], capacity=5) == 0.0
    assert B.routing_entropy(np.full((3, 4), 0.25)) == pytest.approx(math.log(4))
    assert B.routing_entropy(np.eye(4)) == pytest.approx(0.0, abs=1e-12)
    idx = np.array([[0, 1], [1, 2], [1, 3]])
    assert B.tokens_per_expert(idx, 4).tolist() == [1, 3, 1, 1]
    keep = np.array([[True, False], [True, True], [False, True]])
    assert B.tokens_per_expert(idx, 4, keep=keep).tolist() == [1, 1, 1, 1]
    summary = B.load_summary([10, 2, 4, 4], capacity_factor=1.0)
    assert summary == {"max/mean": 2.0, "cv": 0.6, "drop@1": 0.25, "share_max": 0.5}


def test_bad_input():
    with pytest.raises(ValueError, match="balance must be one of"):
        B.check_balance("switch")
    with pytest.raises(ValueError, match="aux_coef must be >= 0.0, got -0.1"):
        B.check_balance("aux", aux_coef=-0.1)
    with pytest.raises(ValueError, match="bias_rate"):
        B.check_balance("bias", bias_rate=-1e-3)
    with pytest.raises(TypeError, match="z_coef must be a number"):
        B.check_balance("aux", z_coef="0.1")
    with pytest.raises(ValueError, match="num_groups must divide num_experts=8, got num_groups=3"):
        B.check_balance("group", num_groups=3, num_experts=8)
    with pytest.raises(ValueError, match="load must be a non-empty 1-D"):
        B.max_over_mean([[1, 2]])
    with pytest.raises(ValueError, match="negative"):
        B.coefficient_of_variation([1, -1])
    with pytest.raises(ValueError, match=r"indices must be in \[0, 3\]"):
        B.tokens_per_expert([[4]], 4)
    with pytest.raises(ValueError, match="capacity must be >= 0"):
        B.drop_rate([1, 2], -1)
