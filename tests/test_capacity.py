"""Expert capacity: the formula, the keep mask against a plain NumPy queue, what a dropped slot does,
every dispatch path against the NumPy reference with capacity, and bad inputs (notebook 02)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mindspore import Tensor

import moe_lab
from moe_lab.ascend.fused import REFERENCE_KERNELS, fused_moe
from moe_lab.core.capacity import expert_capacity, keep_mask
from moe_lab.core.dispatch import DISPATCH
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import keep_numpy, layer_forward_numpy

moe_lab.setup(seed=0)


def rows(n, h, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal((n, h)).astype(np.float32))


# ------------------------------------------------------------------ the formula

@pytest.mark.parametrize("tokens, experts, top_k, cf, expected", [
    (4096, 8, 2, 1.25, 1280),   # the benchmark's layer
    (4096, 8, 2, 1.0, 1024),    # exactly the mean load
    (10, 4, 2, 1.0, 5),
    (10, 4, 1, 1.0, 3),         # 2.5 rounds up
    (7, 3, 2, 0.5, 3),          # 2.33 rounds up
    (1, 8, 1, 1.0, 1),          # never 0 slots for a positive factor
    (0, 8, 2, 1.0, 0),
])
def test_capacity_formula(tokens, experts, top_k, cf, expected):
    assert expert_capacity(tokens, experts, top_k, cf) == expected
    assert expected == math.ceil(round(cf * tokens * top_k / experts, 9))


def test_capacity_rounding_case():
    # 1.1 * 100 * 2 / 4 is 55.00000000000001 in floating point: a bare ceil would give 56 slots
    assert 1.1 * 100 * 2 / 4 > 55
    assert math.ceil(1.1 * 100 * 2 / 4) == 56
    assert expert_capacity(100, 4, 2, 1.1) == 55


def test_capacity_none_is_dropless():
    assert expert_capacity(100, 4, 2, None) is None


@pytest.mark.parametrize("cf", [0, 0.0, -1.0, float("nan")])
def test_capacity_factor_must_be_positive(cf):
    with pytest.raises(ValueError, match="capacity_factor"):
        expert_capacity(100, 4, 2, cf)
    with pytest.raises(ValueError, match="capacity_factor"):
        MoELayer(8, 16, 4, 2, capacity_factor=cf)


@pytest.mark.parametrize("cf", ["1.25", [1.0], True])
def test_capacity_factor_must_be_a_number(cf):
    with pytest.raises(TypeError, match="capacity_factor"):
        expert_capacity(100, 4, 2, cf)
    with pytest.raises(TypeError, match="capacity_factor"):
        MoELayer(8, 16, 4, 2, capacity_factor=cf)


def test_unknown_drop_policy():
    with pytest.raises(ValueError, match="drop_policy.*'position'.*'priority'.*'random'"):
        MoELayer(8, 16, 4, 2, capacity_factor=1.0, drop_policy="random")
    indices = Tensor(np.zeros((4, 2), np.int32))
    weights = Tensor(np.full((4, 2), 0.5, np.float32))
    with pytest.raises(ValueError, match="drop_policy"):
        keep_mask(indices, weights, 4, 2, "largest")


# ------------------------------------------------------------------ keep mask vs the NumPy queue

@pytest.mark.parametrize("policy", ["position", "priority"])
@pytest.mark.parametrize("seed", range(6))
def test_keep_mask_matches_numpy_queue(policy, seed):
    rng = np.random.default_rng(seed)
    n, e, k = int(rng.integers(5, 60)), int(rng.integers(2, 9)), 2
    k = min(k, e)
    # skewed choices so that some experts overflow; distinct experts per token like a real top-k
    pref = rng.dirichlet(np.full(e, 0.4))
    indices = np.stack([rng.choice(e, size=k, replace=False, p=pref) for _ in range(n)]).astype(np.int32)
    weights = rng.random((n, k)).astype(np.float32)
    for cf in (0.25, 0.5, 1.0, 1.5):
        capacity = expert_capacity(n, e, k, cf)
        got = keep_mask(Tensor(indices), Tensor(weights), e, capacity, policy).asnumpy()
        want = keep_numpy(indices, weights, e, cf, policy)
        np.testing.assert_array_equal(got, want, err_msg=f"policy={policy} cf={cf}")
        kept = np.bincount(indices[got], minlength=e)
        assert (kept <= capacity).all()
        # an expert under capacity keeps everything that was routed to it
        load = np.bincount(indices.ravel(), minlength=e)
        assert (kept == np.minimum(load, capacity)).all()


def test_position_policy_serves_first_choices_first():
    # 4 tokens all choose expert 0 first and expert 1 second; capacity 2 per expert (cf 1.0, E 4, K 2)
    indices = Tensor(np.array([[0, 1], [0, 1], [0, 1], [0, 1]], np.int32))
    weights = Tensor(np.array([[0.6, 0.4], [0.9, 0.1], [0.7, 0.3], [0.8, 0.2]], np.float32))
    keep = keep_mask(indices, weights, 4, 2, "position").asnumpy()
    np.testing.assert_array_equal(keep, [[True, True], [True, True], [False, False], [False, False]])
    keep = keep_mask(indices, weights, 4, 2, "priority").asnumpy()
    # V-MoE's batch-prioritised routing: tokens ranked by their largest weight (1: 0.9, 3: 0.8, 2: 0.7, 0: 0.6)
    # are served choice by choice, so the two most confident tokens keep both slots
    np.testing.assert_array_equal(keep, [[False, False], [True, True], [False, False], [True, True]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_priority_policy_equals_the_plain_queue_with_ties(seed):
    rng = np.random.default_rng(seed)
    n, e, k = 40, 5, 2
    indices = np.stack([rng.choice(e, k, replace=False) for _ in range(n)]).astype(np.int32)
    scores = rng.choice([0.2, 0.5, 0.9], size=(n, k)).astype(np.float32)  # many exact ties: order by token
    got = keep_mask(Tensor(indices), Tensor(scores), e, 6, "priority").asnumpy()
    np.testing.assert_array_equal(got, keep_numpy(indices, scores, e, 6 * e / (n * k), "priority"))


# ------------------------------------------------------------------ what the layer does with it

def test_routing_reports_counts_and_drops():
    layer = MoELayer(16, 32, 4, 2, capacity_factor=0.5, seed=3)
    routing = layer.route(rows(40, 16))
    assert routing.capacity == 10
    load, kept = routing.load(), routing.kept()
    assert load.sum() == 80
    assert (kept == np.minimum(load, 10)).all()
    assert routing.dropped() == load.sum() - kept.sum() > 0


def test_dropped_slot_contributes_zero():
    layer = MoELayer(16, 32, 4, 2, capacity_factor=0.5, seed=3)
    x = rows(40, 16, seed=1)
    routing = layer.route(x)
    keep = routing.keep.asnumpy()
    assert not keep.all()
    # its combine weight is zero ...
    assert (routing.weights.asnumpy()[~keep] == 0).all()
    # ... and the output equals the sum over kept slots only, computed by hand in float64
    w = layer.experts.numpy_weights()
    idx, wts, xs = routing.indices.asnumpy(), routing.weights.asnumpy(), x.asnumpy().astype(np.float64)
    want = np.zeros_like(xs)
    for t in range(40):
        for j in range(2):
            if keep[t, j]:
                e = idx[t, j]
                g = xs[t] @ w["w_gate"][e]
                want[t] += wts[t, j] * ((g / (1 + np.exp(-g))) * (xs[t] @ w["w_up"][e])) @ w["w_down"][e]
    for path in ("loop", "dense", "sorted", "capacity"):
        np.testing.assert_allclose(layer(x, dispatch=path).asnumpy(), want, atol=2e-5, err_msg=path)
    # a token whose slots are all dropped leaves the layer as zeros
    gone = np.flatnonzero(~keep.any(1))
    if gone.size:
        assert np.abs(layer(x, dispatch="capacity").asnumpy()[gone]).max() == 0


CPU_PATHS = [p for p in DISPATCH if p != "fused"]


@pytest.mark.parametrize("policy", ["position", "priority"])
@pytest.mark.parametrize("cf", [None, 1.0, 0.3])
@pytest.mark.parametrize("activation", ["swiglu", "relu"])
def test_every_path_matches_numpy_reference_with_capacity(policy, cf, activation):
    layer = MoELayer(16, 24, 4, 2, activation=activation, capacity_factor=cf, drop_policy=policy, seed=5)
    x = Tensor(np.random.default_rng(2).standard_normal((3, 11, 16)).astype(np.float32))
    want = layer_forward_numpy(layer, x)
    for path in CPU_PATHS:
        got = layer(x, dispatch=path).asnumpy()
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4, err_msg=f"{path} cf={cf} {policy}")
    # "fused" refuses to run on a CPU (no Ascend operators); its pipeline runs with the NumPy kernels
    routing = layer.route(x)
    e = layer.experts
    got = fused_moe(x.reshape(-1, 16), routing.indices, routing.weights, e.w_gate, e.w_up, e.w_down,
                    kernels=REFERENCE_KERNELS).asnumpy()
    np.testing.assert_allclose(got.reshape(x.shape), want, atol=2e-5, rtol=1e-4, err_msg="fused (reference)")
