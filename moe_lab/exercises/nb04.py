"""Checkers for the exercises of notebook 04 (load balancing)."""

from __future__ import annotations

import numpy as np

from moe_lab import balance as B
from moe_lab.exercises import Feedback, as_array, check_number, format_number, right, unanswered, wrong
from moe_lab.i18n import _

# Exercise 3: one DeepSeek-V3 bias step
BIAS_LOAD = (120, 40, 80, 80)
BIAS_RATE = 0.001
# Exercise 4: 8 experts in 2 groups ({0..3} on device 0, {4..7} on device 1); 3 of every 4 tokens go to
# expert 0 and the 4th to expert 4, each with router probability 1 (one-hot)
GROUP_EXPERTS, GROUP_GROUPS, GROUP_TOKENS = 8, 2, 16
# Exercise 5: 8 experts, top-1, a batch of 2 sequences of 16 tokens; every token of sequence s goes to
# expert s with router probability 1 (experts 2-7 get nothing)
SCOPE_EXPERTS, SCOPE_SEQUENCES, SCOPE_LENGTH = 8, 2, 16


def group_routing() -> tuple[np.ndarray, np.ndarray]:
    """Exercise 4's routing: ``(probs [16, 8], indices [16, 1])``."""
    indices = np.where(np.arange(GROUP_TOKENS) % 4 == 3, 4, 0)[:, None]
    probs = np.zeros((GROUP_TOKENS, GROUP_EXPERTS))
    probs[np.arange(GROUP_TOKENS), indices[:, 0]] = 1.0
    return probs, indices


def scope_routing() -> tuple[np.ndarray, np.ndarray]:
    """Exercise 5's routing, sequence after sequence: ``(probs [32, 8], indices [32, 1])``."""
    indices = np.repeat(np.arange(SCOPE_SEQUENCES), SCOPE_LENGTH)[:, None]
    probs = np.zeros((indices.shape[0], SCOPE_EXPERTS))
    probs[np.arange(indices.shape[0]), indices[:, 0]] = 1.0
    return probs, indices


def _cases():
    """Routings on which a learner's Switch loss is compared with ``moe_lab.balance``."""
    rng = np.random.default_rng(3)
    cases = []
    for n, e, k in ((8, 4, 1), (12, 4, 2), (10, 8, 2), (16, 8, 1)):
        logits = rng.normal(size=(n, e)) * 2
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        indices = np.argsort(-probs, -1, kind="stable")[:, :k]
        cases.append((probs, indices))
    e, n = 4, 8  # perfect balance: the value must be exactly 1
    cases.append((np.full((n, e), 1 / e), (np.arange(n) % e)[:, None]))
    return cases


def check_switch_loss(fn) -> Feedback:
    """Exercise 1: ``fn(probs [N, E], indices [N, K]) -> float``, the Switch loss ``E * sum_i f_i P_i``."""
    name = _("Switch loss")
    missing = unanswered(name, fn)
    if missing is not None:
        return missing
    if not callable(fn):
        return wrong(name, _("expected a function fn(probs, indices), got {type}.").format(type=type(fn).__name__))
    for probs, indices in _cases():
        n, e = probs.shape
        k = indices.shape[1]
        try:
            got = float(np.asarray(fn(probs.copy(), indices.copy())))
        except Exception as exc:  # the learner's code may fail in any way: report it, do not crash
            return wrong(name, _("your function raised {error}: {detail}").format(error=type(exc).__name__,
                                                                                  detail=exc))
        want = B.switch_loss_numpy(probs, indices)
        if np.isclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        f_slots = np.bincount(indices.ravel(), minlength=e) / (n * k)
        p = probs.mean(0)
        if np.isclose(got, want / e):
            return wrong(name, _("multiply by num_experts: the loss is E * sum_i f_i * P_i (1.0 when balanced)."))
        if k > 1 and np.isclose(got, want * k):
            return wrong(name, _("with top_k={k} divide the counts by N*K slots, not by N tokens.").format(k=k))
        if np.isclose(got, e * (f_slots ** 2).sum()) or np.isclose(got, e * (p ** 2).sum()):
            return wrong(name, _("use both factors: f (fraction of slots, from indices) times P (mean "
                                 "probability)."))
        return wrong(name, _("for N={n}, E={e}, top_k={k} expected {want:.6f}, got {got:.6f}.").format(
            n=n, e=e, k=k, want=want, got=got))
    return right(name, _("E * sum_i f_i * P_i, with f over the N*K slots: 1.0 at perfect balance."))


def check_max_switch_loss(answer) -> Feedback:
    """Exercise 2: the largest Switch loss with E=8 experts and top-2 routing (f over N*K slots)."""
    name = _("largest Switch loss (E=8, top-2)")
    if not isinstance(answer, bool) and isinstance(answer, (int, float, np.integer, np.floating)):
        if np.isclose(float(answer), 8.0):
            return wrong(name, _("8 would need one expert to take every slot, but top-2 picks two different "
                                 "experts per token: at most half of the slots can go to one expert."))
        if np.isclose(float(answer), 1.0):
            return wrong(name, _("1.0 is the smallest value (perfect balance); the question asks for the "
                                 "largest."))
    return check_number(name, answer, 8 / 2, hint=_("two experts share all slots (f = 1/2 each) and all the "
                                                    "probability (P summing to 1 over them): E * 1/2 * 1."))


def check_bias_update(answer) -> Feedback:
    """Exercise 3: the selection bias after one DeepSeek-V3 step from 0 with load (120, 40, 80, 80), u=0.001."""
    name = _("bias update")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    arr, problem = as_array(name, answer, (4,))
    if problem is not None:
        return problem
    load = np.array(BIAS_LOAD, dtype=np.float64)
    want = BIAS_RATE * np.sign(load.mean() - load)
    if np.allclose(arr, want, atol=1e-9):
        return right(name, _("overloaded expert 0 goes down by u, underloaded expert 1 up by u, the others stay."))
    if np.allclose(arr, -want, atol=1e-9):
        return wrong(name, _("the signs are flipped: an overloaded expert must become LESS attractive (bias "
                             "down)."))
    if np.allclose(arr, BIAS_RATE * (load.mean() - load), atol=1e-9):
        return wrong(name, _("DeepSeek-V3 moves each bias by exactly u in the direction of balance (the sign of "
                             "the error), not in proportion to the error."))
    return wrong(name, _("expected b_i = u * sign(mean_load - load_i) with mean load {mean:g}; got {got}.").format(
        mean=load.mean(), got=arr))


def check_group_loss(answer) -> Feedback:
    """Exercise 4: the group loss (2 groups of 4 experts) when 3/4 of the tokens go to expert 0, 1/4 to 4."""
    name = _("group loss")
    probs, indices = group_routing()
    want = B.group_loss_numpy(probs, indices, GROUP_GROUPS)
    switch = B.switch_loss_numpy(probs, indices)
    if not isinstance(answer, bool) and isinstance(answer, (int, float, np.integer, np.floating)):
        if np.isclose(float(answer), switch):
            return wrong(name, _("{value} is the Switch loss over single experts; the group loss first sums f "
                                 "and P over each group's 4 experts.").format(value=format_number(switch)))
        if np.isclose(float(answer), 1.0):
            return wrong(name, _("1.0 would mean balanced groups, but device 0 gets 3/4 of the tokens."))
    return check_number(name, answer, want,
                        hint=_("F = P = (3/4, 1/4) for the two groups: G * sum_g F_g * P_g."))


def check_scope_loss(answer) -> Feedback:
    """Exercise 5: ``(sequence scope, batch scope)`` Switch losses of the routing ``scope_routing()``."""
    name = _("balance scope")
    missing = unanswered(name, answer)
    if missing is not None:
        return missing
    arr, problem = as_array(name, answer, (2,))
    if problem is not None:
        return problem
    probs, indices = scope_routing()
    want = np.array([B.scoped_switch_loss_numpy(probs, indices, SCOPE_SEQUENCES), B.switch_loss_numpy(probs, indices)])
    if np.allclose(arr, want, rtol=1e-6):
        return right(name, _("each sequence alone is as unbalanced as it gets (E); the batch is less so, but "
                             "still leaves six experts idle."))
    if np.allclose(arr, want[::-1], rtol=1e-6):
        return wrong(name, _("the two values are swapped: give (sequence scope, batch scope)."))
    if np.isclose(arr[1], 1.0):
        return wrong(name, _("the batch is not balanced: experts 2-7 get no token at all, so f and P are 1/2 on "
                             "two experts and 0 on the others."))
    if np.isclose(arr[0], arr[1]):
        return wrong(name, _("the scopes differ: inside one sequence every token goes to the same expert."))
    return wrong(name, _("expected two numbers (sequence scope, batch scope), got {first} and {second}; compute "
                         "E * sum_i f_i P_i over each sequence (then average) and over the whole batch.").format(
        first=format_number(arr[0]), second=format_number(arr[1])))
