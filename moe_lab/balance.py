"""Load balancing for MoE routers: auxiliary losses, bias balancing, and load metrics.

Introduced in notebook 04. Notation: ``N`` tokens, ``E`` experts, ``K`` experts per token (top-k).

* ``f_i`` (``expert_fraction``): the fraction of the ``N*K`` routed slots that went to expert ``i``.
  Counted from the top-k choice, so it has no gradient.
* ``P_i`` (``mean_probs``): the router's softmax probability for expert ``i``, averaged over tokens.
  Differentiable: this is how the loss reaches the router.

Losses (MindSpore, differentiable inside a jitted train step):

* ``switch_loss``: ``E * sum_i f_i * P_i`` (Switch Transformer, Fedus et al. 2021, arXiv 2101.03961,
  eq. 4; the same product of "fraction dispatched" and "mean gate" as GShard's ``l_aux``, Lepikhin
  et al. 2020, arXiv 2006.16668, algorithm 1). With f normalised over the ``N*K`` slots it is exactly
  1.0 under perfect balance (uniform ``f`` and ``P``) for any top-k. Its largest value is ``E / K``:
  top-k picks ``K`` different experts per token, so no expert holds more than ``1/K`` of the slots
  (``f_i <= 1/K``) and ``sum_i f_i P_i <= (1/K) sum_i P_i = 1/K``; top-1 reaches ``E`` when one expert
  takes every token with probability 1. Scale it by a small coefficient (Switch: 0.01).
* ``z_loss``: ``mean_tokens(logsumexp(router_logits)^2)`` (ST-MoE, Zoph et al. 2022, arXiv 2202.08906,
  eq. 5): keeps router logits small for numerical stability; coefficient 0.001 in ST-MoE.
* ``group_loss``: DeepSeekMoE's *device-level* balance loss (Dai et al. 2024, arXiv 2401.06066,
  section 3.3, eqs. 15-17; also DeepSeek-V2, arXiv 2405.04434, section 2.2.3): experts are split into
  ``G`` groups, one per device, and the loss balances the groups, leaving the router free to favour
  experts inside a group. The paper's ``sum_g f'_g P'_g`` with ``f'_g`` the *mean* of its normalised
  ``f_j = E * fraction_j`` and ``P'_g`` the *sum* of its ``P_j`` equals ``G * sum_g F_g * P_g`` with
  ``F_g``, ``P_g`` the sums of the fractions and probabilities over the group (the form computed here):
  1.0 when the groups are balanced, ``G`` when one group takes everything; ``G = E`` gives ``switch_loss``.
* ``scoped_switch_loss``: the Switch loss with ``f`` and ``P`` counted over *segments* of the tokens
  (e.g. each sequence) and averaged. The scope is the set of tokens that must be balanced: a small one
  (one sequence: DeepSeek-V3's complementary sequence-wise loss, arXiv 2412.19437 section 2.1.2)
  forbids a sequence from sending all its tokens to "its" expert; a large one (the whole batch, or
  more) only asks that the experts be equally busy overall, which leaves room to specialise by domain
  (Qiu et al. 2025, arXiv 2501.11873, measure this with a global-batch loss). Pangu Ultra MoE (arXiv 2505.04519) reports
  an "EP-group" load-balancing loss that improves expert specialisation; its formula is not given in the
  openPangu model card, and the descriptions available compare micro-batch, EP-group and DP-group levels,
  i.e. scopes of the statistics. This function shows the scope idea; it is not Pangu's formula.

Auxiliary-loss-free balancing (DeepSeek-V3, arXiv 2412.19437, section 2.1.2): a per-expert bias
``b_i`` is added to the scores used to *select* the top-k experts (never to the combine weights);
after each step ``b_i`` moves by ``u`` towards balance: ``b_i += u * sign(mean_load - load_i)``
(``bias_update``). DeepSeek-V3 used ``u = 0.001``. The bias is ``Router.selection_bias``.

Metrics (NumPy, for plots and tables): tokens per expert, max/mean, coefficient of variation,
drop rate at a given capacity, routing entropy.
"""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from moe_lab.checks import check_choice, check_float, check_int

BALANCE_METHODS = ("none", "aux", "bias", "group")


# --------------------------------------------------------------------------- MindSpore (trainable)

def expert_fraction(indices: Tensor, num_experts: int) -> Tensor:
    """``f [E]``: fraction of the ``N*K`` slots routed to each expert (sums to 1; no gradient)."""
    flat = indices.reshape(-1).astype(ms.int32)
    one_hot = ops.one_hot(flat, num_experts, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
    return ops.stop_gradient(one_hot.mean(0))


def expert_load(indices: Tensor, num_experts: int) -> Tensor:
    """Token slots per expert ``[E]`` (float32 counts, no gradient); works inside ``ms.jit``."""
    flat = indices.reshape(-1).astype(ms.int32)
    one_hot = ops.one_hot(flat, num_experts, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
    return ops.stop_gradient(one_hot.sum(0))


def mean_probs(probs: Tensor) -> Tensor:
    """``P [E]``: router probabilities averaged over tokens (differentiable)."""
    return probs.reshape(-1, probs.shape[-1]).mean(0)


def switch_loss(probs: Tensor, indices: Tensor) -> Tensor:
    """Switch/GShard auxiliary loss ``E * sum_i f_i * P_i`` (1.0 at perfect balance, at most ``E/K``).
    Notebook 04."""
    num_experts = probs.shape[-1]
    return num_experts * (expert_fraction(indices, num_experts) * mean_probs(probs)).sum()


def scoped_switch_loss(probs: Tensor, indices: Tensor, num_segments: int) -> Tensor:
    """The Switch loss computed inside each of ``num_segments`` equal, contiguous segments of the tokens
    and averaged: the scope of the balance is one segment. Notebook 04.

    ``probs [N, E]`` and ``indices [N, K]`` in token order (for a batch ``[B, T]`` flattened row by row,
    ``num_segments=B`` makes every sequence a segment); ``num_segments=1`` is ``switch_loss``.
    """
    n, num_experts = probs.shape[0], probs.shape[-1]
    num_segments = check_int("num_segments", num_segments, minimum=1)
    if n % num_segments:
        raise ValueError(f"num_segments must divide the {n} tokens, got num_segments={num_segments}")
    flat = indices.reshape(num_segments, -1).astype(ms.int32)
    one_hot = ops.one_hot(flat, num_experts, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
    f = ops.stop_gradient(one_hot.mean(1))                                      # [segments, E]
    p = probs.reshape(num_segments, n // num_segments, num_experts).mean(1)      # [segments, E]
    return num_experts * (f * p).sum(-1).mean()


def group_loss(probs: Tensor, indices: Tensor, num_groups: int) -> Tensor:
    """DeepSeekMoE's device-level balance loss over ``num_groups`` contiguous groups of experts,
    ``G * sum_g F_g * P_g`` (module docstring). Notebook 04.

    Experts ``[g*E/G, (g+1)*E/G)`` form group ``g`` (the experts one device holds under expert parallelism).
    """
    num_experts = probs.shape[-1]
    per_group = num_experts // num_groups
    f_group = expert_fraction(indices, num_experts).reshape(num_groups, per_group).sum(1)
    p_group = mean_probs(probs).reshape(num_groups, per_group).sum(1)
    return num_groups * (f_group * p_group).sum()


def z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss: mean over tokens of ``logsumexp(logits)^2``. Notebook 04."""
    rows = logits.reshape(-1, logits.shape[-1])
    top = ops.stop_gradient(rows.max(axis=-1, keepdims=True))  # shift for a stable log-sum-exp
    lse = ops.log(ops.exp(rows - top).sum(-1)) + top.squeeze(-1)
    return (lse * lse).mean()


def bias_update(load: Tensor, rate: float) -> Tensor:
    """DeepSeek-V3's update ``delta_b = u * sign(mean_load - load)``: raise underloaded, lower overloaded."""
    return rate * ops.sign(load.mean() - load)


def update_selection_bias(router, load: Tensor, rate: float) -> Tensor:
    """Apply one bias-balancing step to ``router.selection_bias`` in place; returns the new bias.

    Works eagerly and inside ``ms.jit``. (``ops.assign`` of ``bias + delta``: in MindSpore 2.10 graph mode,
    ``ops.assign_add`` on the bias fails to type-check when the same graph also routes with it.)
    """
    return ops.assign(router.selection_bias, router.selection_bias + bias_update(load, rate))


def check_balance(method: str, *, aux_coef: float = 0.0, z_coef: float = 0.0, bias_rate: float = 0.0,
                  group_coef: float = 0.0, num_groups: int = 1, num_experts: int | None = None) -> str:
    """Validate a balancing setting; every error names the argument, its value and what is allowed."""
    check_choice("balance", method, BALANCE_METHODS)
    for name, value in (("aux_coef", aux_coef), ("z_coef", z_coef), ("bias_rate", bias_rate),
                        ("group_coef", group_coef)):
        check_float(name, value, minimum=0.0)
    num_groups = check_int("num_groups", num_groups, minimum=1)
    if num_experts is not None and num_experts % num_groups:
        raise ValueError(f"num_groups must divide num_experts={num_experts}, got num_groups={num_groups}")
    return method


# --------------------------------------------------------------------------- NumPy twins and metrics

def tokens_per_expert(indices, num_experts: int, keep=None) -> np.ndarray:
    """Slots per expert ``[E]`` from ``indices [N, K]`` (only the kept slots when ``keep`` is given)."""
    num_experts = check_int("num_experts", num_experts, minimum=1)
    idx = np.asarray(indices.asnumpy() if hasattr(indices, "asnumpy") else indices).reshape(-1)
    if keep is not None:
        idx = idx[np.asarray(keep.asnumpy() if hasattr(keep, "asnumpy") else keep).reshape(-1).astype(bool)]
    if idx.size and (idx.min() < 0 or idx.max() >= num_experts):
        raise ValueError(f"indices must be in [0, {num_experts - 1}], got values up to {idx.max()}")
    return np.bincount(idx.astype(np.int64), minlength=num_experts)


def _load(load) -> np.ndarray:
    arr = np.asarray(load, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"load must be a non-empty 1-D array of counts per expert, got shape {arr.shape}")
    if (arr < 0).any():
        raise ValueError("load must not be negative")
    return arr


def max_over_mean(load) -> float:
    """Largest expert load divided by the mean load: 1.0 is perfect balance, E means one expert takes all."""
    arr = _load(load)
    return float(arr.max() / arr.mean()) if arr.mean() > 0 else float("nan")


def coefficient_of_variation(load) -> float:
    """Standard deviation of the load over its mean (0 = perfect balance; ``sqrt(E-1)`` = full collapse)."""
    arr = _load(load)
    return float(arr.std() / arr.mean()) if arr.mean() > 0 else float("nan")


def drop_rate(load, capacity: int) -> float:
    """Fraction of slots that an expert capacity of ``capacity`` slots would drop: ``sum(max(0, load-C)) / sum``."""
    arr = _load(load)
    capacity = check_int("capacity", capacity, minimum=0)
    return float(np.maximum(arr - capacity, 0).sum() / arr.sum()) if arr.sum() > 0 else 0.0


def routing_entropy(probs) -> float:
    """Mean entropy (nats) of the router's per-token distribution: ``log E`` = undecided, 0 = certain."""
    p = np.asarray(probs.asnumpy() if hasattr(probs, "asnumpy") else probs, dtype=np.float64)
    p = p.reshape(-1, p.shape[-1])
    return float(-(p * np.log(np.clip(p, 1e-30, None))).sum(-1).mean())


def switch_loss_numpy(probs, indices) -> float:
    """NumPy twin of ``switch_loss`` (float64), for tests and plots."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1])
    e = p.shape[1]
    f = tokens_per_expert(indices, e) / np.asarray(indices).size
    return float(e * (f * p.mean(0)).sum())


def scoped_switch_loss_numpy(probs, indices, num_segments: int) -> float:
    """NumPy twin of ``scoped_switch_loss`` (float64)."""
    num_segments = check_int("num_segments", num_segments, minimum=1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1])
    idx = np.asarray(indices).reshape(p.shape[0], -1)
    if p.shape[0] % num_segments:
        raise ValueError(f"num_segments must divide the {p.shape[0]} tokens, got num_segments={num_segments}")
    return float(np.mean([switch_loss_numpy(ps, ix) for ps, ix in
                          zip(np.split(p, num_segments), np.split(idx, num_segments), strict=True)]))


def group_loss_numpy(probs, indices, num_groups: int) -> float:
    """NumPy twin of ``group_loss`` (float64)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1])
    e = p.shape[1]
    f = tokens_per_expert(indices, e) / np.asarray(indices).size
    return float(num_groups * (f.reshape(num_groups, -1).sum(1) * p.mean(0).reshape(num_groups, -1).sum(1)).sum())


def z_loss_numpy(logits) -> float:
    """NumPy twin of ``z_loss`` (float64)."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1, np.shape(logits)[-1])
    top = x.max(-1, keepdims=True)
    lse = np.log(np.exp(x - top).sum(-1)) + top[:, 0]
    return float((lse ** 2).mean())


def load_summary(load, capacity_factor: float = 1.0) -> dict[str, float]:
    """Load metrics of one layer's ``load [E]`` (slots per expert) as rounded floats, for printed tables.

    The drop rate is what an expert capacity of ``ceil(capacity_factor * slots / E)`` would drop.
    """
    arr = _load(load)
    capacity_factor = check_float("capacity_factor", capacity_factor, minimum=0.0, strict=True)
    capacity = int(math.ceil(round(capacity_factor * arr.sum() / arr.size, 9)))
    return {"max/mean": round(max_over_mean(arr), 3), "cv": round(coefficient_of_variation(arr), 3),
            f"drop@{capacity_factor:g}": round(drop_rate(arr, capacity), 3),
            "share_max": round(float(arr.max() / arr.sum()), 3)}
