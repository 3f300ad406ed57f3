"""Losses: error and NEGATIVE gradient against float64 formulas written here, finite differences,
validation metrics, the running-error accumulator and bad input."""

import numpy as np
import pytest

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Cost import BCE, MSE, Abs, CostError, CrossEntropy, SmoothL1
from PuzzleLib.Modules.Module import ModuleError

# -- float64 references ---------------------------------------------------------------------------------


def refMSE(p, t):
    d = t - p
    return np.sum(d * d) / (2 * d.size), d / d.size


def refAbs(p, t):
    d = t - p
    return np.sum(np.abs(d)) / d.size, np.sign(d) / d.size


def refSmoothL1(p, t):
    d = t - p
    per = np.where(np.abs(d) < 1, d * d / 2, np.abs(d) - 0.5)
    return per.sum() / d.size, np.clip(d, -1, 1) / d.size


def refBCE(x, labels):
    t = labels.reshape(x.shape).astype(np.float64)
    s = 1 / (1 + np.exp(-x))
    error = -np.sum(t * np.log(s) + (1 - t) * np.log(1 - s)) / x.size
    return error, (t - s) / x.size


def refSoftmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def refCrossEntropy(x, labels, weights=None):
    """Channel-last loop-free reference: rows are (sample, position) pairs."""
    classes = x.shape[1]
    rows = np.moveaxis(x, 1, -1).reshape(-1, classes)
    flat = labels.reshape(-1)
    prob = refSoftmax(rows)
    w = np.ones(classes) if weights is None else weights.astype(np.float64)
    error = -np.sum(w[flat] * np.log(prob[np.arange(flat.size), flat])) / flat.size
    onehot = np.eye(classes)[flat]
    gradRows = w[flat][:, None] * (onehot - prob) / x.shape[0]
    grad = np.moveaxis(gradRows.reshape(labels.shape + (classes,)), -1, 1)
    return error, grad


REGRESSION = [(MSE, refMSE), (Abs, refAbs), (SmoothL1, refSmoothL1)]


def _finiteDifference(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


# -- regression losses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("costCls, ref", REGRESSION)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 2, 3, 3)])
def test_regressionMatchesFormula(costCls, ref, dtype, rtol, shape):
    rng = np.random.default_rng(1)
    p, t = (2 * rng.standard_normal(shape)).astype(dtype), (2 * rng.standard_normal(shape)).astype(dtype)
    error, grad = costCls()(gpuarray.to_gpu(p), gpuarray.to_gpu(t))

    refError, refGrad = ref(p.astype(np.float64), t.astype(np.float64))
    assert grad.dtype == dtype and grad.shape == shape
    np.testing.assert_allclose(error, refError, rtol=rtol)
    np.testing.assert_allclose(grad.get(), refGrad, rtol=rtol, atol=rtol * np.abs(refGrad).max())


@pytest.mark.parametrize("costCls, ref", REGRESSION)
def test_regressionGradientIsNegativeDerivative(costCls, ref):
    rng = np.random.default_rng(2)
    p, t = 2 * rng.standard_normal((3, 4)), 2 * rng.standard_normal((3, 4))
    # Keep away from the kinks (|t - p| = 0 for Abs, 1 for SmoothL1) where the derivative jumps.
    d = t - p
    d[np.abs(np.abs(d) - 1) < 0.05] += 0.2
    d[np.abs(d) < 0.05] += 0.2
    t = p + d

    cost = costCls()
    _, grad = cost(p, t)
    numeric = _finiteDifference(lambda q: cost.validate(q, t), p.copy())
    np.testing.assert_allclose(grad.get(), -numeric, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("costCls, ref", REGRESSION)
def test_regressionValidateIsTheError(costCls, ref):
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32)
    np.testing.assert_allclose(costCls().validate(p, t), ref(p.astype(np.float64), t.astype(np.float64))[0], rtol=1e-5)


def test_mseExample():
    error, grad = MSE()(np.array([[1.0, 2.0]], np.float32), np.array([[2.0, 0.0]], np.float32))
    assert error == pytest.approx((1 + 4) / 4)
    np.testing.assert_array_equal(grad.get(), [[0.5, -1.0]])


# -- binary cross-entropy -------------------------------------------------------------------------------


@pytest.mark.parametrize("scoreShape, labelShape", [((10, 1), (10,)), ((6, 1, 3, 3), (6, 3, 3)), ((5, 4), (5, 4))])
def test_bceMatchesFormula(scoreShape, labelShape):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(scoreShape).astype(np.float32) * 3
    labels = rng.integers(0, 2, labelShape).astype(np.int32)
    error, grad = BCE()(x, labels)
    refError, refGrad = refBCE(x.astype(np.float64), labels)
    np.testing.assert_allclose(error, refError, rtol=1e-5)
    np.testing.assert_allclose(grad.get(), refGrad, rtol=1e-5, atol=1e-8)


def test_bceFiniteDifferencesAndStability():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3))
    labels = rng.integers(0, 2, (4, 3)).astype(np.int32)
    cost = BCE()
    _, grad = cost(x, labels)
    numeric = _finiteDifference(lambda q: cost(q, labels)[0], x.copy())
    np.testing.assert_allclose(grad.get(), -numeric, rtol=1e-6, atol=1e-10)

    huge = np.array([[800.0], [-800.0]], np.float32)
    error, grad = BCE()(huge, np.array([0, 1], np.int32))
    assert np.isfinite(error) and error == pytest.approx(800.0, rel=1e-6)
    np.testing.assert_allclose(grad.get(), [[-0.5], [0.5]])


def test_bceValidateIsErrorRate():
    scores = np.array([[-1.0], [2.0], [0.5], [-0.1], [0.0]], np.float32)
    labels = np.array([0, 1, 0, 1, 1], np.int32)
    # predicted class is score > 0: 0, 1, 1, 0, 0 -> three mistakes
    assert BCE().validate(scores, labels) == pytest.approx(3 / 5)


# -- softmax cross-entropy ------------------------------------------------------------------------------


@pytest.mark.parametrize("scoreShape", [(8, 5), (4, 3, 2, 3), (3, 4, 5)])
@pytest.mark.parametrize("weighted", [False, True])
def test_crossEntropyMatchesFormula(scoreShape, weighted):
    rng = np.random.default_rng(6)
    x = (3 * rng.standard_normal(scoreShape)).astype(np.float32)
    labels = rng.integers(0, scoreShape[1], (scoreShape[0],) + scoreShape[2:]).astype(np.int32)
    weights = rng.random(scoreShape[1]).astype(np.float32) if weighted else None

    error, grad = CrossEntropy(weights=weights)(gpuarray.to_gpu(x), gpuarray.to_gpu(labels))
    refError, refGrad = refCrossEntropy(x.astype(np.float64), labels, weights)
    np.testing.assert_allclose(error, refError, rtol=1e-5)
    np.testing.assert_allclose(grad.get(), refGrad, rtol=1e-4, atol=1e-7)


def test_crossEntropyFiniteDifferences():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5).astype(np.int32)
    cost = CrossEntropy(maxlabels=4)
    _, grad = cost(x, labels)
    numeric = _finiteDifference(lambda q: cost(q, labels)[0], x.copy())
    np.testing.assert_allclose(grad.get(), -numeric, rtol=1e-6, atol=1e-10)


def test_crossEntropySpatialGradientIsPerBatch():
    """With positions, the error is a mean over labels but the gradient is divided by the batch only."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 2, 2))
    labels = rng.integers(0, 3, (2, 2, 2)).astype(np.int32)
    cost = CrossEntropy()
    _, grad = cost(x, labels)
    numeric = _finiteDifference(lambda q: cost(q, labels)[0], x.copy())
    positionsPerSample = labels.size / labels.shape[0]
    np.testing.assert_allclose(grad.get(), -numeric * positionsPerSample, rtol=1e-6, atol=1e-10)


def test_crossEntropyIsNumericallyStable():
    x = np.array([[1e4, 0.0, -1e4], [-3e4, 3e4, 0.0]], np.float32)
    labels = np.array([0, 2], np.int32)
    error, grad = CrossEntropy()(x, labels)
    assert np.isfinite(error) and np.all(np.isfinite(grad.get()))
    # sample 0 is right with certainty (loss 0); sample 1 misses by 3e4 nats
    assert error == pytest.approx(3e4 / 2, rel=1e-6)
    np.testing.assert_allclose(grad.get(), [[0, 0, 0], [0, -0.5, 0.5]], atol=1e-7)


def test_crossEntropyValidateIsErrorRate():
    x = np.array([[0.1, 0.0, -1.0], [0.0, 1.0, 0.5], [0.0, -1.0, 2.0], [3.0, 0.0, 1.0]], np.float32)
    labels = np.array([0, 2, 2, 1], np.int32)
    assert CrossEntropy().validate(x, labels) == pytest.approx(2 / 4)

    spatial = np.moveaxis(x.reshape(2, 2, 3), 2, 1)  # (2 samples, 3 classes, 2 positions)
    assert CrossEntropy().validate(np.ascontiguousarray(spatial), labels.reshape(2, 2)) == pytest.approx(2 / 4)


# -- the accumulator --------------------------------------------------------------------------------------


def test_errorAccumulatorIsSampleWeighted():
    rng = np.random.default_rng(9)
    cost = MSE()
    assert cost.getMeanError() == 0.0
    batches = [rng.standard_normal((n, 3)).astype(np.float32) for n in (4, 1, 7)]
    errors = []
    for p in batches:
        t = np.zeros_like(p)
        grad = cost(p, t, queryError=False)
        assert grad.shape == p.shape
        errors.append(refMSE(p.astype(np.float64), t)[0])
        assert cost.getError() == pytest.approx(errors[-1], rel=1e-5)

    sizes = np.array([len(p) for p in batches])
    assert cost.numOfSamples == sizes.sum()
    assert cost.getMeanError() == pytest.approx(np.dot(sizes, errors) / sizes.sum(), rel=1e-5)

    cost.resetAccumulator()
    assert cost.getMeanError() == 0.0 and cost.numOfSamples == 0
    cost.validate(batches[0], np.zeros_like(batches[0]))
    assert cost.numOfSamples == 0, "validate must not touch the accumulator"


# -- bad input ----------------------------------------------------------------------------------------------


def _raises(fn, *fragments):
    with pytest.raises(CostError) as info:
        fn()
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_badInputNamesExpectedAndActual():
    f32 = np.zeros((4, 3), np.float32)
    assert issubclass(CostError, ModuleError)

    _raises(lambda: MSE()(f32, np.zeros((4, 2), np.float32)), "(4, 3)", "(4, 2)")
    _raises(lambda: MSE()(f32, np.zeros((4, 3), np.float64)), "float32", "float64")
    _raises(lambda: MSE()(f32.astype(np.int32), f32.astype(np.int32)), "float32", "int32")
    _raises(lambda: CrossEntropy()(f32, np.zeros(4, np.int64)), "int32", "int64")
    _raises(lambda: CrossEntropy()(f32, np.zeros((4, 1), np.int32)), "1 dimensions", "(4, 1)")
    _raises(lambda: CrossEntropy()(f32, np.zeros(5, np.int32)), "4", "5")
    _raises(lambda: CrossEntropy()(f32, np.array([0, 1, 3, 2], np.int32)), "[0, 2]", "[0, 3]")
    _raises(lambda: CrossEntropy()(f32, np.array([0, -1, 2, 2], np.int32)), "[0, 2]", "[-1, 2]")
    _raises(lambda: CrossEntropy(maxlabels=5)(f32, np.zeros(4, np.int32)), "5", "3")
    _raises(lambda: CrossEntropy()(np.zeros((2, 3, 4), np.float32), np.zeros((2, 5), np.int32)), "(4,)", "(5,)")
    _raises(lambda: BCE()(f32, np.full((4, 3), 2, np.int32)), "0 or 1", "[2, 2]")
    _raises(lambda: BCE()(f32, np.zeros((4, 2), np.int32)), "3", "2")
    _raises(lambda: BCE()(np.zeros((4, 1), np.float32), np.zeros(4, np.float32)), "int32", "float32")

    with pytest.raises(ValueError):
        CrossEntropy(weights=np.ones((2, 2), np.float32))
    with pytest.raises(ValueError):
        CrossEntropy(maxlabels=3, weights=np.ones(4, np.float32))
    with pytest.raises(CostError):
        MSE()([1.0], [1.0])


def test_failedCallKeepsState():
    cost = MSE()
    p = np.ones((2, 2), np.float32)
    error, grad = cost(p, np.zeros_like(p))
    with pytest.raises(CostError):
        cost(p, np.zeros((2, 3), np.float32))
    assert cost.getError() == error and cost.grad is grad and cost.numOfSamples == 2
