"""The parameter formula equals a count of real MindSpore tensors, exactly, for every shipped architecture."""

import dataclasses
import json

import pytest

import moe_lab
from moe_lab.budget.count import count_parameters, expert_params, router_params, shared_expert_params
from moe_lab.budget.model import BudgetModel, MoEBlock, build_model, shrink
from moe_lab.budget.spec import MODELS_DIR, load_model, model_ids, spec_from_config
from moe_lab.core.config import CHECKPOINT_FAMILIES, config_family, flatten_config, moe_block_config
from moe_lab.core.layer import MoELayer

# per family: config fields that shrink one MoE layer to a CPU size (the structure is kept)
SHRINK = {
    "deepseek": dict(hidden_size=16, moe_intermediate_size=8, n_routed_experts=16),
    "mixtral": dict(hidden_size=16, intermediate_size=8, num_local_experts=4),
    "qwen2_moe": dict(hidden_size=16, moe_intermediate_size=8, num_experts=16, shared_expert_intermediate_size=24),
    "qwen3_moe": dict(hidden_size=16, moe_intermediate_size=8, num_experts=16),
}


def _config(model_id: str) -> dict:
    return json.loads((MODELS_DIR / model_id / "config.json").read_text())


CHECKPOINT_MODELS = [m for m in model_ids() if config_family(flatten_config(_config(m)))[1] in CHECKPOINT_FAMILIES]


@pytest.mark.parametrize("model_id", model_ids())
def test_mindspore_count_equals_formula_exactly(model_id):
    spec = shrink(load_model(model_id))
    formula = count_parameters(spec)
    counted = moe_lab.count_params(build_model(spec))
    assert (counted.total, counted.active) == (formula.total, formula.active)
    with_mtp = moe_lab.count_params(build_model(spec, include_mtp=True))
    assert (with_mtp.total, with_mtp.active) == (formula.total + formula.mtp_total, formula.active + formula.mtp_active)


def test_shrink_keeps_the_structure():
    for mid in model_ids():
        big, small = load_model(mid), shrink(load_model(mid))
        assert any(small.moe_layers) == any(big.moe_layers)
        assert (not all(small.moe_layers)) == (not all(big.moe_layers))
        for flag in ("attention", "qkv_bias", "o_bias", "qk_norm", "attention_sinks", "router_bias", "expert_bias",
                     "shared_expert_gate", "selection_bias", "norms_per_layer", "tie_word_embeddings"):
            assert getattr(small, flag) == getattr(big, flag), (mid, flag)
        assert bool(small.shared_ffn_size) == bool(big.shared_ffn_size)
        assert bool(small.q_lora_rank) == bool(big.q_lora_rank)
        assert 0 < small.top_k < small.num_experts


def test_skeleton_is_built_from_moe_lab_blocks():
    spec = shrink(load_model("deepseek-v3"))
    model = build_model(spec, include_mtp=True)
    assert isinstance(model, BudgetModel)
    moe = [c for _, c in model.cells_and_names() if isinstance(c, MoELayer)]
    assert len(moe) == spec.num_moe_layers + spec.mtp_layers
    blocks = [c for _, c in model.cells_and_names() if isinstance(c, MoEBlock)]
    assert all(b.moe.shared_experts is not None for b in blocks)
    assert all(b.moe.router.scoring_func == "sigmoid" for b in blocks)  # DeepSeek-V3's router, as from_config builds


def test_gpt_oss_biases_count_as_expert_weights():
    spec = shrink(load_model("gpt-oss-20b"))
    counted = moe_lab.count_params(build_model(spec))
    no_bias = moe_lab.count_params(build_model(dataclasses.replace(spec, expert_bias=False)))
    per_layer_bias = spec.num_experts * (2 * spec.expert_ffn_size + spec.hidden_size)
    assert counted.total - no_bias.total == spec.num_moe_layers * per_layer_bias
    inactive = (spec.num_experts - spec.top_k) / spec.num_experts
    assert (counted.total - counted.active) - (no_bias.total - no_bias.active) == \
        spec.num_moe_layers * per_layer_bias * inactive


def test_build_model_refuses_a_real_size_model():
    with pytest.raises(ValueError, match="shrink"):
        build_model(load_model("mixtral-8x7b"))
    with pytest.raises(TypeError, match="ModelSpec"):
        build_model("mixtral-8x7b")


def test_every_checkpoint_family_is_covered():
    families = {config_family(flatten_config(_config(m)))[1] for m in CHECKPOINT_MODELS}
    assert families == set(CHECKPOINT_FAMILIES) == set(SHRINK)
    assert "deepseek-moe-16b" in CHECKPOINT_MODELS and "openpangu-ultra-moe-718b" in CHECKPOINT_MODELS


@pytest.mark.parametrize("model_id", CHECKPOINT_MODELS)
def test_core_counts_agree_with_the_budget_per_moe_layer(model_id):
    """One MoE layer of a shrunken real config, counted three ways: MindSpore tensors of
    ``MoELayer.from_config`` (``count_params``), the closed form ``moe_layer_params``, and ``moe_lab.budget``
    on the same shrunken config. Shared experts included (DeepSeek, openPangu, Kimi, Qwen2-MoE's gated one)."""
    config = _config(model_id)
    overrides = SHRINK[config_family(flatten_config(config))[1]]
    layer = MoELayer.from_config(config, **overrides)
    counted = moe_lab.count_params(layer)
    block = moe_block_config(config, **overrides)
    closed = moe_lab.moe_layer_params(block.hidden_size, block.intermediate_size, block.num_experts, block.top_k,
                                      n_shared_experts=block.n_shared_experts,
                                      shared_expert_intermediate_size=block.shared_expert_intermediate_size,
                                      shared_expert_gate=block.shared_expert_gate)
    flat = flatten_config(config)
    spec = spec_from_config({**flat, **overrides}, model_id)
    fixed = shared_expert_params(spec) + router_params(spec)
    budget_total = spec.num_experts * expert_params(spec) + fixed
    budget_active = spec.top_k * expert_params(spec) + fixed
    assert (counted.total, counted.active) == (closed.total, closed.active) == (budget_total, budget_active)
    assert bool(shared_expert_params(spec)) == (layer.shared_experts is not None)
