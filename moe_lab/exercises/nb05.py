"""Checkers for the exercises of notebook 05 (routing visualisation) and of the Voila expert-load app.

Each checker recomputes the true answer from the course code (the NumPy routing simulation of
``moe_lab.viz.simulate`` or the shipped tiny MoE LM), so a change in the code or a retrained checkpoint
can never leave a stale answer behind. The app has no cell to type an answer in: it shows its two
exercises as answer boxes (``moe_lab.viz.widgets.ExerciseBox``) wired to ``check_app_*``.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from moe_lab.core.capacity import expert_capacity
from moe_lab.exercises import Feedback, check_number, right, unanswered, wrong
from moe_lab.i18n import _
from moe_lab.lm.checkpoint import load_tiny_lm
from moe_lab.lm.corpus import DOMAINS, load_corpus
from moe_lab.lm.routes import domain_expert_counts
from moe_lab.viz.simulate import simulate_balancing, simulate_routing

# Exercise 1: the capacity of one expert (settings the notebook never draws: its answer is shown nowhere)
EX1 = {"num_tokens": 1000, "num_experts": 16, "top_k": 2, "capacity_factor": 1.1}
# Exercise 2: the smallest capacity factor on the dashboard's grid that drops nothing
EX2 = {"num_tokens": 512, "num_experts": 8, "top_k": 2, "skew": 1.0, "seed": 0}
CAPACITY_GRID = tuple(0.5 + 0.25 * i for i in range(11))  # the dashboard's slider: 0.5 ... 3.0
# App exercise 1: max/mean load shown in the dashboard's first panel
APP1 = {"num_experts": 8, "top_k": 2, "capacity_factor": 1.25, "dropless": False, "temperature": 1.0,
        "noise": 0.0, "skew": 2.0, "balancing": "none", "steps": 10}
# App exercise 2: which balancing method ends closer to balance
APP2 = {"num_tokens": 512, "num_experts": 8, "top_k": 2, "skew": 3.0, "seed": 0}
APP2_STEPS = 10


def check_capacity(answer) -> Feedback:
    """Exercise 1: slots per expert for 1000 tokens, 16 experts, top-2, capacity factor 1.1."""
    name = _("capacity")
    expected = expert_capacity(**EX1)
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool):
        n, e, k, cf = EX1["num_tokens"], EX1["num_experts"], EX1["top_k"], EX1["capacity_factor"]
        if answer == n * k / e:
            return wrong(name, _("{value} is the balanced load N*k/E; the capacity factor {cf} gives each expert "
                                 "some room above it.").format(value=f"{answer:g}", cf=cf))
        if answer == int(np.ceil(cf * n / e)):
            return wrong(name, _("{value} forgets top-k: every token sends k={k} slots, so there are N*k slots to "
                                 "share.").format(value=f"{answer:g}", k=k))
        if np.isclose(answer, cf * n * k / e) and answer != expected:
            return wrong(name, _("{value} is not a whole number of slots: round up (ceil).").format(
                value=f"{answer:g}"))
        if answer == int(np.floor(cf * n * k / e)) and answer != expected:
            return wrong(name, _("{value} rounds down: a fraction of a slot still needs a whole slot, round "
                                 "up.").format(value=f"{answer:g}"))
    return check_number(name, answer, expected, hint=_("capacity = ceil(capacity_factor * N * k / E)."))


@functools.cache
def _drops_at(capacity_factor: float) -> int:
    return simulate_routing(EX2["num_tokens"], EX2["num_experts"], EX2["top_k"], capacity_factor,
                            skew=EX2["skew"], seed=EX2["seed"]).dropped()


def smallest_dropless_factor() -> float | None:
    """The answer of exercise 2 (None if even 3.0 drops slots)."""
    return next((cf for cf in CAPACITY_GRID if _drops_at(cf) == 0), None)


def check_min_capacity_factor(answer) -> Feedback:
    """Exercise 2: the smallest capacity factor on the grid 0.5, 0.75, ..., 3.0 that drops no slot
    (512 tokens, 8 experts, top-2, skew 1.0, seed 0: the dashboard's default tokens)."""
    name = _("smallest capacity factor")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return wrong(name, _("expected a number such as 1.5, got {type}.").format(type=type(answer).__name__))
    expected = smallest_dropless_factor()
    on_grid = [cf for cf in CAPACITY_GRID if abs(cf - answer) < 1e-9]
    if not on_grid:
        return wrong(name, _("{value} is not on the slider's grid (0.5 to 3.0 in steps of 0.25).").format(
            value=f"{answer:g}"))
    dropped = _drops_at(on_grid[0])
    if on_grid[0] == expected:
        cap = expert_capacity(EX2["num_tokens"], EX2["num_experts"], EX2["top_k"], expected)
        return right(name, _("{value}: a capacity of {capacity} slots fits the busiest expert; one step lower "
                             "drops {dropped} slots.").format(value=f"{expected:g}", capacity=cap,
                                                             dropped=_drops_at(expected - 0.25)))
    if dropped:
        return wrong(name, _("at {value} the experts still drop {dropped} slots: go higher.").format(
            value=f"{answer:g}", dropped=dropped))
    return wrong(name, _("{value} drops nothing, but a smaller factor does too: go lower.").format(
        value=f"{answer:g}"))


def check_temperature(answer) -> Feedback:
    """Exercise 3: without noise and without a selection bias, does the router temperature change
    which experts a token is sent to? (True or False)"""
    name = _("temperature")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if not isinstance(answer, (bool, np.bool_)):
        return wrong(name, _("answer True or False, got {answer}.").format(answer=repr(answer)))
    if not answer:
        return right(name, _("dividing all logits by the same temperature keeps their order, so the top-k is "
                             "unchanged; only the probabilities (confidence, combine weights) change."))
    return wrong(name, _("compare the routing heatmap's dots at temperature 0.25 and 4: dividing every logit by the "
                         "same positive number does not change which one is largest."))


@functools.lru_cache(maxsize=1)
def model_domain_counts() -> tuple[np.ndarray, int]:
    """``([layers, domains, E] all top-k slots, top_k)`` of the shipped model, counted like notebook 05."""
    model = load_tiny_lm()
    return domain_expert_counts(model, load_corpus()), model.cfg.top_k


def chinese_top_share() -> float:
    """The answer of exercise 4: the busiest expert's share (%) of the Chinese text's slots, last layer."""
    chinese = model_domain_counts()[0][-1][DOMAINS.index("chinese")]
    return float(100 * chinese.max() / chinese.sum())


def check_chinese_top_share(answer) -> Feedback:
    """Exercise 4: in the last layer, counting all top-k slots of the held-out Chinese text, what share
    (in %, a whole number) goes to the busiest expert?"""
    name = _("Chinese top share")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return wrong(name, _("expected a percentage such as 40, got {type}.").format(type=type(answer).__name__))
    counts, top_k = model_domain_counts()
    busiest = int(np.argmax(counts[-1][DOMAINS.index("chinese")]))
    expected = chinese_top_share()
    if 0 < answer < 1:
        return wrong(name, _("{value} looks like a fraction: answer in percent (0 to 100).").format(
            value=f"{answer:g}"))
    limit = f"{100 / top_k:.0f}"
    if abs(answer - expected) <= 1.0:
        return right(name, _("expert {expert} takes {share}% of the Chinese slots. Each token sends {k} slots to {k} "
                             "different experts, so one expert can take at most {limit}% of them, however "
                             "specialised it is.").format(expert=busiest, share=f"{expected:.1f}", k=top_k,
                                                          limit=limit))
    if answer > 100 / top_k:
        return wrong(name, _("{value}% is more than one expert can take: each token sends {k} slots to {k} different "
                             "experts, so at most {limit}% of the slots go to one expert. The heatmap counts first "
                             "choices only; count all slots (`load`).").format(value=f"{answer:g}", k=top_k,
                                                                              limit=limit))
    return wrong(name, _("{value}% is not the busiest expert's share: divide the largest count of the 'chinese' row "
                         "of the last layer of `load` by the row's total.").format(value=f"{answer:g}"))


def app_max_mean() -> float:
    """The max/mean load the app's first panel shows for ``APP1`` (rounded as shown)."""
    a = APP1  # what RoutingDashboard(num_tokens=512, seed=0).run(**APP1) computes (a test checks it)
    run = simulate_balancing(a["balancing"], a["steps"], num_tokens=512, num_experts=a["num_experts"],
                             top_k=a["top_k"], capacity_factor=None if a["dropless"] else a["capacity_factor"],
                             temperature=a["temperature"], noise=a["noise"], skew=a["skew"], seed=0)
    balanced = 512 * a["top_k"] / a["num_experts"]
    return round(float(run.routing.load().max() / balanced), 2)


def check_app_max_mean(answer) -> Feedback:
    """App exercise 1: with E=8, top-2, skew 2.0 and no balancing, the max/mean load in the title of
    the "tokens per expert" panel (two decimals)."""
    name = _("max/mean load")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return wrong(name, _("expected a number such as 1.75, got {type}.").format(type=type(answer).__name__))
    expected = app_max_mean()
    if abs(answer - expected) <= 0.005 + 1e-9:
        return right(name, _("{value}: the busiest expert gets {value} times its fair share; with a capacity "
                             "factor of 1.25 it drops the excess.").format(value=f"{expected:.2f}"))
    if abs(answer - 1.0) < 1e-9:
        return wrong(name, _("1.0 would be perfect balance: set the input skew to 2.0 first."))
    return wrong(name, _("{value} is not what the panel shows for E=8, top-k 2, capacity factor 1.25, temperature 1, "
                         "noise 0, skew 2.0, balancing none: check each control.").format(value=f"{answer:g}"))


def app_best_balancing() -> str:
    """``"aux"`` or ``"bias"``: the one with the lower max/mean after ``APP2_STEPS`` steps (``APP2``)."""
    end = {}
    for method in ("aux", "bias"):
        last = simulate_balancing(method, APP2_STEPS, **APP2).history[-1]
        end[method] = last.max() / last.mean()
    return min(end, key=end.get)


def check_app_best_balancing(answer) -> Feedback:
    """App exercise 2: at skew 3.0 (E=8, top-2), which balancing method, "aux" or "bias", ends with the
    lower max/mean load after 10 update steps?"""
    name = _("best balancing")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if not isinstance(answer, str) or answer.strip().lower() not in ("aux", "bias"):
        return wrong(name, _("answer 'aux' or 'bias', got {answer}.").format(answer=repr(answer)))
    expected = app_best_balancing()
    if answer.strip().lower() == expected:
        return right(name, _("'{method}' ends closer to 1.0 in the balancing panel after {steps} steps (with these "
                             "step sizes; both keep improving with more steps).").format(method=expected,
                                                                                         steps=APP2_STEPS))
    return wrong(name, _("compare the last point of the balancing panel for both methods at skew 3.0, {steps} "
                         "steps: '{method}' ends higher.").format(steps=APP2_STEPS, method=answer.strip()))
