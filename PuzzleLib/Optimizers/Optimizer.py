"""The contract every optimizer follows, as in PuzzleLib.

``setupOn(module)`` finds the module's Variables (``getVarTable``; containers give
dotted names) and creates the optimizer's state for each. A training step is::

    optimizer.zeroGradParams()
    module.backward(grad)       # grad: a cost's NEGATIVE gradient
    optimizer.update()          # every rule ADDS its step to the parameters

Each Variable's ``learnRate`` and ``momRate`` multiply the optimizer's rates for that
variable; a variable with ``learnRate <= 0`` is frozen (neither it nor its state
changes). Variables with their own ``updater`` are stepped by it with the optimizer's
``learnRate``; variables without a gradient are left alone. Hooks (``addHook``) run on
each variable right before its update, e.g. ``WeightDecay``.

``useGlobalState=True`` moves every variable's data and gradient (one group per dtype)
into one flat buffer each, re-binding the module's variables to views of it, so a step
is a single call over all parameters whenever no per-variable multiplier or hook asks
for more. The optimizer keeps the Variable objects it set up: call ``setupOn`` again
after replacing a module's variables.
"""

import numbers

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules.Module import Module, ModuleError
from PuzzleLib.Variable import Variable


class OptimizerError(ModuleError):
    pass


class _Slot:
    """One trained Variable: the names it is known by, the Variable and its state arrays."""

    __slots__ = ("names", "var", "state")

    def __init__(self, names, var, state):
        self.names, self.var, self.state = names, var, state


class _Group:
    """Global mode: the flat Variable over all same-dtype variables and its flat state."""

    __slots__ = ("var", "state", "slots")

    def __init__(self, var, state, slots):
        self.var, self.state, self.slots = var, state, slots


class Optimizer:
    # Names of the per-variable state arrays a subclass keeps (each shaped like the data).
    stateNames = ()

    def __init__(self, learnRate=0.0):
        self.learnRate = checkedRate("learnRate", learnRate)
        self.t = 0
        self.module = None
        self.hooks = []
        self.globalState = False
        self.slots = []
        self.groups = []
        self.customVars = []

    def __str__(self):
        return f"Optimizer {type(self).__name__} (learnRate: {self.learnRate})"

    @property
    def states(self):
        """Each variable's state, keyed by its first name."""
        return {slot.names[0]: slot.state for slot in self.slots}

    def addHook(self, hook):
        if not callable(hook):
            raise ValueError(f"A hook must be callable as hook(var, state), got {type(hook).__name__}")
        self.hooks.append(hook)
        return self

    # -- setup ---------------------------------------------------------------------------------
    def setupOn(self, mod, useGlobalState=False):
        if not isinstance(mod, Module):
            raise ValueError(f"setupOn expects a Module, got {type(mod).__name__}")
        self.module = mod
        self.t = 0
        self.slots, self.groups, self.customVars = [], [], []
        self.globalState = bool(useGlobalState)

        # Variables made under Config.globalEvalMode have no gradient yet: training needs one.
        mod.ensureGradParams()
        trainable = []
        for var, names in mod.getVarTable().items():
            if var.hasUpdater:
                self.customVars.append(var)
            elif var.grad is not None:
                trainable.append((list(names), var))

        if self.globalState:
            self._setupGlobal(mod, trainable)
        else:
            self.slots = [_Slot(names, var, self.setupState(var.data)) for names, var in trainable]
        return self

    def setupState(self, data):
        """Fresh state arrays (zeros) for a variable holding ``data``."""
        return {name: gpuarray.zeros(data.shape, dtype=data.dtype) for name in self.stateNames}

    def _setupGlobal(self, mod, trainable):
        byDtype = {}
        for names, var in trainable:
            byDtype.setdefault(var.data.dtype, []).append((names, var))

        for dtype, members in byDtype.items():
            total = sum(var.data.size for _, var in members)
            flatVar = Variable(gpuarray.empty((total,), dtype), grad=gpuarray.zeros((total,), dtype))
            flatState = self.setupState(flatVar.data)

            slots, offset = [], 0
            for names, var in members:
                size, shape = var.data.size, var.data.shape
                view = _segmenter(offset, size, shape)
                data, grad = view(flatVar.data).set(var.data), view(flatVar.grad).set(var.grad)
                newVar = Variable(data, name=var.name, grad=grad)
                newVar.learnRate, newVar.momRate, newVar.wc = var.learnRate, var.momRate, var.wc
                newVar.postUpdater = var.postUpdater
                for name in names:
                    _rebind(mod, name, newVar)
                slots.append(_Slot(names, newVar, {key: view(ary) for key, ary in flatState.items()}))
                offset += size

            self.groups.append(_Group(flatVar, flatState, slots))
            self.slots.extend(slots)

    # -- stepping ---------------------------------------------------------------------------------
    def zeroGradParams(self):
        if self.globalState:
            for group in self.groups:
                group.var.grad.fill(0)
        else:
            for slot in self.slots:
                slot.var.grad.fill(0)
        for var in self.customVars:
            if var.grad is not None:
                var.grad.fill(0)

    def update(self):
        self._checkSetup()
        self.t += 1
        self.prepareStep()

        if self.globalState:
            for group in self.groups:
                if self._uniform(group.slots):
                    self.updateVar(group.var, group.state)
                else:
                    self._updateSlots(group.slots)
                for slot in group.slots:
                    if slot.var.hasPostUpdater:
                        slot.var.postUpdater(slot.var)
        else:
            self._updateSlots(self.slots)
            for slot in self.slots:
                if slot.var.hasPostUpdater:
                    slot.var.postUpdater(slot.var)

        for var in self.customVars:
            var.update(self.learnRate)

    def _uniform(self, slots):
        """Whether one call over the flat buffer does what per-variable calls would."""
        return not self.hooks and all(slot.var.learnRate == 1.0 and slot.var.momRate == 1.0 for slot in slots)

    def _updateSlots(self, slots):
        for slot in slots:
            for hook in self.hooks:
                hook(slot.var, slot.state)
            if slot.var.learnRate > 0.0:
                self.updateVar(slot.var, slot.state)

    def prepareStep(self):
        """Per-step quantities shared by all variables (after ``t`` is incremented)."""

    def updateVar(self, var, state):
        """Add this optimizer's step to ``var.data``, scaled by var.learnRate and var.momRate."""
        raise NotImplementedError(f"{type(self).__name__} does not implement updateVar")

    def _checkSetup(self):
        if self.module is None:
            raise OptimizerError(f"{self}: call setupOn(module) before update()")


def _segmenter(offset, size, shape):
    """A function giving the view of a flat array that holds one variable."""
    return lambda flat: flat[offset:offset + size].reshape(shape)


def _rebind(mod, name, var):
    """Put ``var`` under ``name`` in the module, also accepting names prefixed by the module's own name."""
    try:
        mod.setVar(name, var)
    except (ModuleError, KeyError):
        prefix = f"{mod.name}." if mod.name is not None else None
        if prefix is None or not name.startswith(prefix):
            raise
        mod.setVar(name[len(prefix):], var)


def checkedRate(what, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a real number, got {type(value).__name__}")
    return float(value)
