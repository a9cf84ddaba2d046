"""The static-shape capacity path (``moe_lab.core.static``) and the compiled layer (``moe_lab.core.compiled``)."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

import moe_lab
from moe_lab.core.compiled import CompiledMoE, mean_square
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import layer_forward_numpy
from moe_lab.core.static import (
    PAD_MULTIPLE,
    buffer_fill,
    capacity_moe,
    dispatch_capacity,
    dispatch_plan,
    dropless_capacity,
    padded_capacity,
)

moe_lab.setup(seed=0)


def rand(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# ------------------------------------------------------------------ padded capacity

def test_padded_capacity_rounds_up_and_caps():
    assert padded_capacity(1087, 4096) == 1088
    assert padded_capacity(1089, 4096) == 1088 + PAD_MULTIPLE
    assert padded_capacity(1, 4096) == PAD_MULTIPLE
    assert padded_capacity(0, 4096) == 1
    assert padded_capacity(7, 10) == 10  # an expert never sees a token twice: N rows always suffice
    assert padded_capacity(17, 100, multiple=8) == 24


@pytest.mark.parametrize("args, err", [((-1, 10), ValueError), ((3, 0), ValueError), ((2.5, 10), TypeError),
                                       ((3, 10, 0), ValueError)])
def test_padded_capacity_bad_input(args, err):
    with pytest.raises(err):
        padded_capacity(*args)


# ------------------------------------------------------------------ the plan, by hand

def test_dispatch_plan_tiny_example():
    # token 0 -> experts (0, 1), token 1 -> (1, 0), token 2 -> (1, 2); slots j = t*K + k
    indices = Tensor(np.array([[0, 1], [1, 0], [1, 2]], np.int32))
    keep = Tensor(np.ones((3, 2), bool))
    buffer_token, slot_row = dispatch_plan(indices, keep, num_experts=3, capacity=3)
    # expert 0 gets tokens 0, 1 (+1 padding row), expert 1 gets 0, 1, 2, expert 2 gets 2 (+2 padding)
    np.testing.assert_array_equal(buffer_token.asnumpy(), [0, 1, 0, 0, 1, 2, 2, 0, 0])
    # slot (t, k) -> its row e*C + place in the buffer
    np.testing.assert_array_equal(slot_row.asnumpy(), [0, 3, 4, 1, 5, 6])


def test_dispatch_plan_with_a_dropped_slot():
    indices = Tensor(np.array([[0, 1], [1, 0], [1, 2]], np.int32))
    keep = Tensor(np.array([[True, True], [True, True], [False, True]]))
    buffer_token, slot_row = dispatch_plan(indices, keep, num_experts=3, capacity=2)
    np.testing.assert_array_equal(buffer_token.asnumpy(), [0, 1, 0, 1, 2, 0])
    np.testing.assert_array_equal(slot_row.asnumpy(), [0, 2, 3, 1, 0, 4])  # the dropped slot points at row 0


def test_dispatch_plan_is_a_permutation_of_kept_slots():
    rng = np.random.default_rng(4)
    n, e, k = 50, 6, 2
    indices = np.stack([rng.choice(e, size=k, replace=False) for _ in range(n)]).astype(np.int32)
    keep = rng.random((n, k)) > 0.2
    capacity = int(np.bincount(indices[keep], minlength=e).max())
    buffer_token, slot_row = dispatch_plan(Tensor(indices), Tensor(keep), e, capacity)
    rows = slot_row.asnumpy()[keep.reshape(-1)]
    assert len(set(rows.tolist())) == rows.size  # no two kept slots share a row
    tokens = np.repeat(np.arange(n), k)[keep.reshape(-1)]
    np.testing.assert_array_equal(buffer_token.asnumpy()[rows], tokens)  # each row holds its slot's token
    np.testing.assert_array_equal(rows // capacity, indices[keep])  # ... in its expert's block


# ------------------------------------------------------------------ the path against the others

@pytest.mark.parametrize("activation", ["swiglu", "relu"])
@pytest.mark.parametrize("cf", [None, 1.25, 0.5])
def test_capacity_path_matches_dense_and_reference(activation, cf):
    layer = MoELayer(16, 32, 4, 2, activation=activation, capacity_factor=cf, seed=1)
    x = rand(2, 17, 16, seed=2)
    got = layer(x, dispatch="capacity").asnumpy()
    np.testing.assert_allclose(got, layer(x, dispatch="dense").asnumpy(), atol=1e-5)
    np.testing.assert_allclose(got, layer_forward_numpy(layer, x), atol=2e-5, rtol=1e-4)


def test_dropless_capacity_is_padded_max_load():
    layer = MoELayer(16, 32, 4, 2, seed=1)
    routing = layer.route(rand(40, 16))
    cap = dropless_capacity(routing)
    assert cap == padded_capacity(int(routing.load().max()), 40)
    assert cap >= routing.load().max()
    fill = buffer_fill(routing)
    np.testing.assert_allclose(fill, routing.load() / cap)
    assert fill.max() <= 1.0


def test_capacity_moe_with_too_small_capacity_is_not_silently_used():
    # capacity_moe trusts its caller: with fewer rows than kept slots the plan would overlap rows,
    # so dispatch_capacity always derives the capacity from the routing
    layer = MoELayer(16, 32, 4, 2, seed=1)
    x = rand(40, 16)
    routing = layer.route(x)
    assert routing.capacity is None
    np.testing.assert_allclose(dispatch_capacity(x, routing, layer.experts).asnumpy(),
                               layer(x, dispatch="dense").asnumpy(), atol=1e-5)


def test_capacity_moe_compiles_with_jit():
    layer = MoELayer(16, 32, 4, 2, capacity_factor=1.0, seed=1)
    x = rand(30, 16)
    r = layer.route(x)
    ex = layer.experts

    def run(x, indices, weights, keep):
        return capacity_moe(x, indices, weights, keep, ex.w_gate, ex.w_up, ex.w_down, r.capacity)

    got = ms.jit(run)(x, r.indices, r.weights, r.keep).asnumpy()
    np.testing.assert_allclose(got, layer(x, dispatch="dense").asnumpy(), atol=1e-5)


# ------------------------------------------------------------------ the compiled layer

@pytest.mark.parametrize("dispatch", ["capacity", "dense"])
@pytest.mark.parametrize("cf", [None, 0.75])
def test_compiled_forward_and_gradients(dispatch, cf):
    layer = MoELayer(16, 32, 4, 2, activation="relu", capacity_factor=cf, seed=4)
    x = rand(3, 10, 16, seed=5)
    fast = CompiledMoE(layer, dispatch)
    np.testing.assert_allclose(fast(x).asnumpy(), layer(x, dispatch="dense").asnumpy(), atol=1e-5)
    if cf is None and dispatch == "capacity":
        assert fast.last_capacity == padded_capacity(int(layer.route(x).load().max()), 30)
    else:
        assert fast.last_capacity is None
    loss, grads = fast.value_and_grad(x)

    def eager_loss(x):
        return mean_square(layer(x, dispatch="dense"))

    want_loss, want_grads = ms.value_and_grad(eager_loss, None, layer.trainable_params())(x)
    assert abs(float(loss) - float(want_loss)) < 1e-6
    assert len(grads) == len(layer.trainable_params()) == 3
    for g, w, p in zip(grads, want_grads, layer.trainable_params(), strict=True):
        assert np.abs(g.asnumpy()).max() > 0, f"{p.name}: zero gradient"
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), atol=1e-6, err_msg=p.name)


def test_compiled_follows_in_place_weight_updates():
    layer = MoELayer(16, 32, 4, 2, seed=4)
    fast = CompiledMoE(layer, "capacity")
    x = rand(12, 16)
    before = fast(x).asnumpy()
    ops.assign(layer.experts.w_down, layer.experts.w_down * 2)  # in place, like an optimizer step
    np.testing.assert_allclose(fast(x).asnumpy(), 2 * before, rtol=1e-5, atol=1e-6)
    # an optimizer step on the compiled gradients is seen by the next compiled call
    _, grads = fast.value_and_grad(x)
    nn.SGD(layer.trainable_params(), learning_rate=0.5)(grads)
    np.testing.assert_allclose(fast(x).asnumpy(), layer(x, dispatch="dense").asnumpy(), atol=1e-6)


@pytest.mark.parametrize("shape", [(0, 16), (2, 0, 16)])
@pytest.mark.parametrize("cf", [None, 1.25])
def test_capacity_path_on_an_empty_batch(shape, cf):
    layer = MoELayer(16, 32, 4, 2, capacity_factor=cf, seed=1)
    y = layer(Tensor(np.zeros(shape, np.float32)), dispatch="capacity")
    assert y.shape == shape and y.dtype == ms.float32


@pytest.mark.parametrize("dispatch", ["capacity", "dense"])
@pytest.mark.parametrize("cf", [None, 1.25])
def test_compiled_on_an_empty_batch(dispatch, cf):
    layer = MoELayer(16, 32, 4, 2, capacity_factor=cf, seed=1)
    fast = CompiledMoE(layer, dispatch)
    for shape in ((0, 16), (2, 0, 16)):
        x = Tensor(np.zeros(shape, np.float32))
        assert fast(x).shape == shape  # like every eager path
        loss, grads = fast.value_and_grad(x)
        assert float(loss) == 0.0  # no token, no loss (a sum over nothing), and no gradient
        assert [g.shape for g in grads] == [p.shape for p in layer.trainable_params()]
        assert all(not np.abs(g.asnumpy()).any() for g in grads)


def test_compiled_bad_dispatch():
    layer = MoELayer(16, 32, 4, 2)
    with pytest.raises(ValueError, match="dispatch.*'capacity'.*'dense'.*'sorted'"):
        CompiledMoE(layer, "sorted")
