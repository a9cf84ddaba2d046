"""moe_lab.lm: the tiny MoE language model, its jitted training, checkpoint and command line."""

import dataclasses
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from benchmarks import host_wait, train_bench
from moe_lab import lm
from moe_lab.core.dispatch import dense_moe
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import layer_forward_numpy
from moe_lab.lm import checkpoint as lm_checkpoint
from moe_lab.lm import cli as lm_cli
from moe_lab.lm.checkpoint import CHECKPOINT_CONFIG, CHECKPOINT_STEPS
from moe_lab.lm.corpus import DOMAINS, VOCAB_SIZE, load_corpus
from moe_lab.lm.grouped import grouped_moe, grouped_plan, num_blocks
from moe_lab.lm.training import next_byte_loss, router_gradient_norms
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


@pytest.mark.parametrize("n,e,k,block_rows,activation", [(10, 4, 2, 64, "swiglu"), (37, 8, 1, 4, "swiglu"),
                                                          (64, 4, 2, 8, "relu"), (5, 8, 3, 2, "swiglu")])
def test_grouped_moe_equals_the_layer_and_the_numpy_reference(make_x, n, e, k, block_rows, activation):
    layer = MoELayer(16, 24, e, k, activation=activation, seed=n)
    x = make_x(n, 16, seed=e)
    want, routing = layer.forward(x, dispatch="sorted")
    ex = layer.experts
    got = grouped_moe(x, routing.indices, routing.weights, ex.w_gate, ex.w_up, ex.w_down, block_rows)
    assert np.allclose(got.asnumpy(), want.asnumpy(), atol=1e-5)
    assert np.allclose(got.asnumpy(), layer_forward_numpy(layer, x), atol=1e-4)

    @ms.jit
    def compiled(x, indices, weights):
        return grouped_moe(x, indices, weights, ex.w_gate, ex.w_up, ex.w_down, block_rows)

    assert np.allclose(compiled(x, routing.indices, routing.weights).asnumpy(), want.asnumpy(), atol=1e-5)


def test_grouped_plan_places_every_slot_once_in_its_experts_blocks():
    indices = np.array([[2, 0], [2, 1], [0, 2], [2, 3], [1, 2]], np.int32)
    slot_row, buffer_token, block_expert = (a.asnumpy() for a in grouped_plan(Tensor(indices), 4, 2))
    # experts 0, 1, 2, 3 have 2, 2, 5, 1 slots: 1 + 1 + 3 + 1 = 6 blocks of 2 rows used, of the bound's 7
    assert block_expert.shape == (num_blocks(10, 4, 2),) == (7,)
    assert len(set(slot_row.tolist())) == 10  # no two slots share a row
    assert np.array_equal(block_expert[slot_row // 2], indices.ravel())  # each slot lands in its expert's block
    assert np.array_equal(buffer_token[slot_row], np.arange(10) // 2)  # and the row holds its token
    assert list(block_expert) == [0, 1, 2, 2, 2, 3, 3]  # the unused last block gets the last expert


def test_grouped_gradients_equal_the_dense_paths(make_x):
    """Gradients of a loss through grouped_moe equal those through dense_moe (every expert on every token)."""
    layer = MoELayer(16, 24, 8, 2, norm_topk_prob=False, seed=2)
    x = make_x(40, 16, seed=4)
    params = layer.trainable_params()

    def loss(x, grouped):
        _, _, indices, weights = layer.router.route_tensors(x)
        ex = layer.experts
        y = (grouped_moe(x, indices, weights, ex.w_gate, ex.w_up, ex.w_down, 8) if grouped
             else dense_moe(x, indices, weights, ex))
        return (y * y).mean()

    def grouped_loss(x):
        return loss(x, True)

    def dense_loss(x):
        return loss(x, False)

    grads = {grouped: ms.jit(ms.value_and_grad(fn, 0, params))(x)[1]
             for grouped, fn in ((True, grouped_loss), (False, dense_loss))}
    (gx_g, gw_g), (gx_d, gw_d) = grads[True], grads[False]
    assert np.allclose(gx_g.asnumpy(), gx_d.asnumpy(), atol=1e-6)
    for a, b in zip(gw_g, gw_d, strict=True):
        assert np.allclose(a.asnumpy(), b.asnumpy(), atol=1e-6)
    assert np.abs(gw_g[0].asnumpy()).sum() > 0  # the router's weights get a gradient (norm_topk_prob=False)


def test_lm_blocks_compute_what_the_moe_layer_computes():
    model = lm.TinyMoELM(TINY)
    tokens = Tensor(np.arange(2 * 16).reshape(2, 16) * 5 % 256, ms.int32)
    block = model.blocks[0]
    x = ops.gather(model.tok_emb, tokens, 0) + model.pos_emb[:16]
    out, _, _, indices, weights = block(x)
    h = x + block.attn(block.norm1(x))
    want, routing = block.moe.forward(block.norm2(h), dispatch="sorted")
    assert np.allclose(out.asnumpy(), (h + want).asnumpy(), atol=1e-5)
    assert np.array_equal(indices.asnumpy(), routing.indices.asnumpy())


def test_next_byte_loss_is_the_cross_entropy():
    rng = np.random.default_rng(0)
    logits = Tensor(rng.normal(size=(3, 5, VOCAB_SIZE)).astype(np.float32))
    targets = Tensor(rng.integers(0, VOCAB_SIZE, (3, 5)).astype(np.int32))
    want = ops.cross_entropy(logits.reshape(-1, VOCAB_SIZE), targets.reshape(-1))
    assert float(next_byte_loss(logits, targets).asnumpy()) == pytest.approx(float(want.asnumpy()), rel=1e-5)


def test_top1_router_learns_from_the_task_only_without_renormalisation(corpus):
    """Top-1 with norm_topk_prob=True: every combine weight is 1.0, the router gets no task gradient."""
    top1 = dataclasses.replace(TINY, top_k=1, balance="aux")
    x, y, _ = corpus.batch("train", top1.batch_size, top1.context, np.random.default_rng(0))
    trapped = router_gradient_norms(lm.TinyMoELM(dataclasses.replace(top1, norm_topk_prob=True)), x, y)
    switch = router_gradient_norms(lm.TinyMoELM(dataclasses.replace(top1, norm_topk_prob=False)), x, y)
    # w / (w + 1e-20) is 1.0 for every w: what remains is float32 round-off, a millionth of the real gradient
    assert np.all(switch["task"] > 1e-4)
    assert trapped["task"].max() < 1e-6 * switch["task"].min()
    assert np.all(trapped["balance"] > 0) and np.all(switch["balance"] > 0)  # aux: both get the balance loss
    none = router_gradient_norms(lm.TinyMoELM(dataclasses.replace(top1, norm_topk_prob=False, balance="none")), x, y)
    assert np.all(none["balance"] == 0.0)
    with pytest.raises(TypeError, match="model must be a TinyMoELM"):
        router_gradient_norms("model", x, y)


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


def test_step_reports_router_and_expert_gradients(corpus, trained):
    model, trainer = trained
    trainer.reset()
    x, y, _ = corpus.batch("train", TINY.batch_size, TINY.context, np.random.default_rng(1))
    out = trainer.step(x, y)
    assert out["router_grad"].shape == (2,) and out["expert_grad"].shape == (2, 4)
    assert np.all(out["router_grad"] > 0)
    # an expert that received no slot gets no gradient, every other one does
    assert np.array_equal(out["expert_grad"] > 0, out["load"] > 0)
    # the same norms, computed outside the compiled step from the gradient of the same loss
    trainer.reset()
    experts = model.blocks[0].moe.experts
    weights = [model.blocks[0].moe.router.weight, experts.w_gate, experts.w_up, experts.w_down]
    aux, zero = Tensor(TINY.aux_coef, ms.float32), Tensor(0.0, ms.float32)

    def total_loss(tokens, targets):
        return lm.training.lm_losses(model, tokens, targets, aux, zero, zero)[0]

    g_router, *g_experts = ms.grad(total_loss, None, weights)(Tensor(x, ms.int32), Tensor(y, ms.int32))
    again = trainer.step(x, y)
    assert again["router_grad"][0] == pytest.approx(np.linalg.norm(g_router.asnumpy()), rel=1e-3)
    per_expert = np.sqrt(sum((g.asnumpy() ** 2).sum((1, 2)) for g in g_experts))
    assert np.allclose(again["expert_grad"][0], per_expert, rtol=1e-3, atol=1e-7)


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
    assert result.router_grad.shape == (4, 2) and result.expert_grad.shape == (4, 2, 4)
    assert result.tokens_per_second == pytest.approx(result.steps_per_second * TINY.tokens_per_step)
    assert result.steps_per_second > 0
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
                          rng.uniform(0.01, 0.1, (steps, layers)), 0.01 * load.astype(float),
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
    fig = lm_plots.plot_load_shares(runs)  # every layer: a row per layer
    assert len(fig.axes) == 4 and fig.axes[2].get_ylabel() == "layer 1: share of slots"
    plt.close(fig)
    fig = lm_plots.plot_router_gradients(runs, window=2)
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_yscale() == "log"
    plt.close(fig)
    load, grad = lm_plots.gradient_load_shares(runs["none"])
    assert load.shape == grad.shape == (12, 2, 4)
    assert np.allclose(grad, load)  # the fake run's gradient is proportional to its load
    fig = lm_plots.plot_gradient_vs_load(runs["none"])
    assert fig.axes[0].get_xlabel() == "share of the tokens"
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
    with pytest.raises(TypeError, match="result must be a TrainResult"):
        lm_plots.plot_gradient_vs_load({"none": 1})


def test_train_bench_quick(tmp_path):
    """The benchmark runs the replaced step and the shipped one, each in its own process (no times asserted)."""
    out = tmp_path / "throughput.json"
    assert train_bench.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    variants = data["cases"]["notebook"]["variants"]
    assert list(variants) == ["before", "after"]
    assert variants["before"]["host_blocking_run"] == "0" and variants["after"]["host_blocking_run"] == "1"
    assert len(variants["after"]["block_step_ms"]) == 2 and variants["after"]["steps_per_second"] > 0
    assert variants["before"]["speedup_over_before"] == 1.0
    # same model, same weights, same first batch: the replaced step computes the same loss
    assert variants["before"]["first_ce"] == pytest.approx(variants["after"]["first_ce"], abs=1e-3)
    assert data["cases"]["notebook"]["config"] == train_bench.model_config("notebook").to_dict()
    assert train_bench.main(["--rounds", "0", "--out", str(out)]) == 2


def test_legacy_step_is_the_replaced_computation(corpus):
    """The benchmark's copy of the replaced step (strided q/k/v, dense experts) computes what the shipped
    model computes, so the comparison is between two ways of doing the same work."""
    cfg = dataclasses.replace(TINY, top_k=1, norm_topk_prob=False, num_experts=4)
    x, y, _ = corpus.batch("train", cfg.batch_size, cfg.context, np.random.default_rng(2))
    new = lm.TinyMoELM(cfg)
    old = train_bench.legacy_model(cfg, "strided", "dense")
    assert isinstance(old.blocks[0], train_bench.DenseBlock)
    assert isinstance(old.blocks[0].attn, train_bench.StridedAttention)
    tokens = Tensor(x, ms.int32)
    assert np.allclose(new(tokens)[0].asnumpy(), old(tokens)[0].asnumpy(), atol=1e-5)
    first_new = lm.Trainer(new).step(x, y)
    first_old = train_bench.LegacyTrainer(old).step(x, y)
    assert first_new["ce"] == pytest.approx(first_old["ce"], abs=1e-5)
    assert np.array_equal(first_new["load"], first_old["load"])


def test_host_wait_summary_and_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    off, on = list(host_wait.SETTINGS)
    summary = host_wait.summarise({off: [0.12, 0.13, 0.5], on: [0.03, 0.031, 0.029]})
    assert summary["median_step_ms"] == {off: 130.0, on: 30.0}
    assert summary["ratio_busy_wait_over_blocking"] == pytest.approx(4.33)
    assert summary["effective"] and "still removes" in summary["verdict"]
    same = host_wait.summarise({off: [0.03], on: [0.03]})
    assert not same["effective"] and "no measurable difference" in same["verdict"]
    fig = host_wait.plot_host_wait(summary)
    assert [t.get_text().replace("\n", " ") for t in fig.axes[0].get_yticklabels()] == [off, on]
    plt.close(fig)
    with pytest.raises(ValueError, match="step_s must give"):
        host_wait.summarise({off: [0.1]})


# ----------------------------------------------------------------------------- in Chinese (notebook 04)

HAN = re.compile(r"[\u4e00-\u9fff]")


def missing_glyphs(fig) -> list[str]:
    """matplotlib's warnings about characters no font of the figure could draw (drawn as empty boxes)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_figures_speak_chinese(zh_plots):
    """Axis labels, titles and the legends the package writes are Chinese; numbers and run names stay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"none": _fake_result(), "aux": _fake_result(seed=1)}

    fig = lm_plots.plot_losses(runs, window=3)
    ax = fig.axes[0]
    assert all(HAN.search(t) for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())), ax.get_title()
    assert "3" in ax.get_title() and "nats" in ax.get_ylabel()
    assert legend_texts(ax)[:2] == ["none", "aux"]  # the runs' names are data
    assert HAN.search(legend_texts(ax)[2]) and "ln 256" in legend_texts(ax)[2]
    assert missing_glyphs(fig) == []
    plt.close(fig)

    fig = lm_plots.plot_load_shares(runs)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["none", "aux"]
    ylabels = [fig.axes[0].get_ylabel(), fig.axes[2].get_ylabel()]
    assert all(HAN.search(t) for t in ylabels) and "0" in ylabels[0] and "1" in ylabels[1], ylabels
    assert HAN.search(fig.axes[2].get_xlabel()) and HAN.search(fig.axes[3].get_xlabel())
    assert missing_glyphs(fig) == []
    plt.close(fig)

    fig = lm_plots.plot_router_gradients(runs, window=2)
    ax = fig.axes[0]
    assert all(HAN.search(t) for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()))
    assert "2" in ax.get_title() and "|" in ax.get_ylabel()
    assert missing_glyphs(fig) == []
    plt.close(fig)

    fig = lm_plots.plot_gradient_vs_load(runs["none"])
    ax = fig.axes[0]
    assert all(HAN.search(t) for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()))
    assert ax.get_title().startswith("aux")  # the run's balancing method (its config) stays as it is
    entries = legend_texts(ax)
    assert len(entries) == 2 and all(HAN.search(t) for t in entries) and "0" in entries[0] and "1" in entries[1]
    assert missing_glyphs(fig) == []
    plt.close(fig)


@pytest.fixture(scope="module")
def tiny_model():
    """One tiny model and its trainer (compiled once), shared by the progress-bar tests."""
    model = lm.TinyMoELM(TINY)
    return model, lm.Trainer(model), load_corpus()


def test_progress_bar_in_english(tiny_model, capsys):
    model, trainer, corpus = tiny_model
    lm.train(model, corpus, 2, trainer=trainer.reset(), desc="balance=aux")
    bar = capsys.readouterr().err
    assert "balance=aux" in bar and re.search(r"loss=\d+\.\d{3}", bar), bar


def test_progress_bar_in_chinese(tiny_model, capsys, zh):
    model, trainer, corpus = tiny_model
    lm.train(model, corpus, 2, trainer=trainer.reset())
    bar = capsys.readouterr().err
    assert re.search(r"损失=\d+\.\d{3}", bar) and "loss=" not in bar, bar
