"""moe_lab.lm: the tiny MoE language model, its jitted training, checkpoint and command line."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from moe_lab import lm
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import layer_forward_numpy
from moe_lab.lm import checkpoint as lm_checkpoint
from moe_lab.lm import cli as lm_cli
from moe_lab.lm.checkpoint import CHECKPOINT_CONFIG, CHECKPOINT_STEPS
from moe_lab.lm.corpus import DOMAINS, load_corpus
from moe_lab.viz import lm as lm_plots

ROOT = Path(__file__).resolve().parent.parent
TINY = lm.LMConfig(context=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                   num_experts=4, top_k=2, batch_size=4, lr=1e-2, balance="aux")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def trained(corpus):
    """One tiny model and its (compiled once) trainer, shared by the training tests."""
    model = lm.TinyMoELM(TINY)
    return model, lm.Trainer(model)


def test_forward_shapes():
    model = lm.TinyMoELM(TINY)
    tokens = Tensor(np.arange(2 * 16).reshape(2, 16) % 256, ms.int32)
    logits, router_logits, probs, indices, weights = model(tokens)
    assert logits.shape == (2, 16, 256)
    assert len(probs) == len(indices) == len(weights) == len(router_logits) == TINY.num_hidden_layers
    assert probs[0].shape == router_logits[0].shape == (32, 4)
    assert indices[0].shape == weights[0].shape == (32, 2)
    assert np.allclose(probs[1].asnumpy().sum(-1), 1.0, atol=1e-5)
    assert np.allclose(weights[0].asnumpy().sum(-1), 1.0, atol=1e-5)  # normalised top-k weights


def test_causal_attention_ignores_the_future():
    model = lm.TinyMoELM(TINY)
    a = np.arange(16, dtype=np.int32)[None] + 60
    b = a.copy()
    b[0, 10:] = 1  # change the future of position 9
    la, lb = model(Tensor(a))[0].asnumpy(), model(Tensor(b))[0].asnumpy()
    assert np.allclose(la[0, :10], lb[0, :10], atol=1e-5)
    assert not np.allclose(la[0, 10:], lb[0, 10:], atol=1e-3)


@pytest.mark.parametrize("top_k,bias", [(1, False), (2, False), (2, True)])
def test_forward_tensors_equals_layer_forward_and_numpy_reference(make_x, top_k, bias):
    layer = MoELayer(16, 24, 4, top_k, seed=5)
    if bias:  # the selection bias changes which experts are chosen, not their weights
        layer.router.selection_bias.set_data(Tensor(np.array([0.3, -0.2, 0.0, 0.1], np.float32)))
    x = make_x(2, 5, 16)
    y, logits, probs, indices, weights, keep = layer.forward_tensors(x)
    want, routing = layer.forward(x, dispatch="sorted")
    assert y.shape == x.shape
    assert np.allclose(y.asnumpy(), want.asnumpy(), atol=1e-5)
    assert np.array_equal(indices.asnumpy(), routing.indices.asnumpy())
    assert np.allclose(weights.asnumpy(), routing.weights.asnumpy(), atol=1e-6)
    assert np.allclose(y.asnumpy().reshape(10, 16), layer_forward_numpy(layer, x.reshape(10, 16)), atol=1e-4)


def test_train_step_lowers_loss_on_a_fixed_batch(corpus, trained):
    model, trainer = trained
    trainer.reset()
    x, y, _ = corpus.batch("train", TINY.batch_size, TINY.context, np.random.default_rng(0))
    router_before = model.blocks[0].moe.router.weight.asnumpy().copy()
    expert_before = model.blocks[1].moe.experts.w_down.asnumpy().copy()
    losses = [trainer.step(x, y)["ce"] for _ in range(6)]
    assert losses[-1] < losses[0] - 0.3
    assert all(np.isfinite(losses))
    # the language-model loss trains the router (through the combine weights) and the experts
    assert np.abs(model.blocks[0].moe.router.weight.asnumpy() - router_before).max() > 1e-4
    assert np.abs(model.blocks[1].moe.experts.w_down.asnumpy() - expert_before).max() > 1e-4


def test_reset_restores_weights_and_switches_method(corpus, trained):
    model, trainer = trained
    x, y, _ = corpus.batch("train", TINY.batch_size, TINY.context, np.random.default_rng(3))
    trainer.reset()
    first = trainer.step(x, y)
    for _ in range(3):
        trainer.step(x, y)
    trainer.reset()
    again = trainer.step(x, y)
    assert again["ce"] == pytest.approx(first["ce"], abs=1e-5)  # same weights, same Adam state
    assert first["balance"] > 0  # aux: 0.01 * Switch loss summed over 2 layers, about 0.02
    assert first["balance"] == pytest.approx(0.02, abs=0.01)

    trainer.reset(dataclasses.replace(TINY, balance="none"))
    out = trainer.step(x, y)
    assert out["balance"] == 0.0
    assert out["load"].shape == (2, 4) and (out["load"].sum(-1) == TINY.tokens_per_step * 2).all()
    for block in model.blocks:  # no gradient and no bias rule: the selection bias stays at 0
        assert np.all(block.moe.router.selection_bias.asnumpy() == 0.0)

    trainer.reset(dataclasses.replace(TINY, balance="bias", bias_rate=0.01))
    out = trainer.step(x, y)
    bias = model.blocks[0].moe.router.selection_bias.asnumpy()
    assert np.allclose(bias, 0.01 * np.sign(out["load"][0].mean() - out["load"][0]))

    trainer.reset(dataclasses.replace(TINY, balance="group", num_groups=2))
    assert trainer.step(x, y)["balance"] > 0
    trainer.reset(dataclasses.replace(TINY, balance="aux", z_coef=0.001))
    assert trainer.step(x, y)["z"] > 0
    trainer.reset(TINY)


def test_train_returns_history(corpus, trained):
    model, trainer = trained
    trainer.reset()
    result = lm.train(model, corpus, 4, trainer=trainer, progress=False)
    assert result.loss.shape == result.ce.shape == (4,)
    assert result.load.shape == (4, 2, 4)
    assert np.allclose(result.load_share().sum(-1), 1.0)
    assert result.bias.shape == (2, 4)
    assert result.tokens_per_second > 0
    again = lm.train(model, corpus, 4, trainer=trainer.reset(), progress=False)
    assert np.allclose(again.ce, result.ce, atol=1e-5)  # seeded batches + reset: the same run


def test_evaluate_and_domain_share(corpus, trained):
    model, _ = trained
    losses = lm.evaluate(model, corpus, batches=1)
    assert set(losses) == set(DOMAINS) | {"mean"}
    share = lm.domain_expert_share(model, corpus, batches=1)
    assert share.shape == (2, 4, 4)
    assert np.allclose(share.sum(-1), 1.0)


def test_route_text():
    model = lm.TinyMoELM(TINY)
    text = "def f(x):\n    return 床前明月光"
    routes = lm.route_text(model, text)
    n = len(text.encode("utf-8"))
    assert n > TINY.context  # two windows
    assert routes.indices.shape == routes.weights.shape == (2, n, 2)
    assert routes.probs.shape == (2, n, 4)
    assert routes.top1().shape == (2, n)
    # the first window is routed exactly as a direct call on it
    direct = model(Tensor(routes.tokens[None, :16].astype(np.int32)))[3][1].asnumpy()
    assert np.array_equal(routes.indices[1, :16], direct)
    with pytest.raises(ValueError, match="text must not be empty"):
        lm.route_text(model, "")


def test_checkpoint_round_trip(tmp_path):
    model = lm.TinyMoELM(TINY)
    model.blocks[1].moe.router.selection_bias.set_data(Tensor(np.array([0.1, -0.1, 0.2, 0.0], np.float32)))
    lm.save_checkpoint(model, tmp_path / "ckpt", {"steps": 0})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(lm_checkpoint.CHECKPOINT_FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left behind
    loaded = lm.load_checkpoint(tmp_path / "ckpt", expected=TINY)
    tokens = Tensor(np.arange(16, dtype=np.int32)[None] * 7)
    assert np.allclose(model(tokens)[0].asnumpy(), loaded(tokens)[0].asnumpy(), atol=1e-6)
    assert np.allclose(loaded.blocks[1].moe.router.selection_bias.asnumpy(), [0.1, -0.1, 0.2, 0.0])
    lm.save_checkpoint(loaded, tmp_path / "ckpt")  # overwriting an existing checkpoint
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()) == TINY.to_dict()


def test_checkpoint_config_mismatch_is_a_clear_error(tmp_path):
    lm.save_checkpoint(lm.TinyMoELM(TINY), tmp_path)
    other = dataclasses.replace(TINY, num_experts=8, top_k=1)
    with pytest.raises(ValueError, match=r"checkpoint config does not match the code \(num_experts: "
                                         r"checkpoint 4 != code 8; top_k: checkpoint 2 != code 1\)"):
        lm.load_checkpoint(tmp_path, expected=other)
    with pytest.raises(FileNotFoundError, match="model.ckpt"):
        lm.load_checkpoint(tmp_path / "missing")


def test_shipped_checkpoint_loads_and_matches_the_code():
    folder = lm.CHECKPOINT_DIR
    stored = json.loads((folder / "config.json").read_text())
    assert stored == CHECKPOINT_CONFIG.to_dict(), "data/tiny_moe_lm was made by other code: run `make checkpoint`"
    assert (folder / "model.ckpt").stat().st_size <= 5 * 1024 * 1024
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps"] == CHECKPOINT_STEPS
    model = lm.load_tiny_lm()
    assert model.cfg == CHECKPOINT_CONFIG
    # it learned something: far below the 5.55 nats of a uniform guess over 256 bytes
    assert summary["val_ce_per_domain"]["mean"] < 3.0
    routes = lm.route_text(model, "12+7=19")
    assert routes.indices.shape == (CHECKPOINT_CONFIG.num_hidden_layers, 7, CHECKPOINT_CONFIG.top_k)


def test_bad_input(corpus, trained):
    with pytest.raises(ValueError, match="balance must be one of 'none', 'aux', 'bias', 'group'; got 'switch'"):
        lm.LMConfig(balance="switch")
    with pytest.raises(ValueError, match="aux_coef must be >= 0.0, got -0.01"):
        lm.LMConfig(aux_coef=-0.01)
    with pytest.raises(ValueError, match="bias_rate must be >= 0.0"):
        lm.LMConfig(bias_rate=-1.0)
    with pytest.raises(ValueError, match="top_k must be <= 4"):
        lm.LMConfig(num_experts=4, top_k=5)
    with pytest.raises(ValueError, match="num_attention_heads must divide hidden_size=32"):
        lm.LMConfig(hidden_size=32, num_attention_heads=3)
    with pytest.raises(ValueError, match="num_groups must divide num_experts=4, got num_groups=3"):
        lm.LMConfig(num_experts=4, balance="group", num_groups=3)
    assert lm.LMConfig(num_experts=1, top_k=1, balance="aux").num_groups == 2  # only "group" needs it
    with pytest.raises(ValueError, match="unknown LMConfig fields"):
        lm.LMConfig.from_dict({**TINY.to_dict(), "dropout": 0.1})
    with pytest.raises(TypeError, match="cfg must be an LMConfig"):
        lm.TinyMoELM({"hidden_size": 8})
    model, trainer = trained
    with pytest.raises(ValueError, match="steps must be >= 1"):
        lm.train(model, corpus, 0, trainer=trainer, progress=False)
    with pytest.raises(TypeError, match="corpus must be a moe_lab.corpus.Corpus"):
        lm.train(model, "data/corpus", 1, trainer=trainer, progress=False)
    with pytest.raises(ValueError, match="reset can only change"):
        trainer.reset(dataclasses.replace(TINY, hidden_size=64))
    with pytest.raises(ValueError, match="trainer was built for another model"):
        lm.train(lm.TinyMoELM(TINY), corpus, 1, trainer=trainer, progress=False)
    with pytest.raises(ValueError, match="progress must be True or False"):
        lm.train(model, corpus, 1, trainer=trainer, progress="yes")


def test_cli_trial_run_and_errors(tmp_path):
    assert lm_cli.main(["--steps", "2", "--out", str(tmp_path / "trial"), "--no-progress", "--eval-batches", "1"]) == 0
    summary = json.loads((tmp_path / "trial" / "summary.json").read_text())
    assert summary["steps"] == 2 and set(summary["val_ce_per_domain"]) == set(DOMAINS) | {"mean"}
    assert lm.load_checkpoint(tmp_path / "trial", expected=CHECKPOINT_CONFIG).cfg == CHECKPOINT_CONFIG
    with pytest.raises(ValueError, match="--steps must be"):
        lm_cli.main(["--steps", "3"])  # the shipped checkpoint only with CHECKPOINT_STEPS
    proc = subprocess.run([sys.executable, "-m", "moe_lab", "checkpoint", "--steps", "1", "--out", str(tmp_path / "x"),
                           "--corpus", str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: corpus path") and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def _fake_result(steps=12, layers=2, experts=4, seed=0):
    rng = np.random.default_rng(seed)
    load = rng.integers(0, 50, size=(steps, layers, experts))
    load[:, :, 0] += 1  # no all-zero row
    return lm.TrainResult(TINY, np.linspace(5, 3, steps), np.linspace(5, 3, steps), np.zeros(steps), load,
                          np.zeros((layers, experts)), 1.0, 0.5)


def test_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"none": _fake_result(), "aux": _fake_result(seed=1)}
    fig = lm_plots.plot_losses(runs, window=3)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 3  # two runs + the uniform-guess line
    plt.close(fig)
    fig = lm_plots.plot_load_shares(runs, layer=1)
    assert [ax.get_title() for ax in fig.axes] == ["none", "aux"]
    assert fig.axes[0].get_ylim() == (0.0, 1.0)
    plt.close(fig)
    smooth = lm_plots._smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2)
    assert np.allclose(smooth, [1.0, 2.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="layer must be <= 1"):
        lm_plots.plot_load_shares(runs, layer=2)
    with pytest.raises(TypeError, match="results must be a non-empty dict"):
        lm_plots.plot_losses({})
    with pytest.raises(TypeError, match=r"results\['x'\] must be a TrainResult"):
        lm_plots.plot_losses({"x": [1, 2]})
    with pytest.raises(ValueError, match="expected"):
        lm_plots.plot_load_shares({"a": _fake_result(), "b": _fake_result(experts=8)})


def test_train_bench_quick(tmp_path):
    from benchmarks import train_bench

    out = tmp_path / "throughput.json"
    assert train_bench.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    case = data["cases"]["notebook03_live"]
    assert case["moe"]["tokens_per_second"] > 0 and case["baseline_one_expert"]["tokens_per_second"] > 0
    assert case["config"]["num_experts"] == 8 and len(case["moe"]["block_seconds"]) == 2
