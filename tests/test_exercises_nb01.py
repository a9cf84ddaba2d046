import numpy as np

from moe_lab.exercises import nb01


def test_active_params_right_and_typical_mistakes():
    assert nb01.check_active_params(352_354_304)
    assert "no answer yet" in str(nb01.check_active_params(None))
    total = nb01.check_active_params(8 * 3 * 4096 * 14336 + 4096 * 8)
    assert not total and "total" in total.message
    assert "router" in nb01.check_active_params(2 * 3 * 4096 * 14336).message
    assert "three matrices" in nb01.check_active_params(2 * 2 * 4096 * 14336 + 4096 * 8).message
    assert "too small" in nb01.check_active_params(1000).message
    assert "expected a number" in nb01.check_active_params("352M").message


def test_top_k_checker():
    def good(probs, k):
        idx = np.argsort(-probs, axis=-1)[:, :k]
        w = np.take_along_axis(probs, idx, -1)
        return idx, w / w.sum(-1, keepdims=True)

    def raw(probs, k):
        idx = np.argsort(-probs, axis=-1)[:, :k]
        return idx, np.take_along_axis(probs, idx, -1)

    def reversed_order(probs, k):
        idx, w = good(probs, k)
        return idx[:, ::-1], w[:, ::-1]

    def smallest(probs, k):
        idx = np.argsort(probs, axis=-1)[:, :k]
        w = np.take_along_axis(probs, idx, -1)
        return idx, w / w.sum(-1, keepdims=True)

    def crash(probs, k):
        raise RuntimeError("boom")

    assert nb01.check_top_k_weights(good)
    assert "raw probabilities" in nb01.check_top_k_weights(raw).message
    assert "wrong order" in nb01.check_top_k_weights(reversed_order).message
    assert "chosen experts are wrong" in nb01.check_top_k_weights(smallest).message
    assert "RuntimeError" in nb01.check_top_k_weights(crash).message
    assert "returns None" in nb01.check_top_k_weights(lambda p, k: None).message
    assert "expected a function" in nb01.check_top_k_weights(3).message
    assert "shapes" in nb01.check_top_k_weights(lambda p, k: (p, p)).message


def test_dense_work_ratio():
    assert nb01.check_dense_work_ratio(64 / 6) and nb01.check_dense_work_ratio(10.667)
    assert "other way round" in nb01.check_dense_work_ratio(6 / 64).message
    assert "more than one expert" in nb01.check_dense_work_ratio(64).message
    assert "too small" in nb01.check_dense_work_ratio(4).message


def test_feedback_in_chinese(zh):
    total = nb01.check_active_params(8 * 3 * 4096 * 14336 + 4096 * 8)
    assert not total and total.message == "1,409,318,912——这是总参数量：一个 token 只运行它的 top_k 个专家。"
    assert str(total).startswith("[激活参数量] 还不对：1,409,318,912")
    assert "原始概率" in nb01.check_top_k_weights(lambda p, k: (np.argsort(-p, -1)[:, :k],
                                                            np.sort(p, -1)[:, ::-1][:, :k])).message
    assert nb01.check_dense_work_ratio(4).message.startswith("4 太小了。dense 路径对每个 token 运行全部 num_experts")
