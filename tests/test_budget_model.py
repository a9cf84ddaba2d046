"""The parameter formula equals a count of real MindSpore tensors, exactly, for every shipped architecture."""

import dataclasses

import pytest

import moe_lab
from moe_lab.budget.count import count_parameters
from moe_lab.budget.model import BudgetModel, MoEBlock, build_model, shrink
from moe_lab.budget.spec import load_model, model_ids
from moe_lab.core.layer import MoELayer


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
