"""The tiny language model's data: a byte-level tokenizer and a four-domain text corpus.

Introduced in notebook 04 (section "A real corpus"). The corpus lives in ``data/corpus/`` (rebuilt by
``data/corpus/make_corpus.py``; sources and licences in ``data/README.md``): English prose, Chinese
classical poems and sayings, Python source and generated arithmetic. Four clearly different domains,
so that experts have something to specialise on.

Tokenizer: a text is its UTF-8 bytes, so the vocabulary has exactly 256 symbols and nothing is ever
unknown. An ASCII letter is one token; a Chinese character is three.

    corpus = load_corpus()
    x, y, domain = corpus.batch("train", batch_size=16, context=64, rng=np.random.default_rng(0))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moe_lab.checks import check_choice, check_float, check_int

VOCAB_SIZE = 256
DOMAINS = ("english", "chinese", "python", "arithmetic")
SPLITS = ("train", "val")
VAL_FRACTION = 0.1
DEFAULT_PATH = Path(__file__).resolve().parent.parent.parent / "data" / "corpus"


def encode(text: str) -> np.ndarray:
    """Text -> token ids (its UTF-8 bytes) as a uint8 array. Introduced in notebook 04."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode(ids) -> str:
    """Token ids -> text. Bytes that do not form valid UTF-8 (e.g. half a Chinese character) become U+FFFD."""
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"ids must be in [0, {VOCAB_SIZE - 1}], got values from {arr.min()} to {arr.max()}")
    return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def split_point(data: np.ndarray, val_fraction: float = VAL_FRACTION) -> int:
    """Index where validation starts: the first line start at or after ``(1 - val_fraction)`` of the data.

    Cutting at a newline keeps a UTF-8 character (and a line) whole; the split depends only on the file.
    """
    target = int(len(data) * (1.0 - val_fraction))
    newlines = np.flatnonzero(data[target:] == ord("\n"))
    return target + int(newlines[0]) + 1 if newlines.size else target


@dataclass
class Corpus:
    """Token arrays per split and domain: ``corpus.data["train"]["english"]`` is a uint8 array."""

    data: dict[str, dict[str, np.ndarray]]
    path: Path

    def sizes(self) -> dict[str, dict[str, int]]:
        """Bytes (= tokens) per split and domain."""
        return {s: {d: int(a.size) for d, a in parts.items()} for s, parts in self.data.items()}

    def batch(self, split: str, batch_size: int, context: int, rng: np.random.Generator,
              domains: tuple[str, ...] = DOMAINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Random windows: inputs ``x [B, T]``, next-byte targets ``y [B, T]`` (int32), domain index ``[B]``.

        Each row comes from one domain, drawn uniformly, so every domain is equally represented
        whatever its size (and the domain of every token is known, for the specialisation plots).
        """
        check_choice("split", split, SPLITS)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        context = check_int("context", context, minimum=1)
        for d in domains:
            check_choice("domains", d, DOMAINS)
        dom = rng.integers(0, len(domains), size=batch_size)
        rows = []
        for d in dom:
            arr = self.data[split][domains[d]]
            if arr.size < context + 1:
                raise ValueError(f"context={context} is too long for the {split} part of {domains[d]} "
                                 f"({arr.size} bytes)")
            start = int(rng.integers(0, arr.size - context))
            rows.append(arr[start:start + context + 1])
        block = np.stack(rows).astype(np.int32)
        index = np.array([DOMAINS.index(domains[d]) for d in dom], dtype=np.int32)
        return block[:, :-1], block[:, 1:], index


def load_corpus(path: str | Path | None = None, val_fraction: float = VAL_FRACTION) -> Corpus:
    """Read ``<path>/<domain>.txt`` for the four domains and split each into train/val (fixed split).

    Introduced in notebook 04. The last ~10% of every file (from a line start) is validation.
    """
    path = DEFAULT_PATH if path is None else Path(path)
    val_fraction = check_float("val_fraction", val_fraction, minimum=0.0, strict=True)
    if val_fraction >= 1.0:
        raise ValueError(f"val_fraction must be < 1, got {val_fraction}")
    if not path.is_dir():
        raise FileNotFoundError(f"corpus path {str(path)!r} does not exist or is not a folder "
                                "(rebuild it with data/corpus/make_corpus.py)")
    data: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    for domain in DOMAINS:
        file = path / f"{domain}.txt"
        if not file.exists():
            raise FileNotFoundError(f"corpus file {file.name!r} is missing in {str(path)!r}")
        arr = np.frombuffer(file.read_bytes(), dtype=np.uint8)
        cut = split_point(arr, val_fraction)
        data["train"][domain], data["val"][domain] = arr[:cut], arr[cut:]
    return Corpus(data, path)
