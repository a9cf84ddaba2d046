"""Checkers for the exercises of notebook 03 (dispatch, capacity, the drop policies, the static path)."""

from __future__ import annotations

import math

import numpy as np

from moe_lab.core.reference import keep_numpy
from moe_lab.core.static import PAD_MULTIPLE, padded_capacity
from moe_lab.exercises import Feedback, as_array, check_number, right, unanswered, wrong
from moe_lab.i18n import _

# Exercise 1: capacity of one expert
EX1 = dict(tokens=1000, num_experts=16, top_k=2, capacity_factor=1.25)

# Exercise 2: six tokens, three experts, top-2, capacity factor 0.5 -> capacity 2 slots per expert
EX2_INDICES = np.array([[0, 1], [1, 0], [1, 2], [0, 2], [2, 1], [0, 2]], np.int32)
EX2_WEIGHTS = np.array([[0.55, 0.45], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.95, 0.05]], np.float32)
EX2 = dict(num_experts=3, capacity_factor=0.5, drop_policy="position")

# Exercise 5: the same routing under the "priority" policy; EX2_WEIGHTS read as the chosen experts' routing
# probabilities (each token's largest one is its priority)
EX5 = dict(num_experts=3, capacity_factor=0.5, drop_policy="priority")

# Exercise 3: the loads of a dropless batch (512 tokens, top-2, 4 experts)
EX3_LOAD = np.array([301, 270, 255, 198])
EX3_TOKENS = 512

# Exercise 4: rows the capacity path computes
EX4 = dict(tokens=4096, num_experts=8, top_k=2, capacity_factor=1.25)


def check_capacity(answer) -> Feedback:
    """Exercise 1: slots per expert for ``EX1`` (1000 tokens, 16 experts, top-2, capacity factor 1.25)."""
    name = _("capacity")
    n, e, k, cf = EX1["tokens"], EX1["num_experts"], EX1["top_k"], EX1["capacity_factor"]
    expected = math.ceil(cf * n * k / e)
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if isinstance(answer, (int, float, np.integer, np.floating)) and not isinstance(answer, bool):
        value = float(answer)
        if value == cf * n * k / e:
            return wrong(name, _("{value} slots is not a whole number: capacity is rounded up (ceil).").format(
                value=f"{value:g}"))
        if value == math.floor(cf * n * k / e):
            return wrong(name, _("{value} is rounded down: a capacity rounds up, so the mean load always fits.").format(
                value=f"{value:g}"))
        if value == math.ceil(cf * n / e):
            return wrong(name, _("{value} forgets top_k: every token fills k = {k} slots, so there are N*k "
                                 "slots.").format(value=f"{value:g}", k=k))
        if value == math.ceil(n * k / e):
            return wrong(name, _("{value} is the mean load: the capacity factor {cf} gives head room above "
                                 "it.").format(value=f"{value:g}", cf=cf))
    return check_number(name, answer, expected, rel=0.0,
                        hint=_("capacity = ceil(capacity_factor * tokens * top_k / num_experts)."))


def ex2_capacity() -> int:
    n, k = EX2_INDICES.shape
    return math.ceil(EX2["capacity_factor"] * n * k / EX2["num_experts"])


def _queue(slots) -> np.ndarray:
    """Keep mask of ``EX2_INDICES`` when its slots ``(t, j)`` are served in the order ``slots``."""
    keep = np.ones(EX2_INDICES.shape, bool)
    used = np.zeros(EX2["num_experts"], int)
    for t, j in slots:
        keep[t, j] = used[EX2_INDICES[t, j]] < ex2_capacity()
        used[EX2_INDICES[t, j]] += 1
    return keep


def _mask_answer(name: str, answer) -> tuple[np.ndarray | None, Feedback | None]:
    """A 6 x 2 True/False answer as a bool array, or the feedback that says what is wrong with it."""
    missing = unanswered(name, answer)
    if missing is not None:
        return None, missing
    arr, problem = as_array(name, answer, shape=EX2_INDICES.shape)
    if problem is not None:
        return None, problem
    if not np.isin(arr, (0, 1)).all():
        return None, wrong(name, _("use True (kept) and False (dropped), one per slot."))
    return arr.astype(bool), None


def check_keep_mask(answer) -> Feedback:
    """Exercise 2: which slots of ``EX2_INDICES`` survive a capacity of 2 under the "position" policy."""
    name = _("keep mask")
    got, problem = _mask_answer(name, answer)
    if problem is not None:
        return problem
    e, cf = EX2["num_experts"], EX2["capacity_factor"]
    expected = keep_numpy(EX2_INDICES, EX2_WEIGHTS, e, cf, "position")
    if np.array_equal(got, expected):
        return right(name, _("with {capacity} slots per expert, all first choices are served before any second "
                             "choice, earlier tokens first (GShard's order).").format(capacity=ex2_capacity()))
    if np.array_equal(got, keep_numpy(EX2_INDICES, EX2_WEIGHTS, e, cf, "priority")):
        return wrong(name, _("that is the \"priority\" policy (the most confident tokens first); the \"position\" "
                             "policy serves all first choices, in token order, before any second choice."))
    n, k = EX2_INDICES.shape
    if np.array_equal(got, _queue([(t, j) for t in range(n) for j in range(k)])):
        return wrong(name, _("that serves the slots token by token; GShard's order serves every token's first "
                             "choice before any second choice, so a top-1 is never dropped for someone's top-2."))
    return _mask_slips(name, got, expected)


def _mask_slips(name: str, got: np.ndarray, expected: np.ndarray) -> Feedback:
    """The feedback of exercises 2 and 5 for a mask that drops nothing, or else the wrong slots."""
    if got.all():
        return wrong(name, _("nothing dropped? expert 0 is chosen {chosen} times but takes only {capacity} "
                             "slots.").format(chosen=int((EX2_INDICES == 0).sum()), capacity=ex2_capacity()))
    bad = [tuple(map(int, s)) for s in np.argwhere(got != expected)]
    return wrong(name, _("the slots (token, k) {slots} are wrong; capacity is {capacity} slots per expert.").format(
        slots=bad, capacity=ex2_capacity()))


def check_priority_keep_mask(answer) -> Feedback:
    """Exercise 5: the slots of ``EX2_INDICES`` kept by the "priority" policy (V-MoE's batch-prioritised
    routing), with ``EX2_WEIGHTS`` as the chosen experts' routing probabilities."""
    name = _("priority keep mask")
    got, problem = _mask_answer(name, answer)
    if problem is not None:
        return problem
    e, cf = EX5["num_experts"], EX5["capacity_factor"]
    expected = keep_numpy(EX2_INDICES, EX2_WEIGHTS, e, cf, "priority")
    if np.array_equal(got, expected):
        return right(name, _("tokens ranked once by their largest probability, then every first choice in that "
                             "order before any second choice: the confident tokens kept their slots."))
    if np.array_equal(got, keep_numpy(EX2_INDICES, EX2_WEIGHTS, e, cf, "position")):
        return wrong(name, _("that is the \"position\" policy (token order); rank the tokens by their largest "
                             "probability first."))
    n, k = EX2_INDICES.shape
    slots = [(t, j) for t in range(n) for j in range(k)]
    if np.array_equal(got, _queue(sorted(slots, key=lambda s: -EX2_WEIGHTS[s]))):
        return wrong(name, _("that ranks every slot by its own probability; the policy ranks each token once, by "
                             "its largest probability, and still serves all first choices before any second "
                             "choice."))
    tokens = sorted(range(n), key=lambda t: -EX2_WEIGHTS[t].max())
    if np.array_equal(got, _queue([(t, j) for t in tokens for j in range(k)])):
        return wrong(name, _("the token order is right, but each token's slots were served together; serve every "
                             "token's first choice (in that order) before any second choice."))
    return _mask_slips(name, got, expected)


def check_padded_capacity(answer) -> Feedback:
    """Exercise 3: the buffer rows per expert of the dropless static path for the loads ``EX3_LOAD``."""
    name = _("padded capacity")
    expected = padded_capacity(int(EX3_LOAD.max()), EX3_TOKENS)
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool):
        if answer == EX3_LOAD.max():
            return wrong(name, _("{value} fits the busiest expert, but the path rounds up to a multiple of "
                                 "{multiple} so that a few compiled shapes serve every batch.").format(
                value=answer, multiple=PAD_MULTIPLE))
        if answer == EX3_LOAD.sum() // len(EX3_LOAD):
            return wrong(name, _("{value} is the mean load: the busiest expert ({busiest}) would not fit, and a "
                                 "dropless path may not drop anything.").format(value=answer, busiest=EX3_LOAD.max()))
        if answer == PAD_MULTIPLE * (EX3_LOAD.max() // PAD_MULTIPLE):
            return wrong(name, _("{value} is rounded down: {busiest} slots would not fit.").format(
                value=answer, busiest=EX3_LOAD.max()))
    return check_number(name, answer, expected, rel=0.0,
                        hint=_("take the largest load and round it up to a multiple of {multiple}.").format(
                            multiple=PAD_MULTIPLE))


def check_buffer_rows(answer) -> Feedback:
    """Exercise 4: rows (padding included) the capacity path multiplies for ``EX4`` (cf 1.25)."""
    name = _("buffer rows")
    n, e, k, cf = EX4["tokens"], EX4["num_experts"], EX4["top_k"], EX4["capacity_factor"]
    capacity = math.ceil(cf * n * k / e)
    expected = e * capacity
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    if isinstance(answer, (int, float, np.integer, np.floating)) and not isinstance(answer, bool):
        if answer == n * k:
            return wrong(name, _("{value} is the number of real slots; the buffer has E * C rows, padding included, "
                                 "and all of them go through the batched matmuls.").format(value=answer))
        if answer == capacity:
            return wrong(name, _("{value} is C, the rows of one expert; there are {experts} experts.").format(
                value=answer, experts=e))
        if answer == n * e:
            return wrong(name, _("{value} is what the dense path computes (every expert on every token).").format(
                value=answer))
    return check_number(name, answer, expected, rel=0.0,
                        hint=_("rows = num_experts * capacity, capacity = ceil(cf * tokens * top_k / "
                               "num_experts)."))
