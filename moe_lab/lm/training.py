"""Training the tiny MoE language model: losses, a jitted train step, runs, evaluation.

Introduced in notebook 04 (load balancing): the same model is trained with each balancing method and
the expert loads are recorded at every step; notebook 05 reuses ``domain_expert_share``.

    run = train(TinyMoELM(cfg), load_corpus(), steps=100)   # run.loss [steps], run.load [steps, layers, E]
    run.router_grad, run.expert_grad                         # norms of the routers' and experts' gradients
    router_gradient_norms(model, x, y)                       # the routers' gradient: task part, balance part
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from tqdm.auto import tqdm

from moe_lab import balance as B
from moe_lab import i18n  # i18n._(): this module uses ``_`` for values it throws away
from moe_lab.checks import check_int
from moe_lab.lm.corpus import DOMAINS, VOCAB_SIZE, Corpus
from moe_lab.lm.model import LMConfig, TinyMoELM


def next_byte_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy (nats per byte) of ``logits [..., 256]`` against the next bytes ``targets [...]``.

    ``-mean(log_softmax(logits)[target])``. Forward and backward on a [512, 256] batch under
    ``mindspore.jit`` on 2 CPU cores: 0.30 ms, against 1.77 ms for ``ops.cross_entropy`` (measured).
    Introduced in notebook 04.
    """
    log_probs = ops.log_softmax(logits.reshape(-1, VOCAB_SIZE), -1)
    return -ops.gather_elements(log_probs, 1, targets.reshape(-1, 1).astype(ms.int32)).mean()


def lm_losses(model: TinyMoELM, tokens: Tensor, targets: Tensor, aux_coef, group_coef, z_coef):
    """Total loss and its parts: ``(loss, cross_entropy, balance_loss, z_loss, load [layers, E])``.

    The coefficients are tensors (inputs of the jitted step), so one compiled step serves every
    balancing method: ``"aux"`` sets ``aux_coef``, ``"group"`` sets ``group_coef``, ``"none"`` and
    ``"bias"`` set both to 0. ``balance_loss`` and ``z_loss`` are summed over layers, coefficients
    included; ``load`` counts the slots each expert received in each layer.
    """
    cfg = model.cfg
    logits, router_logits, probs, indices, _ = model(tokens)
    ce = next_byte_loss(logits, targets)
    bal = ops.zeros((), ms.float32)
    zl = ops.zeros((), ms.float32)
    loads = ()
    for layer in range(cfg.num_hidden_layers):
        bal = bal + aux_coef * B.switch_loss(probs[layer], indices[layer])
        if cfg.num_experts % cfg.num_groups == 0:  # else the config cannot use balance="group" anyway
            bal = bal + group_coef * B.group_loss(probs[layer], indices[layer], cfg.num_groups)
        zl = zl + z_coef * B.z_loss(router_logits[layer])
        loads += (B.expert_load(indices[layer], cfg.num_experts),)
    return ce + bal + zl, ce, bal, zl, ops.stack(loads)


BALANCE_FIELDS = ("balance", "aux_coef", "z_coef", "bias_rate", "group_coef")


def step_coefficients(cfg: LMConfig) -> dict[str, float]:
    """The step inputs that implement ``cfg.balance``: loss coefficients and the bias update rate."""
    return {"aux_coef": cfg.aux_coef if cfg.balance == "aux" else 0.0,
            "group_coef": cfg.group_coef if cfg.balance == "group" else 0.0,
            "z_coef": cfg.z_coef,
            "bias_rate": cfg.bias_rate if cfg.balance == "bias" else 0.0}


def _norm(grad: Tensor, axes) -> Tensor:
    return ops.sqrt((grad * grad).sum(axes))


class Trainer:
    """Adam + one jitted train step for a ``TinyMoELM``; ``trainer.step(x, y)`` returns NumPy values.

    The step computes the loss and its gradient for the trainable parameters only (the selection
    bias has ``requires_grad=False``), applies Adam, then moves every layer's selection bias by the
    DeepSeek-V3 sign rule with rate ``bias_rate`` (0 unless ``balance="bias"``) using this step's load.
    It also reports the gradient each layer's router and each expert received (their norms).
    ``reset(cfg)`` restores the initial weights and optimizer state and may switch the balancing
    method, reusing the compiled step (compiling costs seconds; notebook 04 trains three methods).
    Introduced in notebook 04.
    """

    def __init__(self, model: TinyMoELM):
        if not isinstance(model, TinyMoELM):
            raise TypeError(f"model must be a TinyMoELM, got {type(model).__name__}")
        self.model = model
        self.optimizer = nn.Adam(model.trainable_params(), learning_rate=model.cfg.lr)
        # snapshot of every parameter (model and Adam's moments, step and beta powers) for reset()
        self._initial = [(p, p.asnumpy().copy()) for p in self._state()]
        self._coefs = self._coefficients(model.cfg)

        def forward(x, y, aux_coef, group_coef, z_coef):
            return lm_losses(model, x, y, aux_coef, group_coef, z_coef)

        grad_fn = ms.value_and_grad(forward, None, self.optimizer.parameters, has_aux=True)
        routers = [block.moe.router for block in model.blocks]
        optimizer = self.optimizer
        # positions of each layer's router and expert weights in the gradient tuple (Python ints: constants
        # of the compiled graph)
        position = {id(p): i for i, p in enumerate(self.optimizer.parameters)}
        router_at = [position[id(block.moe.router.weight)] for block in model.blocks]
        experts_at = [[position[id(p)] for p in (block.moe.experts.w_gate, block.moe.experts.w_up,
                                                  block.moe.experts.w_down) if p is not None]
                      for block in model.blocks]

        @ms.jit
        def train_step(x, y, aux_coef, group_coef, z_coef, bias_rate):
            (loss, ce, bal, zl, load), grads = grad_fn(x, y, aux_coef, group_coef, z_coef)
            optimizer(grads)
            for layer, router in enumerate(routers):
                B.update_selection_bias(router, load[layer], bias_rate)
            router_grad = ops.stack([_norm(grads[i], (0, 1)) for i in router_at])
            expert_grad = ()
            for at in experts_at:  # per expert: the norm over its w_gate, w_up and w_down together
                squares = ()
                for i in at:
                    squares += ((grads[i] * grads[i]).sum((1, 2)),)
                expert_grad += (ops.sqrt(ops.stack(squares).sum(0)),)
            # one host read per output: the four scalars travel together
            return ops.stack([loss, ce, bal, zl]), load, router_grad, ops.stack(expert_grad)

        self._step = train_step

    @staticmethod
    def _coefficients(cfg: LMConfig) -> tuple[Tensor, ...]:
        coefs = step_coefficients(cfg)
        return tuple(Tensor(coefs[k], ms.float32) for k in ("aux_coef", "group_coef", "z_coef", "bias_rate"))

    def _state(self) -> list[Parameter]:
        seen, params = set(), []
        for p in list(self.model.get_parameters()) + list(self.optimizer.get_parameters()):
            if id(p) not in seen:  # Adam lists the model's weights again: keep each parameter once
                seen.add(id(p))
                params.append(p)
        return params

    def reset(self, cfg: LMConfig | None = None) -> Trainer:
        """Back to the initial weights (selection biases at 0) and a fresh Adam; optionally a new method.

        ``cfg`` may differ from the model's config only in the balancing fields ``BALANCE_FIELDS``.
        """
        if cfg is not None:
            if not isinstance(cfg, LMConfig):
                raise TypeError(f"cfg must be an LMConfig, got {type(cfg).__name__}")
            old, new = self.model.cfg.to_dict(), cfg.to_dict()
            changed = sorted(k for k in old if old[k] != new[k] and k not in BALANCE_FIELDS)
            if changed:
                raise ValueError(f"reset can only change {', '.join(BALANCE_FIELDS)}; "
                                 f"cfg also changes {changed}: build a new TinyMoELM and Trainer")
            self.model.cfg = cfg
            self._coefs = self._coefficients(cfg)
        for p, value in self._initial:
            # write into the parameter's memory: the compiled step keeps using that memory, and
            # ``set_data`` would give the parameter a new buffer that the step never sees
            ops.assign(p, Tensor(value.copy()))
        return self

    def step(self, x: np.ndarray, y: np.ndarray) -> dict:
        """One training step on tokens ``x`` and next bytes ``y`` (``[batch, context]`` integers).

        Returns ``loss``, ``ce``, ``balance``, ``z`` (floats), ``load [layers, E]`` (slots per expert),
        ``router_grad [layers]`` (norm of the gradient of the whole loss on each router's weights) and
        ``expert_grad [layers, E]`` (norm of each expert's weight gradient).
        """
        scalars, load, router_grad, expert_grad = self._step(Tensor(x, ms.int32), Tensor(y, ms.int32), *self._coefs)
        loss, ce, bal, zl = (float(v) for v in scalars.asnumpy())
        return {"loss": loss, "ce": ce, "balance": bal, "z": zl, "load": load.asnumpy(),
                "router_grad": router_grad.asnumpy(), "expert_grad": expert_grad.asnumpy()}


def router_gradient_norms(model: TinyMoELM, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Where each router's gradient comes from, on one batch: ``{"task": [layers], "balance": [layers]}``.

    ``task`` is the norm of the gradient of the cross-entropy alone on each layer's router weights,
    ``balance`` that of the balancing and z-loss terms with the model's config (``"none"`` and
    ``"bias"`` have none). With top-1 and ``norm_topk_prob=True`` the combine weight is always 1.0
    and ``task`` is 0 up to float32 round-off: the router cannot learn from the language-model loss.
    Eager (no compilation, a fraction of a second). Introduced in notebook 04.
    """
    if not isinstance(model, TinyMoELM):
        raise TypeError(f"model must be a TinyMoELM, got {type(model).__name__}")
    coefs = step_coefficients(model.cfg)
    weights = [block.moe.router.weight for block in model.blocks]
    tokens, targets = Tensor(x, ms.int32), Tensor(y, ms.int32)
    aux, group, z = (Tensor(coefs[k], ms.float32) for k in ("aux_coef", "group_coef", "z_coef"))

    def task(tokens, targets):
        return lm_losses(model, tokens, targets, aux, group, z)[1]

    def balance(tokens, targets):
        _, _, bal, zl, _ = lm_losses(model, tokens, targets, aux, group, z)
        return bal + zl

    result = {}
    for name, fn in (("task", task), ("balance", balance)):
        grads = ms.grad(fn, None, weights)(tokens, targets)
        result[name] = np.array([float(np.linalg.norm(g.asnumpy())) for g in grads])
    return result


@dataclass
class TrainResult:
    """Per-step history of one training run (NumPy arrays) and its measured speed."""

    config: LMConfig
    loss: np.ndarray          # [steps] total loss
    ce: np.ndarray            # [steps] cross-entropy (nats per byte)
    balance: np.ndarray       # [steps] balance loss term (coefficient included)
    load: np.ndarray          # [steps, layers, E] slots per expert
    router_grad: np.ndarray   # [steps, layers] norm of the gradient on each router's weights
    expert_grad: np.ndarray   # [steps, layers, E] norm of each expert's weight gradient
    bias: np.ndarray          # [layers, E] final selection bias
    seconds: float            # wall time of the timed steps (compile excluded)
    compile_seconds: float    # wall time of the first step (includes compilation)

    @property
    def steps_per_second(self) -> float:
        """Training speed of the jitted step, first (compiling) step excluded."""
        timed = len(self.loss) - 1
        return timed / self.seconds if timed > 0 and self.seconds > 0 else float("nan")

    @property
    def tokens_per_second(self) -> float:
        """Training throughput of the jitted step, first (compiling) step excluded."""
        return self.steps_per_second * self.config.tokens_per_step

    def load_share(self) -> np.ndarray:
        """``[steps, layers, E]``: each expert's share of the slots (rows sum to 1)."""
        return self.load / self.load.sum(-1, keepdims=True)


def _progress(total: int, progress, desc: str):
    if progress is False:
        return None
    if progress is True or progress == "auto":
        return tqdm(total=total, desc=desc, leave=True)
    raise ValueError(f"progress must be True or False, got {progress!r}")


def train(model: TinyMoELM, corpus: Corpus, steps: int, *, trainer: Trainer | None = None, progress=True,
          desc: str | None = None) -> TrainResult:
    """Train ``model`` for ``steps`` steps on random windows of ``corpus`` (seeded by ``model.cfg.seed``).

    Shows a tqdm progress bar (``tqdm.auto``: a widget in Jupyter) unless ``progress=False``.
    Returns the per-step loss and per-layer per-expert load. Introduced in notebook 04.
    """
    steps = check_int("steps", steps, minimum=1)
    if not isinstance(corpus, Corpus):
        raise TypeError(f"corpus must be a moe_lab.corpus.Corpus, got {type(corpus).__name__}")
    if trainer is None:
        trainer = Trainer(model)
    elif trainer.model is not model:
        raise ValueError("trainer was built for another model: pass Trainer(model) or trainer=None")
    cfg = model.cfg
    rng = np.random.default_rng(cfg.seed)
    bar = _progress(steps, progress, desc or f"{cfg.balance}")
    hist = {"loss": [], "ce": [], "balance": [], "load": [], "router_grad": [], "expert_grad": []}
    compile_seconds, start = 0.0, time.perf_counter()
    for i in range(steps):
        x, y, _ = corpus.batch("train", cfg.batch_size, cfg.context, rng)
        t0 = time.perf_counter()
        out = trainer.step(x, y)
        if i == 0:
            compile_seconds, start = time.perf_counter() - t0, time.perf_counter()
        for key in hist:
            hist[key].append(out[key])
        if bar is not None:
            bar.update(1)
            # the text set_postfix(loss=...) shows, in the learner's language
            bar.set_postfix_str(i18n._("loss={loss}").format(loss=f"{out['ce']:.3f}"), refresh=False)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    bias = np.stack([block.moe.router.selection_bias.asnumpy() for block in model.blocks])
    return TrainResult(cfg, np.array(hist["loss"]), np.array(hist["ce"]), np.array(hist["balance"]),
                       np.stack(hist["load"]).astype(np.int64), np.stack(hist["router_grad"]),
                       np.stack(hist["expert_grad"]), bias, seconds, compile_seconds)


def evaluate(model: TinyMoELM, corpus: Corpus, *, batches: int = 8, split: str = "val", seed: int = 1234) -> dict:
    """Mean cross-entropy (nats/byte) per domain on fixed random windows of ``split``. Notebook 04."""
    cfg = model.cfg
    batches = check_int("batches", batches, minimum=1)
    rng = np.random.default_rng(seed)
    result = {}
    for domain in DOMAINS:
        losses = []
        for _ in range(batches):
            x, y, _ = corpus.batch(split, cfg.batch_size, cfg.context, rng, domains=(domain,))
            logits = model(Tensor(x, ms.int32))[0]
            losses.append(float(next_byte_loss(logits, Tensor(y, ms.int32)).asnumpy()))
        result[domain] = float(np.mean(losses))
    result["mean"] = float(np.mean([result[d] for d in DOMAINS]))
    return result


def domain_expert_share(model: TinyMoELM, corpus: Corpus, *, batches: int = 4, split: str = "val",
                        seed: int = 1234) -> np.ndarray:
    """``[layers, domains, E]``: share of each domain's first-choice routings that went to each expert.

    Rows sum to 1. Measured on fixed random windows of ``split``. Introduced in notebook 04
    (specialisation); notebook 05 plots it as a heatmap.
    """
    cfg = model.cfg
    batches = check_int("batches", batches, minimum=1)
    rng = np.random.default_rng(seed)
    counts = np.zeros((cfg.num_hidden_layers, len(DOMAINS), cfg.num_experts))
    for d, domain in enumerate(DOMAINS):
        for _ in range(batches):
            x, _, _ = corpus.batch(split, cfg.batch_size, cfg.context, rng, domains=(domain,))
            indices = model(Tensor(x, ms.int32))[3]
            for layer in range(cfg.num_hidden_layers):
                counts[layer, d] += np.bincount(indices[layer].asnumpy()[:, 0], minlength=cfg.num_experts)
    return counts / counts.sum(-1, keepdims=True)
