"""Training speed of the tiny MoE LM's jitted train step (notebook 04): today's step against the one it replaced.

    python -m benchmarks.train_bench                        # writes benchmarks/train_throughput.json
    python -m benchmarks.train_bench --quick                # 2 rounds of 2 steps (a smoke test)
    python -m benchmarks.train_bench --torch .venv-peers/bin/python   # adds the PyTorch peer (make fixtures builds it)

What is timed: the whole training step as ``train()`` runs it (batch to tensors, forward, balancing loss,
backward, Adam, selection-bias update, results read back to the host), on the notebook-04 live model
(top-1 over 8 experts like Switch, hidden 64, 2 layers, batch 8 x 64 bytes) and on the checkpoint
model of ``make checkpoint``. Each variant runs in its own process, because ``MS_DEV_HOST_BLOCKING_RUN``
is read once, before MindSpore's first operator. The processes are timed in turns (round after round,
each round a block of ``--steps`` steps per process, the order rotated every round), so a busy machine
slows them all alike; the figure per variant is the median of its blocks, and its speed-up is the median
over rounds of the ratio ``before`` / variant within each round (``ratio_of_medians`` is given too).

The variants, each adding one change to the previous (notebook model):

* ``before``: a faithful copy of the step this benchmark replaced (``LegacyTrainer`` below: q, k, v cut
  from ``qkv`` by three strided slices, every expert on every token via ``MoELayer.forward_tensors``,
  ``ops.cross_entropy``, five host reads per step) with MindSpore's host busy-wait on
  (``MS_DEV_HOST_BLOCKING_RUN=0``);
* ``host_blocking``: the same with ``MS_DEV_HOST_BLOCKING_RUN=1`` (what ``moe_lab.env`` sets);
* ``split_qkv``: plus one ``ops.split`` for q, k, v (``moe_lab.lm.model.CausalSelfAttention``);
* ``grouped_experts``: plus each token through its chosen expert only (``moe_lab.lm.grouped``);
* ``after``: the shipped ``moe_lab.lm.Trainer`` (adds the log-softmax loss, one host read for the four
  scalars, and the router/expert gradient norms it reports).

A worker is ``python -m benchmarks.train_bench --worker VARIANT --model notebook|checkpoint``: it compiles,
warms up, prints one JSON line, then answers each ``run N`` line on stdin with ``{"step_s", "cpu_s"}``
(the protocol of ``benchmarks/peers/torch_tiny_moe_lm.py --serve``). Written atomically.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

import moe_lab
from moe_lab import balance as B
from moe_lab.lm import LMConfig, TinyMoELM, Trainer, load_corpus
from moe_lab.lm.checkpoint import CHECKPOINT_CONFIG
from moe_lab.lm.corpus import VOCAB_SIZE
from moe_lab.lm.model import Block, CausalSelfAttention
from moe_lab.lm.training import next_byte_loss, step_coefficients

DEFAULT_OUT = Path(__file__).resolve().parent / "train_throughput.json"
ROOT = Path(__file__).resolve().parent.parent

# variant -> (MS_DEV_HOST_BLOCKING_RUN, attention, experts, loss, trainer); None = the shipped code
VARIANTS = {
    "before": ("0", "strided", "dense", "cross_entropy", "legacy"),
    "host_blocking": ("1", "strided", "dense", "cross_entropy", "legacy"),
    "split_qkv": ("1", "split", "dense", "cross_entropy", "legacy"),
    "grouped_experts": ("1", "split", "grouped", "cross_entropy", "legacy"),
    "after": ("1", None, None, None, "current"),
}
MODELS = ("notebook", "checkpoint")


def model_config(name: str) -> LMConfig:
    """The notebook-04 live model (keep it equal to the notebook's ``cfg``) or the checkpoint model."""
    if name == "checkpoint":
        return CHECKPOINT_CONFIG
    return LMConfig(context=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                    num_experts=8, top_k=1, norm_topk_prob=False, balance="aux", aux_coef=0.05, bias_rate=0.01,
                    lr=1e-2, batch_size=8, seed=0)


# --------------------------------------------------------------------------- the replaced step, copied


class StridedAttention(CausalSelfAttention):
    """The replaced attention: q, k, v cut from ``qkv`` by three strided slices (copied)."""

    def construct(self, x):
        b, t, d = x.shape
        qkv = ops.matmul(x, self.w_qkv).reshape(b, t, 3, self.n_heads, self.head_dim)
        q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # [B, heads, T, head_dim]
        k = qkv[:, :, 1].transpose(0, 2, 1, 3)
        v = qkv[:, :, 2].transpose(0, 2, 1, 3)
        scores = ops.matmul(q, k.transpose(0, 1, 3, 2)) * self.scale + self.mask[:t, :t]
        out = ops.matmul(ops.softmax(scores, -1), v).transpose(0, 2, 1, 3).reshape(b, t, d)
        return ops.matmul(out, self.w_out)


class DenseBlock(Block):
    """The replaced block: every expert on every token (``MoELayer.forward_tensors``, copied)."""

    def construct(self, x):
        x = x + self.attn(self.norm1(x))
        # forward_tensors: the dense path with its routing as plain tensors (compiles, with gradients)
        y, logits, probs, indices, weights, _ = self.moe.forward_tensors(self.norm2(x))
        return x + y, logits, probs, indices, weights


def legacy_model(cfg: LMConfig, attention: str, experts: str) -> TinyMoELM:
    """A ``TinyMoELM`` whose blocks run the replaced code (same weights: only the cells' classes change)."""
    model = TinyMoELM(cfg)
    for block in model.blocks:
        if experts == "dense":
            block.__class__ = DenseBlock
        if attention == "strided":
            block.attn.__class__ = StridedAttention
    return model


class LegacyTrainer:
    """The replaced ``Trainer``'s step, copied (``loss`` picks the cross-entropy: ``ops.cross_entropy`` as it
    was, or the log-softmax of the shipped step)."""

    def __init__(self, model: TinyMoELM, loss: str = "cross_entropy"):
        self.model = model
        self.optimizer = nn.Adam(model.trainable_params(), learning_rate=model.cfg.lr)
        cfg = model.cfg

        def forward(x, y, aux_coef, group_coef, z_coef):
            logits, router_logits, probs, indices, _ = model(x)
            if loss == "cross_entropy":
                ce = ops.cross_entropy(logits.reshape(-1, VOCAB_SIZE), y.reshape(-1))
            else:
                ce = next_byte_loss(logits, y)
            bal = ops.zeros((), ms.float32)
            zl = ops.zeros((), ms.float32)
            loads = ()
            for layer in range(cfg.num_hidden_layers):
                bal = bal + aux_coef * B.switch_loss(probs[layer], indices[layer])
                if cfg.num_experts % cfg.num_groups == 0:
                    bal = bal + group_coef * B.group_loss(probs[layer], indices[layer], cfg.num_groups)
                zl = zl + z_coef * B.z_loss(router_logits[layer])
                loads += (B.expert_load(indices[layer], cfg.num_experts),)
            return ce + bal + zl, ce, bal, zl, ops.stack(loads)

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

    def step(self, x, y) -> dict:
        coefs = step_coefficients(self.model.cfg)
        loss, ce, bal, zl, load = self._step(Tensor(x, ms.int32), Tensor(y, ms.int32),
                                             *(Tensor(coefs[k], ms.float32) for k in
                                               ("aux_coef", "group_coef", "z_coef", "bias_rate")))
        return {"loss": float(loss.asnumpy()), "ce": float(ce.asnumpy()), "balance": float(bal.asnumpy()),
                "z": float(zl.asnumpy()), "load": load.asnumpy()}


# --------------------------------------------------------------------------- worker


def worker(variant: str, model_name: str, warmup: int = 5) -> int:
    """Serve ``run N`` requests on stdin for one variant (see the module docstring)."""
    moe_lab.setup(seed=0)
    cfg = model_config(model_name)
    _, attention, experts, loss, trainer_kind = VARIANTS[variant]
    if trainer_kind == "current":
        trainer = Trainer(TinyMoELM(cfg))
    else:
        trainer = LegacyTrainer(legacy_model(cfg, attention, experts), loss)
    corpus = load_corpus()
    rng = np.random.default_rng(0)
    data = [corpus.batch("train", cfg.batch_size, cfg.context, rng)[:2] for _ in range(16)]
    start = time.perf_counter()
    first = trainer.step(*data[0])
    compile_seconds = time.perf_counter() - start
    for i in range(warmup):
        trainer.step(*data[i % len(data)])
    print(json.dumps({"ready": True, "compile_s": round(compile_seconds, 2), "first_ce": round(first["ce"], 4),
                      "host_blocking_run": os.environ.get("MS_DEV_HOST_BLOCKING_RUN")}), flush=True)
    done = 0
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        n = int(command[1])
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            x, y = data[done % len(data)]
            trainer.step(x, y)
            done += 1
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(json.dumps({"step_s": wall / n, "cpu_s": cpu / n}), flush=True)
    return 0


# --------------------------------------------------------------------------- parent: processes in turns


class Process:
    """One worker process (ours or the PyTorch peer) answering ``run N`` with one JSON line."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name = name
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)
        self.info = self._read()
        self.step_s: list[float] = []
        self.cpu_s: list[float] = []

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} stopped: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def run(self, steps: int) -> None:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        answer = self._read()
        self.step_s.append(answer["step_s"])
        self.cpu_s.append(answer["cpu_s"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def summary(self) -> dict:
        median = statistics.median(self.step_s)
        return {"median_step_ms": round(median * 1e3, 2), "steps_per_second": round(1 / median, 1),
                # the least disturbed block: on a shared machine, the closest to the step's own cost
                "best_block_step_ms": round(min(self.step_s) * 1e3, 2),
                "block_step_ms": [round(s * 1e3, 2) for s in self.step_s],
                "median_cpu_ms_per_step": round(statistics.median(self.cpu_s) * 1e3, 2), **self.info}


def our_worker(variant: str, model_name: str, host_blocking_run: str | None = None, name: str | None = None) -> Process:
    """A worker process for ``variant``; ``host_blocking_run`` overrides its ``MS_DEV_HOST_BLOCKING_RUN``."""
    env = {**os.environ, "MS_DEV_HOST_BLOCKING_RUN": host_blocking_run or VARIANTS[variant][0]}
    return Process(name or f"{model_name}:{variant}", [sys.executable, "-m", "benchmarks.train_bench", "--worker",
                                                       variant, "--model", model_name], env)


def in_turns(processes: list[Process], rounds: int, steps: int) -> None:
    """``rounds`` rounds; in each, every process runs one block of ``steps`` steps (order rotated)."""
    for r in range(rounds):
        shift = r % len(processes)
        for process in processes[shift:] + processes[:shift]:
            process.run(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="notebook model, before and after, 2 rounds of 2 steps")
    parser.add_argument("--rounds", type=int, default=15, help="blocks per variant (default 15)")
    parser.add_argument("--steps", type=int, default=10, help="steps per block (default 10)")
    parser.add_argument("--torch", default=None, help="python of a venv with torch: adds the PyTorch peer")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--worker", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, default="notebook", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.model)
    if args.rounds < 1 or args.steps < 1:
        print(f"error: --rounds and --steps must be >= 1, got {args.rounds} and {args.steps}", file=sys.stderr)
        return 2
    rounds, steps = (2, 2) if args.quick else (args.rounds, args.steps)
    load_at_start = [round(v, 2) for v in os.getloadavg()]  # the machine is shared: say how busy it was
    cases = {}
    plan = [("notebook", ("before", "after") if args.quick else tuple(VARIANTS))]
    if not args.quick:
        plan.append(("checkpoint", ("before", "after")))
    for model_name, variants in plan:
        processes = []
        try:
            for variant in variants:  # one at a time: compiling in parallel would slow every compile
                processes.append(our_worker(variant, model_name))
            if args.torch and model_name == "notebook":
                peer = ROOT / "benchmarks" / "peers" / "torch_tiny_moe_lm.py"
                processes.append(Process("torch_eager", [args.torch, str(peer), "--mode", "eager", "--serve"],
                                         dict(os.environ)))
            in_turns(processes, rounds, steps)
        finally:
            for process in processes:
                process.close()
        results = {p.name.split(":")[-1]: p.summary() for p in processes}
        before = processes[0].step_s
        for name, process in zip(results, processes, strict=True):
            # paired by round: the blocks of one round ran within seconds of each other, so a change in the
            # machine's load between rounds cancels out of each round's ratio
            results[name]["speedup_over_before"] = round(statistics.median(
                b / v for b, v in zip(before, process.step_s, strict=True)), 2)
            results[name]["ratio_of_medians"] = round(statistics.median(before) / statistics.median(process.step_s), 2)
        cfg = model_config(model_name)
        cases[model_name] = {"config": cfg.to_dict(), "tokens_per_step": cfg.tokens_per_step, "variants": results}
        for name, r in results.items():
            print(f"{model_name:10s} {name:16s} {r['median_step_ms']:7.1f} ms/step  {r['steps_per_second']:6.1f} "
                  f"steps/s  x{r['speedup_over_before']:.2f}")
    result = {
        "what": "jitted train step of moe_lab.lm as train() runs it (forward + balancing loss + backward + Adam + "
                "bias update + host reads); each variant adds one change to the previous",
        "method": f"one process per variant, timed in turns: {rounds} rounds of one {steps}-step block per process "
                  "(order rotated each round), after compilation and 5 warm-up steps; figure = median block; "
                  "speedup_over_before = median over rounds of the within-round ratio; fixed batches",
        "cases": cases,
        "mindspore": ms.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average_1_5_15_min_at_start": load_at_start,
        "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()],
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m benchmarks.train_bench" + (" --quick" if args.quick else "")
                   + (" --torch PYTHON" if args.torch else ""),
    }
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
