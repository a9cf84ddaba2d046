"""Memory budget of an MoE model: weights, KV cache, workspace, serving layouts, training state (notebook 07).

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
* Training state (mixed-precision Adam): 2 B bf16 weights + 2 B bf16 gradients + 12 B fp32 master weights,
  momentum and variance = 16 B per parameter (ZeRO paper, Rajbhandari et al. 2020, arXiv 1910.02054,
  section 3.1); ZeRO stages 1/2/3 shard optimizer states / gradients / weights over data-parallel ranks.
* Activations per layer (bytes, 16-bit): Korthikanti et al. 2022 (arXiv 2205.05198), eq. 1:
  ``s b h (34 + 5 a s / h)`` = ``4sbh`` (norms) + ``11sbh + 5as^2b`` (attention) + ``19sbh`` (MLP). With
  tensor parallelism ``t`` and sequence parallelism everything divides by ``t``; selective recomputation
  drops ``5as^2b``; full recomputation keeps the layer input ``2sbh``. The norm term is ``2sbh`` per
  norm (4 norms with openPangu's sandwich norm). The ``11sbh`` attention term assumes Q, K, V and O of
  width ``h``; MLA's are wider (openPangu: Q and K 128 x 192, V and O 128 x 128 for ``h`` = 7680), so
  MLA layers use a per-tensor count instead (``attention_activation_bytes``). Our MoE adaptation
  replaces the MLP term by ``3sbh + 4sbE + k (2sbh + 6sbF_e) + 6sbF_s`` (router logits in fp32, a copy of
  the token and gate/up/product for each of the k routed experts, the shared expert). With 1F1B
  pipeline parallelism the first stage holds ``p`` micro-batches of ``L/p`` layers: ``L`` layers' worth
  whatever ``p`` is.
* Devices: ideal, even sharding of the total over ``N`` devices that each keep a ``reserve`` (default
  10 %, vLLM's default ``gpu_memory_utilization=0.9``) for the runtime.
* Decode roofline: a decode step reads the weights it touches and the whole KV cache once; each token
  does ``2 x active`` FLOPs in the weights (input embedding excluded: a row lookup) plus the attention
  over its cached tokens (``decode_flops_per_token``). Time >= max(bytes / bandwidth, FLOPs / peak): the
  tokens/s bound is the smaller of the memory and the compute bound, and the roofline says which one
  binds. With a batch of ``B`` tokens an MoE layer touches ``E (1 - (1 - k/E)^B)`` distinct experts on
  average (uniform routing). A batch whose budget does not fit the devices is refused (``max_batch``).
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


def attention_activation_bytes(spec: ModelSpec, seq_len: int, micro_batch: int = 1, recompute: str = "none",
                               flash_attention: bool = False) -> float:
    """Bytes the attention block of one layer stores for the backward pass (before any parallel split).

    GQA/MHA: Korthikanti et al.'s ``11sbh + 5as^2b`` (Q, K, V, O of width ``h``; softmax output, its
    dropout mask and output: the ``as^2b`` terms, dropped by FlashAttention or selective recomputation).

    MLA, tensor by tensor (``n`` heads, ``d_qk = qk_nope_head_dim + qk_rope_head_dim``, ``d_v``,
    ranks ``r_q``, ``r_kv``), in 2-byte activations per token:

    * the attention input ``h`` (input of ``q_a_proj`` and ``kv_a_proj_with_mqa``);
    * ``c_q`` before and after ``q_a_layernorm`` (``2 r_q``: the norm's backward and ``q_b_proj``'s input),
      the same for ``c_kv`` (``2 r_kv``);
    * Q after RoPE and K (``n d_qk`` each: the backward of ``Q K^T``), V and the attention output O
      (``n d_v`` each: the backward of ``P V`` and ``o_proj``'s input);
    * with FlashAttention (or selective recomputation), the fp32 log-sum-exp of every head (``4n`` bytes),
      from which the backward pass recomputes the probabilities; without it, the softmax output
      ``2 n s^2 b`` bytes instead. No dropout masks: the MLA models here train with attention dropout 0.

    Assumed: nothing else recomputed (DeepSeek-V3 also recomputes its norms and MLA up-projections, which
    would keep only ``h``, ``c_q``, ``[c_kv, k_rope]``, O and the lse); the shared RoPE key is rebuilt from
    ``kv_a_proj``'s output. openPangu: 187,904 B per token and layer with FlashAttention, 24.5 h, where
    Korthikanti's term gives 11 h.
    """
    s = check_int("seq_len", seq_len, minimum=1)
    b = check_int("micro_batch", micro_batch, minimum=1)
    check_choice("recompute", recompute, RECOMPUTE)
    h, a = spec.hidden_size, spec.num_heads
    no_scores = flash_attention or recompute != "none"
    if spec.attention != "mla":
        return float(11 * s * b * h + (0 if no_scores else 5 * a * s * s * b))
    d_qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
    per_token = 2 * (h + 2 * spec.q_lora_rank + 2 * spec.kv_lora_rank + 2 * a * d_qk + 2 * a * spec.v_head_dim)
    scores = 4 * a * s * b if no_scores else 2 * a * s * s * b
    return float(per_token * s * b + scores)


def activation_bytes_per_layer(spec: ModelSpec, seq_len: int, micro_batch: int = 1, tp: int = 1,
                               recompute: str = "none", flash_attention: bool = False, moe: bool = True) -> float:
    """Activation bytes one layer stores for the backward pass (see the module docstring for the formula)."""
    s = check_int("seq_len", seq_len, minimum=1)
    b = check_int("micro_batch", micro_batch, minimum=1)
    t = check_int("tp", tp, minimum=1)
    check_choice("recompute", recompute, RECOMPUTE)
    h = spec.hidden_size
    if recompute == "full":
        return 2.0 * s * b * h / t
    attention = attention_activation_bytes(spec, s, b, recompute, flash_attention)
    if moe and spec.num_moe_layers:
        mlp = (3 * s * b * h + 4 * s * b * spec.num_experts
               + spec.top_k * (2 * s * b * h + 6 * s * b * spec.expert_ffn_size) + 6 * s * b * spec.shared_ffn_size)
    else:
        mlp = 3 * s * b * h + 6 * s * b * spec.dense_ffn_size
    norms = 2 * spec.norms_per_layer * s * b * h  # each norm keeps its 2-byte input
    return (norms + attention + mlp) / t


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


def attention_flops_per_cached_token(spec: ModelSpec) -> int:
    """FLOPs one new token spends on one cached token in one layer (scores and weighted values).

    GQA: ``2 n d`` for ``q k`` and ``2 n d`` for ``p v``. MLA decodes in its absorbed form (DeepSeek-V2
    paper: ``W_UK`` absorbed into the query, ``W_UV`` into the output, so attention runs on the cached
    latent): ``2 n (r_kv + d_rope)`` for the scores and ``2 n r_kv`` for the values.
    """
    n = spec.num_heads
    if spec.attention == "mla":
        return 2 * n * (spec.kv_lora_rank + spec.qk_rope_head_dim) + 2 * n * spec.kv_lora_rank
    return 4 * n * spec.head_dim


def decode_flops_per_token(spec: ModelSpec, context: int) -> float:
    """FLOPs of one decode token at ``context``: ``2 x active`` weights (input embedding excluded) plus its
    attention over the tokens every layer keeps (``kv_cached_tokens``)."""
    weights = 2.0 * count_parameters(spec).active_without_embedding
    return weights + attention_flops_per_cached_token(spec) * sum(kv_cached_tokens(spec, context))


@dataclass(frozen=True)
class Roofline:
    """Decode-speed upper bounds; ``(low, high)`` follow the hardware ranges.

    ``memory_tokens_per_second``: the bound of bandwidth; ``compute_tokens_per_second``: the bound of peak
    FLOPs (``None`` when the device's TFLOPS are not verified); ``tokens_per_second``: the smaller,
    and ``bound`` says which one binds ("memory", "compute", or "memory or compute" when the two ends of
    the hardware ranges disagree); without verified TFLOPS only the memory bound is known.
    """

    devices: int
    batch: int
    bytes_per_step: float
    flops_per_step: float
    memory_tokens_per_second: tuple[float, float]
    compute_tokens_per_second: tuple[float, float] | None
    bound: str

    @property
    def tokens_per_second(self) -> tuple[float, float]:
        if self.compute_tokens_per_second is None:
            return self.memory_tokens_per_second
        return (min(self.memory_tokens_per_second[0], self.compute_tokens_per_second[0]),
                min(self.memory_tokens_per_second[1], self.compute_tokens_per_second[1]))

    @property
    def per_sequence_tokens_per_second(self) -> tuple[float, float]:
        low, high = self.tokens_per_second
        return low / self.batch, high / self.batch

    @property
    def step_seconds(self) -> tuple[float, float]:
        """(fast, slow) time of one decode step."""
        low, high = self.tokens_per_second
        return self.batch / high, self.batch / low


def decode_roofline(spec: ModelSpec, device: Device, devices: int, dtype: str = "bf16", context: int = 4096,
                    batch: int = 1, kv_dtype: str = "bf16", reserve: float = 0.10) -> Roofline:
    """Upper bound on decode speed of ``devices`` devices working perfectly in parallel.

    A batch whose serving budget does not fit those devices is refused (``check_batch_fits``).
    """
    devices = check_int("devices", devices, minimum=1)
    if device.bandwidth_gbps is None:
        raise ValueError(f"device {device.name!r} has no verified memory bandwidth")
    check_batch_fits(spec, device, devices, batch, dtype, context, kv_dtype, reserve)
    nbytes = decode_bytes_per_step(spec, dtype, context, batch, kv_dtype)
    flops = batch * decode_flops_per_token(spec, context)
    bw_low, bw_high = device.bandwidth_gbps
    memory = (batch * devices * bw_low * GB / nbytes, batch * devices * bw_high * GB / nbytes)
    compute = None
    if device.tflops:
        compute = (batch * devices * device.tflops[0] * 1e12 / flops, batch * devices * device.tflops[1] * 1e12 / flops)
    if compute is None:
        bound = "memory"
    else:
        ends = {"memory" if memory[i] <= compute[i] else "compute" for i in (0, 1)}
        bound = ends.pop() if len(ends) == 1 else "memory or compute"
    return Roofline(devices, batch, nbytes, flops, memory, compute, bound)
