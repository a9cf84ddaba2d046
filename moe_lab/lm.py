"""A tiny byte-level MoE language model, trained on 2 CPU cores with a jitted MindSpore step.

Introduced in notebook 03 (load balancing); notebook 04 looks inside the shipped checkpoint.

    cfg = LMConfig(num_experts=8, top_k=1, balance="aux")
    model = TinyMoELM(cfg)
    run = train(model, load_corpus(), steps=100)       # run.loss [steps], run.load [steps, layers, E]
    model = load_tiny_lm()                             # the checkpoint made by `make checkpoint`
    routes = route_text(model, "def f(x):")            # per layer: experts and weights of every byte

The model is nanoGPT-shaped: token + position embeddings, ``n_layers`` pre-norm blocks (causal
self-attention, then an ``MoELayer`` as the feed-forward network, each with a residual connection),
a final norm and a linear head over the 256 byte values. The balancing method (``"none"``, ``"aux"``,
``"bias"``, ``"group"``, see ``moe_lab.balance``) is part of the config.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from moe_lab import balance as B
from moe_lab._checks import check_float, check_int
from moe_lab.corpus import DOMAINS, VOCAB_SIZE, Corpus, encode
from moe_lab.expert import init_weight
from moe_lab.layer import MoELayer

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "data" / "tiny_moe_lm"
CHECKPOINT_FILES = ("model.ckpt", "config.json", "summary.json")


@dataclass(frozen=True)
class LMConfig:
    """Everything that defines a tiny MoE LM and its training (the checkpoint stores it as JSON)."""

    context: int = 64          # bytes per training window
    d_model: int = 128         # model width
    n_layers: int = 2          # transformer blocks
    n_heads: int = 4           # attention heads
    ffn_size: int = 256        # hidden width of each expert
    num_experts: int = 4
    top_k: int = 2
    balance: str = "aux"       # "none" | "aux" | "bias" | "group"
    aux_coef: float = 0.01     # Switch loss coefficient (balance="aux")
    z_coef: float = 0.0        # router z-loss coefficient (any method)
    bias_rate: float = 0.001   # DeepSeek-V3 bias update speed u (balance="bias")
    group_coef: float = 0.01   # group loss coefficient (balance="group")
    num_groups: int = 2        # expert groups for balance="group"
    lr: float = 3e-3           # Adam learning rate
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        for name in ("context", "d_model", "n_layers", "n_heads", "ffn_size", "num_experts", "batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("top_k", self.top_k, minimum=1, maximum=self.num_experts)
        check_int("seed", self.seed, minimum=0)
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads must divide d_model={self.d_model}, got n_heads={self.n_heads}")
        check_float("lr", self.lr, minimum=0.0, strict=True)
        # num_groups must divide num_experts only when the group loss is used
        B.check_balance(self.balance, aux_coef=self.aux_coef, z_coef=self.z_coef, bias_rate=self.bias_rate,
                        group_coef=self.group_coef, num_groups=self.num_groups,
                        num_experts=self.num_experts if self.balance == "group" else None)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LMConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown LMConfig fields {unknown}; allowed: {sorted(names)}")
        return cls(**data)


class RMSNorm(nn.Cell):
    """Root-mean-square norm with a learned gain (Zhang & Sennrich 2019; Llama, DeepSeek, Pangu)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.gain = Parameter(Tensor(np.ones(dim, np.float32)), name="gain")
        self.eps = eps

    def construct(self, x):
        return x * ops.rsqrt((x * x).mean(-1, keep_dims=True) + self.eps) * self.gain


class CausalSelfAttention(nn.Cell):
    """Multi-head self-attention where position t only sees positions <= t."""

    def __init__(self, cfg: LMConfig, rng: np.random.Generator):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.head_dim = cfg.n_heads, d // cfg.n_heads
        self.w_qkv = Parameter(Tensor(init_weight(rng, (d, 3 * d), d)), name="w_qkv")
        self.w_out = Parameter(Tensor(init_weight(rng, (d, d), d)), name="w_out")
        mask = np.triu(np.full((cfg.context, cfg.context), -1e9, np.float32), k=1)
        self.mask = Tensor(mask)  # a constant, not a parameter: it is not saved in the checkpoint
        self.scale = 1.0 / math.sqrt(self.head_dim)

    def construct(self, x):
        b, t, d = x.shape
        qkv = ops.matmul(x, self.w_qkv).reshape(b, t, 3, self.n_heads, self.head_dim)
        q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # [B, heads, T, head_dim]
        k = qkv[:, :, 1].transpose(0, 2, 1, 3)
        v = qkv[:, :, 2].transpose(0, 2, 1, 3)
        scores = ops.matmul(q, k.transpose(0, 1, 3, 2)) * self.scale + self.mask[:t, :t]
        out = ops.matmul(ops.softmax(scores, -1), v).transpose(0, 2, 1, 3).reshape(b, t, d)
        return ops.matmul(out, self.w_out)


class Block(nn.Cell):
    """Pre-norm transformer block whose feed-forward network is a Mixture of Experts."""

    def __init__(self, cfg: LMConfig, index: int, rng: np.random.Generator):
        super().__init__()
        self.norm1 = RMSNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg, rng)
        self.norm2 = RMSNorm(cfg.d_model)
        self.moe = MoELayer(cfg.d_model, cfg.ffn_size, cfg.num_experts, cfg.top_k,
                            seed=cfg.seed * 100 + index)

    def construct(self, x):
        x = x + self.attn(self.norm1(x))
        # forward_tensors: the dense path with its routing as plain tensors (compiles, with gradients)
        y, logits, probs, indices, weights, _ = self.moe.forward_tensors(self.norm2(x))
        return x + y, logits, probs, indices, weights


class TinyMoELM(nn.Cell):
    """Byte-level MoE language model. ``model(tokens [B, T])`` returns logits and every layer's routing.

    Returns ``(logits [B, T, 256], router_logits, probs, indices, weights)`` where the last four are
    tuples with one entry per layer (``[B*T, E]``, ``[B*T, E]``, ``[B*T, K]``, ``[B*T, K]``).
    Introduced in notebook 03.
    """

    def __init__(self, cfg: LMConfig):
        super().__init__()
        if not isinstance(cfg, LMConfig):
            raise TypeError(f"cfg must be an LMConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        d = cfg.d_model
        self.tok_emb = Parameter(Tensor(rng.normal(0, 0.02, (VOCAB_SIZE, d)).astype(np.float32)), name="tok_emb")
        self.pos_emb = Parameter(Tensor(rng.normal(0, 0.02, (cfg.context, d)).astype(np.float32)), name="pos_emb")
        self.blocks = nn.CellList([Block(cfg, i, rng) for i in range(cfg.n_layers)])
        self.norm = RMSNorm(d)
        self.head = Parameter(Tensor(init_weight(rng, (d, VOCAB_SIZE), d)), name="head")

    def construct(self, tokens):
        t = tokens.shape[1]
        x = ops.gather(self.tok_emb, tokens, 0) + self.pos_emb[:t]
        router_logits, probs, indices, weights = (), (), (), ()
        for block in self.blocks:
            x, lg, pr, ix, wt = block(x)
            router_logits += (lg,)
            probs += (pr,)
            indices += (ix,)
            weights += (wt,)
        logits = ops.matmul(self.norm(x), self.head)
        return logits, router_logits, probs, indices, weights


def lm_losses(model: TinyMoELM, tokens: Tensor, targets: Tensor, aux_coef, group_coef, z_coef):
    """Total loss and its parts: ``(loss, cross_entropy, balance_loss, z_loss, load [layers, E])``.

    The coefficients are tensors (inputs of the jitted step), so one compiled step serves every
    balancing method: ``"aux"`` sets ``aux_coef``, ``"group"`` sets ``group_coef``, ``"none"`` and
    ``"bias"`` set both to 0. ``balance_loss`` and ``z_loss`` are summed over layers, coefficients
    included; ``load`` counts the slots each expert received in each layer.
    """
    cfg = model.cfg
    logits, router_logits, probs, indices, _ = model(tokens)
    ce = ops.cross_entropy(logits.reshape(-1, VOCAB_SIZE), targets.reshape(-1))
    bal = ops.zeros((), ms.float32)
    zl = ops.zeros((), ms.float32)
    loads = ()
    for layer in range(cfg.n_layers):
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


class Trainer:
    """Adam + one jitted train step for a ``TinyMoELM``; ``trainer.step(x, y)`` returns NumPy values.

    The step computes the loss and its gradient for the trainable parameters only (the selection
    bias has ``requires_grad=False``), applies Adam, then moves every layer's selection bias by the
    DeepSeek-V3 sign rule with rate ``bias_rate`` (0 unless ``balance="bias"``) using this step's load.
    ``reset(cfg)`` restores the initial weights and optimizer state and may switch the balancing
    method, reusing the compiled step (compiling costs seconds; notebook 03 trains three methods).
    Introduced in notebook 03.
    """

    def __init__(self, model: TinyMoELM):
        if not isinstance(model, TinyMoELM):
            raise TypeError(f"model must be a TinyMoELM, got {type(model).__name__}")
        self.model = model
        self.optimizer = nn.Adam(model.trainable_params(), learning_rate=model.cfg.lr)
        # snapshot of every parameter (model and Adam's moments, step and beta powers) for reset()
        self._initial = [(p, p.asnumpy().copy()) for p in self._state()]

        def forward(x, y, aux_coef, group_coef, z_coef):
            return lm_losses(model, x, y, aux_coef, group_coef, z_coef)

        grad_fn = ms.value_and_grad(forward, None, self.optimizer.parameters, has_aux=True)
        routers = [block.moe.router for block in model.blocks]
        optimizer = self.optimizer

        @ms.jit
        def train_step(x, y, aux_coef, group_coef, z_coef, bias_rate):
            (loss, ce, bal, zl, load), grads = grad_fn(x, y, aux_coef, group_coef, z_coef)
            optimizer(grads)
            for layer, router in enumerate(routers):
                B.update_selection_bias(router, load[layer], bias_rate)
            return loss, ce, bal, zl, load

        self._step = train_step

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
        for p, value in self._initial:
            # write into the parameter's memory: the compiled step keeps using that memory, and
            # ``set_data`` would give the parameter a new buffer that the step never sees
            ops.assign(p, Tensor(value.copy()))
        return self

    def step(self, x: np.ndarray, y: np.ndarray) -> dict:
        coefs = step_coefficients(self.model.cfg)
        loss, ce, bal, zl, load = self._step(Tensor(x, ms.int32), Tensor(y, ms.int32),
                                             *(Tensor(coefs[k], ms.float32) for k in
                                               ("aux_coef", "group_coef", "z_coef", "bias_rate")))
        return {"loss": float(loss.asnumpy()), "ce": float(ce.asnumpy()), "balance": float(bal.asnumpy()),
                "z": float(zl.asnumpy()), "load": load.asnumpy()}


@dataclass
class TrainResult:
    """Per-step history of one training run (NumPy arrays) and its measured speed."""

    config: LMConfig
    loss: np.ndarray          # [steps] total loss
    ce: np.ndarray            # [steps] cross-entropy (nats per byte)
    balance: np.ndarray       # [steps] balance loss term (coefficient included)
    load: np.ndarray          # [steps, layers, E] slots per expert
    bias: np.ndarray          # [layers, E] final selection bias
    seconds: float            # wall time of the timed steps (compile excluded)
    compile_seconds: float    # wall time of the first step (includes compilation)

    @property
    def tokens_per_second(self) -> float:
        """Training throughput of the jitted step, first (compiling) step excluded."""
        timed = len(self.loss) - 1
        return timed * self.config.tokens_per_step / self.seconds if timed > 0 and self.seconds > 0 else float("nan")

    def load_share(self) -> np.ndarray:
        """``[steps, layers, E]``: each expert's share of the slots (rows sum to 1)."""
        return self.load / self.load.sum(-1, keepdims=True)


def _progress(total: int, progress, desc: str):
    if progress is False:
        return None
    if progress is True or progress == "auto":
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=True)
    raise ValueError(f"progress must be True or False, got {progress!r}")


def train(model: TinyMoELM, corpus: Corpus, steps: int, *, trainer: Trainer | None = None, progress=True,
          desc: str | None = None) -> TrainResult:
    """Train ``model`` for ``steps`` steps on random windows of ``corpus`` (seeded by ``model.cfg.seed``).

    Shows a tqdm progress bar (``tqdm.auto``: a widget in Jupyter) unless ``progress=False``.
    Returns the per-step loss and per-layer per-expert load. Introduced in notebook 03.
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
    hist = {"loss": [], "ce": [], "balance": [], "load": []}
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
            bar.set_postfix(loss=f"{out['ce']:.3f}", refresh=False)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    bias = np.stack([block.moe.router.selection_bias.asnumpy() for block in model.blocks])
    return TrainResult(cfg, np.array(hist["loss"]), np.array(hist["ce"]), np.array(hist["balance"]),
                       np.stack(hist["load"]).astype(np.int64), bias, seconds, compile_seconds)


def evaluate(model: TinyMoELM, corpus: Corpus, *, batches: int = 8, split: str = "val", seed: int = 1234) -> dict:
    """Mean cross-entropy (nats/byte) per domain on fixed random windows of ``split``. Notebook 03."""
    cfg = model.cfg
    batches = check_int("batches", batches, minimum=1)
    rng = np.random.default_rng(seed)
    result = {}
    for domain in DOMAINS:
        losses = []
        for _ in range(batches):
            x, y, _ = corpus.batch(split, cfg.batch_size, cfg.context, rng, domains=(domain,))
            logits = model(Tensor(x, ms.int32))[0]
            losses.append(float(ops.cross_entropy(logits.reshape(-1, VOCAB_SIZE),
                                                  Tensor(y.reshape(-1), ms.int32)).asnumpy()))
        result[domain] = float(np.mean(losses))
    result["mean"] = float(np.mean([result[d] for d in DOMAINS]))
    return result


def domain_expert_share(model: TinyMoELM, corpus: Corpus, *, batches: int = 4, split: str = "val",
                        seed: int = 1234) -> np.ndarray:
    """``[layers, domains, E]``: share of each domain's first-choice routings that went to each expert.

    Rows sum to 1. Measured on fixed random windows of ``split``. Introduced in notebook 03
    (specialisation); notebook 04 plots it as a heatmap.
    """
    cfg = model.cfg
    batches = check_int("batches", batches, minimum=1)
    rng = np.random.default_rng(seed)
    counts = np.zeros((cfg.n_layers, len(DOMAINS), cfg.num_experts))
    for d, domain in enumerate(DOMAINS):
        for _ in range(batches):
            x, _, _ = corpus.batch(split, cfg.batch_size, cfg.context, rng, domains=(domain,))
            indices = model(Tensor(x, ms.int32))[3]
            for layer in range(cfg.n_layers):
                counts[layer, d] += np.bincount(indices[layer].asnumpy()[:, 0], minlength=cfg.num_experts)
    return counts / counts.sum(-1, keepdims=True)


# --------------------------------------------------------------------------- routing a text (notebook 04)

@dataclass
class TextRouting:
    """How the model routed every byte of a text.

    tokens   [T] uint8          the bytes of the text (UTF-8)
    indices  [layers, T, K]     chosen experts per layer and byte, best first
    weights  [layers, T, K]     their combine weights
    probs    [layers, T, E]     the full router distribution
    """

    text: str
    tokens: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    probs: np.ndarray

    def top1(self) -> np.ndarray:
        """``[layers, T]``: the first-choice expert of every byte."""
        return self.indices[..., 0]


def route_text(model: TinyMoELM, text: str) -> TextRouting:
    """Route ``text`` through ``model``: each layer's expert indices and weights for every byte.

    Texts longer than the model's context are cut into windows of ``context`` bytes (each window
    sees only its own bytes). Introduced for notebook 04 (routing visualisation).
    """
    tokens = encode(text)
    if tokens.size == 0:
        raise ValueError("text must not be empty")
    ctx = model.cfg.context
    parts = {"indices": [], "weights": [], "probs": []}
    for start in range(0, tokens.size, ctx):
        window = tokens[start:start + ctx].astype(np.int32)[None, :]
        _, _, probs, indices, weights = model(Tensor(window, ms.int32))
        parts["indices"].append(np.stack([a.asnumpy() for a in indices]))
        parts["weights"].append(np.stack([a.asnumpy() for a in weights]))
        parts["probs"].append(np.stack([a.asnumpy() for a in probs]))
    joined = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
    return TextRouting(text, tokens, joined["indices"].astype(np.int64), joined["weights"], joined["probs"])


# --------------------------------------------------------------------------- checkpoint

def save_checkpoint(model: TinyMoELM, folder: str | Path, summary: dict | None = None) -> Path:
    """Save ``model.ckpt`` (all parameters, selection biases included), ``config.json``, ``summary.json``.

    Atomic: the files are written into a temporary folder beside ``folder``, which then replaces
    ``folder`` by renames; an interrupted save leaves the old checkpoint (or nothing), never a mix.
    Introduced in notebook 03.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        ms.save_checkpoint(model, str(tmp / "model.ckpt"))
        (tmp / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=1, sort_keys=True) + "\n")
        if summary is not None:
            (tmp / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: str | Path, expected: LMConfig | None = None) -> TinyMoELM:
    """Build a ``TinyMoELM`` from ``folder/config.json`` and load ``folder/model.ckpt``.

    With ``expected``, the stored config must equal it field by field, else a ``ValueError`` names
    the differing fields (the checkpoint was made by other code: rerun ``make checkpoint``).
    """
    folder = Path(folder)
    for name in ("model.ckpt", "config.json"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"checkpoint file {name!r} is missing in {str(folder)!r} "
                                    "(run `make checkpoint`)")
    stored = json.loads((folder / "config.json").read_text())
    if expected is not None:
        want = expected.to_dict()
        diff = [f"{k}: checkpoint {stored.get(k, '<missing>')!r} != code {want.get(k, '<missing>')!r}"
                for k in sorted(set(stored) | set(want)) if stored.get(k, "<missing>") != want.get(k, "<missing>")]
        if diff:
            raise ValueError("checkpoint config does not match the code (" + "; ".join(diff)
                             + "): rerun `make checkpoint`")
    model = TinyMoELM(LMConfig.from_dict(stored))
    params = ms.load_checkpoint(str(folder / "model.ckpt"))
    missing, _ = ms.load_param_into_net(model, params, strict_load=True)
    if missing:
        raise ValueError(f"checkpoint {str(folder)!r} lacks parameters {missing[:3]}... for this config")
    return model


def load_tiny_lm(folder: str | Path | None = None) -> TinyMoELM:
    """The shipped tiny MoE LM (``data/tiny_moe_lm/``), checked against the code's checkpoint config.

    Introduced in notebook 03; used by notebook 04.
    """
    from moe_lab.lm_cli import CHECKPOINT_CONFIG

    return load_checkpoint(CHECKPOINT_DIR if folder is None else folder, expected=CHECKPOINT_CONFIG)


# --------------------------------------------------------------------------- figures (notebook 03)

def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along axis 0 (the first values average what exists so far)."""
    values = np.asarray(values, dtype=np.float64)
    csum = np.cumsum(values, axis=0)
    out = csum.copy()
    out[window:] = csum[window:] - csum[:-window]
    counts = np.minimum(np.arange(1, len(values) + 1), window).reshape((-1,) + (1,) * (values.ndim - 1))
    return out / counts


def _check_results(results) -> dict:
    if not isinstance(results, dict) or not results:
        raise TypeError("results must be a non-empty dict {name: TrainResult}")
    for name, result in results.items():
        if not isinstance(result, TrainResult):
            raise TypeError(f"results[{name!r}] must be a TrainResult, got {type(result).__name__}")
    return results


def plot_losses(results: dict, *, window: int = 5, ax=None):
    """Training cross-entropy (nats/byte, moving average) of several runs on one axes. Notebook 03."""
    import matplotlib.pyplot as plt

    _check_results(results)
    window = check_int("window", window, minimum=1)
    fig, ax = (plt.subplots(figsize=(6.4, 3.2)) if ax is None else (ax.figure, ax))
    for name, result in results.items():
        ax.plot(np.arange(1, len(result.ce) + 1), _smooth(result.ce, window), label=name)
    ax.axhline(math.log(VOCAB_SIZE), color="grey", lw=0.8, ls=":", label="uniform guess (ln 256)")
    ax.set(xlabel="training step", ylabel="cross-entropy (nats/byte)",
           title=f"training loss (moving average of {window})")
    ax.legend(fontsize=8)
    return fig


def plot_load_shares(results: dict, layer: int = 0, *, window: int = 3):
    """One panel per run: each expert's share of the slots over the steps, stacked (layer ``layer``).

    Balanced routing shows ``E`` bands of equal height (dashed lines); collapse shows one or two
    bands swallowing the others. Introduced in notebook 03.
    """
    import matplotlib.pyplot as plt

    _check_results(results)
    first = next(iter(results.values()))
    layers, num_experts = first.load.shape[1], first.load.shape[2]
    layer = check_int("layer", layer, minimum=0, maximum=layers - 1)
    window = check_int("window", window, minimum=1)
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.0), sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10" if num_experts <= 10 else "tab20")(np.arange(num_experts))
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        if result.load.shape[1:] != (layers, num_experts):
            raise ValueError(f"results[{name!r}].load has shape {result.load.shape}, expected [steps, {layers}, "
                             f"{num_experts}] like the first run")
        share = _smooth(result.load_share()[:, layer, :], window)
        steps = np.arange(1, len(share) + 1)
        ax.stackplot(steps, share.T, colors=colors, linewidth=0)
        for k in range(1, num_experts):
            ax.axhline(k / num_experts, color="white", lw=0.6, ls="--")
        ax.set(title=name, xlabel="step", xlim=(1, len(share)), ylim=(0, 1))
        ax.grid(False)
    axes[0, 0].set_ylabel(f"layer {layer}: share of slots")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[e]) for e in range(num_experts)]
    fig.legend(handles, [f"E{e}" for e in range(num_experts)], loc="center right", fontsize=7)
    fig.subplots_adjust(right=0.9)
    return fig
