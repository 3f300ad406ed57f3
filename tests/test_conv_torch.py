"""ConvND against torch.nn.functional.conv1d/2d/3d and autograd, when torch is installed."""

import numpy as np
import pytest
from test_conv import assertClose, makeConv, randomConfig

from PuzzleLib.Backend import gpuarray

torch = pytest.importorskip("torch")
functional = pytest.importorskip("torch.nn.functional")

TORCH_CONV = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}


def torchConv(cfg, x, W, b, dy):
    """Forward and (dx, dW, db) by torch autograd in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    bt = None if b is None else torch.tensor(b.ravel(), dtype=torch.float64, requires_grad=True)
    y = TORCH_CONV[cfg["nd"]](xt, wt, bt, stride=cfg["stride"], padding=cfg["pad"], dilation=cfg["dilation"],
                              groups=cfg["groups"])
    y.backward(torch.tensor(dy, dtype=torch.float64))
    db = None if bt is None else bt.grad.numpy().reshape(b.shape)
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), db


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("seed", range(12))
def test_against_torch(nd, seed):
    # A different seed range from the reference tests, so torch sees other configurations.
    cfg = randomConfig(np.random.default_rng(50_000 + 100 * nd + seed), nd)
    rng = np.random.default_rng(seed)
    conv = makeConv(cfg, rng)
    x = rng.standard_normal((cfg["batch"], cfg["inmaps"]) + cfg["spatial"]).astype(np.float32)
    W = conv.W.get()
    b = conv.b.get() if cfg["useBias"] else None

    y = conv(gpuarray.to_gpu(x))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    yRef, dxRef, dWRef, dbRef = torchConv(cfg, x, W, b, dy)
    assertClose(y.get(), yRef, f"forward {cfg}")

    conv.backward(gpuarray.to_gpu(dy))
    assertClose(conv.grad.get(), dxRef, f"input grad {cfg}")
    assertClose(conv.vars["W"].grad.get(), dWRef, f"W grad {cfg}")
    if b is not None:
        assertClose(conv.vars["b"].grad.get(), dbRef, f"b grad {cfg}")


def test_against_torch_resnet_like_layer():
    """A realistic layer: batch 2, 16 -> 32 maps, 20x18, 3x3, stride 2, pad 1."""
    cfg = dict(nd=2, batch=2, inmaps=16, outmaps=32, size=(3, 3), stride=(2, 2), pad=(1, 1), dilation=(1, 1),
               groups=1, useBias=True, spatial=(20, 18))
    rng = np.random.default_rng(0)
    conv = makeConv(cfg, rng)
    x = rng.standard_normal((2, 16, 20, 18)).astype(np.float32)
    y = conv(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    yRef, dxRef, dWRef, dbRef = torchConv(cfg, x, conv.W.get(), conv.b.get(), dy)
    conv.backward(dy)
    assertClose(y.get(), yRef, "forward")
    assertClose(conv.grad.get(), dxRef, "input grad")
    assertClose(conv.vars["W"].grad.get(), dWRef, "W grad")
    assertClose(conv.vars["b"].grad.get(), dbRef, "b grad")
