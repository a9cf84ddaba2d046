"""Counting the parameters of a ``ModelSpec`` by component, in total and per token (notebook 07).

The conventions (what ``total`` and ``active`` include) are those of ``moe_lab.budget.spec``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_lab.budget.spec import CONVENTIONS, ModelSpec, load_model, load_published


def attention_params(spec: ModelSpec) -> int:
    """Projection weights (+ biases, + sinks) of one attention layer; norms are counted in ``norm_params``.

    MLA: ``q_a [H, r_q]``, ``q_b [r_q, n(d_nope+d_rope)]`` (or one ``q [H, n(d_nope+d_rope)]`` when
    ``q_lora_rank`` is 0), ``kv_a [H, r_kv + d_rope]``, ``kv_b [r_kv, n(d_nope+d_v)]``, ``o [n d_v, H]``.
    GQA: ``q [H, n d]``, ``k, v [H, n_kv d]``, ``o [n d, H]``.
    """
    h, n = spec.hidden_size, spec.num_heads
    if spec.attention == "mla":
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        q = h * spec.q_lora_rank + spec.q_lora_rank * n * qk if spec.q_lora_rank else h * n * qk
        kv = h * (spec.kv_lora_rank + spec.qk_rope_head_dim)
        kv += spec.kv_lora_rank * n * (spec.qk_nope_head_dim + spec.v_head_dim)
        o = n * spec.v_head_dim * h
        return q + kv + o
    d, kv_heads = spec.head_dim, spec.num_kv_heads
    weights = h * n * d + 2 * h * kv_heads * d + n * d * h
    biases = (n * d + 2 * kv_heads * d if spec.qkv_bias else 0) + (h if spec.o_bias else 0)
    return weights + biases + (n if spec.attention_sinks else 0)


def norm_params(spec: ModelSpec) -> int:
    """RMSNorm weights of one decoder layer, including the ones inside attention."""
    inner = 0
    if spec.attention == "mla":
        inner = spec.q_lora_rank + spec.kv_lora_rank  # q_a_layernorm, kv_a_layernorm
    elif spec.qk_norm:
        inner = 2 * spec.head_dim  # q_norm, k_norm over one head
    return spec.norms_per_layer * spec.hidden_size + inner


def ffn_params(hidden: int, width: int) -> int:
    """A SwiGLU FFN ``hidden -> width -> hidden``: gate, up and down projections, ``3 H F``."""
    return 3 * hidden * width


def expert_params(spec: ModelSpec) -> int:
    """One routed expert in one layer (gpt-oss adds a ``2F`` gate/up bias and an ``H`` down bias)."""
    biases = 2 * spec.expert_ffn_size + spec.hidden_size if spec.expert_bias else 0
    return ffn_params(spec.hidden_size, spec.expert_ffn_size) + biases


def shared_expert_params(spec: ModelSpec) -> int:
    """The always-on shared expert(s) of one MoE layer (+ Qwen2-MoE's ``[H, 1]`` sigmoid gate)."""
    if not spec.shared_ffn_size:
        return 0
    return ffn_params(spec.hidden_size, spec.shared_ffn_size) + (spec.hidden_size if spec.shared_expert_gate else 0)


def router_params(spec: ModelSpec) -> int:
    """The router of one MoE layer: ``[H, E]`` (+ an ``[E]`` bias for gpt-oss)."""
    return spec.hidden_size * spec.num_experts + (spec.num_experts if spec.router_bias else 0)


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by component. ``components`` sums to ``total``; ``active_components`` to ``active``."""

    name: str
    components: dict
    active_components: dict
    mtp_total: int = 0
    mtp_active: int = 0
    buffers: int = 0

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def active(self) -> int:
        return sum(self.active_components.values())

    @property
    def active_without_embedding(self) -> int:
        return self.active - self.components["embedding"]

    def active_by(self, convention: str) -> int:
        """``active`` under a named convention: ``with_embedding`` or ``without_input_embedding``."""
        if convention == "with_embedding":
            return self.active
        if convention == "without_input_embedding":
            return self.active_without_embedding
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}; got {convention!r}")

    @property
    def active_fraction(self) -> float:
        return self.active / self.total if self.total else 0.0


def _moe_layer_params(spec: ModelSpec, active: bool) -> int:
    experts = spec.top_k if active else spec.num_experts
    return experts * expert_params(spec) + shared_expert_params(spec) + router_params(spec)


def _layer_params(spec: ModelSpec, moe: bool, active: bool) -> int:
    ffn = _moe_layer_params(spec, active) if moe else ffn_params(spec.hidden_size, spec.dense_ffn_size)
    return attention_params(spec) + norm_params(spec) + ffn


def mtp_params(spec: ModelSpec, active: bool = False) -> int:
    """DeepSeek-V3-style MTP modules (embedding and head shared with the main model, not recounted):
    ``enorm``, ``hnorm``, ``eh_proj [2H, H]``, one MoE decoder layer and ``shared_head.norm``."""
    if not spec.mtp_layers:
        return 0
    h = spec.hidden_size
    return spec.mtp_layers * (3 * h + 2 * h * h + _layer_params(spec, moe=spec.num_experts > 0, active=active))


def count_parameters(spec: ModelSpec) -> ParamBreakdown:
    """Count every parameter of ``spec`` by component, in total and per token (see the module docstring)."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec (see load_model / spec_from_config), got {type(spec).__name__}")
    h, v, n_layers = spec.hidden_size, spec.vocab_size, spec.num_layers
    n_moe, n_dense = spec.num_moe_layers, spec.num_dense_layers
    total = {
        "embedding": v * h,
        "attention": n_layers * attention_params(spec),
        "dense_ffn": n_dense * ffn_params(h, spec.dense_ffn_size),
        "routed_experts": n_moe * spec.num_experts * expert_params(spec),
        "shared_experts": n_moe * shared_expert_params(spec),
        "router": n_moe * router_params(spec),
        "norms": n_layers * norm_params(spec) + h,  # + the final norm
        "head": 0 if spec.tie_word_embeddings else v * h,
    }
    active = dict(total)
    active["routed_experts"] = n_moe * spec.top_k * expert_params(spec)
    return ParamBreakdown(
        name=spec.name, components=total, active_components=active,
        mtp_total=mtp_params(spec), mtp_active=mtp_params(spec, active=True),
        buffers=(n_moe * spec.num_experts if spec.selection_bias else 0))


def matrix_shapes(spec: ModelSpec) -> list[tuple[str, int, int, int]]:
    """Every linear-layer weight as ``(component, copies, rows, cols)`` with ``rows`` = output features.

    This is the part a weight-only quantiser converts; vectors (norms, biases, sinks), routers, the
    embedding and the head stay in 16 bits in every published low-bit checkpoint the course uses
    (DeepSeek-V3 and Kimi K2 fp8, gpt-oss mxfp4). ``copies`` counts layers (and experts).
    """
    h, n, layers = spec.hidden_size, spec.num_heads, spec.num_layers
    shapes: list[tuple[str, int, int, int]] = []
    if spec.attention == "mla":
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        if spec.q_lora_rank:
            shapes += [("attention", layers, spec.q_lora_rank, h), ("attention", layers, n * qk, spec.q_lora_rank)]
        else:
            shapes.append(("attention", layers, n * qk, h))
        shapes += [("attention", layers, spec.kv_lora_rank + spec.qk_rope_head_dim, h),
                   ("attention", layers, n * (spec.qk_nope_head_dim + spec.v_head_dim), spec.kv_lora_rank),
                   ("attention", layers, h, n * spec.v_head_dim)]
    else:
        d, kv = spec.head_dim, spec.num_kv_heads
        shapes += [("attention", layers, n * d, h), ("attention", 2 * layers, kv * d, h),
                   ("attention", layers, h, n * d)]
    if spec.num_dense_layers:
        f = spec.dense_ffn_size
        shapes += [("dense_ffn", 2 * spec.num_dense_layers, f, h), ("dense_ffn", spec.num_dense_layers, h, f)]
    if spec.num_moe_layers:
        copies, f = spec.num_moe_layers * spec.num_experts, spec.expert_ffn_size
        shapes += [("routed_experts", 2 * copies, f, h), ("routed_experts", copies, h, f)]
        if spec.shared_ffn_size:
            fs = spec.shared_ffn_size
            shapes += [("shared_experts", 2 * spec.num_moe_layers, fs, h),
                       ("shared_experts", spec.num_moe_layers, h, fs)]
    return shapes


def matrix_params(spec: ModelSpec) -> dict:
    """Matrix weights per component (the quantisable part, see ``matrix_shapes``)."""
    out = {"attention": 0, "dense_ffn": 0, "routed_experts": 0, "shared_experts": 0}
    for component, copies, rows, cols in matrix_shapes(spec):
        out[component] += copies * rows * cols
    return out


def relative_error(value: float, reference: float) -> float:
    """``|value - reference| / reference``: how far a recount is from a published figure."""
    return abs(value - reference) / reference


def compare_with_published(model_id: str, count: ParamBreakdown | None = None) -> dict:
    """Our count next to the owner's figure for a shipped model, with the relative errors."""
    published = load_published()["models"]
    if model_id not in published:
        raise ValueError(f"no published figures for {model_id!r}; known: {', '.join(sorted(published))}")
    entry = published[model_id]
    count = count or count_parameters(load_model(model_id))
    total_pub = entry["total_params"]["value"]
    active_pub = entry["active_params"]["value"]
    convention = entry["active_params"]["convention"]
    ours_active = count.active_by(convention)
    default = load_published().get("default_tolerance", 0.02)
    tolerance = entry.get("tolerance", {})
    return {
        "model": model_id, "total": count.total, "published_total": total_pub,
        "total_error": relative_error(count.total, total_pub), "active": ours_active,
        "published_active": active_pub, "active_error": relative_error(ours_active, active_pub),
        "convention": convention, "total_tolerance": tolerance.get("total", default),
        "active_tolerance": tolerance.get("active", default),
    }
