"""Shared test set-up: CPU device once, quiet MindSpore logs, a seeded input factory."""

import os

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import moe_lab  # noqa: E402

moe_lab.setup(seed=0)


@pytest.fixture
def make_x():
    """``make_x(*shape, seed=0)``: a float32 MindSpore tensor of standard normal values."""

    def make(*shape, seed=0):
        return ms.Tensor(np.random.default_rng(seed).normal(size=shape).astype(np.float32))

    return make
