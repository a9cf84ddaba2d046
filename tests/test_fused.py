"""The "fused" dispatch path (moe_lab.fused): on CPU with the reference operators, and on a board."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import moe_lab
from moe_lab.ascend import backend as B
from moe_lab.ascend.fused import COMPILED_KERNELS, DTYPES, REFERENCE_KERNELS, Kernels, fused_moe
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import layer_forward_numpy


def run_fused(x, routing, experts, **kwargs):
    """The fused pipeline on a layer's routing report and expert bank."""
    return fused_moe(x, routing.indices, routing.weights, experts.w_gate, experts.w_up, experts.w_down, **kwargs)

moe_lab.setup(seed=0)


def _layer_and_rows(activation="swiglu", capacity_factor=None, seed=5, tokens=20):
    layer = MoELayer(16, 32, 4, 2, activation=activation, capacity_factor=capacity_factor, seed=seed)
    x = Tensor(np.random.default_rng(seed).normal(size=(tokens, 16)).astype(np.float32))
    return layer, x


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

    kernels = Kernels("recorder", *(record(n, getattr(REFERENCE_KERNELS, n)) for n in
                                    ("moe_init_routing_v2", "grouped_matmul_v4", "moe_token_unpermute")))
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
    from mindspore import ops
    from mindspore.ops.auto_generate import grouped_matmul_v4

    kernels = COMPILED_KERNELS
    assert kernels.moe_init_routing_v2 is ops.moe_init_routing_v2
    assert kernels.grouped_matmul_v4 is grouped_matmul_v4
    assert kernels.moe_token_unpermute is ops.moe_token_unpermute


def test_fused_is_refused_without_the_operators():
    layer, x = _layer_and_rows()
    orange_pi = B.Backend(name="ascend-npu-basic", device="Ascend", soc="ascend310b", tier="npu-basic")
    with pytest.raises(RuntimeError, match="backend is ascend-npu-basic"):
        run_fused(x, layer.route(x), layer.experts, backend=orange_pi)
    if B.current_backend().can_run_fused:
        pytest.skip("this machine has the fused operators: the CPU refusal does not apply")
    with pytest.raises(RuntimeError, match="dispatch='fused' needs the compiled Ascend MoE operators"):
        layer(x, dispatch="fused")


def test_layer_default_dispatch_follows_the_backend():
    layer, _ = _layer_and_rows()
    assert layer.default_dispatch == B.current_backend().default_dispatch


# ------------------------------------------------------------------------------ on a board only
def test_fused_parity_on_an_atlas_board():
    backend = B.current_backend()
    if not backend.can_run_fused:
        pytest.skip(f"no Atlas board with the fused MoE operators here ({backend.describe()})")
    layer, x = _layer_and_rows(tokens=64)
    reference = layer(x, dispatch="sorted").asnumpy()
    fused = layer(x, dispatch="fused").asnumpy()
    # half precision inside: identical up to dtype tolerance, not bit for bit
    assert np.abs(fused - reference).max() <= 3e-2 * np.abs(reference).max()
    # the permutation itself is exact: compiled MoeInitRoutingV2 vs the NumPy reference
    routing = layer.route(x)
    dtype = DTYPES[backend.compute_dtype]
    compiled = COMPILED_KERNELS.moe_init_routing_v2(x.astype(dtype), routing.indices, 0, 0, 4, 0, 2, False)
    ref = REFERENCE_KERNELS.moe_init_routing_v2(x.astype(dtype), routing.indices, 0, 0, 4, 0, 2, False)
    np.testing.assert_array_equal(compiled[1].asnumpy(), ref[1].asnumpy())
    np.testing.assert_array_equal(compiled[2].asnumpy(), ref[2].asnumpy())
