"""The MoE block of a real model: read from its ``config.json``, loaded from its checkpoint's tensor names.

Introduced in notebook 02 ("From Mixtral to openPangu"): ``MoELayer.from_config`` and
``MoELayer.load_checkpoint_weights`` use this module; ``moe_lab.budget`` reads the same families.

Config words are used verbatim (``hidden_size``, ``moe_intermediate_size``, ``n_routed_experts``,
``num_experts_per_tok``, ``scoring_func``, ``topk_method``, ``n_group``, ``topk_group``,
``norm_topk_prob``, ``routed_scaling_factor``, ``n_shared_experts``, ``shared_expert_intermediate_size``).
Where a config leaves a field out, the default is the one of the model's own configuration class
(Hugging Face transformers, or the model's released modeling code): ``FAMILY_DEFAULTS``.

Checkpoint names (``torch.nn.Linear`` weights are stored ``[out, in]``; the layer keeps ``x @ W`` shapes,
so they are transposed on loading):

===========  =====================================================================================
family       names after ``prefix`` (e.g. ``model.layers.3.``)
===========  =====================================================================================
deepseek     ``mlp.gate.weight`` [E, H], ``mlp.gate.e_score_correction_bias`` [E] (``noaux_tc`` only),
             ``mlp.experts.{i}.gate_proj/up_proj.weight`` [F, H], ``mlp.experts.{i}.down_proj.weight`` [H, F],
             ``mlp.shared_experts.gate_proj/up_proj/down_proj.weight``
mixtral      ``block_sparse_moe.gate.weight``, ``block_sparse_moe.experts.{i}.w1`` (gate), ``w3`` (up), ``w2`` (down)
qwen2_moe    ``mlp.gate.weight``, ``mlp.experts.{i}.*_proj.weight``, ``mlp.shared_expert.*_proj.weight``,
             ``mlp.shared_expert_gate.weight`` [1, H]
qwen3_moe    ``mlp.gate.weight``, ``mlp.experts.{i}.*_proj.weight``
===========  =====================================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from moe_lab.checks import check_choice

# model_type -> family; a family decides how config fields map onto the block (and onto moe_lab.budget's spec)
FAMILIES = {
    "deepseek": "deepseek",  # DeepSeekMoE 16B (its remote code's model_type)
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
CHECKPOINT_FAMILIES = ("deepseek", "mixtral", "qwen2_moe", "qwen3_moe")
# Why MoELayer does not build these two (moe_lab.budget still counts them):
UNSUPPORTED = {
    "gpt_oss": "gpt-oss's experts have biases and a clamped SwiGLU (alpha 1.702, limit 7), and its router a bias",
    "llama4": "Llama 4 multiplies each token by its sigmoid router score before the expert, not after",
}

# Defaults of fields a config may leave out, per model_type (the model's own configuration class):
# transformers' DeepseekV2Config / DeepseekV3Config, DeepSeekMoE's and openPangu's released modeling code
# (openPangu: sigmoid scores, no selection bias, no groups), Qwen2MoeConfig / Qwen3MoeConfig.
FAMILY_DEFAULTS = {
    "deepseek": dict(scoring_func="softmax", topk_method="greedy", n_group=1, topk_group=1, norm_topk_prob=False,
                     routed_scaling_factor=1.0, n_shared_experts=0),
    "deepseek_v2": dict(scoring_func="softmax", topk_method="greedy", n_group=1, topk_group=1, norm_topk_prob=False,
                        routed_scaling_factor=1.0, n_shared_experts=0),
    "deepseek_v3": dict(scoring_func="sigmoid", topk_method="noaux_tc", n_group=8, topk_group=4, norm_topk_prob=True,
                        routed_scaling_factor=2.5, n_shared_experts=1),
    "kimi_k2": dict(scoring_func="sigmoid", topk_method="noaux_tc", n_group=1, topk_group=1, norm_topk_prob=True,
                    routed_scaling_factor=1.0, n_shared_experts=1),
    "pangu_ultra_moe": dict(scoring_func="sigmoid", topk_method="greedy", n_group=1, topk_group=1,
                            norm_topk_prob=True, routed_scaling_factor=1.0, n_shared_experts=0),
    "qwen2_moe": dict(norm_topk_prob=False),
    "qwen3_moe": dict(norm_topk_prob=False),
}
# The config fields each family reads (what from_config's overrides may name)
FAMILY_FIELDS = {
    "deepseek": ("hidden_size", "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "scoring_func",
                 "topk_method", "n_group", "topk_group", "norm_topk_prob", "routed_scaling_factor", "n_shared_experts",
                 "hidden_act"),
    "mixtral": ("hidden_size", "intermediate_size", "num_local_experts", "num_experts_per_tok", "hidden_act"),
    "qwen2_moe": ("hidden_size", "moe_intermediate_size", "num_experts", "num_experts_per_tok", "norm_topk_prob",
                  "shared_expert_intermediate_size", "hidden_act"),
    "qwen3_moe": ("hidden_size", "moe_intermediate_size", "num_experts", "num_experts_per_tok", "norm_topk_prob",
                  "hidden_act"),
}


def flatten_config(config: dict) -> dict:
    """The language-model part of a config: multimodal configs (Llama 4) keep it under ``text_config``."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (a parsed config.json), got {type(config).__name__}")
    if isinstance(config.get("text_config"), dict):
        return {**{k: v for k, v in config.items() if k != "text_config"}, **config["text_config"]}
    return config


def config_family(config: dict) -> tuple[str, str]:
    """``(model_type, family)`` of a (flattened) config. Unknown ``model_type``s are accepted when their
    fields say which family they follow (``kv_lora_rank`` -> DeepSeek style, ``num_local_experts`` ->
    Mixtral style, ``num_experts`` -> Qwen style)."""
    model_type = str(config.get("model_type") or "")
    family = FAMILIES.get(model_type)
    if family is None:
        if "kv_lora_rank" in config or "n_routed_experts" in config:
            family = "deepseek"
        elif "num_local_experts" in config:
            family = "mixtral"
        elif "num_experts" in config:
            family = "qwen2_moe" if "shared_expert_intermediate_size" in config else "qwen3_moe"
        else:
            raise ValueError(f"unsupported model_type {model_type!r}: expected one of "
                             f"{', '.join(sorted(FAMILIES))} (or a config with MoE fields)")
    return model_type, family


class ConfigFieldError(KeyError):
    """A config.json lacks a field that is needed. ``str()`` is the plain one-line message."""

    def __str__(self) -> str:
        return str(self.args[0])


def _field(cfg: dict, key: str, why: str, kind=int, *, minimum=None):
    value = cfg.get(key)
    if value is None:
        raise ConfigFieldError(f"config is missing the field '{key}' ({why})")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"config field '{key}' must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"config field '{key}' must be a number, got {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"config field '{key}' must be true or false, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"config field '{key}' must be >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class MoEBlockConfig:
    """One MoE block as a config describes it, in ``MoELayer``'s argument names."""

    family: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_experts: int
    top_k: int
    scoring_func: str
    norm_topk_prob: bool
    routed_scaling_factor: float
    topk_method: str
    n_group: int
    topk_group: int
    n_shared_experts: int
    shared_expert_intermediate_size: int | None
    shared_expert_gate: bool

    @property
    def selection_bias(self) -> bool:
        """Whether the checkpoint stores a selection bias (DeepSeek-V3's ``e_score_correction_bias``)."""
        return self.topk_method == "noaux_tc"

    def layer_kwargs(self) -> dict:
        """The keyword arguments of ``MoELayer`` for this block."""
        kwargs = asdict(self)
        del kwargs["family"], kwargs["model_type"]
        return kwargs


def moe_block_config(config: dict, **overrides) -> MoEBlockConfig:
    """Read the MoE block of an HF config; ``overrides`` replace config fields (by their config names)."""
    cfg = flatten_config(config)
    model_type, family = config_family(cfg)
    if family in UNSUPPORTED:
        raise ValueError(f"MoELayer.from_config does not build {model_type!r} blocks: {UNSUPPORTED[family]}; "
                         f"supported families: {', '.join(CHECKPOINT_FAMILIES)}")
    unknown = sorted(set(overrides) - set(FAMILY_FIELDS[family]))
    if unknown:
        raise ValueError(f"overrides {unknown} are not fields of a {family} MoE block; allowed: "
                         f"{', '.join(FAMILY_FIELDS[family])}")
    cfg = {**FAMILY_DEFAULTS.get(model_type, FAMILY_DEFAULTS.get(family, {})), **cfg, **overrides}
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config field 'hidden_act' must be 'silu' (SwiGLU experts), got {act!r}")
    hidden = _field(cfg, "hidden_size", "model width", minimum=1)
    top_k = _field(cfg, "num_experts_per_tok", "experts per token", minimum=1)
    common = dict(family=family, model_type=model_type, hidden_size=hidden, top_k=top_k)
    if family == "deepseek":
        if cfg.get("n_routed_experts") is None:
            raise ConfigFieldError("config is missing the field 'n_routed_experts' (number of routed experts)")
        scoring = cfg.get("scoring_func")
        check_choice("config field 'scoring_func'", scoring, ("softmax", "sigmoid"))
        method = cfg.get("topk_method")
        check_choice("config field 'topk_method'", method, ("greedy", "group_limited_greedy", "noaux_tc"))
        greedy = method == "greedy"  # transformers' DeepSeek models ignore n_group with greedy top-k
        return MoEBlockConfig(
            **common, intermediate_size=_field(cfg, "moe_intermediate_size", "width of one routed expert", minimum=1),
            num_experts=_field(cfg, "n_routed_experts", "number of routed experts", minimum=1),
            scoring_func=scoring, norm_topk_prob=_field(cfg, "norm_topk_prob", "renormalise the top-k", bool),
            routed_scaling_factor=float(_field(cfg, "routed_scaling_factor", "combine-weight scale", float)),
            topk_method=method, n_group=1 if greedy else _field(cfg, "n_group", "expert groups", minimum=1),
            topk_group=1 if greedy else _field(cfg, "topk_group", "groups per token", minimum=1),
            n_shared_experts=_field(cfg, "n_shared_experts", "always-on experts", minimum=0) or 0,
            shared_expert_intermediate_size=None, shared_expert_gate=False)
    if family == "mixtral":  # Mixtral always renormalises its top-2 (no config field)
        return MoEBlockConfig(
            **common, intermediate_size=_field(cfg, "intermediate_size", "width of one expert", minimum=1),
            num_experts=_field(cfg, "num_local_experts", "number of experts", minimum=1), scoring_func="softmax",
            norm_topk_prob=True, routed_scaling_factor=1.0, topk_method="greedy", n_group=1, topk_group=1,
            n_shared_experts=0, shared_expert_intermediate_size=None, shared_expert_gate=False)
    shared = cfg.get("shared_expert_intermediate_size") if family == "qwen2_moe" else None
    return MoEBlockConfig(
        **common, intermediate_size=_field(cfg, "moe_intermediate_size", "width of one routed expert", minimum=1),
        num_experts=_field(cfg, "num_experts", "number of routed experts", minimum=1), scoring_func="softmax",
        norm_topk_prob=_field(cfg, "norm_topk_prob", "renormalise the top-k", bool), routed_scaling_factor=1.0,
        topk_method="greedy", n_group=1, topk_group=1, n_shared_experts=0,
        shared_expert_intermediate_size=shared or None, shared_expert_gate=bool(shared))


# ----------------------------------------------------------------------------- checkpoint names

_NAMES = {  # family -> (block prefix, router, expert list, (gate, up, down) names, shared module)
    "deepseek": ("mlp.", "gate", "experts", ("gate_proj", "up_proj", "down_proj"), "shared_experts"),
    "mixtral": ("block_sparse_moe.", "gate", "experts", ("w1", "w3", "w2"), None),
    "qwen2_moe": ("mlp.", "gate", "experts", ("gate_proj", "up_proj", "down_proj"), "shared_expert"),
    "qwen3_moe": ("mlp.", "gate", "experts", ("gate_proj", "up_proj", "down_proj"), None),
}


def checkpoint_names(family: str, num_experts: int, *, shared: bool = False, shared_gate: bool = False,
                     selection_bias: bool = False, prefix: str = "") -> dict[str, str]:
    """The checkpoint key of every tensor of one block: ``{"router": ..., "experts.3.up": ..., ...}``."""
    check_choice("family", family, CHECKPOINT_FAMILIES)
    block, router, experts, (gate, up, down), shared_name = _NAMES[family]
    p = prefix + block
    names = {"router": f"{p}{router}.weight"}
    if selection_bias:
        names["selection_bias"] = f"{p}{router}.e_score_correction_bias"
    for i in range(num_experts):
        for part, name in (("gate", gate), ("up", up), ("down", down)):
            names[f"experts.{i}.{part}"] = f"{p}{experts}.{i}.{name}.weight"
    if shared:
        if shared_name is None:
            raise ValueError(f"family {family!r} has no shared experts in its checkpoints")
        for part, name in (("gate", gate), ("up", up), ("down", down)):
            names[f"shared.{part}"] = f"{p}{shared_name}.{name}.weight"
        if shared_gate:
            names["shared.gate_weight"] = f"{p}{shared_name}_gate.weight"
    return names


def _get(arrays, key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"checkpoint key {key!r} is missing (expected shape {shape})")
    value = np.asarray(arrays[key])
    if value.shape != shape:
        raise ValueError(f"checkpoint key {key!r} has shape {value.shape}, expected {shape}")
    return value


def checkpoint_values(layer, arrays, prefix: str, family: str) -> list[tuple]:
    """``[(parameter, value)]`` for every parameter of ``layer``, read and checked before anything is set."""
    check_choice("family", family, CHECKPOINT_FAMILIES)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string such as 'model.layers.3.', got {type(prefix).__name__}")
    if layer.activation != "swiglu":
        raise ValueError(f"checkpoints of {family!r} blocks hold SwiGLU experts; the layer's activation is "
                         f"{layer.activation!r}")
    shared = layer.shared_experts
    router = layer.router
    names = checkpoint_names(family, layer.num_experts, shared=shared is not None,
                             shared_gate=shared is not None and shared.gated,
                             selection_bias=router.topk_method == "noaux_tc", prefix=prefix)
    h, f, e = layer.hidden_size, layer.intermediate_size, layer.num_experts
    out = [(router.weight, _get(arrays, names["router"], (e, h)).T)]
    if "selection_bias" in names:
        out.append((router.selection_bias, _get(arrays, names["selection_bias"], (e,))))
    experts = layer.experts
    for part, param, shape in (("gate", experts.w_gate, (f, h)), ("up", experts.w_up, (f, h)),
                               ("down", experts.w_down, (h, f))):
        out.append((param, np.stack([_get(arrays, names[f"experts.{i}.{part}"], shape).T for i in range(e)])))
    if shared is not None:
        fs = shared.intermediate_size
        mlp = shared.mlp
        for part, param, shape in (("gate", mlp.w_gate, (fs, h)), ("up", mlp.w_up, (fs, h)),
                                   ("down", mlp.w_down, (h, fs))):
            out.append((param, _get(arrays, names[f"shared.{part}"], shape).T))
        if shared.gated:
            out.append((shared.w_shared_gate, _get(arrays, names["shared.gate_weight"], (1, h)).T))
    return out
