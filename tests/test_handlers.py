"""Trainer, Validator and Calculator: batch orchestration, sample-weighted validation, outputs for any
data size, progress bars, callbacks and bad input."""

import sys

import numpy as np
import pytest

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Containers import Sequential
from PuzzleLib.Cost import MSE, CrossEntropy
from PuzzleLib.Handlers import Calculator, Handler, Trainer, Validator
from PuzzleLib.Modules import Conv2D
from PuzzleLib.Optimizers import SGD, MomentumSGD


def pointwiseNet(seed=0):
    """A 1x1 convolution: easy to compute independently (an einsum) in the tests."""
    np.random.seed(seed)
    return Sequential().append(Conv2D(3, 2, 1))


def refPointwise(net, x):
    W = net[0].W.get().astype(np.float64)[:, :, 0, 0]
    b = net[0].b.get().astype(np.float64)
    return np.einsum("oc,nchw->nohw", W, x.astype(np.float64)) + b


def regressionData(n, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, 2, 2)).astype(np.float32),
            rng.standard_normal((n, 2, 2, 2)).astype(np.float32))


def _params(net):
    return {name: var.data.get() for var, names in net.getVarTable().items() for name in names}


# -- Trainer ---------------------------------------------------------------------------------------------


def test_trainerFollowsThePuzzleLibStep():
    """train(random=False) does exactly: cost -> zeroGradParams -> backward -> update, batch by batch."""
    x, y = regressionData(30)
    ours, manual = pointwiseNet(), pointwiseNet()
    cost, opt = MSE(), MomentumSGD(0.05)
    opt.setupOn(ours)

    batches = []
    trainer = Trainer(ours, cost, opt, batchsize=7, onBatchFinish=lambda t: batches.append(t.currBatch))
    trainer.train(gpuarray.to_gpu(x), gpuarray.to_gpu(y), random=False)
    assert batches == [1, 2, 3, 4, 5] and trainer.totalBatches == 5

    manualCost, manualOpt = MSE(), MomentumSGD(0.05)
    manualOpt.setupOn(manual)
    errors = []
    for start in range(0, 30, 7):
        error, grad = manualCost(manual(gpuarray.to_gpu(x[start:start + 7])), gpuarray.to_gpu(y[start:start + 7]))
        errors.append((error, len(x[start:start + 7])))
        manualOpt.zeroGradParams()
        manual.backward(grad, updGrad=False)
        manualOpt.update()

    for name, value in _params(manual).items():
        np.testing.assert_array_equal(_params(ours)[name], value, err_msg=name)
    weighted = sum(e * n for e, n in errors) / 30
    assert cost.getMeanError() == pytest.approx(weighted, rel=1e-6)


def _sgdTrainer(net):
    opt = SGD(0.1)
    opt.setupOn(net, useGlobalState=True)
    return Trainer(net, MSE(), opt, batchsize=5)


def test_trainFromHostMatchesDeviceTraining():
    """Macro-batches of 15 = 5 + 5 + 5, so the batch sequence is the device run's (40 = 15 + 15 + 10)."""
    x, y = regressionData(40)
    onDevice, fromHost = pointwiseNet(), pointwiseNet()
    _sgdTrainer(onDevice).train(gpuarray.to_gpu(x), gpuarray.to_gpu(y), random=False)

    macro = []
    trainer = _sgdTrainer(fromHost)
    trainer.trainFromHost(x, y, macroBatchSize=15, random=False,
                          onMacroBatchFinish=lambda t: macro.append(t.currMacroBatch))
    assert macro == [1, 2, 3] and trainer.totalMacroBatches == 3
    for name, value in _params(onDevice).items():
        np.testing.assert_allclose(_params(fromHost)[name], value, rtol=1e-6, err_msg=name)


def test_trainingClassifierLowersErrorRate():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((256, 2, 3, 3)).astype(np.float32)
    labels = (x[:, 0].sum(axis=(1, 2)) > x[:, 1].sum(axis=(1, 2))).astype(np.int32).reshape(256, 1, 1)
    np.random.seed(5)
    net = Sequential().append(Conv2D(2, 2, 3))
    cost, opt = CrossEntropy(), MomentumSGD(0.1)
    opt.setupOn(net)
    validator = Validator(net, cost, batchsize=100)

    before = validator.validateFromHost(x, labels, macroBatchSize=128)
    trainer = Trainer(net, cost, opt, batchsize=16)
    means = []
    for _ in range(4):
        trainer.trainFromHost(x, labels, macroBatchSize=100)
        means.append(cost.getMeanError())
    after = validator.validateFromHost(x, labels, macroBatchSize=128)
    assert means[-1] < means[0]
    assert after < 0.1 < before


# -- Validator -------------------------------------------------------------------------------------------


def test_validatorIsSampleWeightedMean():
    x, y = regressionData(23)
    net = pointwiseNet()
    out = refPointwise(net, x)
    expected = np.sum((y - out) ** 2) / (2 * out.size)

    validator = Validator(net, MSE(), batchsize=4)
    assert validator.validate(gpuarray.to_gpu(x), gpuarray.to_gpu(y)) == pytest.approx(expected, rel=1e-5)
    assert not net.train, "validation runs in eval mode"
    assert validator.validateFromHost(x, y, macroBatchSize=9) == pytest.approx(expected, rel=1e-5)
    assert validator.error == pytest.approx(expected, rel=1e-5)


def test_validatorErrorRate():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 3, 1, 1)).astype(np.float32)
    net = pointwiseNet()
    predicted = refPointwise(net, x).argmax(axis=1)
    labels = predicted.astype(np.int32).copy()
    labels[:13] = 1 - labels[:13]  # 13 wrong out of 50
    error = Validator(net, CrossEntropy(), batchsize=8).validateFromHost(x, labels, macroBatchSize=21)
    assert error == pytest.approx(13 / 50)


# -- Calculator ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, batchsize, macroBatchSize", [(103, 10, 25), (7, 128, 10000), (30, 3, 7)])
def test_calculatorAnyDataSize(n, batchsize, macroBatchSize):
    x, _ = regressionData(n)
    net = pointwiseNet()
    expected = refPointwise(net, x)
    calculator = Calculator(net, batchsize=batchsize)

    host = calculator.calcFromHost(x, macroBatchSize=macroBatchSize)
    assert isinstance(host, np.ndarray) and host.shape == expected.shape and host.dtype == np.float32
    np.testing.assert_allclose(host, expected, rtol=1e-5, atol=1e-6)

    dev = calculator.calc(gpuarray.to_gpu(x))
    assert isinstance(dev, gpuarray.GPUArray)
    np.testing.assert_allclose(dev.get(), expected, rtol=1e-5, atol=1e-6)


# -- progress and misuse ----------------------------------------------------------------------------------


def _trainQuietly(progress, capsys):
    x, y = regressionData(20)
    net = pointwiseNet()
    opt = SGD(0.01)
    opt.setupOn(net)
    Trainer(net, MSE(), opt, batchsize=2, progress=progress).trainFromHost(x, y, macroBatchSize=8)
    return capsys.readouterr().err


def test_progressBarCanBeTurnedOff(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    assert "Trainer" in _trainQuietly(True, capsys)
    assert _trainQuietly(False, capsys) == ""
    # Automatic mode shows no bar when stderr is not a terminal (as under pytest).
    assert _trainQuietly(None, capsys) == ""
    monkeypatch.setattr(Handler, "defaultProgress", False)
    assert _trainQuietly(None, capsys) == ""


def test_noBarWithoutTqdm(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes "import tqdm" fail
    assert _trainQuietly(True, capsys) == ""


def test_progressInfoShowsRunningError():
    x, y = regressionData(10)
    net = pointwiseNet()
    opt = SGD(0.01)
    opt.setupOn(net)
    trainer = Trainer(net, MSE(), opt, batchsize=4, progress=False)
    trainer.train(x, y)
    assert trainer.progressInfo(None) == f"error={trainer.cost.getMeanError():.5g}"


def test_badInput():
    net = pointwiseNet()
    x, y = regressionData(10)
    with pytest.raises(ValueError, match="same number of samples"):
        Validator(net, MSE()).validate(gpuarray.to_gpu(x), gpuarray.to_gpu(y[:9]))
    with pytest.raises(ValueError, match="batchsize"):
        Calculator(net, batchsize=0)
    with pytest.raises(ValueError, match="macroBatchSize"):
        Calculator(net).calcFromHost(x, macroBatchSize=0)
    with pytest.raises(ValueError, match="at least one sample"):
        Calculator(net).calc(x[:0])


def test_trainerSumsTheGradientsOfASharedVariable():
    """Two convolutions sharing one W: the step must use the sum of both gradients."""
    from PuzzleLib.Variable import Variable

    np.random.seed(7)
    first, second = Conv2D(2, 2, 3, pad=1, useBias=False), Conv2D(2, 2, 3, pad=1, useBias=False)
    shared = Variable(gpuarray.to_gpu(np.random.randn(2, 2, 3, 3).astype(np.float32)))
    first.setVar("W", shared)
    second.setVar("W", shared)
    net = Sequential().append(first).append(second)
    data = np.random.randn(4, 2, 5, 5).astype(np.float32)
    target = np.random.randn(4, 2, 5, 5).astype(np.float32)

    # The expected step: the sum of both layers' gradients, from a float64 replay of the chain rule.
    net(gpuarray.to_gpu(data))
    grad = MSE()(net.data, gpuarray.to_gpu(target), queryError=False)
    second.backward(grad)
    secondPart = second.vars["W"].grad.get().copy()
    first.backward(second.grad)
    expected = shared.data.get() + 0.1 * (secondPart + first.vars["W"].grad.get())

    optimizer = SGD(learnRate=0.1)
    optimizer.setupOn(net)
    Trainer(net, MSE(), optimizer, batchsize=4).train(gpuarray.to_gpu(data), gpuarray.to_gpu(target))
    np.testing.assert_allclose(net[0].W.get(), expected, rtol=1e-5, atol=1e-6)
    assert net[0].W is net[1].W
