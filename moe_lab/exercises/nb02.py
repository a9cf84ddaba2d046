"""Checkers for the exercises of notebook 02 (from Mixtral to openPangu: the MoE blocks of real models).

The expected answers are computed from the shipped configs (``data/models/``) and the package's own code, so
a change in either can never leave a stale answer behind.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import numpy as np

from moe_lab.core.anatomy import expert_combinations
from moe_lab.core.config import moe_block_config
from moe_lab.core.params import expert_params
from moe_lab.exercises import Feedback, as_array, check_number, format_number, known_slip, right, unanswered, wrong
from moe_lab.i18n import _

MODELS = Path(__file__).resolve().parent.parent.parent / "data" / "models"
# Exercise 2: the sigmoid scores of the 8 experts an openPangu token chose, in the router's order
EX2_SCORES = (0.91, 0.88, 0.84, 0.80, 0.77, 0.74, 0.72, 0.69)


def _config(model_id: str) -> dict:
    return json.loads((MODELS / model_id / "config.json").read_text(encoding="utf-8"))


def combination_ratio() -> float:
    """C(384, 8) / C(256, 8): Kimi K2's expert sets over those of a 256-expert top-8 model."""
    kimi = moe_block_config(_config("kimi-k2"))
    return expert_combinations(kimi.num_experts, kimi.top_k) / expert_combinations(256, kimi.top_k)


def check_combination_ratio(answer) -> Feedback:
    """Exercise 1: how many times more expert sets a Kimi K2 token (384 experts, top-8) can choose from."""
    name = _("expert sets")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    slip = known_slip(name, answer, {384 / 256: _("that compares the numbers of experts; count the sets of 8: "
                                                  "C(384, 8) / C(256, 8)."),
                                     (384 / 256) ** 8: _("that is (384/256)^8, an approximation; the binomial "
                                                         "coefficients C(384, 8) / C(256, 8) give the exact ratio."),
                                     math.comb(384, 8) - math.comb(256, 8): _("that is the difference; the question "
                                                                              "asks how many times more.")})
    if slip is not None:
        return slip
    return check_number(name, answer, combination_ratio(), rel=1e-4,
                        hint=_("a token picks a set of 8 experts: C(E, 8) sets for E experts."))


def combine_weights() -> np.ndarray:
    """The openPangu block's weights for ``EX2_SCORES``: renormalised over the 8, times the scaling factor."""
    block = moe_block_config(_config("openpangu-ultra-moe-718b"))
    s = np.asarray(EX2_SCORES, np.float64)
    return s / s.sum() * block.routed_scaling_factor if block.norm_topk_prob else s * block.routed_scaling_factor


def check_combine_weights(answer) -> Feedback:
    """Exercise 2: the combine weights of an openPangu token's 8 experts from their sigmoid scores."""
    name = _("combine weights")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    arr, problem = as_array(name, answer, (len(EX2_SCORES),))
    if problem is not None:
        return problem
    s = np.asarray(EX2_SCORES)
    expected = combine_weights()
    if np.allclose(arr, expected, rtol=1e-3, atol=1e-4):
        return right(name, _("they sum to {total}: renormalised over the 8, then x 2.5.").format(
            total=f"{expected.sum():g}"))
    if np.allclose(arr, s / s.sum(), rtol=1e-3):
        return wrong(name, _("renormalised, but not scaled: openPangu multiplies by routed_scaling_factor 2.5."))
    if np.allclose(arr, s * 2.5, rtol=1e-3):
        return wrong(name, _("scaled, but not renormalised: sigmoid scores do not sum to 1; divide by their sum "
                             "first."))
    softmax = np.exp(s) / np.exp(s).sum()
    if np.allclose(arr, softmax, rtol=1e-3) or np.allclose(arr, softmax * 2.5, rtol=1e-3):
        return wrong(name, _("that is a softmax of the scores; they are already sigmoid scores: renormalise them."))
    return wrong(name, _("divide each score by the sum of the 8, then multiply by routed_scaling_factor."))


def shared_params() -> int:
    """Qwen2-57B-A14B's shared expert (SwiGLU, width shared_expert_intermediate_size) and its [hidden, 1] gate."""
    block = moe_block_config(_config("qwen2-57b-a14b"))
    return expert_params(block.hidden_size, block.shared_expert_intermediate_size) + block.hidden_size


def check_shared_params(answer) -> Feedback:
    """Exercise 3: parameters of Qwen2-57B-A14B's shared expert and gate in one MoE layer."""
    name = _("shared expert parameters")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    expected = shared_params()
    h = moe_block_config(_config("qwen2-57b-a14b")).hidden_size
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool) and answer == expected - h:
        return wrong(name, _("{value} counts the expert's three matrices but not its gate (hidden_size x 1).").format(
            value=format_number(answer)))
    slip = known_slip(name, answer, {2 * (expected - h) / 3 + h: _("a SwiGLU expert has three matrices: gate, up, "
                                                                   "down."),
                                     2 * (expected - h) / 3: _("a SwiGLU expert has three matrices (gate, up, down), "
                                                               "and the shared expert has a gate of its own.")})
    if slip is not None:
        return slip
    return check_number(name, answer, expected, rel=0,
                        hint=_("3 x hidden_size x width for the expert, plus the gate."))
