"""MoELayer.from_config + load_checkpoint_weights against Hugging Face transformers' own MoE blocks.

The fixtures in tests/fixtures/ were written by tools/make_hf_fixtures.py (torch + transformers, not needed
here): tiny random weights in the released checkpoints' naming, an input, and the HF block's output, for
Mixtral, Qwen2-MoE (gated shared expert), Qwen3-MoE (norm_topk_prob both ways), DeepSeek-V3 (groups,
selection bias, scaling), an openPangu-shaped DeepSeek-V3 block and DeepSeek-V2 (group-limited greedy).
Every dispatch path, the compiled path, the expert-parallel layer on one rank, the fused pipeline (reference
operators) and the independent NumPy reference must reproduce each within 1e-5 in float32.
"""

import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from moe_lab.ascend.fused import REFERENCE_KERNELS, fused_moe
from moe_lab.core.compiled import CompiledMoE
from moe_lab.core.config import checkpoint_names
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import layer_forward_numpy
from moe_lab.parallel.layer import Communicator, ExpertParallelMoE

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").exists())
ATOL = 1e-5
PATHS = ("loop", "dense", "sorted", "capacity")


def load_fixture(name: str):
    config = json.loads((FIXTURES / name / "config.json").read_text())
    weights = dict(np.load(FIXTURES / name / "weights.npz"))
    io = dict(np.load(FIXTURES / name / "io.npz"))
    layer = MoELayer.from_config(config).load_checkpoint_weights(weights, prefix=config["_fixture"]["prefix"])
    return config, weights, io, layer


def test_the_seven_fixtures_are_there():
    assert NAMES == ["deepseek_v2", "deepseek_v3", "mixtral", "openpangu", "qwen2_moe", "qwen3_moe_nonorm",
                     "qwen3_moe_norm"]


@pytest.mark.parametrize("name", NAMES)
def test_every_path_matches_the_transformers_block(name):
    _, _, io, layer = load_fixture(name)
    x = Tensor(io["input"])
    for path in PATHS:
        np.testing.assert_allclose(layer(x, dispatch=path).asnumpy(), io["output"], atol=ATOL, rtol=0,
                                   err_msg=f"{name}: {path}")
    np.testing.assert_allclose(layer_forward_numpy(layer, io["input"]), io["output"], atol=ATOL, rtol=0,
                               err_msg=f"{name}: NumPy reference")


@pytest.mark.parametrize("name", NAMES)
def test_routing_matches_the_transformers_router(name):
    _, _, io, layer = load_fixture(name)
    routing = layer.route(Tensor(io["input"]))
    indices, weights = routing.indices.asnumpy(), routing.weights.asnumpy()
    order = np.argsort(indices, axis=1)  # the fixture sorts each token's choices by expert id
    np.testing.assert_array_equal(np.take_along_axis(indices, order, 1), io["topk_indices"])
    np.testing.assert_allclose(np.take_along_axis(weights, order, 1), io["topk_weights"], atol=1e-6, rtol=2e-6)
    np.testing.assert_allclose(routing.logits.asnumpy(), io["router_logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_fused_and_expert_parallel_paths_match(name):
    _, _, io, layer = load_fixture(name)
    x = Tensor(io["input"])
    np.testing.assert_allclose(CompiledMoE(layer, "capacity")(x).asnumpy(), io["output"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(CompiledMoE(layer, "dense")(x).asnumpy(), io["output"], atol=ATOL, rtol=0)
    routing, e = layer.route(x), layer.experts
    routed = fused_moe(x, routing.indices, routing.weights, e.w_gate, e.w_up, e.w_down, kernels=REFERENCE_KERNELS)
    np.testing.assert_allclose(layer.add_shared_experts(x, routed).asnumpy(), io["output"], atol=ATOL, rtol=0)
    out, _ = ExpertParallelMoE(layer, Communicator())(x, "allgather")
    np.testing.assert_allclose(out.asnumpy(), io["output"], atol=ATOL, rtol=0)


def test_each_fixture_exercises_its_feature():
    """The fixtures would not catch a missing feature if it changed nothing: check each one matters."""
    _, _, io, v3 = load_fixture("deepseek_v3")
    x = Tensor(io["input"])
    assert v3.router.group_limited and np.abs(v3.router.selection_bias.asnumpy()).max() > 0
    assert v3.shared_experts is not None and v3.router.routed_scaling_factor == 2.5
    full = v3(x).asnumpy()
    v3.router.selection_bias.set_data(Tensor(np.zeros(16, np.float32)))
    assert np.abs(v3(x).asnumpy() - full).max() > 1e-3  # the bias changes choices
    _, _, io, qwen2 = load_fixture("qwen2_moe")
    assert qwen2.shared_experts.gated and not qwen2.router.norm_topk_prob
    _, _, _, pangu = load_fixture("openpangu")
    assert pangu.router.scoring_func == "sigmoid" and pangu.top_k == 8 and not pangu.router.group_limited
    _, _, _, v2 = load_fixture("deepseek_v2")
    assert v2.router.topk_method == "group_limited_greedy" and v2.router.scoring_func == "softmax"
    assert v2.shared_experts.intermediate_size == 2 * v2.intermediate_size


def test_missing_or_misshapen_checkpoint_keys_are_named():
    config, weights, _, layer = load_fixture("deepseek_v3")
    prefix = config["_fixture"]["prefix"]
    before = layer.router.weight.asnumpy().copy()
    broken = dict(weights)
    key = f"{prefix}mlp.experts.3.up_proj.weight"
    del broken[key]
    with pytest.raises(ValueError, match=f"checkpoint key '{key}' is missing \\(expected shape \\(8, 24\\)\\)"):
        MoELayer.from_config(config).load_checkpoint_weights(broken, prefix=prefix)
    broken = dict(weights)
    broken[f"{prefix}mlp.gate.weight"] = np.zeros((16, 23), np.float32)
    with pytest.raises(ValueError, match=r"mlp\.gate\.weight' has shape \(16, 23\), expected \(16, 24\)"):
        layer.load_checkpoint_weights(broken, prefix=prefix)
    np.testing.assert_array_equal(layer.router.weight.asnumpy(), before)  # nothing half-loaded
    with pytest.raises(ValueError, match="family must be one of 'deepseek', 'mixtral'"):
        MoELayer(8, 4, 4, 2).load_checkpoint_weights(weights)
    with pytest.raises(TypeError, match="prefix must be a string"):
        layer.load_checkpoint_weights(weights, prefix=3)


def test_checkpoint_names_follow_each_family():
    names = checkpoint_names("mixtral", 2, prefix="model.layers.0.")
    assert names["router"] == "model.layers.0.block_sparse_moe.gate.weight"
    assert names["experts.1.gate"] == "model.layers.0.block_sparse_moe.experts.1.w1.weight"
    assert names["experts.1.up"].endswith("experts.1.w3.weight") and names["experts.1.down"].endswith("w2.weight")
    qwen = checkpoint_names("qwen2_moe", 1, shared=True, shared_gate=True)
    assert qwen["shared.up"] == "mlp.shared_expert.up_proj.weight"
    assert qwen["shared.gate_weight"] == "mlp.shared_expert_gate.weight"
    ds = checkpoint_names("deepseek", 1, shared=True, selection_bias=True)
    assert ds["selection_bias"] == "mlp.gate.e_score_correction_bias"
    assert ds["shared.down"] == "mlp.shared_experts.down_proj.weight"
    with pytest.raises(ValueError, match="family 'mixtral' has no shared experts"):
        checkpoint_names("mixtral", 1, shared=True)


def test_gradients_reach_router_experts_and_shared_experts_never_the_bias():
    _, _, io, layer = load_fixture("deepseek_v3")
    x = Tensor(io["input"])
    params = layer.trainable_params()
    names = [p.name for p in params]
    assert not any("selection_bias" in n for n in names)  # not trainable: moved by a rule
    grads = ms.value_and_grad(lambda v: (layer(v, "dense") ** 2).mean(), None, params)(x)[1]
    by_name = {n: np.abs(g.asnumpy()).max() for n, g in zip(names, grads, strict=True)}
    assert by_name["router.weight"] > 0
    assert all(by_name[n] > 0 for n in names if n.startswith(("experts.", "shared_experts.")))
