"""The core MoE layer: every dispatch path equals the independent NumPy reference and each other."""

import mindspore as ms
import numpy as np
import pytest
from conftest import path_tolerance
from mindspore import ops

from moe_lab import Expert, Experts, MoELayer, SoftmaxRouter
from moe_lab.ascend.backend import current_backend
from moe_lab.core.reference import layer_forward_numpy, route_numpy

PATHS = ["loop", "dense", "sorted"]


@pytest.mark.parametrize("activation", ["swiglu", "relu"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", [(7, 16), (2, 5, 16)])
def test_paths_match_numpy_reference(make_x, activation, normalize, shape):
    layer = MoELayer(16, 24, 4, 2, activation=activation, norm_topk_prob=normalize, seed=1)
    x = make_x(*shape, seed=2)
    ref = layer_forward_numpy(layer, x)
    for path in PATHS:
        out = layer(x, dispatch=path)
        assert out.shape == x.shape
        np.testing.assert_allclose(out.asnumpy(), ref, atol=1e-5, rtol=0, err_msg=path)


@pytest.mark.parametrize("top_k", [1, 2, 3, 6])
def test_paths_agree_for_every_top_k(make_x, top_k):
    layer = MoELayer(8, 12, 6, top_k, seed=3)
    x = make_x(9, 8, seed=4)
    outs = [layer(x, dispatch=p).asnumpy() for p in PATHS]
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(outs[0], layer_forward_numpy(layer, x), atol=1e-5, rtol=0)


def test_default_path_follows_the_board(make_x):
    """"sorted" on a CPU (and the 310P/310B boards), "fused" on Atlas A2/A3, real or emulated."""
    layer = MoELayer(8, 12, 4, 2)
    x = make_x(5, 8)
    backend = current_backend()
    assert layer.default_dispatch == ("fused" if backend.tier == "fused" else "sorted")
    np.testing.assert_allclose(layer(x).asnumpy(), layer(x, dispatch=layer.default_dispatch).asnumpy(), atol=0)
    np.testing.assert_allclose(layer(x).asnumpy(), layer_forward_numpy(layer, x), atol=path_tolerance(), rtol=0)


def test_route_matches_numpy_and_weights_sum_to_one(make_x):
    layer = MoELayer(8, 12, 5, 2, seed=5)
    x = make_x(11, 8, seed=6)
    routing = layer.route(x)
    probs, indices, weights = route_numpy(x.asnumpy().astype(np.float64), layer.router.weight.asnumpy(), 2)
    np.testing.assert_array_equal(routing.indices.asnumpy(), indices)
    np.testing.assert_allclose(routing.probs.asnumpy(), probs, atol=1e-6)
    np.testing.assert_allclose(routing.weights.asnumpy(), weights, atol=1e-6)
    np.testing.assert_allclose(routing.weights.asnumpy().sum(-1), 1.0, atol=1e-6)
    assert routing.load().sum() == 22 and routing.dropped() == 0 and routing.capacity is None


def test_selection_bias_changes_choice_not_weights(make_x):
    layer = MoELayer(8, 12, 4, 1, norm_topk_prob=False, seed=7)
    x = make_x(6, 8, seed=8)
    layer.router.selection_bias.set_data(ms.Tensor(np.array([10.0, 0, 0, 0], np.float32)))
    routing = layer.route(x)
    assert (routing.indices.asnumpy() == 0).all()  # the bias forces expert 0 to be chosen
    np.testing.assert_allclose(routing.weights.asnumpy()[:, 0], routing.probs.asnumpy()[:, 0], atol=1e-7)
    np.testing.assert_allclose(layer(x, dispatch="loop").asnumpy(), layer_forward_numpy(layer, x), atol=1e-5)


def test_token_locality(make_x):
    """An MoE layer acts on each token alone: changing token 1 must not change token 0's output."""
    layer = MoELayer(8, 12, 4, 2, seed=9)
    x = make_x(3, 8, seed=10).asnumpy()
    y0 = layer(ms.Tensor(x)).asnumpy()
    x[1] += 5.0
    y1 = layer(ms.Tensor(x)).asnumpy()
    # equal up to float rounding: a grouped matmul may sum a row differently when its block changes size
    np.testing.assert_allclose(y0[[0, 2]], y1[[0, 2]], atol=1e-6, rtol=0)
    assert not np.allclose(y0[1], y1[1], atol=1e-2)


def test_experts_bank_equals_single_expert(make_x):
    bank = Experts(3, 8, 12, "swiglu", seed=11)
    single = Expert(8, 12, "swiglu", seed=12)
    for name in ("w_gate", "w_up", "w_down"):
        getattr(single, name).set_data(getattr(bank, name)[2])
    x = make_x(4, 8)
    np.testing.assert_allclose(single(x).asnumpy(), bank.expert(2, x).asnumpy(), atol=1e-6)
    np.testing.assert_allclose(bank.all_experts(x)[2].asnumpy(), bank.expert(2, x).asnumpy(), atol=1e-6)


def test_same_seed_same_weights_different_seed_different_weights():
    a, b, c = MoELayer(8, 12, 4, seed=1), MoELayer(8, 12, 4, seed=1), MoELayer(8, 12, 4, seed=2)
    np.testing.assert_array_equal(a.experts.w_up.asnumpy(), b.experts.w_up.asnumpy())
    assert not np.allclose(a.experts.w_up.asnumpy(), c.experts.w_up.asnumpy())
    assert not np.allclose(a.router.weight.asnumpy(), a.experts.w_up.asnumpy()[0, :, :4])


def _grads(layer, x, path):
    params = layer.trainable_params()

    def loss(x):
        return (layer(x, dispatch=path) ** 2).sum()

    grads = ms.grad(loss, grad_position=None, weights=params)(x)
    return {p.name: g.asnumpy() for p, g in zip(params, grads, strict=True)}


def test_gradients_reach_router_and_chosen_experts_only(make_x):
    layer = MoELayer(8, 12, 8, 2, seed=13)
    x = make_x(3, 8, seed=14)
    grads = {p: _grads(layer, x, p) for p in PATHS}
    assert "selection_bias" not in " ".join(grads["sorted"])  # no gradient: updated by a rule
    for path, g in grads.items():
        router = next(v for k, v in g.items() if k.endswith("router.weight"))
        assert np.abs(router).sum() > 0, path
        up = next(v for k, v in g.items() if k.endswith("w_up"))
        used = set(layer.route(x).indices.asnumpy().ravel().tolist())
        assert len(used) < 8  # some experts unused, so the check below sees both cases
        for e in range(8):
            assert (np.abs(up[e]).sum() > 0) == (e in used), (path, e)
    for path in ("loop", "dense"):
        for name, g in grads[path].items():
            np.testing.assert_allclose(g, grads["sorted"][name], atol=1e-5, err_msg=f"{path} {name}")


def test_top1_with_renormalisation_gives_the_router_no_gradient(make_x):
    """Renormalising a single weight makes it exactly 1: the task loss cannot train the router
    (why Switch keeps the raw probability for top-1)."""
    x = make_x(5, 8, seed=18)
    for normalize, expect_zero in ((True, True), (False, False)):
        layer = MoELayer(8, 12, 4, 1, norm_topk_prob=normalize, seed=13)
        router = next(v for k, v in _grads(layer, x, "sorted").items() if k.endswith("router.weight"))
        # zero up to float32 rounding of w / w (about 1e-10 here) vs order 1 when not renormalised
        assert (np.abs(router).max() < 1e-6) == expect_zero


def test_router_gradient_matches_finite_difference(make_x):
    """The router gradient from MindSpore equals a central difference of the float64 NumPy reference."""
    layer = MoELayer(6, 8, 3, 2, seed=15)
    x = make_x(4, 6, seed=16)
    g = next(v for k, v in _grads(layer, x, "sorted").items() if k.endswith("router.weight"))
    w = layer.router.weight.asnumpy().astype(np.float64)
    eps = 1e-6
    for i, j in [(0, 0), (2, 1), (5, 2)]:
        vals = []
        for sign in (1, -1):
            w2 = w.copy()
            w2[i, j] += sign * eps
            layer.router.weight.set_data(ms.Tensor(w2.astype(np.float32)))
            from moe_lab.core.reference import moe_forward_numpy

            ew = layer.experts.numpy_weights()
            y = moe_forward_numpy(x.asnumpy(), w2, ew["w_gate"], ew["w_up"], ew["w_down"], 2)
            vals.append((y ** 2).sum())
        layer.router.weight.set_data(ms.Tensor(w.astype(np.float32)))
        assert abs((vals[0] - vals[1]) / (2 * eps) - g[i, j]) < 1e-3 * max(1.0, abs(g[i, j]))


def test_layer_compiles_with_jit_dense(make_x):
    layer = MoELayer(8, 12, 4, 2, seed=17)
    x = make_x(6, 8)

    @ms.jit
    def forward(x):
        return layer(x, dispatch="dense")

    np.testing.assert_allclose(forward(x).asnumpy(), layer(x, dispatch="sorted").asnumpy(), atol=1e-5)


def test_compiled_gradients_equal_eager_gradients_through_two_layers(make_x):
    """Training compiles the layer: its gradients must equal eager ones, for router and experts, even
    with two layers stacked and the routing probabilities in the loss (a ``Routing`` dataclass inside a
    compiled graph would silently zero them in MindSpore 2.10)."""

    class TwoLayers(ms.nn.Cell):
        def __init__(self):
            super().__init__()
            self.a, self.b = MoELayer(8, 12, 4, 2, seed=19), MoELayer(8, 12, 4, 2, seed=20)

        def construct(self, x):
            y, _, probs, _, _, _ = self.a.forward_tensors(x)
            return (self.b(y, "dense") ** 2).sum() + (probs ** 2).sum()

    model = TwoLayers()
    params = model.trainable_params()
    grad_fn = ms.grad(model, grad_position=None, weights=params)

    @ms.jit
    def compiled(x):
        return grad_fn(x)

    x = make_x(6, 8, seed=21)
    for p, eager, jitted in zip(params, grad_fn(x), compiled(x), strict=True):
        assert np.abs(eager.asnumpy()).sum() > 0, p.name
        np.testing.assert_allclose(jitted.asnumpy(), eager.asnumpy(), atol=1e-5, err_msg=p.name)


# ---- bad input: each error names the argument, its value and what is allowed ----

@pytest.mark.parametrize("kwargs, error, words", [
    (dict(top_k=0), ValueError, ["top_k", ">= 1", "0"]),
    (dict(top_k=5), ValueError, ["top_k", "<= 4", "5"]),
    (dict(top_k=2.0), TypeError, ["top_k", "integer", "2.0"]),
    (dict(hidden_size=0), ValueError, ["hidden_size", ">= 1"]),
    (dict(intermediate_size=-3), ValueError, ["intermediate_size", "-3"]),
    (dict(num_experts=0, top_k=1), ValueError, ["num_experts", ">= 1"]),
    (dict(activation="gelu"), ValueError, ["activation", "'swiglu'", "'gelu'"]),
    (dict(capacity_factor=0), ValueError, ["capacity_factor", "> 0.0"]),
    (dict(capacity_factor="1.25"), TypeError, ["capacity_factor", "'1.25'"]),
    (dict(drop_policy="random"), ValueError, ["drop_policy", "'position'", "'random'"]),
])
def test_layer_rejects_bad_arguments(kwargs, error, words):
    args = dict(hidden_size=8, intermediate_size=12, num_experts=4, top_k=2) | kwargs
    with pytest.raises(error) as info:
        MoELayer(**args)
    for word in words:
        assert word in str(info.value)


def test_router_rejects_bad_arguments():
    with pytest.raises(ValueError, match="top_k must be <= 3, got 4"):
        SoftmaxRouter(8, 3, 4)
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        SoftmaxRouter(8, 3, 0)
    with pytest.raises(ValueError, match="hidden_size must be >= 1, got 0"):
        SoftmaxRouter(0, 3, 1)
    with pytest.raises(TypeError, match="norm_topk_prob must be True or False"):
        SoftmaxRouter(8, 3, 1, norm_topk_prob="yes")


@pytest.mark.parametrize("x, error, words", [
    (np.zeros((4, 8), np.float32), TypeError, ["x must be a mindspore.Tensor", "ndarray"]),
    (ms.Tensor(np.zeros((4, 8), np.int32)), TypeError, ["floating dtype", "Int32"]),
    (ms.Tensor(np.zeros(8, np.float32)), ValueError, ["(tokens, hidden_size)", "(8,)"]),
    (ms.Tensor(np.zeros((1, 2, 3, 8), np.float32)), ValueError, ["(batch, seq, hidden_size)", "(1, 2, 3, 8)"]),
    (ms.Tensor(np.zeros((4, 7), np.float32)), ValueError, ["hidden_size=8", "(4, 7)"]),
])
def test_layer_rejects_bad_input(x, error, words):
    layer = MoELayer(8, 12, 4, 2)
    with pytest.raises(error) as info:
        layer(x)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(error):
        layer.route(x)


def test_layer_rejects_unknown_dispatch(make_x):
    with pytest.raises(ValueError, match=r"dispatch must be one of .*'sorted'.*got 'fast'"):
        MoELayer(8, 12, 4, 2)(make_x(3, 8), dispatch="fast")


def test_input_dtype_must_match_the_weights(make_x):
    layer = MoELayer(8, 12, 4, 2)
    with pytest.raises(TypeError, match="x has dtype Float16 but the layer's weights are Float32"):
        layer(ops.cast(make_x(3, 8), ms.float16))


@pytest.mark.parametrize("capacity_factor", [None, 1.25])
def test_an_empty_batch_gives_an_empty_output_on_every_path(capacity_factor):
    """0 tokens: every dispatch path returns a (0, hidden_size) output and an empty routing, no error."""
    layer = MoELayer(8, 12, 4, 2, capacity_factor=capacity_factor, n_shared_experts=1, seed=3)
    paths = ["loop", "dense", "sorted", "capacity"] + (["fused"] if current_backend().can_run_fused else [])
    for shape in ((0, 8), (2, 0, 8)):
        x = ms.Tensor(np.zeros(shape, np.float32))
        for path in paths:
            out = layer(x, dispatch=path)
            assert out.shape == shape, path
        routing = layer.route(x)
        assert routing.indices.shape == (0, 2) and routing.load().sum() == 0 and routing.dropped() == 0
