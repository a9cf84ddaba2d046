"""PyTorch peer of moe_lab's TinyMoELM training step, written the way a good PyTorch tutorial would
(nanoGPT / makeMoE style): byte + position embeddings, pre-norm blocks (RMSNorm, causal self-attention
via F.scaled_dot_product_attention, MoE FFN: linear router -> softmax -> top-k -> renormalised weights,
SwiGLU experts dispatched by a per-expert index/index_add_ loop), final RMSNorm, linear head, cross-entropy
plus the Switch auxiliary loss (E * sum_i f_i * P_i per layer), Adam.

Same sizes and initialisation scales as moe_lab.lm (notebook-04 live model by default), batch of random
bytes (the data does not change the cost). Run it standalone:

    .venv-peers/bin/python benchmarks/peers/torch_tiny_moe_lm.py --mode eager
    .venv-peers/bin/python benchmarks/peers/torch_tiny_moe_lm.py --mode compile --batch 16 --d-model 128

or with ``--serve`` (reads "run N" lines on stdin and answers one JSON line per block of N steps, so that
several processes can be timed in turns in the same time window).

``--dispatch dense`` runs every expert on every token and masks (what moe_lab's old language-model step did), for
an apples-to-apples comparison of the dispatch choice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain


class CausalSelfAttention(nn.Module):
    def __init__(self, d, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Expert(nn.Module):
    """SwiGLU FFN d -> ffn -> d, no biases (as moe_lab.core.experts.Expert)."""

    def __init__(self, d, ffn):
        super().__init__()
        self.w_gate = nn.Linear(d, ffn, bias=False)
        self.w_up = nn.Linear(d, ffn, bias=False)
        self.w_down = nn.Linear(ffn, d, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class MoE(nn.Module):
    def __init__(self, d, ffn, num_experts, top_k, dispatch="loop"):
        super().__init__()
        self.num_experts, self.top_k, self.dispatch = num_experts, top_k, dispatch
        self.router = nn.Linear(d, num_experts, bias=False)
        self.experts = nn.ModuleList(Expert(d, ffn) for _ in range(num_experts))

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = F.softmax(self.router(x), dim=-1)                     # [N, E]
        weights, indices = probs.topk(self.top_k, dim=-1)             # [N, K]
        weights = weights / weights.sum(-1, keepdim=True)
        if self.dispatch == "dense":                                  # every expert on every token
            gate = torch.zeros_like(probs).scatter(1, indices, weights)   # [N, E]
            out = sum(gate[:, e:e + 1] * expert(x) for e, expert in enumerate(self.experts))
        else:                                                         # tutorial loop: only routed rows
            out = torch.zeros_like(x)
            for e, expert in enumerate(self.experts):
                tok, slot = torch.where(indices == e)
                if tok.numel():
                    out.index_add_(0, tok, weights[tok, slot, None] * expert(x[tok]))
        # Switch loss terms: f = fraction of slots per expert (no grad), P = mean router prob
        f = F.one_hot(indices.reshape(-1), self.num_experts).float().mean(0)
        aux = self.num_experts * (f * probs.mean(0)).sum()
        return out.reshape(shape), aux


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = RMSNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads)
        self.norm2 = RMSNorm(cfg.d_model)
        self.moe = MoE(cfg.d_model, cfg.ffn_size, cfg.num_experts, cfg.top_k, cfg.dispatch)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        y, aux = self.moe(self.norm2(x))
        return x + y, aux


class TinyMoELM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(VOCAB, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model)
        nn.init.normal_(self.tok_emb.weight, 0, 0.02)
        nn.init.normal_(self.pos_emb.weight, 0, 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, VOCAB, bias=False)

    def forward(self, tokens, targets):
        t = tokens.shape[1]
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(t, device=tokens.device))
        aux = 0.0
        for block in self.blocks:
            x, a = block(x)
            aux = aux + a
        logits = self.head(self.norm(x))
        ce = F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))
        return ce + self.cfg.aux_coef * aux, ce


class Cfg:
    def __init__(self, **kw):
        self.context, self.d_model, self.n_layers, self.n_heads = 64, 64, 2, 4
        self.ffn_size, self.num_experts, self.top_k = 128, 8, 1
        self.aux_coef, self.lr, self.batch_size, self.seed, self.dispatch = 0.01, 1e-2, 8, 0, "loop"
        self.__dict__.update(kw)


def build(cfg, mode):
    torch.manual_seed(cfg.seed)
    model = TinyMoELM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def step(x, y):
        loss, ce = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss, ce

    if mode == "compile":
        # compile the model's forward (+ its backward via AOTAutograd); the optimizer stays eager,
        # which is what most tutorials do (opt.step under compile is a separate, optional choice)
        model.forward = torch.compile(model.forward)
    elif mode == "compile-dynamic-off":
        model.forward = torch.compile(model.forward, dynamic=False)
    return model, opt, step


def batches(cfg, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        block = torch.randint(0, VOCAB, (cfg.batch_size, cfg.context + 1), generator=g)
        out.append((block[:, :-1].contiguous(), block[:, 1:].contiguous()))
    return out


def run_block(step, data, steps, sync_loss=True):
    """``steps`` train steps; per step reads the loss to the host like a training loop logging it."""
    start = time.perf_counter()
    for i in range(steps):
        x, y = data[i % len(data)]
        loss, ce = step(x, y)
        if sync_loss:
            ce.item()  # what a tutorial loop logs every step
    return (time.perf_counter() - start) / steps


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="eager", choices=["eager", "compile", "compile-dynamic-off"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--ffn", type=int, default=None, help="default 2*d_model (128 for d_model 64)")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--dispatch", default="loop", choices=["loop", "dense"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--serve", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = Cfg(batch_size=a.batch, d_model=a.d_model, ffn_size=a.ffn or 2 * a.d_model, num_experts=a.experts,
              dispatch=a.dispatch)
    model, opt, step = build(cfg, a.mode)
    data = batches(cfg, 16)
    t0 = time.perf_counter()
    run_block(step, data, 1)
    first = time.perf_counter() - t0
    run_block(step, data, a.warmup)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "first_step_s": round(first, 2),
            "params": sum(p.numel() for p in model.parameters())}
    if a.serve:
        print(json.dumps({"ready": True, **info}), flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            n = int(cmd[1])
            c = time.process_time()
            wall = run_block(step, data, n)
            print(json.dumps({"step_s": wall, "cpu_s": (time.process_time() - c) / n}), flush=True)
        return 0
    per_step = [run_block(step, data, a.steps) for _ in range(a.blocks)]
    med = statistics.median(per_step)
    info.update(mode=a.mode, batch=a.batch, d_model=a.d_model, dispatch=a.dispatch,
                step_ms=[round(s * 1e3, 2) for s in per_step], median_step_ms=round(med * 1e3, 2),
                steps_per_s=round(1 / med, 1), tokens_per_s=round(cfg.batch_size * cfg.context / med))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
