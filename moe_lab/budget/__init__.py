"""Parameter and memory budgets of real MoE models from their config.json (notebook 07): specs, counts,
memory (serving, training, decode), hardware, a MindSpore cross-check and ``python -m moe_lab budget``.

The names notebooks use are importable from here: ``from moe_lab.budget import load_model, count_parameters``.
"""

from moe_lab.budget.count import (
    ParamBreakdown,
    attention_params,
    compare_with_published,
    count_parameters,
    expert_params,
)
from moe_lab.budget.spec import (
    MODELS_DIR,
    ModelSpec,
    load_article_claims,
    load_config,
    load_model,
    load_published,
    model_ids,
    spec_from_config,
)

__all__ = ["MODELS_DIR", "ModelSpec", "ParamBreakdown", "attention_params", "compare_with_published",
           "count_parameters", "expert_params", "load_article_claims", "load_config", "load_model", "load_published",
           "model_ids", "spec_from_config"]
