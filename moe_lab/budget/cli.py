"""``python -m moe_lab budget``: parameter count, memory budget and devices for an MoE model (notebook 07).

    python -m moe_lab budget                          # openPangu-Ultra-MoE-718B, bf16, Atlas 800I A2
    python -m moe_lab budget --model mixtral-8x7b --dtype bf16 --device h100-sxm --context 32768 --batch 8
    python -m moe_lab budget --devices 32 --context 32768 --batch 8   # the decode bound on 32 devices
    python -m moe_lab budget --config path/to/config.json --json
    python -m moe_lab budget --list

Bad input (unknown model, dtype or device; a config file that is missing, not JSON or missing a field;
a context above the model's ``max_position_embeddings``; a batch that does not fit ``--devices``)
prints one line on stderr and returns 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from moe_lab.budget.count import count_parameters
from moe_lab.budget.decode import decode_roofline
from moe_lab.budget.hardware import device_names, load_device
from moe_lab.budget.memory import (
    DTYPES,
    GB,
    KV_DTYPES,
    check_batch_fits,
    devices_needed,
    kv_growth,
    max_batch,
    nodes_needed,
    serving_memory,
)
from moe_lab.budget.spec import load_config, load_model, load_published, model_ids
from moe_lab.budget.text import kv_growth_text, span
from moe_lab.budget.training import min_devices_to_train
from moe_lab.textfmt import plural

DEFAULT_MODEL = "openpangu-ultra-moe-718b"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting (the CLI prints one line)."""

    def error(self, message: str):
        raise ValueError(message)


def _positive(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m moe_lab budget",
                description="Parameter count and memory budget of an MoE model from its config.json. "
                            f"The default model is openPangu-Ultra-MoE-718B (--model {DEFAULT_MODEL}).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help=f"a shipped model id (see --list; default {DEFAULT_MODEL}, "
                                     "i.e. openPangu-Ultra-MoE-718B)")
    src.add_argument("--config", help="path to any Hugging Face style config.json")
    p.add_argument("--dtype", default="bf16", help=f"weight format: {', '.join(DTYPES)} (default bf16)")
    p.add_argument("--kv-dtype", default=None, help=f"KV cache format: {', '.join(KV_DTYPES)} (default bf16)")
    p.add_argument("--device", default="atlas-800i-a2", help="accelerator (see --list; default atlas-800i-a2)")
    p.add_argument("--context", type=_positive("context"), default=4096,
                   help="tokens per sequence, at most the model's max_position_embeddings (default 4096)")
    p.add_argument("--batch", type=_positive("batch"), default=1, help="sequences served together (default 1)")
    p.add_argument("--devices", type=_positive("devices"), default=None,
                   help="devices serving the model (default: the fewest that hold the budget); a batch that "
                        "does not fit them is refused")
    p.add_argument("--reserve", type=float, default=0.10, help="fraction of device memory kept free (default 0.10)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--list", action="store_true", help="list models, dtypes and devices")
    return p


def compute(spec, dtype: str, device_name: str, context: int, batch: int, kv_dtype: str | None = None,
            reserve: float = 0.10, devices: int | None = None) -> dict:
    """Everything the CLI prints, as a JSON-ready dict (integers for parameter counts)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}")
    if kv_dtype is not None and kv_dtype not in KV_DTYPES:
        raise ValueError(f"unknown kv dtype {kv_dtype!r}; valid kv dtypes: {', '.join(KV_DTYPES)}")
    device = load_device(device_name)
    count = count_parameters(spec)
    serve = serving_memory(spec, dtype, context, batch, kv_dtype)
    n_serve = devices_needed(serve.total, device, reserve)
    n_used = n_serve if devices is None else devices
    check_batch_fits(spec, device, n_used, batch, dtype, context, serve.kv_dtype, reserve)
    out = {
        "model": spec.name, "description": spec.describe(),
        "total_params": count.total, "active_params": count.active,
        "active_params_without_embedding": count.active_without_embedding,
        "mtp_params": count.mtp_total, "components": dict(count.components),
        "active_components": dict(count.active_components),
        "dtype": dtype, "kv_dtype": serve.kv_dtype, "context": context, "batch": batch,
        "max_position_embeddings": spec.max_position_embeddings,
        "memory_bytes": {"weights": serve.weights, "kv_cache": serve.kv_cache, "workspace": serve.workspace,
                         "total": serve.total},
        "kv_growth": [{"up_to_tokens": end, "bytes_per_token": b} for end, b in kv_growth(spec, serve.kv_dtype)],
        "device": device.name, "device_memory_gb": device.memory_gb, "reserve": reserve,
        "devices_to_serve": n_serve, "nodes_to_serve": nodes_needed(n_serve, device),
        "devices": n_used, "max_batch": max_batch(spec, device, n_used, dtype, context, serve.kv_dtype, reserve),
        "devices_to_train": min_devices_to_train(spec, device, reserve=reserve),
        "warning": None,
    }
    if devices is None and serve.kv_cache + serve.workspace > serve.weights:
        extra = (serve.kv_cache + serve.workspace) / GB
        out["warning"] = (f"the KV cache and workspace of {batch:,} sequences ({extra:,.0f} GB) outweigh the "
                          f"weights ({serve.weights / GB:,.0f} GB): the figures below assume {n_serve:,} devices; "
                          "pass --devices N for the largest batch N devices serve")
    if device.bandwidth_gbps:
        roof = decode_roofline(spec, device, n_used, dtype, context, batch, serve.kv_dtype, reserve)
        out["decode_upper_bound"] = {
            "bound": roof.bound, "tokens_per_second": list(roof.tokens_per_second),
            "per_sequence_tokens_per_second": list(roof.per_sequence_tokens_per_second),
            "memory_tokens_per_second": list(roof.memory_tokens_per_second),
            "compute_tokens_per_second": (list(roof.compute_tokens_per_second)
                                          if roof.compute_tokens_per_second else None),
            "peak_kind": device.tflops_kind, "bytes_per_step": roof.bytes_per_step,
            "flops_per_step": roof.flops_per_step}
    return out


def _b(n: float) -> str:
    return f"{n / 1e9:10.3f} B"


def render(r: dict) -> str:
    """The readable table."""
    lines = [r["description"], "", f"{'parameters':18s}{'total':>14s}{'active/token':>16s}"]
    for name, total in r["components"].items():
        lines.append(f"  {name:16s}{_b(total):>14s}{_b(r['active_components'][name]):>16s}")
    lines.append(f"  {'sum':16s}{_b(r['total_params']):>14s}{_b(r['active_params']):>16s}")
    lines.append(f"  active without the input embedding: {r['active_params_without_embedding'] / 1e9:.3f} B")
    if r["mtp_params"]:
        lines.append(f"  MTP modules (not in the total): {r['mtp_params'] / 1e9:.3f} B")
    m = r["memory_bytes"]
    growth = kv_growth_text((g["up_to_tokens"], g["bytes_per_token"]) for g in r["kv_growth"])
    lines += ["", f"memory: {r['dtype']} weights, {r['kv_dtype']} KV cache, context {r['context']:,}, "
                  f"batch {r['batch']:,}",
              f"  {'weights':16s}{m['weights'] / GB:12.1f} GB",
              f"  {'KV cache':16s}{m['kv_cache'] / GB:12.1f} GB  ({growth})",
              f"  {'workspace':16s}{m['workspace'] / GB:12.1f} GB",
              f"  {'total':16s}{m['total'] / GB:12.1f} GB",
              "", f"device {r['device']}: {r['device_memory_gb']:g} GB each, {100 * (1 - r['reserve']):.0f} % usable"]
    nodes = f" ({plural(r['nodes_to_serve'], 'node')})" if r["nodes_to_serve"] else ""
    lines.append(f"  devices to serve (ideal even sharding): {r['devices_to_serve']:,}{nodes}")
    if r["warning"]:
        lines.append(f"  warning: {r['warning']}")
    lines.append(f"  largest batch on {plural(r['devices'], 'device')} at context {r['context']:,} (ideal even "
                 f"sharding; a real layout replicates parts of the model): {r['max_batch']:,}")
    if "decode_upper_bound" in r:
        d = r["decode_upper_bound"]
        lines.append(f"  decode on {plural(r['devices'], 'device')}, upper bounds (roofline):")
        lines.append(f"    memory bandwidth: {span(*d['memory_tokens_per_second'])} tokens/s")
        if d["compute_tokens_per_second"]:
            lines.append(f"    compute ({d['peak_kind']} peak): {span(*d['compute_tokens_per_second'])} tokens/s")
        else:
            lines.append("    compute: not verified (no TFLOPS figure for this device)")
        lines.append(f"    the smaller: {span(*d['tokens_per_second'])} tokens/s in total, "
                     f"{span(*d['per_sequence_tokens_per_second'], 1)} per sequence ({d['bound']}-bound)")
    lines.append(f"  devices to train (16 B/param Adam state + activations, full recompute): "
                 f"{r['devices_to_train']:,}")
    return "\n".join(lines)


def _listing() -> str:
    published = load_published()["models"]
    rows = ["models: " + ", ".join(model_ids()), "dtypes: " + ", ".join(DTYPES),
            "kv dtypes: " + ", ".join(KV_DTYPES), "devices: " + ", ".join(device_names())]
    rows.append(f"({len(published)} models have published counts in data/models/published.json)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point (``python -m moe_lab budget ...``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        if args.list:
            print(_listing())
            return 0
        if args.config:
            spec = load_config(args.config)
        else:
            spec = load_model(args.model or DEFAULT_MODEL)
        result = compute(spec, args.dtype, args.device, args.context, args.batch, args.kv_dtype, args.reserve,
                         args.devices)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
