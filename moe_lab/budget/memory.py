"""Memory budget of an MoE model for serving: weights, KV cache, workspace, devices, serving layouts (notebook 07).

Training memory is in ``moe_lab.budget.training``, the decode roofline in ``moe_lab.budget.decode``.

Introduced in notebook 07. Every function takes a ``ModelSpec`` (see ``moe_lab.budget``) and returns
bytes (decimal GB = 1e9 bytes when printed). The formulas, and where each comes from:

* Weights: ``params x bits / 8`` plus one scale per block for the low-bit formats in ``WEIGHT_FORMATS``
  (block sizes from published checkpoints: DeepSeek-V3 fp8 ``weight_block_size [128, 128]``, GPTQ int4
  ``group_size 128``, gpt-oss MXFP4 = 32 values per 8-bit scale). Low-bit formats convert the linear
  weights only (``moe_lab.budget.matrix_shapes``); vectors, routers, embedding and head stay bf16, as in
  those checkpoints.
* KV cache per token: MLA caches the compressed latent, ``(kv_lora_rank + qk_rope_head_dim)`` values per
  layer (DeepSeek-V2 paper, arXiv 2405.04434, section 2.1); GQA/MHA caches ``2 x num_kv_heads x head_dim``
  per layer. Local-attention layers keep fewer tokens (``kv_cached_tokens``): gpt-oss's sliding-window
  layers (``layer_types``: even layers, window 128) the last ``sliding_window`` tokens, Llama 4's chunked
  layers (``attention_chunk_size`` 8192 on the RoPE layers; every 4th layer, 3, 7, ..., is global) at most
  one chunk. A context above ``max_position_embeddings`` is refused.
* Inference workspace: our rough estimate (one layer's activations for the tokens of one step: a prefill
  chunk of at most ``prefill_chunk`` tokens over all sequences, or one token per sequence when decoding,
  plus fp32 logits of the last positions); it is small next to weights and KV cache.
* Bytes per device of a serving layout (``layout_bytes_per_device``): routed experts are split over all
  devices (expert parallelism); attention, dense FFNs, embedding and head are split ``tp`` ways (tensor
  parallelism) as vLLM splits them, and what it replicates is replicated: norms, routers, MLA's
  down-projections ``q_a_proj``/``kv_a_proj_with_mqa`` (``ReplicatedLinear``), the shared experts
  (openPangu's vLLM model builds them with ``disable_tp=True``) and the MLA latent cache (one
  ``kv_lora_rank + qk_rope_head_dim`` row per token on every tensor-parallel rank).
* Devices: ideal, even sharding of the total over ``N`` devices that each keep a ``reserve`` (default
  10 %, vLLM's default ``gpu_memory_utilization=0.9``) for the runtime.
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


def check_context(spec: ModelSpec, context) -> int:
    """``context`` if it is an integer from 1 to the model's ``max_position_embeddings``; else a clear error."""
    context = check_int("context", context, minimum=1)
    limit = spec.max_position_embeddings
    if limit and context > limit:
        raise ValueError(f"context must be <= {limit} (max_position_embeddings of {spec.name}), got {context}")
    return context


def kv_token_limits(spec: ModelSpec) -> tuple[int | None, ...]:
    """Per layer, the most tokens its cache ever keeps: ``None`` for full attention, ``sliding_window``
    for a sliding-window layer (gpt-oss: the last 128 tokens), ``attention_chunk`` for a chunked layer
    (Llama 4: token ``p`` attends to positions ``floor(p / C) C ... p``, so a runtime that frees a chunk
    once it is finished keeps at most ``C`` = 8192)."""
    limits = []
    for i in range(spec.num_layers):
        if spec.sliding_window and spec.sliding_layers and spec.sliding_layers[i]:
            limits.append(spec.sliding_window)
        elif spec.attention_chunk and spec.chunked_layers and spec.chunked_layers[i]:
            limits.append(spec.attention_chunk)
        else:
            limits.append(None)
    return tuple(limits)


def kv_cached_tokens(spec: ModelSpec, context: int) -> tuple[int, ...]:
    """Tokens each layer keeps in its cache for one sequence of ``context`` tokens."""
    context = check_context(spec, context)
    return tuple(context if limit is None else min(context, limit) for limit in kv_token_limits(spec))


def kv_cache_bytes(spec: ModelSpec, context: int, batch: int = 1, kv_dtype: str = "bf16") -> float:
    """KV cache of ``batch`` sequences of ``context`` tokens, local-attention layers counted with the
    tokens they keep (``kv_cached_tokens``)."""
    batch = check_int("batch", batch, minimum=1)
    check_choice("kv_dtype", kv_dtype, tuple(KV_DTYPES))
    per_layer = kv_values_per_token_per_layer(spec) * KV_DTYPES[kv_dtype]
    return float(per_layer * sum(kv_cached_tokens(spec, context)) * batch)


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str = "bf16") -> int:
    """KV cache bytes one token adds while every layer keeps it: all layers' worth (70,272 B for
    openPangu-718B in bf16). Past a sliding window or a chunk, a token costs less: see ``kv_growth``;
    for a whole sequence use ``kv_cache_bytes``."""
    check_choice("kv_dtype", kv_dtype, tuple(KV_DTYPES))
    return kv_values_per_token_per_layer(spec) * spec.num_layers * KV_DTYPES[kv_dtype]


def kv_growth(spec: ModelSpec, kv_dtype: str = "bf16") -> tuple[tuple[int | None, int], ...]:
    """How one sequence's KV cache grows: ``((up_to, bytes_per_token), ...)``, the last ``up_to`` is ``None``.

    gpt-oss-120b in bf16: ``((128, 73728), (None, 36864))``: every layer stores the first 128 tokens,
    then only the 18 full-attention layers grow. A model with full attention only has one segment.
    """
    check_choice("kv_dtype", kv_dtype, tuple(KV_DTYPES))
    per_layer = kv_values_per_token_per_layer(spec) * KV_DTYPES[kv_dtype]
    limits = kv_token_limits(spec)
    segments = []
    for end in sorted({lim for lim in limits if lim is not None}) + [None]:
        growing = sum(1 for lim in limits if lim is None or (end is not None and lim >= end))
        segments.append((end, per_layer * growing))
    return tuple(segments)


def step_tokens(context: int, batch: int, prefill_chunk: int = 8192) -> int:
    """Tokens one serving step processes at most: a prefill chunk of ``prefill_chunk`` tokens shared by all
    sequences (chunked prefill, as vLLM's ``max_num_batched_tokens``), or one token per sequence when the
    batch decodes, whichever is larger."""
    return max(min(context * batch, prefill_chunk), batch)


def workspace_bytes(spec: ModelSpec, context: int, batch: int = 1, prefill_chunk: int = 8192,
                    act_bytes: int = 2) -> float:
    """Rough inference workspace: one layer's activations for the tokens of one step (``step_tokens``)
    + fp32 logits of the last position of every sequence."""
    context = check_context(spec, context)
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
    tokens = step_tokens(context, batch, chunk)
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
    context = check_context(spec, context)
    kv_dtype = kv_dtype or ("fp32" if dtype == "fp32" else "bf16")
    return ServingBudget(spec.name, dtype, kv_dtype, context, batch, weight_bytes(spec, dtype),
                         kv_cache_bytes(spec, context, batch, kv_dtype), workspace_bytes(spec, context, batch))


def devices_needed(total_bytes: float, device: Device, reserve: float = 0.10) -> int:
    """Smallest ``N`` with ``total_bytes / N <= memory x (1 - reserve)`` (ideal even sharding)."""
    check_float("total_bytes", total_bytes, minimum=0.0)
    return max(1, math.ceil(total_bytes / usable_bytes(device, 1, reserve)))


def nodes_needed(devices: int, device: Device) -> int | None:
    """Whole servers for ``devices`` devices (``None`` when devices per node is not verified)."""
    return math.ceil(devices / device.devices_per_node) if device.devices_per_node else None


def usable_bytes(device: Device, devices: int, reserve: float = 0.10) -> float:
    """Memory ``devices`` devices give to the model when each keeps ``reserve`` free for the runtime."""
    devices = check_int("devices", devices, minimum=1)
    reserve = check_float("reserve", reserve, minimum=0.0)
    if reserve >= 1.0:
        raise ValueError(f"reserve must be < 1, got {reserve}")
    return devices * device.memory_bytes * (1.0 - reserve)


def max_batch(spec: ModelSpec, device: Device, devices: int, dtype: str = "bf16", context: int = 4096,
              kv_dtype: str | None = None, reserve: float = 0.10) -> int:
    """The most sequences of ``context`` tokens whose serving budget fits ``devices`` devices (ideal even
    sharding, ``reserve`` of each kept free); 0 when not even one fits."""
    room = usable_bytes(device, devices, reserve)
    if serving_memory(spec, dtype, context, 1, kv_dtype).total > room:
        return 0
    per_sequence = kv_cache_bytes(spec, context, 1, kv_dtype or ("fp32" if dtype == "fp32" else "bf16"))
    low, high = 1, int(room // per_sequence) + 1  # the KV cache alone caps the batch
    while low < high:  # the budget grows with the batch: bisect for the last batch that fits
        mid = (low + high + 1) // 2
        if serving_memory(spec, dtype, context, mid, kv_dtype).total <= room:
            low = mid
        else:
            high = mid - 1
    return low


def check_batch_fits(spec: ModelSpec, device: Device, devices: int, batch: int, dtype: str = "bf16",
                     context: int = 4096, kv_dtype: str | None = None, reserve: float = 0.10) -> int:
    """``batch`` if its serving budget fits ``devices`` devices; else a ValueError naming the limit."""
    batch = check_int("batch", batch, minimum=1)
    limit = max_batch(spec, device, devices, dtype, context, kv_dtype, reserve)
    if batch > limit:
        where = f"{devices} x {device.name} ({100 * (1 - reserve):.0f} % of {device.memory_gb:g} GB each)"
        if limit == 0:
            raise ValueError(f"batch cannot be served on {where}: the {dtype} weights and one sequence of "
                             f"{context} tokens do not fit; use more devices")
        raise ValueError(f"batch must be <= {limit} to fit {where} at context {context}, got {batch}")
    return batch


# ----------------------------------------------------------------------------- a serving layout


@dataclass(frozen=True)
class DeviceLoad:
    """Bytes one device holds in a serving layout, by part (``parts``); ``weights`` excludes the KV cache."""

    name: str
    devices: int
    tp: int
    parts: dict

    @property
    def dp(self) -> int:
        """Attention replicas: each serves its own sequences (data parallelism)."""
        return self.devices // self.tp

    @property
    def weights(self) -> float:
        return sum(v for k, v in self.parts.items() if k != "kv_cache")

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def fits(self, device: Device, reserve: float = 0.10) -> bool:
        """Whether this load fits one ``device`` with ``reserve`` of it kept free."""
        return self.total <= usable_bytes(device, 1, reserve)


def _attention_shard_fraction(spec: ModelSpec, tp: int) -> float:
    """Share of one layer's attention parameters a tensor-parallel rank holds (vLLM's split: heads are
    split, the MLA down-projections ``q_a_proj`` and ``kv_a_proj_with_mqa`` are replicated; GQA key/value
    heads are replicated when ``tp`` exceeds their number)."""
    h, n = spec.hidden_size, spec.num_heads
    heads = math.ceil(n / tp)
    if spec.attention == "mla":
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        replicated = h * spec.q_lora_rank + h * (spec.kv_lora_rank + spec.qk_rope_head_dim)
        q_up = (spec.q_lora_rank or h) * qk  # per head
        per_head = q_up + spec.kv_lora_rank * (spec.qk_nope_head_dim + spec.v_head_dim) + spec.v_head_dim * h
        total = replicated + n * per_head
        return (replicated + heads * per_head) / total
    d, kv = spec.head_dim, math.ceil(spec.num_kv_heads / tp)
    qo = 2 * h * d + (d if spec.qkv_bias else 0) + (1 if spec.attention_sinks else 0)  # per query head
    kv_per_head = 2 * h * d + (2 * d if spec.qkv_bias else 0)
    fixed = h if spec.o_bias else 0
    total = n * qo + spec.num_kv_heads * kv_per_head + fixed
    return (heads * qo + kv * kv_per_head + fixed) / total


def layout_bytes_per_device(spec: ModelSpec, devices: int, tp: int = 1, dtype: str = "bf16", context: int = 4096,
                            batch: int = 1, kv_dtype: str | None = None) -> DeviceLoad:
    """Bytes on the busiest device when ``devices`` devices serve ``spec``: routed experts split over all
    of them (expert parallelism, ``ceil(E / devices)`` experts each), attention, dense FFNs, embedding and
    head split ``tp`` ways (tensor parallelism), ``devices / tp`` attention replicas each serving
    ``ceil(batch / replicas)`` of the ``batch`` sequences.

    Replicated on every device (as in vLLM's DeepSeek/openPangu models): norms and routers, MLA's
    down-projections, the shared experts (openPangu's vLLM model: ``disable_tp=True``) and the MLA
    latent cache (its shape has no head axis to split). A GQA cache is split by key/value heads.
    Activations are not included: they live in the memory each device keeps free.
    """
    devices = check_int("devices", devices, minimum=1)
    tp = check_int("tp", tp, minimum=1, maximum=devices)
    batch = check_int("batch", batch, minimum=1)
    if devices % tp:
        raise ValueError(f"tp must divide devices={devices}, got {tp}")
    kv_dtype = kv_dtype or ("fp32" if dtype == "fp32" else "bf16")
    comps = weight_bytes_by_component(spec, dtype)
    experts_here = math.ceil(spec.num_experts / devices) if spec.num_experts else 0
    vocab_here = math.ceil(spec.vocab_size / tp) / spec.vocab_size
    dense_here = math.ceil(spec.dense_ffn_size / tp) / spec.dense_ffn_size if spec.dense_ffn_size else 0.0
    replicas = devices // tp
    sequences = math.ceil(batch / replicas)
    kv = kv_cache_bytes(spec, context, sequences, kv_dtype)
    if spec.attention != "mla":  # each rank keeps the cache of its own key/value heads
        kv *= math.ceil(spec.num_kv_heads / tp) / spec.num_kv_heads
    parts = {
        "routed_experts": comps["routed_experts"] * (experts_here / spec.num_experts if spec.num_experts else 0),
        "shared_experts": comps["shared_experts"],
        "attention": comps["attention"] * _attention_shard_fraction(spec, tp),
        "dense_ffn": comps["dense_ffn"] * dense_here,
        "embedding_and_head": (comps["embedding"] + comps["head"]) * vocab_here,
        "norms_and_routers": comps["norms"] + comps["router"],
        "kv_cache": kv,
    }
    return DeviceLoad(spec.name, devices, tp, parts)


def layout_max_batch(spec: ModelSpec, device: Device, devices: int, tp: int = 1, dtype: str = "bf16",
                     context: int = 4096, kv_dtype: str | None = None, reserve: float = 0.10) -> int:
    """The most sequences of ``context`` tokens a layout serves (``layout_bytes_per_device`` on each device
    within ``reserve``); 0 when the weights alone do not fit."""
    one = layout_bytes_per_device(spec, devices, tp, dtype, context, 1, kv_dtype)
    room = usable_bytes(device, 1, reserve) - one.weights
    if room < one.parts["kv_cache"]:
        return 0
    return one.dp * int(room // one.parts["kv_cache"])
