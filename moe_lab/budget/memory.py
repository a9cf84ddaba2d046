"""Memory budget of an MoE model: weights, KV cache, inference workspace, training state (notebook 07).

Introduced in notebook 07. Every function takes a ``ModelSpec`` (see ``moe_lab.budget``) and returns
bytes (decimal GB = 1e9 bytes when printed). The formulas, and where each comes from:

* Weights: ``params x bits / 8`` plus one scale per block for the low-bit formats in ``WEIGHT_FORMATS``
  (block sizes from published checkpoints: DeepSeek-V3 fp8 ``weight_block_size [128, 128]``, GPTQ int4
  ``group_size 128``, gpt-oss MXFP4 = 32 values per 8-bit scale). Low-bit formats convert the linear
  weights only (``moe_lab.budget.matrix_shapes``); vectors, routers, embedding and head stay bf16, as in
  those checkpoints.
* KV cache per token: MLA caches the compressed latent, ``(kv_lora_rank + qk_rope_head_dim)`` values per
  layer (DeepSeek-V2 paper, arXiv 2405.04434, section 2.1); GQA/MHA caches ``2 x num_kv_heads x head_dim``
  per layer, and sliding-window layers keep at most ``sliding_window`` tokens.
* Inference workspace: our rough estimate (activations of one layer for a prefill chunk, plus fp32 logits
  of the last positions); it is small next to weights and KV cache.
* Training state (mixed-precision Adam): 2 B bf16 weights + 2 B bf16 gradients + 12 B fp32 master weights,
  momentum and variance = 16 B per parameter (ZeRO paper, Rajbhandari et al. 2020, arXiv 1910.02054,
  section 3.1); ZeRO stages 1/2/3 shard optimizer states / gradients / weights over data-parallel ranks.
* Activations per layer (bytes, 16-bit): Korthikanti et al. 2022 (arXiv 2205.05198), eq. 1:
  ``s b h (34 + 5 a s / h)`` = ``4sbh`` (norms) + ``11sbh + 5as^2b`` (attention) + ``19sbh`` (MLP). With
  tensor parallelism ``t`` and sequence parallelism everything divides by ``t``; selective recomputation
  drops ``5as^2b``; full recomputation keeps the layer input ``2sbh``. Our MoE adaptation replaces the
  MLP term by ``3sbh + 4sbE + k (2sbh + 6sbF_e) + 6sbF_s`` (router logits in fp32, a copy of the token and
  gate/up/product for each of the k routed experts, the shared expert). With 1F1B pipeline parallelism
  the first stage holds ``p`` micro-batches of ``L/p`` layers: ``L`` layers' worth whatever ``p`` is.
* Devices: ideal, even sharding of the total over ``N`` devices that each keep a ``reserve`` (default
  10 %, vLLM's default ``gpu_memory_utilization=0.9``) for the runtime.
* Decode roofline: a decode step reads the weights it touches and the whole KV cache once, and does
  ``2 x active`` FLOPs per token; time >= max(bytes / bandwidth, FLOPs / peak). With a batch of ``B``
  tokens an MoE layer touches ``E (1 - (1 - k/E)^B)`` distinct experts on average (uniform routing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moe_lab.budget.count import count_parameters, matrix_shapes
from moe_lab.budget.hardware import Device
from moe_lab.budget.spec import ModelSpec
from moe_lab.checks import check_choice, check_float, check_int

GB = 1e9


@dataclass(frozen=True)
class WeightFormat:
    """How one weight format stores a parameter: ``bits`` each, plus one ``scale_bits`` scale per block
    of ``block = (rows, cols)`` elements, applied to the tensors in ``scope``."""

    name: str
    bits: int
    scale_bits: int = 0
    block: tuple[int, int] | None = None
    scope: str = "all"  # "all" tensors, "matrices" (linear weights) or "experts" (routed experts only)
    source: str = ""


WEIGHT_FORMATS = {
    "fp32": WeightFormat("fp32", 32, source="IEEE 754 single precision"),
    "bf16": WeightFormat("bf16", 16, source="bfloat16"),
    "fp16": WeightFormat("fp16", 16, source="IEEE 754 half precision"),
    "fp8": WeightFormat("fp8", 8, 32, (128, 128), "matrices",
                        "DeepSeek-V3/Kimi K2 config.json quantization_config: e4m3, weight_block_size [128, 128], "
                        "one fp32 weight_scale_inv per block"),
    "int8": WeightFormat("int8", 8, 16, (1, 128), "matrices",
                         "our assumption: one fp16 scale per 128 inputs of a row, as for int4"),
    "int4": WeightFormat("int4", 4, 16, (1, 128), "matrices",
                         "GPTQ int4 (Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4 config: bits 4, group_size 128, sym): one "
                         "fp16 scale per 128 inputs; zero points ignored"),
    "mxfp4": WeightFormat("mxfp4", 4, 8, (1, 32), "experts",
                          "gpt-oss config.json: quant_method mxfp4 on MoE experts only (self_attn, router, "
                          "embed_tokens, lm_head not converted); OCP MX: 32 values share one 8-bit scale"),
}
DTYPES = tuple(WEIGHT_FORMATS)
KV_DTYPES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}


def _format(dtype: str) -> WeightFormat:
    check_choice("dtype", dtype, DTYPES)
    return WEIGHT_FORMATS[dtype]


def weight_bytes_by_component(spec: ModelSpec, dtype: str = "bf16") -> dict:
    """Bytes of every component (keys of ``ParamBreakdown.components``) stored in ``dtype``."""
    fmt = _format(dtype)
    comps = count_parameters(spec).components
    if fmt.scope == "all":
        return {k: v * fmt.bits / 8 for k, v in comps.items()}
    out = {k: 2.0 * v for k, v in comps.items()}  # start from bf16 and convert the in-scope matrices
    for component, copies, rows, cols in matrix_shapes(spec):
        if fmt.scope == "experts" and component != "routed_experts":
            continue
        br, bc = fmt.block
        scales = copies * math.ceil(rows / br) * math.ceil(cols / bc)
        n = copies * rows * cols
        out[component] += n * (fmt.bits / 8 - 2) + scales * fmt.scale_bits / 8
    return out


def weight_bytes(spec: ModelSpec, dtype: str = "bf16") -> float:
    """Bytes of the main model's weights in ``dtype`` (MTP modules not included)."""
    return sum(weight_bytes_by_component(spec, dtype).values())


def quantization_scales(spec: ModelSpec, dtype: str) -> int:
    """Number of scale values ``dtype`` adds (0 for fp32/bf16/fp16)."""
    fmt = _format(dtype)
    if fmt.block is None:
        return 0
    br, bc = fmt.block
    return sum(copies * math.ceil(rows / br) * math.ceil(cols / bc)
               for component, copies, rows, cols in matrix_shapes(spec)
               if fmt.scope != "experts" or component == "routed_experts")


def kv_values_per_token_per_layer(spec: ModelSpec) -> int:
    """Cached values per token in one layer: ``kv_lora_rank + qk_rope_head_dim`` (MLA) or ``2 n_kv d``."""
    if spec.attention == "mla":
        return spec.kv_lora_rank + spec.qk_rope_head_dim
    return 2 * spec.num_kv_heads * spec.head_dim


def kv_cache_bytes(spec: ModelSpec, context: int, batch: int = 1, kv_dtype: str = "bf16") -> float:
    """KV cache of ``batch`` sequences of ``context`` tokens (sliding-window layers keep ``window`` tokens)."""
    context = check_int("context", context, minimum=1)
    batch = check_int("batch", batch, minimum=1)
    check_choice("kv_dtype", kv_dtype, tuple(KV_DTYPES))
    per_layer = kv_values_per_token_per_layer(spec) * KV_DTYPES[kv_dtype]
    sliding = spec.sliding_layers or (False,) * spec.num_layers
    tokens = sum(min(context, spec.sliding_window) if slide and spec.sliding_window else context
                 for slide in sliding)
    return float(per_layer * tokens * batch)


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str = "bf16") -> int:
    """KV cache bytes one token adds in full-attention layers (e.g. 70,272 B for openPangu-718B in bf16)."""
    check_choice("kv_dtype", kv_dtype, tuple(KV_DTYPES))
    return kv_values_per_token_per_layer(spec) * spec.num_layers * KV_DTYPES[kv_dtype]


def workspace_bytes(spec: ModelSpec, context: int, batch: int = 1, prefill_chunk: int = 8192,
                    act_bytes: int = 2) -> float:
    """Rough inference workspace: one layer's activations for a prefill chunk + fp32 last-position logits."""
    context = check_int("context", context, minimum=1)
    batch = check_int("batch", batch, minimum=1)
    chunk = check_int("prefill_chunk", prefill_chunk, minimum=1)
    h, n = spec.hidden_size, spec.num_heads
    if spec.attention == "mla":
        attn = n * (spec.qk_nope_head_dim + spec.qk_rope_head_dim) + n * (spec.qk_nope_head_dim + spec.v_head_dim)
        attn += spec.kv_lora_rank + spec.qk_rope_head_dim
    else:
        attn = (n + 2 * spec.num_kv_heads) * spec.head_dim
    ffn = 2 * spec.dense_ffn_size if spec.num_dense_layers else 0
    if spec.num_moe_layers:
        moe = spec.top_k * (h + 2 * spec.expert_ffn_size) + 2 * spec.shared_ffn_size + spec.num_experts
        ffn = max(ffn, moe)
    tokens = batch * min(context, chunk)
    return float(tokens * (2 * h + attn + ffn) * act_bytes + batch * spec.vocab_size * 4)


@dataclass(frozen=True)
class ServingBudget:
    """Bytes needed to serve ``batch`` sequences of ``context`` tokens."""

    name: str
    dtype: str
    kv_dtype: str
    context: int
    batch: int
    weights: float
    kv_cache: float
    workspace: float

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.workspace

    def parts_gb(self) -> dict:
        """``{"weights": GB, "kv_cache": GB, "workspace": GB}`` (the stacked bar of the notebook)."""
        return {"weights": self.weights / GB, "kv_cache": self.kv_cache / GB, "workspace": self.workspace / GB}


def serving_memory(spec: ModelSpec, dtype: str = "bf16", context: int = 4096, batch: int = 1,
                   kv_dtype: str | None = None) -> ServingBudget:
    """Weights + KV cache + workspace to serve ``spec``; ``kv_dtype`` defaults to bf16 (fp32 for fp32)."""
    _format(dtype)
    kv_dtype = kv_dtype or ("fp32" if dtype == "fp32" else "bf16")
    return ServingBudget(spec.name, dtype, kv_dtype, context, batch, weight_bytes(spec, dtype),
                         kv_cache_bytes(spec, context, batch, kv_dtype), workspace_bytes(spec, context, batch))


def devices_needed(total_bytes: float, device: Device, reserve: float = 0.10) -> int:
    """Smallest ``N`` with ``total_bytes / N <= memory x (1 - reserve)`` (ideal even sharding)."""
    check_float("total_bytes", total_bytes, minimum=0.0)
    reserve = check_float("reserve", reserve, minimum=0.0)
    if reserve >= 1.0:
        raise ValueError(f"reserve must be < 1, got {reserve}")
    return max(1, math.ceil(total_bytes / (device.memory_bytes * (1.0 - reserve))))


def nodes_needed(devices: int, device: Device) -> int | None:
    """Whole servers for ``devices`` devices (``None`` when devices per node is not verified)."""
    return math.ceil(devices / device.devices_per_node) if device.devices_per_node else None


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Layout:
    """Parallel layout: tensor ``tp``, pipeline ``pp``, expert ``ep``, data ``dp``; ZeRO stage ``zero``.

    ``world = tp x pp x dp``; expert parallelism is carved out of the ``tp x dp`` ranks of a stage (as in
    Megatron-Core), so ``ep`` must divide ``tp x dp``. Experts are not tensor-parallel here.
    """

    tp: int = 1
    pp: int = 1
    ep: int = 1
    dp: int = 1
    zero: int = 0

    def __post_init__(self):
        for name in ("tp", "pp", "ep", "dp"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("zero", self.zero, minimum=0, maximum=3)
        if (self.tp * self.dp) % self.ep:
            raise ValueError(f"ep must divide tp x dp = {self.tp * self.dp}, got ep={self.ep}")

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.dp


RECOMPUTE = ("none", "selective", "full")


def activation_bytes_per_layer(spec: ModelSpec, seq_len: int, micro_batch: int = 1, tp: int = 1,
                               recompute: str = "none", flash_attention: bool = False, moe: bool = True) -> float:
    """Activation bytes one layer stores for the backward pass (see the module docstring for the formula)."""
    s = check_int("seq_len", seq_len, minimum=1)
    b = check_int("micro_batch", micro_batch, minimum=1)
    t = check_int("tp", tp, minimum=1)
    check_choice("recompute", recompute, RECOMPUTE)
    h, a = spec.hidden_size, spec.num_heads
    if recompute == "full":
        return 2.0 * s * b * h / t
    scores = 0 if (flash_attention or recompute == "selective") else 5 * a * s * s * b
    if moe and spec.num_moe_layers:
        mlp = (3 * s * b * h + 4 * s * b * spec.num_experts
               + spec.top_k * (2 * s * b * h + 6 * s * b * spec.expert_ffn_size) + 6 * s * b * spec.shared_ffn_size)
    else:
        mlp = 3 * s * b * h + 6 * s * b * spec.dense_ffn_size
    return (4 * s * b * h + 11 * s * b * h + scores + mlp) / t


@dataclass(frozen=True)
class TrainingBudget:
    """Bytes per device (the busiest one: the first pipeline stage) to train with a ``Layout``."""

    name: str
    layout: Layout
    weights: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations


def training_memory(spec: ModelSpec, layout: Layout, seq_len: int = 4096, micro_batch: int = 1,
                    recompute: str = "selective", flash_attention: bool = True) -> TrainingBudget:
    """Per-device training memory: 16 B/parameter mixed-precision Adam state + activations."""
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a Layout, got {type(layout).__name__}")
    if layout.pp > spec.num_layers:
        raise ValueError(f"pp must be <= num_layers={spec.num_layers}, got {layout.pp}")
    if spec.num_experts and spec.num_experts % layout.ep:
        raise ValueError(f"ep must divide num_experts={spec.num_experts}, got {layout.ep}")
    count = count_parameters(spec)
    experts = count.components["routed_experts"]
    dense = count.total - experts
    dense_dev = dense / (layout.tp * layout.pp)
    expert_dev = experts / (layout.ep * layout.pp)
    # data-parallel replicas that ZeRO can shard over: dp for dense weights, tp*dp/ep for experts
    rep_dense, rep_expert = layout.dp, layout.tp * layout.dp // layout.ep

    def sharded(bytes_per_param: float, stage: int) -> float:
        if layout.zero >= stage:
            return bytes_per_param * (dense_dev / rep_dense + expert_dev / rep_expert)
        return bytes_per_param * (dense_dev + expert_dev)

    per_layer_moe = activation_bytes_per_layer(spec, seq_len, micro_batch, layout.tp, recompute, flash_attention)
    per_layer_dense = activation_bytes_per_layer(spec, seq_len, micro_batch, layout.tp, recompute, flash_attention,
                                                 moe=False)
    acts = spec.num_moe_layers * per_layer_moe + spec.num_dense_layers * per_layer_dense
    if recompute == "full":  # one layer at a time is rebuilt in full during the backward pass
        acts += activation_bytes_per_layer(spec, seq_len, micro_batch, layout.tp, "none", flash_attention)
    acts += 4.0 * seq_len * micro_batch * spec.vocab_size / layout.tp  # fp32 logits (our addition)
    return TrainingBudget(spec.name, layout, weights=sharded(2, 3), grads=sharded(2, 2), optimizer=sharded(12, 1),
                          activations=acts)


def min_devices_to_train(spec: ModelSpec, device: Device, seq_len: int = 4096, micro_batch: int = 1,
                         recompute: str = "full", tp: int | None = None, reserve: float = 0.10) -> int:
    """Fewest devices holding the 16 B/param training state fully sharded, plus one device's activations
    (tensor parallel over ``tp`` devices, default one node, with sequence parallelism)."""
    tp = tp or device.devices_per_node or 1
    states = 16.0 * count_parameters(spec).total
    acts = training_memory(spec, Layout(tp=tp, ep=1), seq_len, micro_batch, recompute).activations
    room = device.memory_bytes * (1.0 - reserve) - acts
    if room <= 0:
        raise ValueError(f"activations alone ({acts / GB:.1f} GB) do not fit one {device.name}: "
                         f"use recompute='full', a shorter seq_len or a larger tp")
    return math.ceil(states / room)


# ----------------------------------------------------------------------------- decode roofline


def expected_distinct_experts(num_experts: int, top_k: int, tokens: int) -> float:
    """Experts a layer touches for ``tokens`` tokens routed uniformly: ``E (1 - (1 - k/E)^T)``."""
    e = check_int("num_experts", num_experts, minimum=1)
    k = check_int("top_k", top_k, minimum=0, maximum=e)
    t = check_int("tokens", tokens, minimum=0)
    return e * (1.0 - (1.0 - k / e) ** t)


def decode_bytes_per_step(spec: ModelSpec, dtype: str, context: int, batch: int, kv_dtype: str = "bf16") -> float:
    """Bytes one decode step reads: touched weights (input embedding excluded) + the whole KV cache."""
    comps = weight_bytes_by_component(spec, dtype)
    read = sum(v for k, v in comps.items() if k not in ("embedding", "routed_experts"))
    if spec.num_moe_layers:
        per_expert = comps["routed_experts"] / (spec.num_moe_layers * spec.num_experts)
        read += spec.num_moe_layers * expected_distinct_experts(spec.num_experts, spec.top_k, batch) * per_expert
    return read + kv_cache_bytes(spec, context, batch, kv_dtype)


@dataclass(frozen=True)
class Roofline:
    """Decode-speed upper bounds; ``(low, high)`` follow the hardware ranges."""

    devices: int
    bytes_per_step: float
    flops_per_step: float
    step_seconds: tuple[float, float]
    tokens_per_second: tuple[float, float]
    per_sequence_tokens_per_second: tuple[float, float]
    bound: str


def decode_roofline(spec: ModelSpec, device: Device, devices: int, dtype: str = "bf16", context: int = 4096,
                    batch: int = 1, kv_dtype: str = "bf16") -> Roofline:
    """Upper bound on decode speed of ``devices`` devices working perfectly in parallel."""
    devices = check_int("devices", devices, minimum=1)
    if device.bandwidth_gbps is None:
        raise ValueError(f"device {device.name!r} has no verified memory bandwidth")
    nbytes = decode_bytes_per_step(spec, dtype, context, batch, kv_dtype)
    flops = 2.0 * batch * count_parameters(spec).active_without_embedding
    bw_low, bw_high = device.bandwidth_gbps
    t_mem = (nbytes / (devices * bw_high * GB), nbytes / (devices * bw_low * GB))  # (fast, slow)
    if device.tflops:
        t_cmp = (flops / (devices * device.tflops[1] * 1e12), flops / (devices * device.tflops[0] * 1e12))
    else:
        t_cmp = (0.0, 0.0)
    fast, slow = max(t_mem[0], t_cmp[0]), max(t_mem[1], t_cmp[1])
    bound = "memory" if t_mem[0] >= t_cmp[0] else "compute"
    return Roofline(devices, nbytes, flops, (fast, slow), (batch / slow, batch / fast), (1 / slow, 1 / fast), bound)
