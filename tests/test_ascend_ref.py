"""The CPU reference of the Ascend MoE operators (moe_lab.ascend_ref).

Every operator reproduces the example of its MindSpore 2.10 docstring (inputs and printed outputs copied
from the wheel's docstrings, ``mindspore/ops/auto_generate/gen_ops_def.py``, ``gen_ops_prim.py`` and
``mindspore/ops/function/other_func.py``). Where the docstring example is missing or cut short, the test
says so and checks the value the documented formula gives. Then the operators, chained, reproduce the
MoELayer's output with the same weights.
"""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import moe_lab
from moe_lab.ascend import ops_ref as R
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import silu

moe_lab.setup(seed=0)


# ------------------------------------------------------------------------------ docstring examples
def test_gating_top_k_softmax_docstring_example():
    # MoeGatingTopKSoftmax docstring: fp16 x, finished all True, k=4; it prints output[0] (y) only.
    x = np.array([[0.1, 0.2, 0.1, 0.1], [0.2, 0.2, 0.4, 0.2], [0.3, 0.3, 0.1, 0.3], [0.1, 0.7, 0.1, 0.1]],
                 np.float16)
    y, expert_idx, row_idx = R.moe_gating_top_k_softmax(Tensor(x, ms.float16), Tensor(np.ones(4, bool)), k=4)
    printed = np.array([[0.2693, 0.2437, 0.2437, 0.2437], [0.2893, 0.2369, 0.2369, 0.2369],
                        [0.262, 0.262, 0.262, 0.2144], [0.378, 0.2074, 0.2074, 0.2074]])
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), printed, atol=2e-4)
    # finished rows: every expert id is E = 4 (CANN doc); row_idx is k-major: row_idx[n, k] = k*N + n
    assert (expert_idx == 4).all()
    np.testing.assert_array_equal(row_idx, np.arange(16).reshape(4, 4).T)


def test_gating_top_k_softmax_without_finished_picks_best_experts():
    x = np.array([[0.1, 0.2, 0.1, 0.1], [0.3, 0.3, 0.1, 0.3]], np.float32)
    y, expert_idx, row_idx = R.moe_gating_top_k_softmax(x, k=2)
    np.testing.assert_array_equal(expert_idx, [[1, 0], [0, 1]])  # ties: lower expert id first
    np.testing.assert_array_equal(row_idx, [[0, 2], [1, 3]])
    p = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    np.testing.assert_allclose(y, np.take_along_axis(p, expert_idx, -1), rtol=1e-6)


def test_moe_init_routing_v1_example():
    # The 2.10 docstring of moe_init_routing has no example. Inputs from the torch_npu docs of
    # npu_moe_init_routing (hiascend.com Pytorch/60RC3 ptaoplist_000780); outputs derived by hand from
    # the documented formula: sort by expert, expanded_row_idx[sorted_row[i]] = i, x[sorted_row % N].
    x = np.array([[0.1] * 4, [0.2] * 4, [0.3] * 4], np.float32)
    row_idx = np.array([[0, 3], [1, 4], [2, 5]], np.int32)
    expert_idx = np.array([[1, 2], [0, 1], [0, 2]], np.int32)
    expanded_x, expanded_row_idx, expanded_expert_idx = R.moe_init_routing(x, row_idx, expert_idx, 3)
    np.testing.assert_array_equal(expanded_expert_idx, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(expanded_row_idx, [2, 0, 1, 4, 3, 5])
    np.testing.assert_allclose(expanded_x[:, 0], [0.2, 0.3, 0.1, 0.2, 0.1, 0.3])
    # active_num limits the rows of expanded_x to min(N, active_num) * K
    assert R.moe_init_routing(x, row_idx, expert_idx, 1)[0].shape == (2, 4)


def test_moe_init_routing_v2_docstring_example_drop_pad():
    # ops.moe_init_routing_v2 docstring: drop/pad mode, capacity 2, flags 0/False -> two outputs.
    x = Tensor(np.array([[0.1, 0.2, 0.3], [0.2, 0.7, 0.8], [0.3, 0.3, 0.5]]), ms.float16)
    expert_idx = Tensor(np.array([[0, 1, 1], [2, 1, 1], [0, 0, 0]]), ms.int32)
    out1, out2 = R.moe_init_routing_v2(x, expert_idx, 3, 2, 3, 1, 0, False)
    expected1 = np.array([[[0.1, 0.2, 0.3], [0.3, 0.3, 0.5]], [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]],
                          [[0.2, 0.7, 0.8], [0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(out1.astype(np.float64), expected1, atol=1e-3)
    np.testing.assert_array_equal(out2, [0, 2, 3, 4, -1, -1, 1, -1, -1])
    # asking for the counts before capacity adds a third output: expert 0 had 4 pairs, 1 had 4, 2 had 1
    _, _, before = R.moe_init_routing_v2(x, expert_idx, 3, 2, 3, 1, 0, True)
    np.testing.assert_array_equal(before, [4, 4, 1])


def test_moe_init_routing_v2_dropless_row_major_and_counts():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    expert_idx = np.array([[1, 0], [0, 2], [1, 0]], np.int32)  # pairs j = n*K + k: [1, 0, 0, 2, 1, 0]
    ex, eri = R.moe_init_routing_v2(x, expert_idx, 0, 0, 3, 0, 0, False)
    # stable sort of the pairs by expert: [1, 2, 5 | 0, 4 | 3]; eri[j] = where pair j went
    np.testing.assert_array_equal(eri, [3, 0, 1, 5, 4, 2])
    np.testing.assert_array_equal(ex[:, 0], x[[0, 1, 2, 0, 2, 1], 0])  # row of pair order[i] // K
    _, _, cumsum = R.moe_init_routing_v2(x, expert_idx, 0, 0, 3, 0, 1, False)
    _, _, counts = R.moe_init_routing_v2(x, expert_idx, 0, 0, 3, 0, 2, False)
    np.testing.assert_array_equal(cumsum, [3, 5, 6])
    np.testing.assert_array_equal(counts, [3, 2, 1])
    assert R.moe_init_routing_v2(x, expert_idx, 4, 0, 3, 0, 0, False)[0].shape == (4, 2)  # active mode


def test_moe_compute_expert_tokens_docstring_example_is_cut_short():
    # The docstring prints [2, 3, 5] for num_expert=5; the output has num_expert entries (end offsets).
    out = R.moe_compute_expert_tokens(Tensor([0, 0, 1, 2, 2], ms.int32), 5)
    np.testing.assert_array_equal(out, [2, 3, 5, 5, 5])
    np.testing.assert_array_equal(out[:3], [2, 3, 5])  # what the docstring shows


GMM_X = np.array([[0] * 4, [1] * 4, [2] * 4, [2] * 4, [1] * 4, [1] * 4], np.float16)
GMM_W = np.arange(32).reshape(4, 4, 2).astype(np.float16)
GMM_PRINTED = np.array([[0, 0], [44, 48], [88, 96], [152, 160], [108, 112], [108, 112]])


def test_grouped_matmul_docstring_example_cumulative_group_list():
    out = R.grouped_matmul([Tensor(GMM_X)], [Tensor(GMM_W)], None, group_list=Tensor([1, 3, 4, 6], ms.int64))
    assert isinstance(out, list) and len(out) == 1 and out[0].dtype == np.float16
    np.testing.assert_array_equal(out[0], GMM_PRINTED)


def test_grouped_matmul_v4_docstring_example_count_group_list():
    out = R.grouped_matmul([GMM_X], [GMM_W], group_list=np.array([1, 2, 1, 2]), split_item=3, group_type=0,
                           group_list_type=1)
    np.testing.assert_array_equal(out[0], GMM_PRINTED)


def test_grouped_matmul_empty_group_and_bias():
    x = np.ones((3, 2), np.float32)
    w = np.stack([np.eye(2), 2 * np.eye(2), 3 * np.eye(2)]).astype(np.float32)
    bias = np.array([[0, 0], [10, 10], [0, 0]], np.float32)
    out = R.grouped_matmul(x, w, [bias], group_list=[2, 0, 1], group_list_type=1)[0]
    np.testing.assert_array_equal(out, [[1, 1], [1, 1], [3, 3]])  # expert 1 got no rows


def test_moe_token_permute_docstring_example():
    tokens = Tensor([[1, 1, 1], [7, 7, 7], [2, 2, 2], [1, 1, 1], [2, 2, 2], [3, 3, 3]], dtype=ms.bfloat16)
    permuted, sorted_indices = R.moe_token_permute(tokens, Tensor([5, 0, 3, 1, 2, 4], dtype=ms.int32))
    np.testing.assert_array_equal(permuted, [[7] * 3, [1] * 3, [2] * 3, [2] * 3, [3] * 3, [1] * 3])
    np.testing.assert_array_equal(sorted_indices, [5, 0, 3, 1, 2, 4])
    assert sorted_indices.dtype == np.int32


def test_moe_token_unpermute_docstring_example_prints_only_the_shape():
    # The docstring prints only `out.shape` -> (8, 3); the values follow out[n] = T[sorted_indices[n]].
    permuted = Tensor([[1] * 3, [0] * 3, [0] * 3, [3] * 3, [2] * 3, [1] * 3, [2] * 3, [3] * 3], dtype=ms.bfloat16)
    out = R.moe_token_unpermute(permuted, Tensor([0, 6, 7, 5, 3, 1, 2, 4], dtype=ms.int32))
    assert out.shape == (8, 3)
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3, 1, 3, 0, 0, 2])


def test_permute_then_unpermute_round_trip_with_probs():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(5, 3)).astype(np.float32)
    indices = rng.integers(0, 4, size=(5, 2)).astype(np.int32)
    probs = rng.uniform(size=(5, 2)).astype(np.float32)
    permuted, sorted_indices = R.moe_token_permute(tokens, indices)
    out = R.moe_token_unpermute(permuted, sorted_indices, probs)
    np.testing.assert_allclose(out, tokens * probs.sum(1, keepdims=True), rtol=1e-6)
    # same row order as moe_init_routing_v2 (both row-major and stable)
    ex, eri = R.moe_init_routing_v2(tokens, indices, 0, 0, 4, 0, 0, False)
    np.testing.assert_array_equal(sorted_indices, eri)
    np.testing.assert_array_equal(permuted, ex)
    # num_out_tokens keeps the first rows; the pairs past the end contribute zero
    kept, _ = R.moe_token_permute(tokens, indices, num_out_tokens=7)
    assert kept.shape == (7, 3)


def test_moe_finalize_routing_docstring_example():
    expanded_x = np.array([[0.1] * 4, [0.2] * 4, [0.3] * 4, [0.1] * 4, [0.2] * 4, [0.3] * 4], np.float16)
    x1 = np.array([[1] * 4, [0.2] * 4, [0.3] * 4], np.float16)
    bias = np.array([[0.1] * 4, [0.2] * 4, [0.3] * 4, [0.4] * 4], np.float16)
    scales = np.array([[0.7, 0.3], [0.8, 0.2], [0.8, 0.2]], np.float16)
    out = R.moe_finalize_routing(Tensor(expanded_x), Tensor(x1), None, Tensor(bias), Tensor(scales),
                                 Tensor(np.array([2, 3, 1, 0, 5, 4], np.int32)),
                                 Tensor(np.array([[0, 1], [0, 2], [1, 3]], np.int32)))
    assert out.dtype == np.float16
    # printed with two decimals: [[1.37 ...] [0.48 ...] [0.74 ...]]
    np.testing.assert_allclose(out.astype(np.float64), np.repeat([[1.37], [0.48], [0.74]], 4, 1), atol=1e-3)


# ------------------------------------------------------------------------------ chains vs MoELayer
def _layer_and_input(activation="swiglu", tokens=12, seed=3):
    layer = MoELayer(16, 24, 4, 2, activation=activation, seed=seed)
    x = np.random.default_rng(seed).normal(size=(tokens, 16)).astype(np.float32)
    return layer, x


def _gating(layer, x):
    """gating -> normalised top-k weights (the router's rule) with MoeGatingTopKSoftmax."""
    logits = x @ layer.router.weight.asnumpy()
    weights, expert_idx, row_idx = R.moe_gating_top_k_softmax(logits, k=layer.top_k)
    return weights / weights.sum(-1, keepdims=True), expert_idx, row_idx


def _experts(layer, rows, group_list, group_list_type):
    w = layer.experts.numpy_weights()
    up = R.grouped_matmul([rows], [w["w_up"]], group_list=group_list, group_list_type=group_list_type)[0]
    if w["w_gate"] is not None:
        gate = R.grouped_matmul([rows], [w["w_gate"]], group_list=group_list, group_list_type=group_list_type)[0]
        hidden = silu(gate) * up
    else:
        hidden = np.maximum(up, 0.0)
    return R.grouped_matmul([hidden], [w["w_down"]], group_list=group_list, group_list_type=group_list_type)[0]


@pytest.mark.parametrize("activation", ["swiglu", "relu"])
@pytest.mark.parametrize("count_flag", [2, 1])
def test_v2_chain_reproduces_moe_layer(activation, count_flag):
    layer, x = _layer_and_input(activation)
    weights, expert_idx, _ = _gating(layer, x)
    expanded_x, expanded_row_idx, tokens_per_expert = R.moe_init_routing_v2(
        x, expert_idx, 0, 0, layer.num_experts, 0, count_flag, False)
    # flag 2 = counts -> group_list_type 1; flag 1 = cumulative -> group_list_type 0
    y = _experts(layer, expanded_x, tokens_per_expert, 1 if count_flag == 2 else 0)
    out = R.moe_token_unpermute(y, expanded_row_idx, weights)
    expected = layer(Tensor(x)).asnumpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_v1_chain_reproduces_moe_layer():
    layer, x = _layer_and_input()
    weights, expert_idx, row_idx = _gating(layer, x)
    expanded_x, expanded_row_idx, sorted_experts = R.moe_init_routing(x, row_idx, expert_idx, x.shape[0])
    ends = R.moe_compute_expert_tokens(sorted_experts, layer.num_experts)
    y = _experts(layer, expanded_x, ends, 0)
    zeros = np.zeros_like(x)
    out = R.moe_finalize_routing(y, zeros, None, np.zeros((layer.num_experts, 16), np.float32), weights,
                                 expanded_row_idx, expert_idx)
    np.testing.assert_allclose(out, layer(Tensor(x)).asnumpy(), rtol=1e-4, atol=1e-5)


def test_index_order_trap_mixing_v2_with_finalize_is_silently_wrong():
    layer, x = _layer_and_input()
    weights, expert_idx, _ = _gating(layer, x)
    expanded_x, eri_row_major, counts = R.moe_init_routing_v2(x, expert_idx, 0, 0, layer.num_experts, 0, 2, False)
    y = _experts(layer, expanded_x, counts, 1)
    right = R.moe_token_unpermute(y, eri_row_major, weights)
    wrong = R.moe_finalize_routing(y, np.zeros_like(x), None, None, weights, eri_row_major, expert_idx)
    assert np.abs(wrong - right).max() > 1e-2  # no error raised, a wrong answer
    # converting the row-major map to k-major (j = n*K + k -> k*N + n) fixes it
    n, k = expert_idx.shape
    eri_k_major = eri_row_major.reshape(n, k).T.reshape(-1)
    fixed = R.moe_finalize_routing(y, np.zeros_like(x), None, None, weights, eri_k_major, expert_idx)
    np.testing.assert_allclose(fixed, right, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    x = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"expert_idx values must be in \[0, 1\]"):
        R.moe_init_routing_v2(x, np.array([[0], [2], [1]], np.int32), 0, 0, 2, 0, 2, False)
    with pytest.raises(ValueError, match="drop_pad_mode"):
        R.moe_init_routing_v2(x, np.zeros((3, 1), np.int32), 0, 0, 2, 3, 0, False)
    with pytest.raises(ValueError, match="expert_capacity"):
        R.moe_init_routing_v2(x, np.zeros((3, 1), np.int32), 0, 0, 2, 1, 0, False)
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        R.moe_token_permute(x, np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match="padded_mode"):
        R.moe_token_permute(x, np.zeros((3, 1), np.int32), padded_mode=True)
    with pytest.raises(ValueError, match="sorted in ascending order"):
        R.moe_compute_expert_tokens(np.array([1, 0], np.int32), 2)
    with pytest.raises(ValueError, match="group_list covers 7 rows"):
        R.grouped_matmul(x, np.ones((2, 2, 2), np.float32), group_list=[3, 4], group_list_type=1)
    with pytest.raises(ValueError, match="split_item=3, group_type=0"):
        R.grouped_matmul(x, np.ones((2, 2, 2), np.float32), group_list=[1, 3], split_item=0)
    with pytest.raises(ValueError, match="must not repeat"):
        R.moe_token_unpermute(x, np.array([0, 0, 1], np.int32))
    with pytest.raises(ValueError, match="x must be 2-D"):
        R.moe_init_routing(np.ones(3), np.zeros((3, 1), np.int32), np.zeros((3, 1), np.int32), 3)
