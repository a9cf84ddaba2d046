"""The tiny MoE language model's shipped checkpoint: its config, and saving and loading it.

Introduced in notebook 04; notebook 05 explores the checkpoint. ``make checkpoint``
(``python -m moe_lab checkpoint``, ``moe_lab.lm.cli``) trains it from ``CHECKPOINT_CONFIG`` for
``CHECKPOINT_STEPS`` steps; a test checks that ``data/tiny_moe_lm/config.json`` equals ``CHECKPOINT_CONFIG``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mindspore as ms

from moe_lab.lm.model import LMConfig, TinyMoELM

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "tiny_moe_lm"
CHECKPOINT_FILES = ("model.ckpt", "config.json", "summary.json")
# 2 blocks, 4 experts, top-2, Switch aux loss 0.01: the setting that specialises best in about a
# minute of CPU training (a measured prototype); ~0.8M parameters, ~3.2 MB.
CHECKPOINT_CONFIG = LMConfig(context=64, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=192, num_experts=4, top_k=2, balance="aux", aux_coef=0.01, lr=3e-3,
                             batch_size=16, seed=0)
CHECKPOINT_STEPS = 400


def save_checkpoint(model: TinyMoELM, folder: str | Path, summary: dict | None = None) -> Path:
    """Save ``model.ckpt`` (all parameters, selection biases included), ``config.json``, ``summary.json``.

    Atomic: the files are written into a temporary folder beside ``folder``, which then replaces
    ``folder`` by renames; an interrupted save leaves the old checkpoint (or nothing), never a mix.
    Introduced in notebook 04.
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

    Introduced in notebook 04; used by notebook 05.
    """
    return load_checkpoint(CHECKPOINT_DIR if folder is None else folder, expected=CHECKPOINT_CONFIG)
