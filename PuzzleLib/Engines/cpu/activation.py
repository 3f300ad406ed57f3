"""Element-wise activations and their derivatives on numpy arrays, in the input's dtype.

Derivatives are computed from the forward *output* ``y`` (not the input), so that an
in-place forward pass, which overwrites its input, can still be differentiated.
``args`` carries the per-activation constants: leakyRelu (slope,), elu (alpha,),
clip (low, high); the others take none.
"""

import numpy as np


def _sigmoid(x, out):
    # exp of a non-positive number only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    np.divide(np.where(x >= 0, 1, e), 1 + e, out=out)


def _softPlus(x, out):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|), exact and overflow-free.
    np.add(np.maximum(x, 0), np.log1p(np.exp(-np.abs(x))), out=out)


def _forwardInto(kind, x, out, args):
    if kind == "relu":
        np.maximum(x, 0, out=out)
    elif kind == "leakyRelu":
        np.multiply(x, np.where(x > 0, 1, args[0]).astype(x.dtype, copy=False), out=out)
    elif kind == "elu":
        np.copyto(out, np.where(x > 0, x, args[0] * np.expm1(np.minimum(x, 0))))
    elif kind == "sigmoid":
        _sigmoid(x, out)
    elif kind == "tanh":
        np.tanh(x, out=out)
    elif kind == "softPlus":
        _softPlus(x, out)
    elif kind == "clip":
        np.clip(x, args[0], args[1], out=out)
    else:
        raise ValueError(f"unknown activation {kind!r}")


def _derivative(kind, y, args):
    """d activation / d x expressed through the output y."""
    if kind == "relu":
        return y > 0
    if kind == "leakyRelu":
        return np.where(y > 0, 1, args[0])
    if kind == "elu":
        # For x <= 0: y = a * (e^x - 1), so dy/dx = a * e^x = y + a.
        return np.where(y > 0, 1, y + args[0])
    if kind == "sigmoid":
        return y * (1 - y)
    if kind == "tanh":
        return 1 - y * y
    if kind == "softPlus":
        # dy/dx = sigmoid(x) = 1 - e^-y.
        return -np.expm1(-y)
    if kind == "clip":
        return (y > args[0]) & (y < args[1])
    raise ValueError(f"unknown activation {kind!r}")


def forward(x, kind, args=(), slc=None, out=None):
    """Activation of x (or of the flat slice ``slc`` of it; the rest is copied unchanged)."""
    out = np.empty_like(x) if out is None else out
    if slc is None:
        _forwardInto(kind, x, out, args)
        return out
    if out is not x:
        np.copyto(out, x)
    flatIn, flatOut = x.reshape(-1), out.reshape(-1)
    part = np.empty_like(flatIn[slc])
    _forwardInto(kind, flatIn[slc], part, args)
    flatOut[slc] = part
    return out


def backward(grad, y, kind, args=(), slc=None, out=None):
    """Input gradient from the output gradient and the forward output y."""
    out = np.empty_like(grad) if out is None else out
    if slc is None:
        np.multiply(grad, _derivative(kind, y, args), out=out, casting="unsafe")
        return out
    if out is not grad:
        np.copyto(out, grad)
    flatGrad, flatY, flatOut = grad.reshape(-1), y.reshape(-1), out.reshape(-1)
    flatOut[slc] = flatGrad[slc] * _derivative(kind, flatY[slc], args)
    return out


def dropoutMask(shape, p, dtype, rng=None, slc=None):
    """Keep each element with probability 1 - p, scaled by 1 / (1 - p).

    Draws from ``rng`` (anything with ``random(size)``) or else numpy's global generator.
    With ``slc`` only that slice of the flattened array is dropped; the mask is 1 elsewhere.
    """
    count = int(np.prod(shape))
    positions = np.arange(count)[slc] if slc is not None else None
    size = count if positions is None else len(positions)
    uniform = np.random.random_sample(size) if rng is None else np.asarray(rng.random(size))
    values = ((uniform >= p) / (1.0 - p)).astype(dtype)
    if positions is None:
        return values.reshape(shape)
    mask = np.ones(count, dtype=dtype)
    mask[positions] = values
    return mask.reshape(shape)


def multiply(x, mask, out=None):
    return np.multiply(x, mask, out=out)
