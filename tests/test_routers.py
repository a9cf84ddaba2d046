"""The routers (moe_lab.core.routers) and MoELayer.from_config: softmax and sigmoid scores, renormalisation and
scaling, group-limited selection of both kinds, the selection bias, float32 routing, bad input, and that adding a
router is one class plus its NumPy twin."""

import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from moe_lab.core import reference
from moe_lab.core.config import moe_block_config
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import layer_forward_numpy, route_logits_numpy, select_numpy
from moe_lab.core.routers import ROUTERS, Router, SigmoidRouter, SoftmaxRouter, make_router

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"


def _x(n=24, h=16, seed=0):
    return Tensor(np.random.default_rng(seed).normal(size=(n, h)).astype(np.float32))


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
@pytest.mark.parametrize("method, n_group, topk_group", [("greedy", 1, 1), ("group_limited_greedy", 4, 2),
                                                          ("noaux_tc", 4, 2), ("noaux_tc", 1, 1)])
@pytest.mark.parametrize("norm, scale", [(True, 1.0), (True, 2.5), (False, 16.0)])
def test_router_equals_its_numpy_twin(scoring, method, n_group, topk_group, norm, scale):
    router = make_router(scoring, 16, 16, 4, norm_topk_prob=norm, routed_scaling_factor=scale, topk_method=method,
                         n_group=n_group, topk_group=topk_group, seed=3)
    bias = np.random.default_rng(1).normal(size=16).astype(np.float32) * 0.05
    router.selection_bias.set_data(Tensor(bias))
    x = _x()
    logits, probs, indices, weights = router.route_tensors(x)
    want_probs, want_idx, want_w = route_logits_numpy(x.asnumpy().astype(np.float64) @ router.weight.asnumpy(), 4,
                                                      scoring_func=scoring, norm_topk_prob=norm,
                                                      routed_scaling_factor=scale, topk_method=method,
                                                      n_group=n_group, topk_group=topk_group, selection_bias=bias)
    np.testing.assert_array_equal(indices.asnumpy(), want_idx)
    np.testing.assert_allclose(weights.asnumpy(), want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.asnumpy(), want_probs, atol=1e-6)
    assert logits.dtype == probs.dtype == weights.dtype == ms.float32 and indices.dtype == ms.int32


def test_group_scores_differ_between_v2_and_v3():
    """One token whose best group by its single best expert (V2's max) is not its best by the sum of its two
    best (V3's noaux_tc)."""
    choice = np.array([[0.9, 0.0, 0.0, 0.0, 0.6, 0.6, 0.0, 0.0]])  # group 0: max .9, top-2 sum .9; group 1: .6, 1.2
    assert set(select_numpy(choice, 1, "group_limited_greedy", 4, 1)[0]) == {0}
    assert set(select_numpy(choice, 1, "noaux_tc", 4, 1)[0]) & {4, 5}
    for method, expected in (("group_limited_greedy", [0]), ("noaux_tc", [4])):
        router = SoftmaxRouter(8, 8, 1, topk_method=method, n_group=4, topk_group=1)
        chosen = router.select(Tensor(choice.astype(np.float32)))
        assert chosen.asnumpy()[0].tolist() == expected, method


def test_the_selection_bias_chooses_but_never_weighs():
    router = SigmoidRouter(16, 8, 2, norm_topk_prob=False, seed=1)
    x = _x(h=16)
    _, _, before, w_before = router.route_tensors(x)
    router.selection_bias.set_data(Tensor(np.array([5.0, 0, 0, 0, 0, 0, 0, 0], np.float32)))
    logits, _, after, w_after = router.route_tensors(x)
    assert (after.asnumpy() == 0).any(1).all()  # every token now picks expert 0
    np.testing.assert_allclose(w_after.asnumpy()[:, 0], ops.sigmoid(logits).asnumpy()[:, 0], rtol=1e-6)  # unbiased
    assert not router.selection_bias.requires_grad


def test_routing_is_float32_whatever_the_input_dtype():
    router = SoftmaxRouter(16, 8, 2, seed=1)
    x = _x()
    full = router.route_tensors(x)
    half = router.route_tensors(x.astype(ms.float16))
    assert half[0].dtype == ms.float32 and half[3].dtype == ms.float32
    np.testing.assert_allclose(half[0].asnumpy(), full[0].asnumpy(), atol=5e-3)  # only the input was rounded


def test_adding_a_router_is_one_class_and_its_numpy_twin(monkeypatch):
    """A made-up router (softplus scores, renormalised) plugs in without touching any other code: every path and
    the compiled one use it, and the NumPy reference checks it."""

    class SoftplusRouter(Router):
        scoring_func = "softplus"

        def score(self, logits):
            return ops.log(1 + ops.exp(logits))

        def balance_probs(self, scores):
            return scores / scores.sum(-1, keepdims=True)

    monkeypatch.setitem(ROUTERS, "softplus", SoftplusRouter)
    monkeypatch.setitem(reference.SCORE_FUNCTIONS, "softplus", lambda z: np.log1p(np.exp(z)))
    monkeypatch.setitem(reference.BALANCE_PROBS, "softplus", lambda s: s / s.sum(-1, keepdims=True))
    layer = MoELayer(16, 8, 6, 2, scoring_func="softplus", n_shared_experts=1, seed=2)
    assert isinstance(layer.router, SoftplusRouter)
    x = _x()
    want = layer_forward_numpy(layer, x)
    for path in ("loop", "dense", "sorted", "capacity"):
        np.testing.assert_allclose(layer(x, dispatch=path).asnumpy(), want, atol=1e-5, err_msg=path)


def test_a_router_can_be_passed_in():
    router = SigmoidRouter(16, 8, 2, routed_scaling_factor=2.5, seed=4)
    layer = MoELayer(16, 8, 8, 2, router=router)
    assert layer.router is router
    with pytest.raises(ValueError, match="router has hidden_size=16, num_experts=8, top_k=2; the layer has 16, 8, 3"):
        MoELayer(16, 8, 8, 3, router=router)
    with pytest.raises(TypeError, match="router must be a moe_lab Router"):
        MoELayer(16, 8, 8, 2, router="sigmoid")


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(scoring_func="relu"), ValueError, "scoring_func must be one of 'softmax', 'sigmoid'; got 'relu'"),
    (dict(topk_method="random", n_group=2), ValueError, "topk_method must be one of 'greedy', 'group_limited_greedy'"),
    (dict(n_group=4, topk_group=5), ValueError, "topk_group must be <= n_group=4, got topk_group=5"),
    (dict(n_group=3), ValueError, "n_group must divide the number of experts 16, got n_group=3"),
    (dict(n_group=4, topk_group=1, top_k=5), ValueError, "top_k must be <= the 4 experts that topk_group=1 of"),
    (dict(topk_method="greedy", n_group=4), ValueError, "topk_method='greedy' chooses among all experts"),
    (dict(topk_method="noaux_tc", n_group=16, topk_group=8), ValueError, "each of the n_group=16 groups needs >= 2"),
    (dict(routed_scaling_factor=0.0), ValueError, "routed_scaling_factor must be > 0.0, got 0.0"),
    (dict(routed_scaling_factor=-2.5), ValueError, "routed_scaling_factor must be > 0.0, got -2.5"),
    (dict(shared_expert_intermediate_size=0), ValueError, "shared_expert_intermediate_size must be >= 1, got 0"),
    (dict(n_shared_experts=-1), ValueError, "n_shared_experts must be >= 0, got -1"),
    (dict(norm_topk_prob=1), TypeError, "norm_topk_prob must be True or False, got 1"),
])
def test_bad_router_settings_are_named(kwargs, error, words):
    kwargs = {"top_k": 2, **kwargs}
    top_k = kwargs.pop("top_k")
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        MoELayer(16, 8, 16, top_k, **kwargs)


def _config(model_id):
    return json.loads((MODELS / model_id / "config.json").read_text())


def test_from_config_reads_each_family():
    v3 = moe_block_config(_config("deepseek-v3"))
    assert (v3.scoring_func, v3.topk_method, v3.n_group, v3.topk_group, v3.routed_scaling_factor) == \
        ("sigmoid", "noaux_tc", 8, 4, 2.5)
    pangu = moe_block_config(_config("openpangu-ultra-moe-718b"))
    assert (pangu.scoring_func, pangu.topk_method, pangu.norm_topk_prob, pangu.n_shared_experts) == \
        ("sigmoid", "greedy", True, 1) and not pangu.selection_bias
    v2 = moe_block_config(_config("deepseek-v2"))
    assert (v2.scoring_func, v2.topk_method, v2.routed_scaling_factor, v2.norm_topk_prob) == \
        ("softmax", "group_limited_greedy", 16.0, False)
    qwen = moe_block_config(_config("qwen1.5-moe-a2.7b"))
    assert qwen.shared_expert_gate and qwen.shared_expert_intermediate_size == 5632
    mixtral = moe_block_config(_config("mixtral-8x7b"))
    assert mixtral.norm_topk_prob and mixtral.num_experts == 8 and mixtral.intermediate_size == 14336
    small = MoELayer.from_config(_config("kimi-k2"), hidden_size=32, moe_intermediate_size=16, n_routed_experts=24)
    assert small.router.scoring_func == "sigmoid" and small.num_experts == 24 and small.checkpoint_family == "deepseek"


@pytest.mark.parametrize("change, error, words", [
    (dict(scoring_func="tanh"), ValueError, "config field 'scoring_func' must be one of 'softmax', 'sigmoid'"),
    (dict(topk_method="auction"), ValueError, "config field 'topk_method' must be one of"),
    (dict(hidden_act="gelu"), ValueError, "config field 'hidden_act' must be 'silu'"),
    (dict(n_routed_experts=None), KeyError, "config is missing the field 'n_routed_experts'"),
    (dict(moe_intermediate_size=None), KeyError, "config is missing the field 'moe_intermediate_size'"),
    (dict(num_experts_per_tok="8"), ValueError, "config field 'num_experts_per_tok' must be an integer"),
])
def test_bad_configs_are_named(change, error, words):
    config = {**_config("deepseek-v3"), **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(error, match=words):
        MoELayer.from_config(config)


def test_from_config_refuses_what_it_does_not_build():
    with pytest.raises(ValueError, match="does not build 'gpt_oss' blocks: gpt-oss's experts have biases"):
        MoELayer.from_config(_config("gpt-oss-20b"))
    with pytest.raises(ValueError, match=r"overrides \['num_experts'\] are not fields of a deepseek MoE block"):
        MoELayer.from_config(_config("deepseek-v3"), num_experts=8)
    with pytest.raises(TypeError, match="config must be a dict"):
        MoELayer.from_config("config.json")
