"""The "fused" Ascend path (moe_lab.ascend.fused): the pipeline with reference operators in every dtype, the
gating kernels (MoeGatingTopKSoftmax, FusedAddTopKDiv) against the routers, emulated boards, and parity on a
real Atlas board (skipped elsewhere, with the reason)."""

import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops
from mindspore.ops.auto_generate import grouped_matmul_v4

from moe_lab.ascend import backend as B
from moe_lab.ascend import ops_ref
from moe_lab.ascend.fused import (
    COMPILED_KERNELS,
    DTYPES,
    REFERENCE_KERNELS,
    Kernels,
    fused_moe,
    fused_route,
    gating_plan,
    kernels_for,
    reference_kernels,
)
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import layer_forward_numpy
from moe_lab.core.routers import SigmoidRouter, SoftmaxRouter

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KERNEL_NAMES = ("moe_init_routing_v2", "grouped_matmul_v4", "moe_token_unpermute", "moe_gating_top_k_softmax",
                "fused_add_topk_div")


def run_fused(x, routing, experts, **kwargs):
    """The fused pipeline on a layer's routing report and expert bank."""
    return fused_moe(x, routing.indices, routing.weights, experts.w_gate, experts.w_up, experts.w_down, **kwargs)


def _layer_and_rows(activation="swiglu", capacity_factor=None, seed=5, tokens=20, **kwargs):
    layer = MoELayer(16, 32, 4, 2, activation=activation, capacity_factor=capacity_factor, seed=seed, **kwargs)
    x = Tensor(np.random.default_rng(seed).normal(size=(tokens, 16)).astype(np.float32))
    return layer, x


def _fixture_layer(name):
    cfg = json.loads((FIXTURES / name / "config.json").read_text())
    layer = MoELayer.from_config(cfg).load_checkpoint_weights(np.load(FIXTURES / name / "weights.npz"),
                                                              prefix=cfg["_fixture"]["prefix"])
    return layer, Tensor(np.load(FIXTURES / name / "io.npz")["input"])


# ------------------------------------------------------------------------------ the pipeline, every dtype
@pytest.mark.parametrize("activation", ["swiglu", "relu"])
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float16", 5e-3), ("bfloat16", 3e-2)])
def test_reference_kernels_reproduce_the_layer(activation, dtype, rtol):
    layer, x = _layer_and_rows(activation)
    expected = layer(x, dispatch="sorted").asnumpy()
    numpy_ref = layer_forward_numpy(layer, x.asnumpy())
    out = run_fused(x, layer.route(x), layer.experts, kernels=REFERENCE_KERNELS, compute_dtype=dtype)
    assert out.dtype == ms.float32 and out.shape == x.shape
    scale = np.abs(expected).max()
    assert np.abs(out.asnumpy() - expected).max() <= rtol * scale
    assert np.abs(out.asnumpy() - numpy_ref).max() <= rtol * scale + 1e-6


def test_half_precision_is_rounded_at_every_operator_like_a_board():
    """An emulated bf16 board rounds each operator's output to bf16 (as the kernels do): the error against
    float32 is that of bf16 (8 bits of mantissa), not zero, and far above float32's."""
    layer, x = _layer_and_rows(tokens=64)
    routing = layer.route(x)
    exact = run_fused(x, routing, layer.experts, kernels=REFERENCE_KERNELS, compute_dtype="float32").asnumpy()
    scale = np.abs(exact).max()
    errors = {d: np.abs(run_fused(x, routing, layer.experts, kernels=reference_kernels("ascend910b"),
                                  compute_dtype=d).asnumpy() - exact).max() / scale for d in ("bfloat16", "float16")}
    assert 1e-4 < errors["bfloat16"] < 3e-2 and 1e-5 < errors["float16"] < errors["bfloat16"]


def test_reference_kernels_with_capacity_drops():
    layer, x = _layer_and_rows(capacity_factor=0.5)
    routing = layer.route(x)
    assert routing.dropped() > 0
    out = run_fused(x, routing, layer.experts, kernels=REFERENCE_KERNELS, compute_dtype="float32")
    np.testing.assert_allclose(out.asnumpy(), layer(x, dispatch="dense").asnumpy(), rtol=1e-5, atol=1e-6)


def test_trace_shows_the_pipeline():
    layer, x = _layer_and_rows()
    routing = layer.route(x)
    trace = {}
    run_fused(x, routing, layer.experts, kernels=REFERENCE_KERNELS, compute_dtype="float32", trace=trace)
    np.testing.assert_array_equal(trace["tokens_per_expert"].asnumpy(), routing.load())
    eri = trace["expanded_row_idx"].asnumpy()
    assert sorted(eri.tolist()) == list(range(x.shape[0] * 2))  # a permutation of the N*K pairs
    # row-major: pair j = n*K + k of token n sits at row eri[j] of expanded_x
    rows = trace["expanded_x"].asnumpy()
    np.testing.assert_array_equal(rows[eri], np.repeat(x.asnumpy(), 2, axis=0))


def test_pipeline_calls_the_operators_like_mindformers():
    """Record the calls: counts (flag 2) feed GroupedMatmulV4 as int64 with group_list_type=1."""
    calls = []

    def record(name, fn):
        def op(*args, **kwargs):
            calls.append((name, args, kwargs))
            return fn(*args, **kwargs)
        return op

    kernels = Kernels("recorder", *(record(n, getattr(REFERENCE_KERNELS, n)) for n in KERNEL_NAMES))
    layer, x = _layer_and_rows()
    run_fused(x, layer.route(x), layer.experts, kernels=kernels, compute_dtype="float16")
    assert [c[0] for c in calls] == ["moe_init_routing_v2"] + ["grouped_matmul_v4"] * 3 + ["moe_token_unpermute"]
    init_args = calls[0][1]
    assert init_args[0].dtype == ms.float16 and init_args[1].dtype == ms.int32
    assert init_args[2:] == (0, 0, 4, 0, 2, False)
    for _, args, kwargs in calls[1:4]:
        assert kwargs["group_list"].dtype == ms.int64
        assert (kwargs["split_item"], kwargs["group_type"], kwargs["group_list_type"]) == (3, 0, 1)
        assert args[0][0].dtype == ms.float16 and args[1][0].dtype == ms.float16
    assert calls[4][1][2].dtype == ms.float16  # the router weights, in the compute dtype


def test_bad_compute_dtype():
    layer, x = _layer_and_rows()
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        run_fused(x, layer.route(x), layer.experts, kernels=REFERENCE_KERNELS, compute_dtype="int8")
    assert set(DTYPES) == {"float32", "float16", "bfloat16"}


def test_compiled_kernels_are_mindspore_functions_not_called_here():
    assert COMPILED_KERNELS.moe_init_routing_v2 is ops.moe_init_routing_v2
    assert COMPILED_KERNELS.grouped_matmul_v4 is grouped_matmul_v4
    assert COMPILED_KERNELS.moe_token_unpermute is ops.moe_token_unpermute


# ------------------------------------------------------------------------------ gating kernels
def test_fused_add_topk_div_reference_is_deepseek_v3s_router():
    """The reference FusedAddTopKDiv with n=2 routes exactly like SigmoidRouter with noaux_tc (the HF fixture
    layer, groups and bias included)."""
    layer, x = _fixture_layer("deepseek_v3")
    r = layer.router
    logits = (x.asnumpy() @ r.weight.asnumpy()).astype(np.float32)
    weight, indices = ops_ref.fused_add_topk_div(logits, r.selection_bias.asnumpy(), r.n_group, r.topk_group, 2,
                                                 r.top_k, 0, True, r.routed_scaling_factor)
    _, _, ref_indices, ref_weights = r.route_tensors(x)
    np.testing.assert_array_equal(indices, ref_indices.asnumpy())
    np.testing.assert_allclose(weight, ref_weights.asnumpy(), rtol=1e-6, atol=1e-6)


def test_fused_add_topk_div_limits_and_unscaled_weights():
    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="group_num == 8 when there are >= 32 experts"):
        ops_ref.fused_add_topk_div(x, np.zeros(64, np.float32), 4, 4, 1, 8)
    with pytest.raises(ValueError, match="add_num must have shape \\(64,\\)"):
        ops_ref.fused_add_topk_div(x, np.zeros(8, np.float32), 8, 8, 1, 8)
    w, idx = ops_ref.fused_add_topk_div(x, np.zeros(64, np.float32), 8, 8, 1, 4, 0, False, 2.5)
    sig = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(w, np.take_along_axis(sig, idx, 1), rtol=1e-6)  # neither normalised nor scaled


@pytest.mark.parametrize("name, kernel", [("mixtral", "MoeGatingTopKSoftmax"), ("qwen2_moe", "MoeGatingTopKSoftmax"),
                                          ("deepseek_v3", "FusedAddTopKDiv"), ("openpangu", "FusedAddTopKDiv"),
                                          ("deepseek_v2", None)])
def test_gating_plan_and_fused_routing_match_the_router(name, kernel):
    layer, x = _fixture_layer(name)
    plan = gating_plan(layer.router, "ascend910b")
    assert plan.kernel == kernel, plan.reason
    _, probs, indices, weights = fused_route(x, layer.router, plan, reference_kernels("ascend910b"))
    _, ref_probs, ref_indices, ref_weights = layer.router.route_tensors(x)
    np.testing.assert_array_equal(np.sort(indices.asnumpy(), 1), np.sort(ref_indices.asnumpy(), 1))
    order = np.argsort(indices.asnumpy(), 1)
    ref_order = np.argsort(ref_indices.asnumpy(), 1)
    np.testing.assert_allclose(np.take_along_axis(weights.asnumpy(), order, 1),
                               np.take_along_axis(ref_weights.asnumpy(), ref_order, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.asnumpy(), ref_probs.asnumpy(), atol=1e-7)


def test_gating_plan_says_why_not():
    assert gating_plan(SoftmaxRouter(8, 4, 2), None).kernel is None
    assert "no MoeGatingTopKSoftmax" in gating_plan(SoftmaxRouter(8, 4, 2), "ascend310p").reason
    biased = SoftmaxRouter(8, 4, 2)
    biased.selection_bias.set_data(Tensor(np.array([0.1, 0, 0, 0], np.float32)))
    assert "selection bias" in gating_plan(biased, "ascend910b").reason
    assert "unknown on ascend910_93" in gating_plan(SigmoidRouter(8, 16, 2), "ascend910_93").reason
    unnormalised = SigmoidRouter(8, 16, 2, norm_topk_prob=False, routed_scaling_factor=2.0)
    assert "scales the weights only when it renormalises" in gating_plan(unnormalised, "ascend910b").reason
    four_groups_of_16 = SigmoidRouter(8, 64, 4, topk_method="noaux_tc", n_group=4, topk_group=2)
    assert "outside FusedAddTopKDiv's limits" in gating_plan(four_groups_of_16, "ascend910b").reason


# ------------------------------------------------------------------------------ emulated boards
def test_emulated_board_refuses_an_operator_its_soc_lacks():
    kernels = reference_kernels("ascend310p")
    x = Tensor(np.zeros((3, 8), np.float32))
    with pytest.raises(RuntimeError, match="emulated ascend310p board has no MoeGatingTopKSoftmax kernel"):
        kernels.moe_gating_top_k_softmax(x, None, 2)
    with pytest.raises(RuntimeError, match="emulated ascend310b board has no MoeInitRoutingV2 kernel"):
        reference_kernels("ascend310b").moe_init_routing_v2(x, Tensor(np.zeros((3, 2), np.int32)), 0, 0, 4, 0, 2,
                                                            False)
    with pytest.raises(RuntimeError, match="backend is emulate-310b"):
        kernels_for(B.emulated_backend("emulate-310b", env={}))


@pytest.mark.parametrize("board, dispatch, dtype", [("emulate-910b", "fused", "float32"),
                                                   ("emulate-910_93", "fused", "float32"),
                                                   ("emulate-310p", "sorted", "float16"),
                                                   ("emulate-310b", "sorted", None)])
def test_each_emulated_board(board, dispatch, dtype):
    backend = B.detect_backend(env={"MOE_LAB_BACKEND": board})
    assert backend.emulated and backend.device == "CPU" and backend.name == board
    assert backend.default_dispatch == dispatch and backend.compute_dtype == dtype
    if backend.can_run_fused:  # the fused pipeline on this board's reference operators, in its dtype
        layer, x = _layer_and_rows()
        out = run_fused(x, layer.route(x), layer.experts, backend=backend).asnumpy()
        ref = layer(x, dispatch="sorted").asnumpy()
        assert np.abs(out - ref).max() <= (1e-5 if dtype == "float32" else 5e-3) * np.abs(ref).max()


def test_bfloat16_option_on_an_emulated_a2_board():
    backend = B.detect_backend(env={"MOE_LAB_BACKEND": "emulate-910b", "MOE_LAB_FUSED_DTYPE": "bfloat16"})
    assert backend.compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="MOE_LAB_FUSED_DTYPE=bfloat16 is not available on Atlas 300I"):
        B.detect_backend(env={"MOE_LAB_BACKEND": "emulate-310p", "MOE_LAB_FUSED_DTYPE": "bfloat16"})
    with pytest.raises(ValueError, match="MOE_LAB_FUSED_DTYPE must be one of 'float32', 'bfloat16', 'float16'"):
        B.detect_backend(env={"MOE_LAB_BACKEND": "emulate-910b", "MOE_LAB_FUSED_DTYPE": "int4"})


# ------------------------------------------------------------------------------ this process's backend
def test_fused_is_refused_without_the_operators():
    layer, x = _layer_and_rows()
    orange_pi = B.Backend(name="ascend-npu-basic", device="Ascend", soc="ascend310b", tier="npu-basic")
    with pytest.raises(RuntimeError, match="backend is ascend-npu-basic"):
        run_fused(x, layer.route(x), layer.experts, backend=orange_pi)
    backend = B.current_backend()
    if backend.can_run_fused:
        np.testing.assert_allclose(layer(x, dispatch="fused").asnumpy(), layer(x, dispatch="sorted").asnumpy(),
                                   atol=1e-5 if backend.compute_dtype == "float32" else 5e-2)
    else:
        with pytest.raises(RuntimeError, match="dispatch='fused' needs the compiled Ascend MoE operators"):
            layer(x, dispatch="fused")


def test_layer_default_dispatch_follows_the_backend():
    layer, _ = _layer_and_rows()
    assert layer.default_dispatch == B.current_backend().default_dispatch


# ------------------------------------------------------------------------------ on a real board only
def test_fused_parity_on_an_atlas_board():
    backend = B.current_backend()
    if not backend.can_run_fused or backend.emulated:
        pytest.skip(f"needs a real Atlas board with the compiled MoE operators; this is {backend.name} "
                    "(run `MOE_LAB_BACKEND=ascend make test` on an Atlas 800T/800I A2)")
    layer, x = _layer_and_rows(tokens=64)
    reference = layer(x, dispatch="sorted").asnumpy()
    fused = layer(x, dispatch="fused").asnumpy()
    tolerance = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 3e-2}[backend.compute_dtype]
    assert np.abs(fused - reference).max() <= tolerance * np.abs(reference).max()
    # the permutation itself is exact: compiled MoeInitRoutingV2 vs the NumPy reference
    routing = layer.route(x)
    dtype = DTYPES[backend.compute_dtype]
    compiled = COMPILED_KERNELS.moe_init_routing_v2(x.astype(dtype), routing.indices, 0, 0, 4, 0, 2, False)
    ref = REFERENCE_KERNELS.moe_init_routing_v2(x.astype(dtype), routing.indices, 0, 0, 4, 0, 2, False)
    np.testing.assert_array_equal(compiled[1].asnumpy(), ref[1].asnumpy())
    np.testing.assert_array_equal(compiled[2].asnumpy(), ref[2].asnumpy())
    # the gating kernels against the routers
    for name in ("mixtral", "deepseek_v3", "openpangu"):
        fixture, xf = _fixture_layer(name)
        plan = fixture.gating_plan()
        _, _, indices, _ = fused_route(xf, fixture.router, plan, COMPILED_KERNELS)
        np.testing.assert_array_equal(np.sort(indices.asnumpy(), 1),
                                      np.sort(fixture.router.route_tensors(xf)[2].asnumpy(), 1))


def test_gating_reasons_in_chinese_keep_their_numbers(zh):
    v3_like = SigmoidRouter(8, 256, 8, topk_method="noaux_tc", n_group=8, topk_group=4)
    assert gating_plan(v3_like, "ascend910b").reason == ("在一个算子内完成 sigmoid、加偏置、从 8 组中选 4 组"
                                                         "（组得分：top-2 之和）、top-k、重新归一化和缩放")
    kimi_like = SigmoidRouter(8, 384, 8, topk_method="noaux_tc", n_group=8, topk_group=4)
    assert gating_plan(kimi_like, "ascend910b").reason.startswith("384 个专家分为 8 组，超出了 FusedAddTopKDiv 的限制")
    assert gating_plan(SigmoidRouter(8, 16, 2), "ascend910_93").reason == "FusedAddTopKDiv 在 ascend910_93 上：未知"
    assert gating_plan(SoftmaxRouter(8, 4, 2), "ascend910b").reason == "在一个算子内完成 softmax 与 top-k"
