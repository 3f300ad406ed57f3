"""Check a module's gradients against central finite differences, in float64.

The module (or container) is switched to float64 for the check: its ``calctype``
and every Variable (and array attribute) are replaced by float64 copies and put
back afterwards, so the check is not drowned in float32 rounding. The scalar
checked is ``sum(module(x) * R)`` for a fixed random R: its gradient with respect
to x is what ``backward(R)`` stores in ``module.grad``, and with respect to each
parameter what it accumulates in the Variable's ``grad``.

    from PuzzleLib.Utils.GradCheck import checkGradients
    checkGradients(Conv2D(2, 3, 3), np.random.randn(2, 2, 6, 5))

Parameter gradients are checked only when the module is in train mode (in eval
mode PuzzleLib modules do not accumulate them). Sampled elements only
(``maxChecks`` per tensor) keep the check fast on large tensors.
"""

import contextlib

import numpy as np

from PuzzleLib.Backend.gpuarray import GPUArray


class GradientCheckError(AssertionError):
    pass


def _walk(module):
    yield module
    for child in getattr(module, "modules", {}).values():
        yield from _walk(child)


@contextlib.contextmanager
def float64Mode(module):
    """Run the module tree in float64 inside the block; restore everything after it."""
    saved, converted, seenVars = [], {}, set()

    def to64(ary):
        key = id(ary)
        if key not in converted:
            converted[key] = (ary, GPUArray(np.array(ary.ary, dtype=np.float64)))
        return converted[key][1]

    for mod in _walk(module):
        attributes = dict(mod.__dict__, attrs=dict(mod.attrs))
        # A Variable shared by several modules is converted (and later restored) once.
        newVars = [var for var in mod.vars.values() if id(var) not in seenVars]
        seenVars.update(id(var) for var in newVars)
        saved.append((mod, attributes, [(var, var.data, var.grad) for var in newVars]))
        mod.calctype = np.float64
        for var in newVars:
            var.data = to64(var.data)
            var.grad = None if var.grad is None else to64(var.grad)
        for name, var in mod.vars.items():
            mod.__dict__[name] = var.data
        for name, attr in mod.attrs.items():
            if isinstance(attr, GPUArray) and np.issubdtype(attr.dtype, np.floating):
                mod.attrs[name] = to64(attr)
                mod.__dict__[name] = mod.attrs[name]
    try:
        yield
    finally:
        for mod, attributes, varState in saved:
            for var, data, grad in varState:
                var.data, var.grad = data, grad
            mod.__dict__.clear()
            mod.__dict__.update(attributes)
            mod.reset()


def _numeric(f, tensor, indices, eps):
    """Central differences of f with respect to the given flat indices of tensor (perturbed in place)."""
    flat = tensor.reshape(-1)
    values = np.empty(len(indices))
    for k, i in enumerate(indices):
        original = flat[i]
        flat[i] = original + eps
        plus = f()
        flat[i] = original - eps
        minus = f()
        flat[i] = original
        values[k] = (plus - minus) / (2 * eps)
    return values


def _sample(rng, size, maxChecks):
    if size <= maxChecks:
        return np.arange(size)
    return np.sort(rng.choice(size, maxChecks, replace=False))


def gradientCheck(module, data, seed=0, eps=1e-6, maxChecks=64, grad=None):
    """Compare analytic and numeric gradients; return {tensor name: report} ("input" for the data).

    Each report holds ``maxAbsError``, ``relError`` (that error over the largest numeric
    gradient magnitude) and ``checked`` (how many elements were compared).
    """
    rng = np.random.default_rng(seed)
    x = np.array(data, dtype=np.float64)
    with float64Mode(module):
        out = module(GPUArray(x.copy())).get()
        weights = rng.standard_normal(out.shape) if grad is None else np.asarray(grad, dtype=np.float64)
        # Zeroed gradients and momentum 1 make every use of a shared Variable add its part.
        module.zeroGradParams()
        module.backward(GPUArray(weights.copy()), momentum=1.0)
        tensors = {"input": (x, module.grad.get())}
        if module.train:
            for var, names in module.getVarTable().items():
                if var.grad is not None:
                    tensors[names[0]] = (var.data.ary, var.grad.get())

        def loss():
            return float(np.sum(module(GPUArray(x)).get() * weights))

        report = {}
        for name, (tensor, analytic) in tensors.items():
            indices = _sample(rng, tensor.size, maxChecks)
            numeric = _numeric(loss, tensor, indices, eps)
            error = np.abs(analytic.reshape(-1)[indices] - numeric)
            scale = max(np.max(np.abs(numeric), initial=0.0), 1e-12)
            report[name] = {"maxAbsError": float(error.max(initial=0.0)),
                            "relError": float(error.max(initial=0.0) / scale), "checked": len(indices)}
    return report


def checkGradients(module, data, rtol=1e-5, atol=1e-8, **kwargs):
    """Raise GradientCheckError unless every checked gradient agrees within atol + rtol * scale."""
    report = gradientCheck(module, data, **kwargs)
    bad = {name: r for name, r in report.items() if r["maxAbsError"] > atol and r["relError"] > rtol}
    if bad:
        details = ", ".join(f"{name}: rel {r['relError']:.3g}, abs {r['maxAbsError']:.3g}" for name, r in bad.items())
        raise GradientCheckError(f"{module}: gradients disagree with finite differences ({details})")
    return report
