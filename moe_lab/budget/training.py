"""Memory to train an MoE model: parallel layout, training state and activations (notebook 07).

Introduced in notebook 07, after the serving budget of ``moe_lab.budget.memory``. The formulas, and where each
comes from:

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moe_lab.budget.count import count_parameters
from moe_lab.budget.hardware import Device
from moe_lab.budget.memory import GB
from moe_lab.budget.spec import ModelSpec
from moe_lab.checks import check_choice, check_int


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
