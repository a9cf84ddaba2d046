"""Write reference fixtures of five MoE block families, computed by Hugging Face ``transformers``.

    ~/.cache/moe-peers/bin/python tools/make_hf_fixtures.py              # all fixtures -> tests/fixtures/
    ~/.cache/moe-peers/bin/python tools/make_hf_fixtures.py --only mixtral --out /tmp/fx

Run it in its own venv (torch and transformers are not course dependencies; tests/fixtures/README.md
has the exact set-up line). Each fixture NAME becomes a folder NAME/ with three files:

* ``config.json``: the model's config as its released ``config.json`` spells it, scaled down, plus a
  ``"_fixture"`` key (block class, layer prefix, library versions, seed, token count, how it was made).
* ``weights.npz``: float32 arrays named exactly as in the released checkpoints, with the layer prefix
  (``model.layers.1.mlp.experts.3.up_proj.weight``), in the checkpoints' shapes (``[out, in]``).
* ``io.npz``: ``input`` [N, H], ``output`` [N, H] (the HF block's output, float32), ``router_logits``
  [N, E], ``topk_indices`` [N, K] int64 and ``topk_weights`` [N, K] float32 (the router's choice and its
  final combine weights, each row sorted by expert id so that order does not matter).

No hub is used: every block is built from a config object and given random weights from a seeded NumPy
generator, scaled like ``torch.nn.Linear``'s default init so router logits are O(1). The checkpoint-named
arrays are made first and then fused into the HF module the way ``transformers/conversion_mapping.py``
fuses real checkpoints (``gate_up_proj[e] = cat(gate_proj, up_proj)``, Mixtral's ``w1``/``w3``/``w2``).
Inputs are redrawn until no row has a near-tie in its top-k (or top-group) choice. Output files are
byte-for-byte reproducible: the ``.npz`` archives carry a fixed timestamp.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures"
PREFIX = "model.layers.1."  # layer 0 is the dense layer (first_k_dense_replace = 1) in the DeepSeek configs
MIN_GAP = 1e-4  # smallest allowed margin between the last chosen and the first rejected score
MAX_DRAWS = 200
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamp: np.savez would stamp the current time
HEADS = {"num_attention_heads": 4, "num_key_value_heads": 4}  # only so the HF config classes validate


@dataclass(frozen=True)
class Fixture:
    name: str
    block: type  # the HF block class
    hf_config: type  # the HF config class the block is built from
    layout: str  # checkpoint naming: "mixtral", "qwen" or "deepseek"
    routing: str  # "softmax_topk", "noaux_tc" or "group_limited_greedy" (for the tie and group checks)
    config: dict  # config.json without "_fixture"
    seed: int
    tokens: int = 16
    bias: bool = False  # the checkpoint has mlp.gate.e_score_correction_bias
    hf_overrides: dict = field(default_factory=dict)  # config-class kwargs that the released config lacks
    note: str = ""


FIXTURES = [
    Fixture(
        "mixtral", MixtralSparseMoeBlock, transformers.MixtralConfig, "mixtral", "softmax_topk",
        {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 24,
         "intermediate_size": 16, "num_local_experts": 8, "num_experts_per_tok": 2, "hidden_act": "silu",
         "num_hidden_layers": 2, **HEADS},
        seed=101,
    ),
    Fixture(
        "qwen2_moe", Qwen2MoeSparseMoeBlock, transformers.Qwen2MoeConfig, "qwen", "softmax_topk",
        {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": 24,
         "intermediate_size": 48, "moe_intermediate_size": 12, "shared_expert_intermediate_size": 20,
         "num_experts": 8, "num_experts_per_tok": 4, "norm_topk_prob": False, "decoder_sparse_step": 1,
         "hidden_act": "silu", "num_hidden_layers": 2, **HEADS},
        seed=202,
    ),
    Fixture(
        "qwen3_moe_norm", Qwen3MoeSparseMoeBlock, transformers.Qwen3MoeConfig, "qwen", "softmax_topk",
        {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 24,
         "intermediate_size": 48, "moe_intermediate_size": 8, "num_experts": 16, "num_experts_per_tok": 4,
         "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [], "hidden_act": "silu",
         "num_hidden_layers": 2, **HEADS},
        seed=303,
    ),
    Fixture(
        "qwen3_moe_nonorm", Qwen3MoeSparseMoeBlock, transformers.Qwen3MoeConfig, "qwen", "softmax_topk",
        {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 24,
         "intermediate_size": 48, "moe_intermediate_size": 8, "num_experts": 16, "num_experts_per_tok": 4,
         "norm_topk_prob": False, "decoder_sparse_step": 1, "mlp_only_layers": [], "hidden_act": "silu",
         "num_hidden_layers": 2, **HEADS},
        seed=404,
    ),
    Fixture(
        "deepseek_v3", DeepseekV3MoE, transformers.DeepseekV3Config, "deepseek", "noaux_tc",
        {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 24,
         "intermediate_size": 48, "moe_intermediate_size": 8, "n_routed_experts": 16, "n_shared_experts": 1,
         "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc",
         "scoring_func": "sigmoid", "norm_topk_prob": True, "routed_scaling_factor": 2.5,
         "first_k_dense_replace": 1, "moe_layer_freq": 1, "hidden_act": "silu", "num_hidden_layers": 2, **HEADS},
        seed=505, bias=True,
    ),
    Fixture(
        "openpangu", DeepseekV3MoE, transformers.DeepseekV3Config, "deepseek", "noaux_tc",
        # spelled like the released openPangu-Ultra-MoE-718B config.json (data/models/openpangu-ultra-moe-718b):
        # no scoring_func, n_group, topk_group or topk_method there; its router is sigmoid top-k without groups
        # and without e_score_correction_bias, which DeepseekV3MoE reproduces with n_group = topk_group = 1, bias 0
        {"architectures": ["PanguUltraMoEForCausalLM"], "model_type": "pangu_ultra_moe", "hidden_size": 16,
         "intermediate_size": 48, "moe_intermediate_size": 8, "n_routed_experts": 32, "n_shared_experts": 1,
         "num_experts_per_tok": 8, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
         "first_k_dense_replace": 1, "sandwich_norm": True, "hidden_act": "silu", "num_hidden_layers": 2, **HEADS},
        seed=606, hf_overrides={"n_group": 1, "topk_group": 1},
        note="built with DeepseekV3Config(n_group=1, topk_group=1), e_score_correction_bias = 0 (no bias key)",
    ),
    Fixture(
        "deepseek_v2", DeepseekV2Moe, transformers.DeepseekV2Config, "deepseek", "group_limited_greedy",
        {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": 24,
         "intermediate_size": 48, "moe_intermediate_size": 8, "n_routed_experts": 16, "n_shared_experts": 2,
         "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "topk_method": "group_limited_greedy",
         "scoring_func": "softmax", "norm_topk_prob": False, "routed_scaling_factor": 16.0,
         "first_k_dense_replace": 1, "moe_layer_freq": 1, "hidden_act": "silu", "num_hidden_layers": 2, **HEADS},
        seed=707,
    ),
]
NAMES = [fx.name for fx in FIXTURES]


# ---------------------------------------------------------------------------------------------- weights
def linear(rng: np.random.Generator, out_features: int, in_features: int) -> np.ndarray:
    """A [out, in] weight drawn like torch.nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / np.sqrt(in_features)
    return rng.uniform(-bound, bound, size=(out_features, in_features)).astype(np.float32)


def sizes(fx: Fixture) -> tuple[int, int, int, int]:
    """(hidden H, routed experts E, experts per token K, expert width F)."""
    c = fx.config
    experts = c.get("num_local_experts") or c.get("num_experts") or c["n_routed_experts"]
    width = c["intermediate_size"] if fx.layout == "mixtral" else c["moe_intermediate_size"]
    return c["hidden_size"], experts, c["num_experts_per_tok"], width


def make_checkpoint(fx: Fixture, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The block's weights as the released checkpoints name and shape them."""
    hidden, experts, _, width = sizes(fx)
    w: dict[str, np.ndarray] = {}
    if fx.layout == "mixtral":
        base = PREFIX + "block_sparse_moe."
        w[base + "gate.weight"] = linear(rng, experts, hidden)
        for i in range(experts):
            w[f"{base}experts.{i}.w1.weight"] = linear(rng, width, hidden)  # gate projection
            w[f"{base}experts.{i}.w2.weight"] = linear(rng, hidden, width)  # down projection
            w[f"{base}experts.{i}.w3.weight"] = linear(rng, width, hidden)  # up projection
        return w

    base = PREFIX + "mlp."
    w[base + "gate.weight"] = linear(rng, experts, hidden)
    if fx.bias:
        w[base + "gate.e_score_correction_bias"] = rng.uniform(-0.05, 0.05, size=experts).astype(np.float32)
    for i in range(experts):
        w[f"{base}experts.{i}.gate_proj.weight"] = linear(rng, width, hidden)
        w[f"{base}experts.{i}.up_proj.weight"] = linear(rng, width, hidden)
        w[f"{base}experts.{i}.down_proj.weight"] = linear(rng, hidden, width)
    if fx.layout == "qwen" and "shared_expert_intermediate_size" in fx.config:
        shared, name = fx.config["shared_expert_intermediate_size"], "shared_expert"
    elif fx.layout == "deepseek":
        shared, name = width * fx.config["n_shared_experts"], "shared_experts"
    else:
        return w
    w[f"{base}{name}.gate_proj.weight"] = linear(rng, shared, hidden)
    w[f"{base}{name}.up_proj.weight"] = linear(rng, shared, hidden)
    w[f"{base}{name}.down_proj.weight"] = linear(rng, hidden, shared)
    if fx.layout == "qwen":
        w[base + "shared_expert_gate.weight"] = linear(rng, 1, hidden)
    return w


def module_state(fx: Fixture, ckpt: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Checkpoint names -> the HF module's state dict (experts fused into 3-D gate_up_proj / down_proj)."""
    _, experts, _, _ = sizes(fx)
    if fx.layout == "mixtral":
        base, gate, up, down = PREFIX + "block_sparse_moe.", "w1", "w3", "w2"
    else:
        base, gate, up, down = PREFIX + "mlp.", "gate_proj", "up_proj", "down_proj"

    def expert(i: int, proj: str) -> np.ndarray:
        return ckpt[f"{base}experts.{i}.{proj}.weight"]

    state = {
        "gate.weight": ckpt[base + "gate.weight"],
        "experts.gate_up_proj": np.stack([np.concatenate([expert(i, gate), expert(i, up)]) for i in range(experts)]),
        "experts.down_proj": np.stack([expert(i, down) for i in range(experts)]),
    }
    for key, value in ckpt.items():
        rest = key[len(base):]
        if rest.startswith("shared_expert") or rest == "gate.e_score_correction_bias":
            state[rest] = value
    if fx.block is DeepseekV3MoE and "gate.e_score_correction_bias" not in state:
        state["gate.e_score_correction_bias"] = np.zeros(experts, np.float32)  # openPangu: no bias at all
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def build_block(fx: Fixture, ckpt: dict[str, np.ndarray]) -> torch.nn.Module:
    kwargs = {k: v for k, v in fx.config.items() if k != "model_type"}
    config = fx.hf_config(**kwargs, **fx.hf_overrides)
    config._experts_implementation = "eager"  # the reference per-expert loop, not a grouped-GEMM kernel
    block = fx.block(config).eval()
    block.load_state_dict(module_state(fx, ckpt), strict=True)
    return block


# ------------------------------------------------------------------------------------- routing checks
def routing_scores(fx: Fixture, logits: np.ndarray, bias: np.ndarray | None) -> dict[str, np.ndarray]:
    """Float64 re-derivation of what the router ranks: per-expert choice scores and, if grouped, group scores."""
    c = {**fx.config, **fx.hf_overrides}
    logits = logits.astype(np.float64)
    if fx.routing == "softmax_topk":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return {"choice": e / e.sum(-1, keepdims=True)}
    n, experts = logits.shape
    groups, keep = c["n_group"], c["topk_group"]
    if fx.routing == "noaux_tc":
        scores = 1.0 / (1.0 + np.exp(-logits)) + (0.0 if bias is None else bias.astype(np.float64))
        grouped = np.sort(scores.reshape(n, groups, -1), axis=-1)
        group_scores = grouped[..., -2:].sum(-1)  # sum of the two best experts of each group
        fill = -np.inf
    else:  # group_limited_greedy
        e = np.exp(logits - logits.max(-1, keepdims=True))
        scores = e / e.sum(-1, keepdims=True)
        group_scores = scores.reshape(n, groups, -1).max(-1)  # best expert of each group
        fill = 0.0
    chosen_groups = np.argsort(-group_scores, axis=-1, kind="stable")[:, :keep]
    mask = np.zeros((n, groups), bool)
    np.put_along_axis(mask, chosen_groups, True, axis=-1)
    masked = np.where(np.repeat(mask, experts // groups, axis=-1), scores, fill)
    return {"choice": masked, "unmasked": scores, "groups": group_scores}


def margin(values: np.ndarray, k: int) -> float:
    """Smallest gap, over rows, between the k-th and (k+1)-th largest value (inf if a row has only k)."""
    if values.shape[-1] <= k:
        return float("inf")
    top = -np.sort(-values, axis=-1)
    gaps = top[:, k - 1] - top[:, k]
    return float(np.min(gaps))


def topk_sets(values: np.ndarray, k: int) -> list[frozenset]:
    return [frozenset(row) for row in np.argsort(-values, axis=-1, kind="stable")[:, :k].tolist()]


def check_routing(fx: Fixture, logits: np.ndarray, ckpt: dict[str, np.ndarray]) -> dict[str, float]:
    """Tie margins (must be >= MIN_GAP) and, for grouped routers, how often groups and bias change the choice."""
    _, _, k, _ = sizes(fx)
    bias = ckpt.get(PREFIX + "mlp.gate.e_score_correction_bias")
    s = routing_scores(fx, logits, bias)
    out = {"gap": margin(s["choice"], k)}
    c = {**fx.config, **fx.hf_overrides}
    if "groups" not in s or c["n_group"] == 1:  # one group: no group limit (openPangu)
        return out
    keep = c["topk_group"]
    out["group_gap"] = margin(s["groups"], keep)
    chosen = topk_sets(s["choice"], k)
    out["rows_changed_by_groups"] = sum(a != b for a, b in zip(chosen, topk_sets(s["unmasked"], k), strict=True))
    if bias is not None:
        unbiased = topk_sets(routing_scores(fx, logits, None)["choice"], k)
        out["rows_changed_by_bias"] = sum(a != b for a, b in zip(chosen, unbiased, strict=True))
    if fx.routing == "noaux_tc":  # DeepSeek's HF-hub modeling_deepseek.py fills masked groups with 0.0, not -inf
        zero_fill = np.where(np.isinf(s["choice"]), 0.0, s["choice"])
        out["rows_changed_by_zero_fill"] = sum(a != b for a, b in zip(chosen, topk_sets(zero_fill, k), strict=True))
    return out


def acceptable(fx: Fixture, stats: dict[str, float]) -> bool:
    if min(stats["gap"], stats.get("group_gap", np.inf)) < MIN_GAP:
        return False
    if fx.bias:  # the fixture must show that both the group limit and the selection bias matter
        return stats["rows_changed_by_groups"] > 0 and stats["rows_changed_by_bias"] > 0
    return True


# ------------------------------------------------------------------------------------------------ files
def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez (uncompressed, readable by np.load) but reproducible: sorted members, fixed timestamp."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def versions() -> dict[str, str]:
    return {"transformers": transformers.__version__, "torch": torch.__version__, "numpy": np.__version__}


def draw_input(fx: Fixture, block: torch.nn.Module, ckpt: dict[str, np.ndarray], rng: np.random.Generator):
    """Draw N(0, 1) inputs until the routing has no near-tie; return (input, router outputs, stats, draws)."""
    hidden = sizes(fx)[0]
    for draw in range(1, MAX_DRAWS + 1):
        x = rng.standard_normal((fx.tokens, hidden)).astype(np.float32)
        with torch.no_grad():
            logits, weights, indices = (t.numpy() for t in block.gate(torch.from_numpy(x)))
        stats = check_routing(fx, logits, ckpt)
        if acceptable(fx, stats):
            return x, logits, weights, indices, stats, draw
    raise SystemExit(f"{fx.name}: no input without near-ties in {MAX_DRAWS} draws")


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def make(fx: Fixture, out: Path) -> str:
    """Write one fixture folder; return its one-line summary."""
    rng = np.random.default_rng(fx.seed)
    torch.manual_seed(fx.seed)
    ckpt = make_checkpoint(fx, rng)
    block = build_block(fx, ckpt)
    hidden, experts, k, _ = sizes(fx)
    x, logits, weights, indices, stats, draws = draw_input(fx, block, ckpt, rng)
    with torch.no_grad():
        output = block(torch.from_numpy(x)[None]).numpy()[0]
    assert output.shape == (fx.tokens, hidden) and indices.shape == (fx.tokens, k) and logits.shape[1] == experts
    order = np.argsort(indices, axis=-1, kind="stable")
    io_arrays = {
        "input": x,
        "output": output.astype(np.float32),
        "router_logits": logits.astype(np.float32),
        "topk_indices": np.take_along_axis(indices, order, -1).astype(np.int64),
        "topk_weights": np.take_along_axis(weights, order, -1).astype(np.float32),
    }

    folder = out / fx.name
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"block_class": fx.block.__name__, "prefix": PREFIX, **versions(), "seed": fx.seed,
            "tokens": fx.tokens, "made_by": "python tools/make_hf_fixtures.py",
            "hf_config_class": fx.hf_config.__name__}
    if fx.hf_overrides:
        meta["hf_config_overrides"] = fx.hf_overrides
    if fx.note:
        meta["note"] = fx.note
    (folder / "config.json").write_text(json.dumps({**fx.config, "_fixture": meta}, indent=2) + "\n")
    save_npz(folder / "weights.npz", ckpt)
    save_npz(folder / "io.npz", io_arrays)

    size_kb = sum(p.stat().st_size for p in folder.iterdir()) / 1024
    counts = ("rows_changed_by_groups", "rows_changed_by_bias", "rows_changed_by_zero_fill")
    extra = "".join(f", {key} {int(stats[key])}/{fx.tokens}" for key in counts if key in stats)
    gaps = f"min top-k gap {stats['gap']:.2e}"
    if "group_gap" in stats:
        gaps += f", min group gap {stats['group_gap']:.2e}"
    return (f"{fx.name}: {fx.block.__name__} E={experts} k={k} H={hidden} N={fx.tokens}, input draw {draws}, "
            f"{gaps}{extra}, {size_kb:.1f} KB -> {shown(folder)}")


# -------------------------------------------------------------------------------------------------- CLI
class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse would also print the usage)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="make_hf_fixtures.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder that receives one sub-folder per "
                        f"fixture (default: {DEFAULT_OUT.relative_to(ROOT)} of this repository)")
    parser.add_argument("--only", metavar="NAME", choices=NAMES, help="make one fixture: " + ", ".join(NAMES))
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is not a folder")

    torch.set_num_threads(1)  # same summation order on every machine
    torch.use_deterministic_algorithms(True)
    for fx in FIXTURES:
        if args.only in (None, fx.name):
            print(make(fx, args.out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
