"""A MindSpore skeleton of any ``ModelSpec``, to check the parameter formula by counting real tensors.

Introduced in notebook 07 (section "Check the formula with real tensors"). ``build_model(spec)`` builds
the decoder (embedding, attention, dense FFN or MoE per layer, norms, head, optional MTP modules) from
``moe_lab`` blocks: the MoE block of every MoE layer is ``MoELayer.from_block_config`` (what
``MoELayer.from_config`` builds from a config.json: router, routed and shared experts), ``Expert`` the
dense FFNs, and the small cells below attention, norms and embeddings. Only parameters are built (no forward
pass): ``moe_lab.count_params(model)`` must then equal ``count_parameters(spec)`` exactly.

Real configs are far too large to build, so ``shrink(spec)`` keeps a model's structure (attention kind,
biases, sinks, shared experts, the dense/MoE layer pattern, MTP) with tiny widths.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from mindspore import Parameter, Tensor, nn

from moe_lab.budget.spec import ModelSpec
from moe_lab.core.config import MoEBlockConfig
from moe_lab.core.experts import Expert
from moe_lab.core.layer import MoELayer


def _param(shape: tuple[int, ...], name: str, requires_grad: bool = True) -> Parameter:
    # zeros: only the shapes matter here, and zeros are the cheapest tensor to create
    return Parameter(Tensor(np.zeros(shape, np.float32)), name=name, requires_grad=requires_grad)


class RMSNorm(nn.Cell):
    """RMSNorm scale vector ``[dim]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = _param((dim,), "weight")


class TokenEmbedding(nn.Cell):
    """Embedding table ``[vocab, hidden]``."""

    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.weight = _param((vocab, hidden), "weight")


class GQAttention(nn.Cell):
    """Grouped-query attention: q, k, v, o projections, optional biases, q/k norms and attention sinks."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        h, n, kv, d = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.q_proj = _param((h, n * d), "q_proj")
        self.k_proj = _param((h, kv * d), "k_proj")
        self.v_proj = _param((h, kv * d), "v_proj")
        self.o_proj = _param((n * d, h), "o_proj")
        if spec.qkv_bias:
            self.q_bias, self.k_bias, self.v_bias = (_param((n * d,), "q_bias"), _param((kv * d,), "k_bias"),
                                                     _param((kv * d,), "v_bias"))
        if spec.o_bias:
            self.o_bias = _param((h,), "o_bias")
        if spec.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(d), RMSNorm(d)
        if spec.attention_sinks:
            self.sinks = _param((n,), "sinks")


class MLAttention(nn.Cell):
    """Multi-head latent attention (DeepSeek-V2): low-rank query, compressed KV latent + shared RoPE key."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        h, n = spec.hidden_size, spec.num_heads
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        if spec.q_lora_rank:
            self.q_a_proj = _param((h, spec.q_lora_rank), "q_a_proj")
            self.q_a_norm = RMSNorm(spec.q_lora_rank)
            self.q_b_proj = _param((spec.q_lora_rank, n * qk), "q_b_proj")
        else:
            self.q_proj = _param((h, n * qk), "q_proj")
        self.kv_a_proj = _param((h, spec.kv_lora_rank + spec.qk_rope_head_dim), "kv_a_proj")
        self.kv_a_norm = RMSNorm(spec.kv_lora_rank)
        self.kv_b_proj = _param((spec.kv_lora_rank, n * (spec.qk_nope_head_dim + spec.v_head_dim)), "kv_b_proj")
        self.o_proj = _param((n * spec.v_head_dim, h), "o_proj")


def block_config(spec: ModelSpec) -> MoEBlockConfig:
    """The MoE block of ``spec`` in ``MoELayer``'s terms (the shared experts as one FFN of their total width)."""
    return MoEBlockConfig(
        family=spec.family, model_type=spec.model_type, hidden_size=spec.hidden_size,
        intermediate_size=spec.expert_ffn_size, num_experts=spec.num_experts, top_k=spec.top_k,
        scoring_func=spec.scoring_func, norm_topk_prob=spec.norm_topk_prob,
        routed_scaling_factor=spec.routed_scaling_factor, topk_method=spec.topk_method, n_group=spec.n_group,
        topk_group=spec.topk_group, n_shared_experts=0, shared_expert_intermediate_size=spec.shared_ffn_size or None,
        shared_expert_gate=spec.shared_expert_gate)


class MoEBlock(nn.Cell):
    """The MoE FFN of one layer: a ``MoELayer`` (router, routed and shared experts) and gpt-oss's biases.

    gpt-oss biases are stacked ``[E, ...]`` tensors stored on the experts cell, so ``count_params`` treats
    them like the expert weights (only ``top_k`` of ``E`` slices are active). The router's selection bias
    (DeepSeek-V3's ``e_score_correction_bias``) is already ``moe.router.selection_bias`` (not trainable).
    """

    def __init__(self, spec: ModelSpec, seed: int = 0):
        super().__init__()
        h, e = spec.hidden_size, spec.num_experts
        self.moe = MoELayer.from_block_config(block_config(spec), seed=seed)
        if spec.router_bias:
            self.moe.router.bias = _param((e,), "router_bias")
        if spec.expert_bias:
            self.moe.experts.b_gate_up = _param((e, 2 * spec.expert_ffn_size), "b_gate_up")
            self.moe.experts.b_down = _param((e, h), "b_down")


class DecoderLayer(nn.Cell):
    """Norms + attention + (dense FFN or MoE block)."""

    def __init__(self, spec: ModelSpec, moe: bool, seed: int = 0):
        super().__init__()
        self.norms = nn.CellList([RMSNorm(spec.hidden_size) for _ in range(spec.norms_per_layer)])
        self.attention = MLAttention(spec) if spec.attention == "mla" else GQAttention(spec)
        self.ffn = MoEBlock(spec, seed) if moe else Expert(spec.hidden_size, spec.dense_ffn_size, seed=seed)


class MTPModule(nn.Cell):
    """One DeepSeek-V3 multi-token-prediction module (embedding and head are shared, not rebuilt)."""

    def __init__(self, spec: ModelSpec, seed: int = 0):
        super().__init__()
        h = spec.hidden_size
        self.enorm, self.hnorm, self.head_norm = RMSNorm(h), RMSNorm(h), RMSNorm(h)
        self.eh_proj = _param((2 * h, h), "eh_proj")
        self.layer = DecoderLayer(spec, moe=spec.num_experts > 0, seed=seed)


class BudgetModel(nn.Cell):
    """Parameter skeleton of a ``ModelSpec`` (no ``construct``: it is counted, not run)."""

    def __init__(self, spec: ModelSpec, include_mtp: bool = False, seed: int = 0):
        super().__init__()
        self.spec = spec
        self.embed = TokenEmbedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.CellList([DecoderLayer(spec, moe, seed + i) for i, moe in enumerate(spec.moe_layers)])
        self.norm = RMSNorm(spec.hidden_size)
        self.head = None if spec.tie_word_embeddings else TokenEmbedding(spec.vocab_size, spec.hidden_size)
        self.mtp = (nn.CellList([MTPModule(spec, seed + 1000 + i) for i in range(spec.mtp_layers)])
                    if include_mtp and spec.mtp_layers else None)


def build_model(spec: ModelSpec, include_mtp: bool = False, seed: int = 0) -> BudgetModel:
    """A MindSpore ``BudgetModel`` with exactly the parameters ``count_parameters(spec)`` describes."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    too_big = spec.vocab_size * spec.hidden_size + spec.num_layers * spec.num_experts * spec.expert_ffn_size * 64
    if too_big > 50_000_000:
        raise ValueError(f"spec {spec.name!r} is too large to build on a laptop: shrink(spec) it first")
    return BudgetModel(spec, include_mtp, seed)


def _pick_layers(moe_layers: tuple[bool, ...]) -> list[int]:
    """A few layer indices that keep the dense/MoE pattern: the first two, the first MoE layer and the one
    after it, and the last (e.g. DeepSeek's 3 leading dense layers -> dense, dense, MoE, MoE, MoE)."""
    n = len(moe_layers)
    first_moe = next((i for i, m in enumerate(moe_layers) if m), 0)
    return sorted({i for i in (0, 1, first_moe, first_moe + 1, n - 1) if 0 <= i < n})


def shrink(spec: ModelSpec, hidden_size: int = 16, vocab: int = 37) -> ModelSpec:
    """The same architecture with tiny widths (for ``build_model``): every feature that changes the count
    (biases, sinks, q/k norms, MLA ranks, shared experts and their gate, layer pattern, MTP) is kept."""
    pick = _pick_layers(spec.moe_layers)
    experts = min(spec.num_experts, 6)
    top_k = max(1, min(spec.top_k, experts // 2)) if experts else 0
    shared_ratio = max(1, round(spec.shared_ffn_size / spec.expert_ffn_size)) if spec.shared_ffn_size else 0
    heads = 4
    kv = heads if spec.num_kv_heads == spec.num_heads else 2
    sliding = tuple(spec.sliding_layers[i] for i in pick) if spec.sliding_layers else ()
    return dataclasses.replace(
        spec, name=f"{spec.name} (shrunk)", vocab_size=vocab, hidden_size=hidden_size, num_layers=len(pick),
        num_heads=heads, num_kv_heads=kv, head_dim=4 if spec.attention == "gqa" else 0,
        q_lora_rank=8 if spec.q_lora_rank else 0, kv_lora_rank=6 if spec.attention == "mla" else 0,
        qk_nope_head_dim=4 if spec.attention == "mla" else 0, qk_rope_head_dim=2 if spec.attention == "mla" else 0,
        v_head_dim=3 if spec.attention == "mla" else 4,
        moe_layers=tuple(spec.moe_layers[i] for i in pick), dense_ffn_size=24 if spec.dense_ffn_size else 0,
        num_experts=experts, top_k=top_k, expert_ffn_size=8 if experts else 0, shared_ffn_size=8 * shared_ratio,
        mtp_layers=min(spec.mtp_layers, 1), sliding_layers=sliding,
        topk_method="noaux_tc" if spec.topk_method == "noaux_tc" else "greedy", n_group=1, topk_group=1,
        chunked_layers=tuple(spec.chunked_layers[i] for i in pick) if spec.chunked_layers else (),
        sliding_window=min(spec.sliding_window, 8) if spec.sliding_window else 0)
