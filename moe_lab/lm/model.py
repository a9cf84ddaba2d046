"""A tiny byte-level MoE language model: its config and its cells.

Introduced in notebook 04 (load balancing); notebook 05 looks inside the shipped checkpoint.

    cfg = LMConfig(num_experts=8, top_k=1, norm_topk_prob=False, balance="aux")
    model = TinyMoELM(cfg)
    logits, router_logits, probs, indices, weights = model(tokens)    # tokens [B, T] int32

The model is nanoGPT-shaped: token + position embeddings, ``num_hidden_layers`` pre-norm blocks (causal
self-attention, then an ``MoELayer`` as the feed-forward network, each with a residual connection),
a final norm and a linear head over the 256 byte values. Each token runs through its chosen experts only
(``moe_lab.lm.grouped``), with the ``MoELayer``'s own router and weights. The balancing method (``"none"``, ``"aux"``,
``"bias"``, ``"group"``, see ``moe_lab.balance``) is part of the config; training is ``moe_lab.lm.training``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from moe_lab import balance as B
from moe_lab.checks import check_bool, check_float, check_int
from moe_lab.core.experts import init_weight
from moe_lab.core.layer import MoELayer
from moe_lab.lm.corpus import VOCAB_SIZE
from moe_lab.lm.grouped import grouped_moe


@dataclass(frozen=True)
class LMConfig:
    """Everything that defines a tiny MoE LM and its training (the checkpoint stores it as JSON)."""

    context: int = 64               # bytes per training window
    hidden_size: int = 128          # model width
    num_hidden_layers: int = 2      # transformer blocks
    num_attention_heads: int = 4
    intermediate_size: int = 256    # hidden width of each expert
    num_experts: int = 4
    top_k: int = 2
    norm_topk_prob: bool = True     # top-1 needs False: renormalising one weight makes it 1.0 (no router gradient)
    balance: str = "aux"            # "none" | "aux" | "bias" | "group"
    aux_coef: float = 0.01          # Switch loss coefficient (balance="aux")
    z_coef: float = 0.0             # router z-loss coefficient (any method)
    bias_rate: float = 0.001        # DeepSeek-V3 bias update speed u (balance="bias")
    group_coef: float = 0.01        # group loss coefficient (balance="group")
    num_groups: int = 2             # expert groups for balance="group"
    lr: float = 3e-3                # Adam learning rate
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        for name in ("context", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "num_experts", "batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("top_k", self.top_k, minimum=1, maximum=self.num_experts)
        check_bool("norm_topk_prob", self.norm_topk_prob)
        check_int("seed", self.seed, minimum=0)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads must divide hidden_size={self.hidden_size}, "
                             f"got num_attention_heads={self.num_attention_heads}")
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
    """Root-mean-square norm with a learned gain (Zhang & Sennrich 2019; Llama, DeepSeek, openPangu)."""

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
        d = cfg.hidden_size
        self.n_heads, self.head_dim = cfg.num_attention_heads, d // cfg.num_attention_heads
        self.w_qkv = Parameter(Tensor(init_weight(rng, (d, 3 * d), d)), name="w_qkv")
        self.w_out = Parameter(Tensor(init_weight(rng, (d, d), d)), name="w_out")
        mask = np.triu(np.full((cfg.context, cfg.context), -1e9, np.float32), k=1)
        self.mask = Tensor(mask)  # a constant, not a parameter: it is not saved in the checkpoint
        self.scale = 1.0 / math.sqrt(self.head_dim)

    def construct(self, x):
        b, t, d = x.shape
        # one split of [B, T, 3, heads, head_dim] into q, k, v: with three strided slices of qkv (and their
        # backward) notebook 04's training step was 3.22x faster than before these changes, with the split
        # 3.47x (2 CPU cores, benchmarks/train_throughput.json)
        qkv = ops.matmul(x, self.w_qkv).reshape(b, t, 3, self.n_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = ops.split(qkv, 1, axis=0)  # each [1, B, heads, T, head_dim]
        q, k, v = q.squeeze(0), k.squeeze(0), v.squeeze(0)
        scores = ops.matmul(q, k.transpose(0, 1, 3, 2)) * self.scale + self.mask[:t, :t]
        out = ops.matmul(ops.softmax(scores, -1), v).transpose(0, 2, 1, 3).reshape(b, t, d)
        return ops.matmul(out, self.w_out)


class Block(nn.Cell):
    """Pre-norm transformer block whose feed-forward network is a Mixture of Experts."""

    def __init__(self, cfg: LMConfig, index: int, rng: np.random.Generator):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size)
        self.attn = CausalSelfAttention(cfg, rng)
        self.norm2 = RMSNorm(cfg.hidden_size)
        # dropless (no capacity_factor): grouped_moe never drops a token, so the output is MoELayer's
        self.moe = MoELayer(cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.top_k,
                            norm_topk_prob=cfg.norm_topk_prob, seed=cfg.seed * 100 + index)

    def construct(self, x):
        x = x + self.attn(self.norm1(x))
        h = self.norm2(x)
        rows = h.reshape(-1, h.shape[-1])
        # the layer's own routing as plain tensors (graph-safe, with gradients), then each token through its
        # chosen experts only: with the dense path (every expert on every token) notebook 04's training step
        # (top-1 over 8 experts) was 3.47x faster than before these changes, grouped 4.99x
        # (benchmarks/train_throughput.json)
        logits, probs, indices, weights, _ = self.moe.route_tensors(rows)
        experts = self.moe.experts
        routed = grouped_moe(rows, indices, weights, experts.w_gate, experts.w_up, experts.w_down)
        y = self.moe.add_shared_experts(rows, routed).reshape(h.shape)
        return x + y, logits, probs, indices, weights


class TinyMoELM(nn.Cell):
    """Byte-level MoE language model. ``model(tokens [B, T])`` returns logits and every layer's routing.

    Returns ``(logits [B, T, 256], router_logits, probs, indices, weights)`` where the last four are
    tuples with one entry per layer (``[B*T, E]``, ``[B*T, E]``, ``[B*T, K]``, ``[B*T, K]``).
    Introduced in notebook 04.
    """

    def __init__(self, cfg: LMConfig):
        super().__init__()
        if not isinstance(cfg, LMConfig):
            raise TypeError(f"cfg must be an LMConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        d = cfg.hidden_size
        self.tok_emb = Parameter(Tensor(rng.normal(0, 0.02, (VOCAB_SIZE, d)).astype(np.float32)), name="tok_emb")
        self.pos_emb = Parameter(Tensor(rng.normal(0, 0.02, (cfg.context, d)).astype(np.float32)), name="pos_emb")
        self.blocks = nn.CellList([Block(cfg, i, rng) for i in range(cfg.num_hidden_layers)])
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
