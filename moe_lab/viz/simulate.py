"""Routing and balancing simulated in NumPy, fast enough for a slider (notebook 05's dashboards).

``simulate_routing`` follows the semantics of ``MoELayer`` exactly (the package's NumPy router
``moe_lab.core.reference.route_logits_numpy``, the same capacity formula and drop policies; a test checks
it against the layer); ``simulate_balancing`` runs a few balancing updates of the two methods of
notebook 04 on a toy router.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moe_lab.checks import check_choice, check_float, check_int
from moe_lab.core.capacity import DROP_POLICIES, expert_capacity
from moe_lab.core.reference import route_logits_numpy


@dataclass
class SimulatedRouting:
    """NumPy twin of ``moe_lab.core.routers.Routing`` (arrays instead of tensors)."""

    logits: np.ndarray  # [N, E]
    probs: np.ndarray  # [N, E]
    indices: np.ndarray  # [N, K] int, best first
    weights: np.ndarray  # [N, K] combine weights (0 where dropped)
    keep: np.ndarray  # [N, K] bool
    capacity: int | None

    @property
    def num_experts(self) -> int:
        return self.probs.shape[1]

    def load(self) -> np.ndarray:
        """Slots routed to each expert before capacity: ``[E]``, sums to N*K."""
        return np.bincount(self.indices.reshape(-1), minlength=self.num_experts)

    def kept(self) -> np.ndarray:
        """Slots each expert processes after capacity: ``[E]``."""
        return np.bincount(self.indices.reshape(-1)[self.keep.reshape(-1)], minlength=self.num_experts)

    def dropped(self) -> int:
        return int((~self.keep).sum())


def keep_mask_numpy(indices: np.ndarray, scores: np.ndarray, num_experts: int, capacity: int | None,
                    drop_policy: str = "position") -> np.ndarray:
    """Vectorised twin of ``moe_lab.core.capacity.keep_mask``: True where slot ``(t, j)`` fits in its expert.

    Priority: "position" serves all first choices before any second choice, earlier tokens first
    (GShard); "priority" does the same with the tokens ranked by their largest score (V-MoE's
    batch-prioritised routing). Each expert keeps its first ``capacity``.
    """
    check_choice("drop_policy", drop_policy, DROP_POLICIES)
    n, k = indices.shape
    if capacity is None:
        return np.ones((n, k), bool)
    rank = np.arange(n)
    if drop_policy == "priority":
        rank = np.empty(n, np.int64)
        rank[np.argsort(-np.asarray(scores, np.float64).max(1), kind="stable")] = np.arange(n)
    priority = np.arange(k)[None, :] * n + rank[:, None]
    expert = indices.reshape(-1).astype(np.int64)
    order = np.argsort(expert * (n * k) + priority.reshape(-1), kind="stable")
    counts = np.bincount(expert, minlength=num_experts)
    starts = np.cumsum(counts) - counts
    place = np.arange(n * k) - starts[expert[order]]
    keep = np.empty(n * k, bool)
    keep[order] = place < capacity
    return keep.reshape(n, k)


def route_logits(logits, top_k: int, *, capacity_factor: float | None = None, drop_policy: str = "position",
                 normalize: bool = True, selection_bias=None) -> SimulatedRouting:
    """Route router scores ``logits [N, E]`` like ``MoELayer.route``. Introduced in notebook 05.

    The package's one NumPy router (``moe_lab.core.reference.route_logits_numpy``: softmax -> top-k of
    ``probs + selection_bias`` -> combine weights from ``probs``, renormalised when ``normalize``), then
    capacity ``expert_capacity(N, E, K, capacity_factor)`` and the drop policy.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (tokens, experts), got {logits.shape}")
    n, num_experts = logits.shape
    top_k = check_int("top_k", top_k, minimum=1, maximum=num_experts)
    capacity = expert_capacity(n, num_experts, top_k, capacity_factor)
    probs, indices, weights = route_logits_numpy(logits, top_k, norm_topk_prob=normalize,
                                                 selection_bias=selection_bias)
    keep = keep_mask_numpy(indices, np.take_along_axis(probs, indices, 1), num_experts, capacity, drop_policy)
    return SimulatedRouting(logits, probs, indices, weights * keep, keep, capacity)


def synthetic_logits(num_tokens: int, num_experts: int, *, temperature: float = 1.0, noise: float = 0.0,
                     skew: float = 0.0, seed: int = 0, offset=None) -> np.ndarray:
    """Router scores of a toy router: ``(scores + popularity + offset) / temperature + noise * N(0, 1)``.

    * scores ~ N(0, 1) per token and expert: what a random linear router gives on varied input;
    * popularity = ``skew * (1 - e / (E - 1))``: skewed input makes low-numbered experts look better
      for every token (0 = no skew);
    * ``offset`` [E]: a per-expert logit bias (what the auxiliary loss learns in ``simulate_balancing``);
    * temperature divides the logits: < 1 makes the router confident, > 1 undecided;
    * noise: Gaussian noise on the logits (noisy top-k gating, Shazeer et al. 2017, arXiv 1701.06538),
      drawn from its own stream so ``noise=0`` gives exactly the noiseless scores.
    """
    num_tokens = check_int("num_tokens", num_tokens, minimum=1)
    num_experts = check_int("num_experts", num_experts, minimum=1)
    temperature = check_float("temperature", temperature, minimum=0.0, strict=True)
    noise = check_float("noise", noise, minimum=0.0)
    skew = check_float("skew", skew, minimum=0.0)
    seed = check_int("seed", seed, minimum=0)
    rng = np.random.default_rng([seed, 0])
    scores = rng.normal(size=(num_tokens, num_experts))
    popularity = skew * (1.0 - np.arange(num_experts) / max(1, num_experts - 1))
    logits = scores + popularity
    if offset is not None:
        logits = logits + np.asarray(offset, np.float64)
    logits = logits / temperature
    if noise > 0:
        logits = logits + noise * np.random.default_rng([seed, 1]).normal(size=logits.shape)
    return logits


def simulate_routing(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float | None = None,
                     temperature: float = 1.0, noise: float = 0.0, skew: float = 0.0, seed: int = 0, *,
                     drop_policy: str = "position", selection_bias=None, offset=None) -> SimulatedRouting:
    """Route ``num_tokens`` synthetic tokens (``synthetic_logits``) like ``MoELayer``. Notebook 05."""
    logits = synthetic_logits(num_tokens, num_experts, temperature=temperature, noise=noise, skew=skew,
                              seed=seed, offset=offset)
    return route_logits(logits, top_k, capacity_factor=capacity_factor, drop_policy=drop_policy,
                        selection_bias=selection_bias)


# ---------------------------------------------------------------------------------------------
# A few balancing updates, in NumPy (the real training is in notebook 04)

BALANCING = ("none", "aux", "bias")  # a subset of moe_lab.balance.BALANCE_METHODS
AUX_LR = 2.0  # gradient step on the per-expert logit offset (the aux loss alone, no language-model loss)
BIAS_RATE = 0.02  # bias step u; DeepSeek-V3 used 0.001 over thousands of steps, we show ~10


@dataclass
class BalancingRun:
    """The router after ``steps`` balancing updates, measured on one fixed evaluation batch.

    ``history [steps + 1, E]``: slots per expert of the evaluation batch before the first update and
    after each one; ``routing``: that batch routed after the last update (what the dashboard draws);
    ``train_loads [updates, E]``: slots per expert of the fresh training batch behind each update
    (``steps`` of them; none for ``"none"``).
    """

    history: np.ndarray
    routing: SimulatedRouting
    selection_bias: np.ndarray  # [E] (method "bias")
    offset: np.ndarray  # [E] (method "aux")
    train_loads: np.ndarray


def switch_loss_grad_offset(probs: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Gradient of the Switch loss ``E * sum_i f_i * P_i`` w.r.t. a per-expert logit offset ``b`` [E].

    ``f`` (fraction of slots) is a count without gradient; ``P_j = mean_t p_tj`` with
    ``dp_ti / db_j = p_ti (delta_ij - p_tj)``, so ``dL/db_j = E * mean_t p_tj (f_j - sum_i f_i p_ti)``.
    """
    num_experts = probs.shape[1]
    f = np.bincount(indices.reshape(-1), minlength=num_experts) / indices.size
    return num_experts * (probs * (f[None, :] - (probs @ f)[:, None])).mean(0)


def simulate_balancing(method: str, steps: int, *, num_tokens: int, num_experts: int, top_k: int,
                       capacity_factor: float | None = None, temperature: float = 1.0, noise: float = 0.0,
                       skew: float = 0.0, seed: int = 0, aux_lr: float = AUX_LR,
                       bias_rate: float = BIAS_RATE) -> BalancingRun:
    """``steps`` balancing updates, each computed on a fresh training batch. Introduced in notebook 05.

    * ``"none"``: nothing changes;
    * ``"aux"``: one gradient step of the Switch auxiliary loss on a per-expert logit offset (the part of
      the router that is the same for every token);
    * ``"bias"``: DeepSeek-V3's rule ``b += u * sign(mean_load - load)`` on the selection bias (added
      to the probabilities only to choose experts; the combine weights stay unbiased).

    The evaluation batch is ``simulate_routing(..., seed=seed)``: with ``"none"`` or ``steps=0`` the
    result is exactly that routing, so a dashboard, a notebook cell and a checker with the same
    settings show the same tokens. Training batch ``t`` (``t = 0 .. steps - 1``) uses seed ``seed + 1 + t``.
    """
    check_choice("method", method, BALANCING)
    steps = check_int("steps", steps, minimum=0)
    num_experts = check_int("num_experts", num_experts, minimum=1)
    route = {"num_tokens": num_tokens, "num_experts": num_experts, "top_k": top_k,
             "capacity_factor": capacity_factor, "temperature": temperature, "noise": noise, "skew": skew}
    bias = np.zeros(num_experts)
    offset = np.zeros(num_experts)
    evaluation = simulate_routing(**route, seed=seed)
    history, train_loads = [evaluation.load()], []
    for step in range(steps):
        if method == "none":  # the router never changes: every evaluation is the first one
            history.append(history[0])
            continue
        batch = simulate_routing(**route, seed=seed + 1 + step, selection_bias=bias, offset=offset)
        load = batch.load()
        train_loads.append(load)
        if method == "bias":
            bias = bias + bias_rate * np.sign(load.mean() - load)
        else:  # "aux"
            # the offset sits before the temperature division: scale the step so its effect does not
            # depend on the temperature (d logits / d offset = 1 / temperature)
            offset = offset - aux_lr * temperature * switch_loss_grad_offset(batch.probs, batch.indices)
        evaluation = simulate_routing(**route, seed=seed, selection_bias=bias, offset=offset)
        history.append(evaluation.load())
    train = np.array(train_loads, np.int64).reshape(len(train_loads), num_experts)
    return BalancingRun(np.array(history), evaluation, bias, offset, train)
