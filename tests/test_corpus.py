"""moe_lab.corpus: the byte tokenizer and the four-domain corpus in data/corpus (notebook 03)."""

from pathlib import Path

import numpy as np
import pytest

from moe_lab.lm.corpus import DEFAULT_PATH, DOMAINS, VOCAB_SIZE, decode, encode, load_corpus, split_point

ROOT = Path(__file__).resolve().parent.parent


def test_corpus_files_exist_with_sizes():
    total = 0
    for domain in DOMAINS:
        size = (DEFAULT_PATH / f"{domain}.txt").stat().st_size
        assert 200_000 < size < 500_000, (domain, size)  # each domain a few hundred KB
        total += size
    assert total < 3_000_000  # "a few MB at most"
    assert (DEFAULT_PATH / "make_corpus.py").exists()


def test_domains_look_like_their_domain():
    corpus = load_corpus()
    text = {d: decode(corpus.data["train"][d][:20_000]) for d in DOMAINS}
    assert text["english"].startswith("In the beginning God created the heaven and the earth.")
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text["chinese"])
    assert cjk > 0.5 * len(text["chinese"])
    assert "def " in text["python"] and "import " in text["python"]
    for line in text["arithmetic"].splitlines()[:200]:
        lhs, rhs = line.split("=")
        assert eval(lhs) == int(rhs), line  # noqa: S307 (generated digits and + - * only)


def test_licences_listed_in_data_readme():
    readme = (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## `corpus/`"):]
    for needle in ("bible-kjv-text", "public domain", "fortunes-zh", "GPL-3.0+", "PSF",
                   "make_corpus.py", "english.txt", "chinese.txt", "python.txt", "arithmetic.txt"):
        assert needle in section, needle


@pytest.mark.parametrize("text", ["", "hello", "床前明月光", "def f(x):\n    return x + 1\n", "12*7=84",
                                  "é\u00ff\U0001f600"])
def test_tokenizer_round_trip(text):
    ids = encode(text)
    assert ids.dtype == np.uint8 and ids.size == len(text.encode("utf-8"))
    assert decode(ids) == text
    assert decode(ids.astype(np.int64).tolist()) == text


def test_tokenizer_bytes_and_errors():
    assert encode("A").tolist() == [65]
    assert encode("中").tolist() == [0xE4, 0xB8, 0xAD]  # one Chinese character is three byte tokens
    assert decode([0xE4, 0xB8]) == "\ufffd"  # half a character cannot be decoded: replacement char
    assert VOCAB_SIZE == 256
    with pytest.raises(TypeError, match="text must be a str"):
        encode(b"bytes")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 255\]"):
        decode([300])


def test_split_is_fixed_and_at_line_starts():
    corpus = load_corpus()
    again = load_corpus()
    for domain in DOMAINS:
        train, val = corpus.data["train"][domain], corpus.data["val"][domain]
        assert train[-1] == ord("\n")  # validation starts at a line start
        total = train.size + val.size
        assert 0.05 < val.size / total < 0.15
        assert np.array_equal(val, again.data["val"][domain])
    assert split_point(np.frombuffer(b"aaaa\nbbbb\ncccc", np.uint8), 0.5) == 10


def test_batches_are_seeded_and_shifted_by_one():
    corpus = load_corpus()
    x, y, dom = corpus.batch("train", 6, 32, np.random.default_rng(0))
    x2, _, dom2 = corpus.batch("train", 6, 32, np.random.default_rng(0))
    assert x.shape == y.shape == (6, 32) and x.dtype == np.int32 and dom.shape == (6,)
    assert np.array_equal(x, x2) and np.array_equal(dom, dom2)
    assert np.array_equal(x[:, 1:], y[:, :-1])
    xc, _, dc = corpus.batch("val", 4, 16, np.random.default_rng(1), domains=("chinese",))
    assert (dc == DOMAINS.index("chinese")).all()
    assert corpus.sizes()["val"]["chinese"] == corpus.data["val"]["chinese"].size


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="english.txt"):
        load_corpus(tmp_path)
    corpus = load_corpus()
    with pytest.raises(ValueError, match="split must be one of"):
        corpus.batch("test", 2, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="domains must be one of"):
        corpus.batch("train", 2, 8, np.random.default_rng(0), domains=("french",))
    with pytest.raises(ValueError, match="context must be >= 1"):
        corpus.batch("train", 2, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="val_fraction must be < 1"):
        load_corpus(val_fraction=1.0)
