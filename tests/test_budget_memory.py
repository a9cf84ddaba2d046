"""moe_lab.budget.memory, .training and .decode, and data/hardware.json: weights, KV cache, layouts, training state,
devices, roofline."""

import json
import math

import pytest

from moe_lab.budget.count import count_parameters, matrix_params
from moe_lab.budget.decode import (
    attention_flops_per_cached_token,
    decode_bytes_per_step,
    decode_flops_per_token,
    decode_roofline,
    expected_distinct_experts,
)
from moe_lab.budget.hardware import HARDWARE_JSON, Device, device_names, figure_range, load_device
from moe_lab.budget.memory import (
    GB,
    check_batch_fits,
    devices_needed,
    kv_bytes_per_token,
    kv_cache_bytes,
    kv_cached_tokens,
    kv_growth,
    layout_bytes_per_device,
    layout_max_batch,
    max_batch,
    nodes_needed,
    quantization_scales,
    serving_memory,
    step_tokens,
    weight_bytes,
    weight_bytes_by_component,
    workspace_bytes,
)
from moe_lab.budget.spec import load_model
from moe_lab.budget.training import (
    Layout,
    activation_bytes_per_layer,
    attention_activation_bytes,
    min_devices_to_train,
    training_memory,
)

PANGU = "openpangu-ultra-moe-718b"


# ----------------------------------------------------------------------------- weights


def test_weight_bytes_plain_formats():
    spec = load_model(PANGU)
    total = count_parameters(spec).total
    assert weight_bytes(spec, "fp32") == 4 * total
    assert weight_bytes(spec, "bf16") == weight_bytes(spec, "fp16") == 2 * total
    assert abs(weight_bytes(spec, "bf16") / GB - 1438.19) < 0.01  # 719.09B x 2 B


def test_low_bit_formats_convert_matrices_and_add_scales():
    spec = load_model(PANGU)
    total, mats = count_parameters(spec).total, sum(matrix_params(spec).values())
    fp8 = weight_bytes(spec, "fp8")
    assert fp8 == mats * 1 + quantization_scales(spec, "fp8") * 4 + (total - mats) * 2
    # one expert matrix 2048 x 7680 has 16 x 60 blocks of 128 x 128
    assert quantization_scales(spec, "fp8") > 58 * 256 * 3 * 16 * 60
    int4 = weight_bytes(spec, "int4")
    assert int4 == mats * 0.5 + quantization_scales(spec, "int4") * 2 + (total - mats) * 2
    # per-row groups of 128 (int8: one fp16 scale per 128 values) cost more than 128x128 fp8 blocks
    assert weight_bytes(spec, "int4") < fp8 < weight_bytes(spec, "int8") < weight_bytes(spec, "bf16")


def test_mxfp4_converts_experts_only_like_gpt_oss():
    spec = load_model("gpt-oss-120b")
    bf16, mx = weight_bytes_by_component(spec, "bf16"), weight_bytes_by_component(spec, "mxfp4")
    for k in bf16:
        if k != "routed_experts":
            assert mx[k] == bf16[k]
    experts = matrix_params(spec)["routed_experts"]
    vectors = count_parameters(spec).components["routed_experts"] - experts
    assert mx["routed_experts"] == experts * 4.25 / 8 + vectors * 2  # 4 bits + one 8-bit scale per 32
    assert weight_bytes(spec, "mxfp4") < 80e9  # "fits a single 80GB GPU" (openai/gpt-oss README)


def test_bad_dtype_lists_choices():
    with pytest.raises(ValueError, match="dtype must be one of 'fp32', 'bf16'"):
        weight_bytes(load_model(PANGU), "int3")


# ----------------------------------------------------------------------------- KV cache


def test_mla_kv_cache_is_the_compressed_latent():
    spec = load_model(PANGU)
    assert kv_bytes_per_token(spec) == (512 + 64) * 61 * 2 == 70_272
    assert kv_cache_bytes(spec, 32768, 8) == 70_272 * 32768 * 8
    assert kv_bytes_per_token(spec, "fp8") == 35_136
    assert kv_bytes_per_token(load_model("deepseek-v3")) == 70_272  # same MLA widths


def test_gqa_and_sliding_window_kv_cache():
    assert kv_bytes_per_token(load_model("mixtral-8x7b")) == 2 * 8 * 128 * 32 * 2
    gpt = load_model("gpt-oss-120b")
    per_layer = 2 * 8 * 64 * 2
    assert kv_cache_bytes(gpt, 1000, 2) == per_layer * (18 * 128 + 18 * 1000) * 2
    assert kv_cache_bytes(gpt, 100) == per_layer * 36 * 100  # shorter than the window: no cap
    # layer_types: even layers slide (keep 128 tokens), odd layers attend to everything
    assert kv_cached_tokens(gpt, 32768)[:4] == (128, 32768, 128, 32768)


def test_gpt_oss_120b_at_32k_is_half_the_full_attention_figure():
    gpt = load_model("gpt-oss-120b")
    kv = kv_cache_bytes(gpt, 32768)
    assert kv == 2048 * (18 * 32768 + 18 * 128) == 1_212_678_144  # ~1.21 GB, not 2.42
    assert kv_bytes_per_token(gpt) * 32768 == 2_415_919_104  # what ignoring the window would say
    assert kv_growth(gpt) == ((128, 36 * 2048), (None, 18 * 2048))


def test_llama4_chunked_attention_keeps_one_chunk_on_the_rope_layers():
    scout = load_model("llama-4-scout")
    assert scout.attention_chunk == 8192 and sum(scout.chunked_layers) == 36
    assert [i for i, c in enumerate(scout.chunked_layers) if not c] == list(range(3, 48, 4))  # global NoPE layers
    per_layer = 2 * 8 * 128 * 2
    kv = kv_cache_bytes(scout, 32768)
    assert kv == per_layer * (12 * 32768 + 36 * 8192) == 2_818_572_288  # ~2.8 GB, not 6.44
    assert kv_bytes_per_token(scout) * 32768 == 6_442_450_944
    assert kv_cache_bytes(scout, 4096) == per_layer * 48 * 4096  # inside one chunk: every layer keeps it all
    assert kv_growth(scout, "fp8") == ((8192, 48 * 2048), (None, 12 * 2048))
    assert kv_growth(load_model(PANGU)) == ((None, 70_272),)


def test_context_above_max_position_embeddings_is_refused():
    spec = load_model("deepseek-moe-16b")
    assert kv_cache_bytes(spec, 4096) > 0
    for call in (lambda: kv_cache_bytes(spec, 4097), lambda: serving_memory(spec, "bf16", 8192),
                 lambda: workspace_bytes(spec, 5000), lambda: decode_flops_per_token(spec, 5000)):
        with pytest.raises(ValueError, match=r"context must be <= 4096 \(max_position_embeddings of "
                                             r"deepseek-moe-16b\), got"):
            call()


@pytest.mark.parametrize("kwargs, match", [({"context": 0}, "context must be >= 1"),
                                           ({"context": -5}, "context must be >= 1"),
                                           ({"batch": 0}, "batch must be >= 1"),
                                           ({"kv_dtype": "int4"}, "kv_dtype must be one of")])
def test_kv_cache_rejects_nonsense(kwargs, match):
    args = {"context": 10, "batch": 1, "kv_dtype": "bf16", **kwargs}
    with pytest.raises(ValueError, match=match):
        kv_cache_bytes(load_model(PANGU), **args)


# ----------------------------------------------------------------------------- serving


def test_serving_budget_sums_and_devices():
    spec = load_model(PANGU)
    b = serving_memory(spec, "bf16", 32768, 8)
    assert b.total == b.weights + b.kv_cache + b.workspace
    assert b.kv_cache == kv_cache_bytes(spec, 32768, 8)
    assert b.workspace < 0.05 * b.weights
    npu = load_device("atlas-800i-a2")
    n = devices_needed(b.total, npu)
    assert n == math.ceil(b.total / (64e9 * 0.9)) == 26
    assert nodes_needed(n, npu) == 4
    assert devices_needed(b.weights, load_device("a100-80gb"), reserve=0.0) == 18  # the article said 40
    with pytest.raises(ValueError, match="reserve must be < 1"):
        devices_needed(1.0, npu, reserve=1.0)
    assert nodes_needed(3, load_device("atlas-300i-duo")) is None


def test_workspace_is_one_step_not_the_whole_batch():
    assert step_tokens(32768, 8) == 8192  # a chunk of 8192 prefill tokens shared by all sequences
    assert step_tokens(100, 2) == 200
    assert step_tokens(4096, 100_000) == 100_000  # decoding: one token per sequence
    spec = load_model(PANGU)
    small, big = workspace_bytes(spec, 32768, 1), workspace_bytes(spec, 32768, 64)
    assert big - small == 63 * 153600 * 4  # only the fp32 logits of the extra sequences grow


def test_max_batch_and_refusing_a_batch_that_does_not_fit():
    spec, npu = load_model(PANGU), load_device("atlas-800i-a2")
    limit = max_batch(spec, npu, 32, "bf16", 32768)
    room = 32 * 64e9 * 0.9
    assert serving_memory(spec, "bf16", 32768, limit).total <= room < serving_memory(spec, "bf16", 32768,
                                                                                        limit + 1).total
    assert check_batch_fits(spec, npu, 32, limit, "bf16", 32768) == limit
    with pytest.raises(ValueError, match=f"batch must be <= {limit} to fit 32 x atlas-800i-a2 .* got {limit + 1}"):
        check_batch_fits(spec, npu, 32, limit + 1, "bf16", 32768)
    assert max_batch(spec, npu, 8, "bf16", 4096) == 0  # 8 NPUs cannot hold the weights
    with pytest.raises(ValueError, match="weights and one sequence .* do not fit"):
        check_batch_fits(spec, npu, 8, 1)


# ----------------------------------------------------------------------------- serving layouts


def test_pangu_on_32_npus_replicated_attention_does_not_fit():
    spec, npu = load_model(PANGU), load_device("atlas-800i-a2")
    c = count_parameters(spec)
    experts = c.components["routed_experts"]
    ep_only = layout_bytes_per_device(spec, 32, tp=1, context=32768)
    assert ep_only.parts["routed_experts"] == 2 * experts / 32 == pytest.approx(43.79e9, rel=1e-3)
    non_expert = ep_only.weights - ep_only.parts["routed_experts"]
    assert non_expert == 2 * (c.total - experts) == pytest.approx(36.95e9, rel=1e-3)  # ~18.5B replicated
    assert not ep_only.fits(npu) and ep_only.weights > 64e9
    assert layout_max_batch(spec, npu, 32, 1, "bf16", 32768) == 0


def test_pangu_tp32_ep32_fits_and_replicates_the_latent_cache():
    spec, npu = load_model(PANGU), load_device("atlas-800i-a2")
    c = count_parameters(spec).components
    h = 7680
    load = layout_bytes_per_device(spec, 32, tp=32, context=32768, batch=1)
    assert load.dp == 1
    replicated = 61 * (h * 1536 + h * 576)  # q_a_proj and kv_a_proj_with_mqa of every layer
    split = c["attention"] - replicated
    assert load.parts["attention"] == pytest.approx(2 * (replicated + split / 32))
    assert load.parts["shared_experts"] == 2 * c["shared_experts"]  # disable_tp=True
    assert load.parts["embedding_and_head"] == 2 * 2 * 153600 * h / 32
    assert load.parts["kv_cache"] == kv_cache_bytes(spec, 32768)  # every rank holds the whole latent
    assert load.fits(npu) and 50e9 < load.weights < 54e9
    # the replicated cache limits the batch; attention replicas (tp 8 x dp 4) each hold their own sequences
    assert layout_max_batch(spec, npu, 32, 32, "bf16", 32768) == 2
    assert layout_max_batch(spec, npu, 32, 8, "bf16", 32768) == 4
    tp8 = layout_bytes_per_device(spec, 32, tp=8, context=32768, batch=8)
    assert tp8.dp == 4 and tp8.parts["kv_cache"] == kv_cache_bytes(spec, 32768, 2)


def test_gqa_layout_splits_kv_heads_and_replicates_them_beyond_their_number():
    spec = load_model("mixtral-8x7b")  # 32 query heads, 8 key/value heads, 8 experts
    full = kv_cache_bytes(spec, 4096)
    assert layout_bytes_per_device(spec, 8, tp=8).parts["kv_cache"] == full / 8
    assert layout_bytes_per_device(spec, 16, tp=16).parts["kv_cache"] == full / 8  # one kv head per rank
    one = layout_bytes_per_device(spec, 1, tp=1)
    assert one.weights == pytest.approx(weight_bytes(spec, "bf16"))  # one device holds everything
    with pytest.raises(ValueError, match="tp must divide devices=8, got 3"):
        layout_bytes_per_device(spec, 8, tp=3)
    with pytest.raises(ValueError, match="tp must be <= 8"):
        layout_bytes_per_device(spec, 8, tp=16)


def test_fp32_serving_uses_fp32_kv_by_default():
    b = serving_memory(load_model("mixtral-8x7b"), "fp32", 4096, 1)
    assert b.kv_dtype == "fp32"


# ----------------------------------------------------------------------------- training


def test_training_state_is_16_bytes_per_parameter_without_sharding():
    spec = load_model("mixtral-8x7b")
    t = training_memory(spec, Layout())
    assert t.weights + t.grads + t.optimizer == 16 * count_parameters(spec).total


def test_parallel_layouts_and_zero_shard_the_state():
    spec = load_model(PANGU)
    c = count_parameters(spec)
    experts, dense = c.components["routed_experts"], c.total - c.components["routed_experts"]
    t = training_memory(spec, Layout(tp=8, pp=4, ep=16, dp=8, zero=0))
    assert math.isclose(t.weights, 2 * (dense / 32 + experts / 64))
    z1 = training_memory(spec, Layout(tp=8, pp=4, ep=16, dp=8, zero=1))
    assert math.isclose(z1.optimizer, 12 * (dense / 32 / 8 + experts / 64 / (8 * 8 // 16)))
    assert z1.weights == t.weights and z1.grads == t.grads
    z3 = training_memory(spec, Layout(tp=8, pp=4, ep=16, dp=8, zero=3))
    assert z3.weights < z1.weights and z3.grads < z1.grads


@pytest.mark.parametrize("layout, match", [(dict(tp=0), "tp must be >= 1"), (dict(zero=4), "zero must be <= 3"),
                                           (dict(tp=2, dp=2, ep=3), "ep must divide tp x dp")])
def test_layout_validation(layout, match):
    with pytest.raises(ValueError, match=match):
        Layout(**layout)


def test_layout_must_fit_the_model():
    with pytest.raises(ValueError, match="ep must divide num_experts=8"):
        training_memory(load_model("mixtral-8x7b"), Layout(tp=2, dp=3, ep=3))
    with pytest.raises(ValueError, match="pp must be <= num_layers"):
        training_memory(load_model("mixtral-8x7b"), Layout(pp=64))


def test_korthikanti_activation_terms():
    spec = load_model("mixtral-8x7b")
    s, b, h, a = 4096, 1, 4096, 32
    mlp = 3 * s * b * h + 4 * s * b * 8 + 2 * (2 * s * b * h + 6 * s * b * 14336)
    none = activation_bytes_per_layer(spec, s, b)
    assert none == 4 * s * b * h + 11 * s * b * h + 5 * a * s * s * b + mlp
    assert activation_bytes_per_layer(spec, s, b, recompute="selective") == none - 5 * a * s * s * b
    assert activation_bytes_per_layer(spec, s, b, flash_attention=True) == none - 5 * a * s * s * b
    assert activation_bytes_per_layer(spec, s, b, tp=8) == none / 8
    assert activation_bytes_per_layer(spec, s, b, recompute="full") == 2 * s * b * h
    with pytest.raises(ValueError, match="recompute must be one of"):
        activation_bytes_per_layer(spec, s, b, recompute="some")


def test_mla_attention_activations_are_counted_tensor_by_tensor():
    spec = load_model(PANGU)  # h 7680, 128 heads, Q/K 192 wide, V/O 128 wide, ranks 1536 / 512
    s, b, h, n = 4096, 2, 7680, 128
    per_token = 2 * (h + 2 * 1536 + 2 * 512 + 2 * n * 192 + 2 * n * 128) + 4 * n
    assert per_token == 187_904
    flash = attention_activation_bytes(spec, s, b, flash_attention=True)
    assert flash == per_token * s * b
    assert flash / (11 * s * b * h) == pytest.approx(2.22, abs=0.01)  # Korthikanti's term: half of it
    no_flash = attention_activation_bytes(spec, s, b)
    assert no_flash == (per_token - 4 * n) * s * b + 2 * n * s * s * b  # softmax output instead of the lse
    assert attention_activation_bytes(spec, s, b, recompute="selective") == flash
    layer = activation_bytes_per_layer(spec, s, b, flash_attention=True, moe=False)
    assert layer == 2 * 4 * s * b * h + flash + 3 * s * b * h + 6 * s * b * 18432  # 4 sandwich norms


def test_training_activations_grow_with_sequence_and_shrink_with_recompute():
    spec = load_model("qwen3-30b-a3b")
    lay = Layout(tp=2)
    full = training_memory(spec, lay, 4096, recompute="full").activations
    sel = training_memory(spec, lay, 4096, recompute="selective").activations
    assert full < sel < training_memory(spec, lay, 8192, recompute="selective").activations


def test_min_devices_to_train_pangu():
    npu = load_device("atlas-800t-a2")
    n = min_devices_to_train(load_model(PANGU), npu)
    assert n > 16 * count_parameters(load_model(PANGU)).total / 64e9  # more than the states alone
    with pytest.raises(ValueError, match="do not fit"):
        min_devices_to_train(load_model(PANGU), load_device("atlas-200i-dk-a2"), recompute="none", tp=1)


# ----------------------------------------------------------------------------- roofline


def test_expected_distinct_experts():
    assert expected_distinct_experts(256, 8, 1) == pytest.approx(8)
    assert expected_distinct_experts(256, 8, 0) == 0
    assert expected_distinct_experts(256, 8, 10_000) == pytest.approx(256)
    assert expected_distinct_experts(8, 2, 2) == pytest.approx(8 * (1 - 0.75**2))
    with pytest.raises(ValueError, match="top_k must be <= 8"):
        expected_distinct_experts(8, 9, 1)


def test_decode_roofline_batch_one_reads_active_weights_and_kv():
    spec = load_model(PANGU)
    c = count_parameters(spec)
    read = decode_bytes_per_step(spec, "bf16", 1024, 1)
    assert read == pytest.approx(2 * c.active_without_embedding + kv_cache_bytes(spec, 1024, 1))
    npu = load_device("atlas-800i-a2")
    r = decode_roofline(spec, npu, 32, "bf16", 1024, 1)
    assert r.bound == "memory"
    assert r.tokens_per_second[0] <= r.tokens_per_second[1]
    assert r.tokens_per_second[1] == pytest.approx(32 * 1600e9 / read)
    bigger = decode_roofline(spec, npu, 32, "bf16", 1024, 64)
    assert bigger.tokens_per_second[1] > r.tokens_per_second[1]
    assert bigger.per_sequence_tokens_per_second[1] < r.per_sequence_tokens_per_second[1]
    no_bw = Device("x", "x", 64, None, None, "none", 8)
    with pytest.raises(ValueError, match="no verified memory bandwidth"):
        decode_roofline(spec, no_bw, 1)


def test_decode_flops_count_weights_and_attention_over_the_cache():
    spec = load_model(PANGU)
    assert attention_flops_per_cached_token(spec) == 2 * 128 * (512 + 64) + 2 * 128 * 512  # absorbed MLA
    weights = 2 * count_parameters(spec).active_without_embedding
    assert decode_flops_per_token(spec, 4096) == weights + 278_528 * 61 * 4096
    gpt = load_model("gpt-oss-120b")
    assert attention_flops_per_cached_token(gpt) == 4 * 64 * 64
    assert decode_flops_per_token(gpt, 32768) - decode_flops_per_token(gpt, 16384) == 16384 * 16384 * 18


def test_decode_roofline_takes_the_smaller_bound_and_says_which():
    spec, npu = load_model(PANGU), load_device("atlas-800i-a2")
    limit = max_batch(spec, npu, 32, "bf16", 1024)
    small = decode_roofline(spec, npu, 32, "bf16", 1024, 1)
    large = decode_roofline(spec, npu, 32, "bf16", 1024, limit)
    assert small.bound == "memory" and large.bound == "compute"
    for r in (small, large):
        assert r.tokens_per_second == (min(r.memory_tokens_per_second[0], r.compute_tokens_per_second[0]),
                                       min(r.memory_tokens_per_second[1], r.compute_tokens_per_second[1]))
        # compute bound: N x peak / FLOPs per token (fp16 peak 294.9-376 TFLOPS per NPU)
        per_token = r.flops_per_step / r.batch
        assert r.compute_tokens_per_second[1] == pytest.approx(32 * 376e12 / per_token)
    assert large.tokens_per_second[1] < 32 * 376e12 / (2 * count_parameters(spec).active_without_embedding)
    with pytest.raises(ValueError, match=f"batch must be <= {limit} .* got 100000000"):
        decode_roofline(spec, npu, 32, "bf16", 1024, 100_000_000)
    no_peak = decode_roofline(spec, load_device("atlas-300i-duo"), 32, "int8", 1024, 1)
    assert no_peak.compute_tokens_per_second is None and no_peak.bound == "memory"
    assert no_peak.tokens_per_second == no_peak.memory_tokens_per_second


# ----------------------------------------------------------------------------- hardware.json


REQUIRED_DEVICES = ["ascend-910b", "ascend-910b2", "ascend-910b3", "ascend-910b4", "atlas-800i-a2", "atlas-800t-a2",
                    "atlas-300i-duo", "atlas-200i-dk-a2", "a100-80gb", "h100-sxm", "h200-sxm"]
FIGURES = ["memory_gb", "bandwidth_gbps", "bf16_tflops", "fp16_tflops", "int8_tops", "devices_per_node"]


def _check_figure(raw: dict, name: str, key: str, fig: dict) -> None:
    assert key in FIGURES or key == "processors_per_card", (name, key)
    if figure_range(fig) is None:
        assert fig.get("note"), (name, key)  # a null figure says why
        return
    assert fig["sources"], (name, key)
    for src in fig["sources"]:
        assert src in raw["sources"], (name, key, src)
    if "min" in fig:  # a range: sources disagree, and the note says so
        assert fig["min"] < fig["max"] and "disagree" in fig["note"] or "not verified" in fig["note"]


def test_hardware_json_every_figure_has_a_source_or_says_not_verified():
    raw = json.loads(HARDWARE_JSON.read_text())
    assert set(REQUIRED_DEVICES) <= set(raw["devices"])
    for name, dev in raw["devices"].items():
        for key, fig in dev.items():
            if key == "variants":  # variants nobody could verify are null, with a note
                for variant, figures in fig.items():
                    for vkey, vfig in figures.items():
                        _check_figure(raw, f"{name} {variant}", vkey, vfig)
            elif isinstance(fig, dict):
                _check_figure(raw, name, key, fig)
        for key in FIGURES:
            assert key in dev, (name, key)


def test_ascend_servers_are_8_x_64_gb():
    for name in ("atlas-800i-a2", "atlas-800t-a2"):
        d = load_device(name)
        assert (d.memory_gb, d.devices_per_node) == (64, 8)
        assert d.bandwidth_gbps == (1200, 1600) and d.tflops_kind == "fp16"
    assert load_device("h200-sxm").tflops == (989, 989)
    with pytest.raises(ValueError, match="unknown device 'tpu'; valid devices: a100-80gb"):
        load_device("tpu")
    assert device_names() == sorted(device_names())


def test_memory_variants_with_vendor_sources_and_unverified_ones():
    raw = json.loads(HARDWARE_JSON.read_text())
    small = load_device("atlas-800i-a2-32gb")
    assert small.memory_gb == 32 and small.bandwidth_gbps is None and small.tflops is None
    assert raw["devices"]["atlas-800i-a2-32gb"]["memory_gb"]["sources"] == ["mindie-atb-models-readme"]
    assert "32GB/64GB" in raw["sources"]["mindie-atb-models-readme"]["where"]
    duo = raw["devices"]["atlas-300i-duo"]
    assert duo["memory_gb"]["value"] == 96 and "mindie-atb-models-readme" in duo["memory_gb"]["sources"]
    assert duo["variants"]["48gb"]["memory_gb"]["value"] is None  # a 48 GB card: NOT VERIFIED
    assert "NOT VERIFIED" in duo["variants"]["48gb"]["memory_gb"]["note"]
