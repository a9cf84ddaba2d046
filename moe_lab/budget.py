"""Parameter budget of a Mixture-of-Experts LM, read from its Hugging Face ``config.json`` (notebook 06).

Introduced in notebook 06 ("The 718B memory budget"). Three steps, each a small function:

    spec = load_model("openpangu-ultra-moe-718b")    # or spec_from_config(json.load(...)), load_config(path)
    count = count_parameters(spec)                    # ParamBreakdown: by component, total and active
    count.total, count.active, count.components       # integers

``ModelSpec`` is one description for every family the course meets: DeepSeek-V2/V3, Kimi K2 and
openPangu-Ultra-MoE (multi-head latent attention, shared experts, leading dense layers, MTP), Mixtral,
Qwen2-MoE (shared expert with a gate), Qwen3-MoE, gpt-oss (biases, attention sinks, MXFP4 experts) and
Llama 4 (``text_config``, MoE layers interleaved with dense ones).

Counting conventions (they matter: published figures differ by up to 3 % because of them):

* ``total`` = every trained weight of the main model: embedding, attention, dense FFNs, routed and shared
  experts, routers (with their biases), every normalisation weight, the LM head (0 when tied).
* Not in ``total``: multi-token-prediction modules (``num_nextn_predict_layers``; DeepSeek-V3's README
  reports "671B main model + 14B MTP = 685B"), reported separately as ``mtp_total``; the aux-loss-free
  selection bias (``e_score_correction_bias``, set by a rule, not by gradients), reported as ``buffers``;
  vision towers (Llama 4's headline 109B/400B include its vision encoder; we count the text model only).
* ``active`` = what one token's forward pass reads: ``total`` minus the ``E - k`` routed experts it skips
  in every MoE layer. The embedding and head tables are counted in full (DeepSeek's README_WEIGHTS does
  this). ``active_without_embedding`` drops the input embedding (a token reads one row of it): gpt-oss,
  Kimi K2 and openPangu's published active counts match this one. ``published.json`` records which
  convention reproduces each owner's figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MODELS_DIR = DATA_DIR / "models"

# model_type -> family; a family decides how config fields map onto ModelSpec
FAMILIES = {
    "deepseek_v2": "deepseek",
    "deepseek_v3": "deepseek",
    "kimi_k2": "deepseek",
    "pangu_ultra_moe": "deepseek",
    "mixtral": "mixtral",
    "qwen2_moe": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "gpt_oss": "gpt_oss",
    "llama4": "llama4",
    "llama4_text": "llama4",
}
CONVENTIONS = ("with_embedding", "without_input_embedding")
COMPONENTS = ("embedding", "attention", "dense_ffn", "routed_experts", "shared_experts", "router", "norms",
              "head")


class ConfigFieldError(KeyError):
    """A config.json lacks a field the count needs. ``str()`` is the plain one-line message."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """Everything the parameter count and the memory budget need, in one family-neutral form.

    Widths are in elements. ``moe_layers[i]`` says whether layer ``i`` has an MoE FFN (else a dense one).
    Attention is ``"mla"`` (multi-head latent attention, DeepSeek-V2 paper arXiv 2405.04434: K and V are
    rebuilt from a cached ``kv_lora_rank`` latent plus a shared ``qk_rope_head_dim`` key) or ``"gqa"``
    (grouped-query attention; MHA is the case ``num_kv_heads == num_heads``).
    """

    name: str
    model_type: str
    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    attention: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    qkv_bias: bool
    o_bias: bool
    qk_norm: bool
    attention_sinks: bool
    moe_layers: tuple[bool, ...]
    dense_ffn_size: int
    num_experts: int
    top_k: int
    expert_ffn_size: int
    shared_ffn_size: int
    shared_expert_gate: bool
    router_bias: bool
    expert_bias: bool
    selection_bias: bool
    norms_per_layer: int
    tie_word_embeddings: bool
    mtp_layers: int = 0
    sliding_window: int = 0
    sliding_layers: tuple[bool, ...] = ()
    quantization: str | None = None
    torch_dtype: str | None = None
    max_position_embeddings: int | None = None
    has_vision_tower: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def num_moe_layers(self) -> int:
        return sum(self.moe_layers)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    def describe(self) -> str:
        """One line: family, attention, layer split, experts."""
        attn = (f"MLA (latent {self.kv_lora_rank} + rope {self.qk_rope_head_dim})" if self.attention == "mla"
                else f"GQA {self.num_heads} q / {self.num_kv_heads} kv heads x {self.head_dim}")
        shared = f" + shared {self.shared_ffn_size}" if self.shared_ffn_size else ""
        moe = (f"{self.num_experts} experts top-{self.top_k} (width {self.expert_ffn_size}{shared})"
               if self.num_moe_layers else "no MoE layers")
        return (f"{self.name}: {self.model_type}, {attn}, {self.num_layers} layers "
                f"({self.num_dense_layers} dense + {self.num_moe_layers} MoE), {moe}")


# ----------------------------------------------------------------------------- reading configs


def _req(cfg: dict, key: str, why: str):
    value = cfg.get(key)
    if value is None:
        raise ConfigFieldError(f"config is missing the field '{key}' ({why})")
    return value


def _int(cfg: dict, key: str, why: str) -> int:
    value = _req(cfg, key, why)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"config field '{key}' must be a non-negative integer, got {value!r}")
    return value


def _opt_int(cfg: dict, key: str, default: int) -> int:
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"config field '{key}' must be a non-negative integer, got {value!r}")
    return value


def _quantization(cfg: dict) -> str | None:
    q = cfg.get("quantization_config")
    if not q:
        return None
    method = q.get("quant_method", "?")
    if method == "fp8" and q.get("weight_block_size"):
        return f"fp8 ({q.get('fmt', '')} weights, one fp32 scale per {q['weight_block_size']} block)"
    if method == "mxfp4":
        return "mxfp4 (MoE expert weights; attention, router, embedding and head kept in bf16)"
    return str(method)


def _common(cfg: dict, name: str, model_type: str, family: str) -> dict:
    hidden = _int(cfg, "hidden_size", "model width")
    heads = _int(cfg, "num_attention_heads", "attention heads")
    if heads == 0:
        raise ValueError("config field 'num_attention_heads' must be >= 1, got 0")
    return dict(
        name=name, model_type=model_type, family=family,
        vocab_size=_int(cfg, "vocab_size", "embedding and LM head rows"),
        hidden_size=hidden,
        num_layers=_int(cfg, "num_hidden_layers", "number of decoder layers"),
        num_heads=heads,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        torch_dtype=cfg.get("torch_dtype"),
        max_position_embeddings=cfg.get("max_position_embeddings"),
        quantization=_quantization(cfg),
    )


def _gqa_fields(cfg: dict, hidden: int, heads: int) -> dict:
    head_dim = cfg.get("head_dim") or hidden // heads
    return dict(attention="gqa", num_kv_heads=_opt_int(cfg, "num_key_value_heads", heads), head_dim=head_dim,
                q_lora_rank=0, kv_lora_rank=0, qk_nope_head_dim=0, qk_rope_head_dim=0, v_head_dim=head_dim)


def _deepseek(cfg: dict, base: dict) -> ModelSpec:
    """DeepSeek-V2/V3, Kimi K2, openPangu-Ultra-MoE: MLA, shared experts, first_k_dense_replace, MTP."""
    n_layers, heads = base["num_layers"], base["num_heads"]
    experts = _opt_int(cfg, "n_routed_experts", 0)
    first_dense = _opt_int(cfg, "first_k_dense_replace", 0)
    freq = max(1, _opt_int(cfg, "moe_layer_freq", 1))
    # HF DeepseekV3DecoderLayer: MoE iff n_routed_experts and i >= first_k_dense_replace and i % freq == 0
    moe = tuple(bool(experts) and i >= first_dense and i % freq == 0 for i in range(n_layers))
    expert_ffn = _int(cfg, "moe_intermediate_size", "width of one routed expert") if experts else 0
    shared = _opt_int(cfg, "n_shared_experts", 0)
    notes = []
    if cfg.get("sandwich_norm"):
        notes.append("sandwich_norm: 4 RMSNorms per layer (pre/post attention and pre/post MLP)")
    if cfg.get("topk_method") == "noaux_tc":
        notes.append("noaux_tc routing: e_score_correction_bias [E] per MoE layer, counted as a buffer")
    return ModelSpec(
        **base, attention="mla", num_kv_heads=heads, head_dim=0,
        q_lora_rank=_opt_int(cfg, "q_lora_rank", 0),
        kv_lora_rank=_int(cfg, "kv_lora_rank", "MLA compressed KV width"),
        qk_nope_head_dim=_int(cfg, "qk_nope_head_dim", "MLA per-head query/key width without RoPE"),
        qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", "MLA per-head RoPE width"),
        v_head_dim=_int(cfg, "v_head_dim", "MLA per-head value width"),
        qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
        qk_norm=False, attention_sinks=False, moe_layers=moe,
        dense_ffn_size=(_int(cfg, "intermediate_size", "width of the dense FFN layers")
                        if not all(moe) else _opt_int(cfg, "intermediate_size", 0)),
        num_experts=experts, top_k=_int(cfg, "num_experts_per_tok", "experts per token") if experts else 0,
        expert_ffn_size=expert_ffn, shared_ffn_size=shared * expert_ffn, shared_expert_gate=False,
        router_bias=False, expert_bias=False, selection_bias=cfg.get("topk_method") == "noaux_tc",
        norms_per_layer=4 if cfg.get("sandwich_norm") else 2,
        mtp_layers=_opt_int(cfg, "num_nextn_predict_layers", 0), notes=tuple(notes))


def _mixtral(cfg: dict, base: dict) -> ModelSpec:
    experts = _int(cfg, "num_local_experts", "number of experts")
    return ModelSpec(
        **base, **_gqa_fields(cfg, base["hidden_size"], base["num_heads"]),
        qkv_bias=False, o_bias=False, qk_norm=False, attention_sinks=False,
        moe_layers=(True,) * base["num_layers"], dense_ffn_size=0, num_experts=experts,
        top_k=_int(cfg, "num_experts_per_tok", "experts per token"),
        expert_ffn_size=_int(cfg, "intermediate_size", "width of one expert"), shared_ffn_size=0,
        shared_expert_gate=False, router_bias=False, expert_bias=False, selection_bias=False,
        norms_per_layer=2, sliding_window=cfg.get("sliding_window") or 0,
        sliding_layers=(bool(cfg.get("sliding_window")),) * base["num_layers"])


def _qwen_moe_layers(cfg: dict, n_layers: int, experts: int) -> tuple[bool, ...]:
    # HF Qwen2/Qwen3 MoE decoder layer: sparse iff not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0
    step = max(1, _opt_int(cfg, "decoder_sparse_step", 1))
    only_mlp = set(cfg.get("mlp_only_layers") or [])
    return tuple(i not in only_mlp and experts > 0 and (i + 1) % step == 0 for i in range(n_layers))


def _qwen(cfg: dict, base: dict, qwen3: bool) -> ModelSpec:
    experts = _int(cfg, "num_experts", "number of routed experts")
    moe = _qwen_moe_layers(cfg, base["num_layers"], experts)
    shared = 0 if qwen3 else _opt_int(cfg, "shared_expert_intermediate_size", 0)
    bias = bool(cfg.get("attention_bias", False))
    return ModelSpec(
        **base, **_gqa_fields(cfg, base["hidden_size"], base["num_heads"]),
        # Qwen2-MoE: q, k, v carry biases (config 'qkv_bias', default True); Qwen3: 'attention_bias'
        qkv_bias=bias if qwen3 else bool(cfg.get("qkv_bias", True)), o_bias=bias if qwen3 else False,
        qk_norm=qwen3, attention_sinks=False, moe_layers=moe,
        dense_ffn_size=(_int(cfg, "intermediate_size", "width of the dense FFN layers")
                        if not all(moe) else _opt_int(cfg, "intermediate_size", 0)),
        num_experts=experts, top_k=_int(cfg, "num_experts_per_tok", "experts per token"),
        expert_ffn_size=_int(cfg, "moe_intermediate_size", "width of one routed expert"),
        shared_ffn_size=shared, shared_expert_gate=shared > 0, router_bias=False, expert_bias=False,
        selection_bias=False, norms_per_layer=2,
        sliding_window=(cfg.get("sliding_window") or 0) if cfg.get("use_sliding_window") else 0)


def _gpt_oss(cfg: dict, base: dict) -> ModelSpec:
    n = base["num_layers"]
    kinds = cfg.get("layer_types") or ["full_attention"] * n
    window = cfg.get("sliding_window") or 0
    bias = bool(cfg.get("attention_bias", True))
    top_k = cfg.get("num_experts_per_tok", cfg.get("experts_per_token"))
    if top_k is None:
        raise ConfigFieldError("config is missing the field 'num_experts_per_tok' (experts per token)")
    return ModelSpec(
        **base, **_gqa_fields(cfg, base["hidden_size"], base["num_heads"]),
        qkv_bias=bias, o_bias=bias, qk_norm=False, attention_sinks=True, moe_layers=(True,) * n,
        dense_ffn_size=0, num_experts=_int(cfg, "num_local_experts", "number of experts"), top_k=top_k,
        expert_ffn_size=_int(cfg, "intermediate_size", "width of one expert"), shared_ffn_size=0,
        shared_expert_gate=False, router_bias=True, expert_bias=True, selection_bias=False, norms_per_layer=2,
        sliding_window=window, sliding_layers=tuple(k == "sliding_attention" and window > 0 for k in kinds),
        notes=("gpt-oss: q/k/v/o biases, one learned attention-sink logit per head, router and expert biases",))


def _llama4(cfg: dict, base: dict, has_vision: bool) -> ModelSpec:
    n = base["num_layers"]
    step = max(1, _opt_int(cfg, "interleave_moe_layer_step", 1))
    # HF Llama4TextConfig: moe_layers = range(step - 1, n, step) unless given explicitly
    moe_idx = set(cfg.get("moe_layers") or range(step - 1, n, step))
    moe = tuple(i in moe_idx for i in range(n))
    width = _int(cfg, "intermediate_size", "width of one expert and of the shared expert")
    return ModelSpec(
        **base, **_gqa_fields(cfg, base["hidden_size"], base["num_heads"]),
        qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
        qk_norm=False,  # Llama 4's qk norm is a weightless L2 norm: no parameters
        attention_sinks=False, moe_layers=moe,
        dense_ffn_size=(_int(cfg, "intermediate_size_mlp", "width of the dense FFN layers")
                        if not all(moe) else 0),
        num_experts=_int(cfg, "num_local_experts", "number of experts"),
        top_k=_int(cfg, "num_experts_per_tok", "experts per token"), expert_ffn_size=width,
        shared_ffn_size=width, shared_expert_gate=False, router_bias=False, expert_bias=False,
        selection_bias=False, norms_per_layer=2, has_vision_tower=has_vision,
        notes=("Llama 4: text model only; the vision encoder in the headline totals is not counted",))


def spec_from_config(config: dict, name: str | None = None) -> ModelSpec:
    """Turn a Hugging Face ``config.json`` (as a dict) into a ``ModelSpec``.

    Llama 4 multimodal configs keep the language model under ``text_config``. Unknown ``model_type``s
    are accepted when their fields say which family they follow (``kv_lora_rank`` -> DeepSeek style,
    ``num_local_experts`` -> Mixtral style, ``num_experts`` -> Qwen style).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (a parsed config.json), got {type(config).__name__}")
    has_vision = "vision_config" in config
    cfg = config
    if isinstance(config.get("text_config"), dict):
        cfg = {**{k: v for k, v in config.items() if k != "text_config"}, **config["text_config"]}
    model_type = str(cfg.get("model_type") or config.get("model_type") or "")
    family = FAMILIES.get(model_type)
    if family is None:
        if "kv_lora_rank" in cfg:
            family = "deepseek"
        elif "num_local_experts" in cfg:
            family = "mixtral"
        elif "num_experts" in cfg:
            family = "qwen2_moe" if "shared_expert_intermediate_size" in cfg else "qwen3_moe"
        else:
            raise ValueError(f"unsupported model_type {model_type!r}: expected one of "
                             f"{', '.join(sorted(FAMILIES))} (or a config with MoE fields)")
    base = _common(cfg, name or model_type or "model", model_type, family)
    if family == "deepseek":
        return _deepseek(cfg, base)
    if family == "mixtral":
        return _mixtral(cfg, base)
    if family in ("qwen2_moe", "qwen3_moe"):
        return _qwen(cfg, base, qwen3=family == "qwen3_moe")
    if family == "gpt_oss":
        return _gpt_oss(cfg, base)
    return _llama4(cfg, base, has_vision)


def load_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """Read a ``config.json`` file into a ``ModelSpec`` (name defaults to the parent folder's name)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json at {path}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    return spec_from_config(config, name or path.parent.name)


def model_ids() -> list[str]:
    """The models shipped in ``data/models/`` (one folder with a config.json each)."""
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/config.json"))


def load_model(model_id: str) -> ModelSpec:
    """The ``ModelSpec`` of a shipped model, e.g. ``load_model("mixtral-8x7b")``."""
    ids = model_ids()
    if model_id not in ids:
        raise ValueError(f"unknown model {model_id!r}; valid models: {', '.join(ids)}")
    return load_config(MODELS_DIR / model_id / "config.json", model_id)


def load_published() -> dict:
    """``data/models/published.json``: owners' total/active counts with sources and conventions."""
    return json.loads((MODELS_DIR / "published.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- counting


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
