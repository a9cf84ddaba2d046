"""Parameter budget of a Mixture-of-Experts LM, read from its Hugging Face ``config.json`` (notebook 07).

Introduced in notebook 07 ("The 718B memory budget"). Three steps, each a small function:

    spec = load_model("openpangu-ultra-moe-718b")    # or spec_from_config(json.load(...)), load_config(path)
    count = count_parameters(spec)                    # ParamBreakdown: by component, total and active
    count.total, count.active, count.components       # integers

``ModelSpec`` is one description for every family the course meets: DeepSeek-V2/V3, Kimi K2 and
openPangu-Ultra-MoE (multi-head latent attention, shared experts, leading dense layers, MTP), DeepSeekMoE
16B (the same MoE layout with standard multi-head attention), Mixtral,
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
  Kimi K2 and openPangu's published active counts match this one (for openPangu this is inferred from the
  numbers; Huawei does not state its convention). ``published.json`` records which convention reproduces
  each owner's figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from moe_lab.core.config import (
    CHECKPOINT_FAMILIES,
    FAMILIES,
    ConfigFieldError,
    config_family,
    flatten_config,
    moe_block_config,
)
from moe_lab.i18n import _, language

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data"
MODELS_DIR = DATA_DIR / "models"
CONVENTIONS = ("with_embedding", "without_input_embedding")
COMPONENTS = ("embedding", "attention", "dense_ffn", "routed_experts", "shared_experts", "router", "norms",
              "head")
__all__ = ["FAMILIES", "ConfigFieldError", "ModelSpec", "load_article_claims", "load_config", "load_model",
           "load_published", "model_ids", "spec_from_config"]


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
    attention_chunk: int = 0  # Llama 4's chunked attention: tokens per chunk on the chunked layers
    chunked_layers: tuple[bool, ...] = ()
    # how the router scores and picks (moe_lab.core.config reads the same fields for MoELayer.from_config)
    scoring_func: str = "softmax"
    topk_method: str = "greedy"
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    notes: tuple[str, ...] = field(default=())

    @property
    def num_moe_layers(self) -> int:
        return sum(self.moe_layers)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    def describe(self) -> str:
        """One line, in the package's language: family, attention, layer split, experts (notebook 07)."""
        if self.attention == "mla":
            attn = _("MLA (latent {kv_lora_rank} + rope {rope})").format(kv_lora_rank=self.kv_lora_rank,
                                                                          rope=self.qk_rope_head_dim)
        else:
            attn = _("GQA {heads} q / {kv_heads} kv heads x {head_dim}").format(
                heads=self.num_heads, kv_heads=self.num_kv_heads, head_dim=self.head_dim)
        if not self.num_moe_layers:
            moe = _("no MoE layers")
        elif self.shared_ffn_size:
            moe = _("{experts} experts top-{top_k} (width {width} + shared {shared})").format(
                experts=self.num_experts, top_k=self.top_k, width=self.expert_ffn_size, shared=self.shared_ffn_size)
        else:
            moe = _("{experts} experts top-{top_k} (width {width})").format(
                experts=self.num_experts, top_k=self.top_k, width=self.expert_ffn_size)
        return _("{name}: {model_type}, {attention}, {layers} layers ({dense} dense + {moe_layers} MoE), {experts}"
                 ).format(name=self.name, model_type=self.model_type, attention=attn, layers=self.num_layers,
                          dense=self.num_dense_layers, moe_layers=self.num_moe_layers, experts=moe)


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
    """DeepSeek-V2/V3, Kimi K2, openPangu-Ultra-MoE: MLA, shared experts, first_k_dense_replace, MTP.
    DeepSeekMoE 16B (``model_type`` "deepseek"): the same MoE layout with standard multi-head attention."""
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
    if base["model_type"] == "deepseek":  # DeepSeekMoE 16B: standard multi-head attention
        attention = _gqa_fields(cfg, base["hidden_size"], heads)
    else:
        attention = dict(
            attention="mla", num_kv_heads=heads, head_dim=0, q_lora_rank=_opt_int(cfg, "q_lora_rank", 0),
            kv_lora_rank=_int(cfg, "kv_lora_rank", "MLA compressed KV width"),
            qk_nope_head_dim=_int(cfg, "qk_nope_head_dim", "MLA per-head query/key width without RoPE"),
            qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", "MLA per-head RoPE width"),
            v_head_dim=_int(cfg, "v_head_dim", "MLA per-head value width"))
    return ModelSpec(
        **base, **attention,
        qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
        qk_norm=False, attention_sinks=False, moe_layers=moe,
        dense_ffn_size=(_int(cfg, "intermediate_size", "width of the dense FFN layers")
                        if not all(moe) else _opt_int(cfg, "intermediate_size", 0)),
        num_experts=experts, top_k=_int(cfg, "num_experts_per_tok", "experts per token") if experts else 0,
        expert_ffn_size=expert_ffn, shared_ffn_size=shared * expert_ffn, shared_expert_gate=False,
        router_bias=False, expert_bias=False, selection_bias=False,  # set from the router fields below
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
    # chunked attention (HF Llama4TextConfig): layers with RoPE attend within chunks of attention_chunk_size
    # tokens; every no_rope_layer_interval-th layer (4 by default: 3, 7, ...) is global and has no RoPE
    interval = max(1, _opt_int(cfg, "no_rope_layer_interval", 4))
    rope = cfg.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(n)]
    chunk = _opt_int(cfg, "attention_chunk_size", 0)
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
        selection_bias=False, norms_per_layer=2, has_vision_tower=has_vision, attention_chunk=chunk,
        chunked_layers=tuple(bool(chunk) and bool(r) for r in rope[:n]),
        notes=("Llama 4: text model only; the vision encoder in the headline totals is not counted",))


def spec_from_config(config: dict, name: str | None = None) -> ModelSpec:
    """Turn a Hugging Face ``config.json`` (as a dict) into a ``ModelSpec``.

    Llama 4 multimodal configs keep the language model under ``text_config``. Unknown ``model_type``s
    are accepted when their fields say which family they follow (``kv_lora_rank`` -> DeepSeek style,
    ``num_local_experts`` -> Mixtral style, ``num_experts`` -> Qwen style).
    """
    has_vision = isinstance(config, dict) and "vision_config" in config
    cfg = flatten_config(config)
    model_type, family = config_family(cfg)
    base = _common(cfg, name or model_type or "model", model_type, family)
    readers = {"deepseek": _deepseek, "mixtral": _mixtral, "qwen2_moe": lambda c, b: _qwen(c, b, qwen3=False),
               "qwen3_moe": lambda c, b: _qwen(c, b, qwen3=True), "gpt_oss": _gpt_oss,
               "llama4": lambda c, b: _llama4(c, b, has_vision)}
    spec = readers[family](cfg, base)
    if family in CHECKPOINT_FAMILIES and spec.num_experts:
        # the router, read exactly as MoELayer.from_config reads it (one reader of these fields)
        block = moe_block_config(cfg)
        spec = replace(spec, scoring_func=block.scoring_func, topk_method=block.topk_method, n_group=block.n_group,
                       topk_group=block.topk_group, norm_topk_prob=block.norm_topk_prob,
                       routed_scaling_factor=block.routed_scaling_factor, selection_bias=block.selection_bias,
                       notes=spec.notes + (("noaux_tc routing: e_score_correction_bias [E] per MoE layer, counted as "
                                            "a buffer",) if block.selection_bias else ()))
    elif family == "llama4":
        spec = replace(spec, scoring_func="sigmoid", norm_topk_prob=False)
    elif family == "gpt_oss":
        spec = replace(spec, norm_topk_prob=True)  # softmax over the top-k logits = renormalised softmax
    return spec


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
        raise ValueError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a UTF-8 text file (byte {exc.start}): expected a config.json") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object (a config.json), got a JSON {type(config).__name__}")
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


def load_article_claims() -> dict:
    """``data/models/article_claims.json``: the article's claims, verdicts and evidence (notebook 07's
    fact-check computes the numbers).

    ``claim``, ``verdict`` and ``evidence`` come in the course's language: under ``MOE_LAB_LANG=zh`` each takes its
    ``*_zh`` field (the English one stays as ``*_en``), so the Chinese notebook runs the same cell."""
    data = json.loads((MODELS_DIR / "article_claims.json").read_text(encoding="utf-8"))
    lang = language()
    for claim in data["claims"]:
        for name in ("claim", "verdict", "evidence"):
            claim[f"{name}_en"] = claim[name]
            if lang != "en":
                claim[name] = claim[f"{name}_{lang}"]
    return data
