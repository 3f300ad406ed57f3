"""A chain of modules: each one's output is the next one's input."""

from PuzzleLib.Containers.Container import Container
from PuzzleLib.Modules.Module import ModuleError


class Sequential(Container):
    def __init__(self, name=None):
        super().__init__(name)
        self.graph = []

    # -- building ---------------------------------------------------------------------------------
    def append(self, mod, acquire=True):
        super().append(mod, acquire)
        self.graph.append(mod)
        return self

    def extend(self, modules, acquire=True):
        for mod in list(modules):
            self.append(mod, acquire)
        return self

    def insert(self, mod, index, acquire=True):
        if not -len(self.graph) - 1 <= index <= len(self.graph):
            raise ModuleError(f"Insert index must be in [{-len(self.graph) - 1}, {len(self.graph)}] (got {index})")
        super().append(mod, acquire)
        self.graph.insert(index, mod)
        return self

    def insertAfter(self, mod, name, acquire=True):
        return self.insert(mod, self.getModuleIndex(name) + 1, acquire)

    def pop(self, index=-1):
        mod = self.graph.pop(index)
        self.removeModule(mod)
        return mod

    # -- access -----------------------------------------------------------------------------------
    def getByIndex(self, index):
        return self.graph[index]

    def getModuleIndex(self, name):
        for i, mod in enumerate(self.graph):
            if mod.name == name:
                return i
        raise ModuleError(f"{self} has no module named {name!r}")

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.modules:
                raise ModuleError(f"{self} has no module named {key!r} (has: {list(self.modules)})")
            return self.modules[key]
        if isinstance(key, slice):
            # A new container over the same module objects; names stay as they are.
            part = Sequential(name=self.name)
            for mod in self.graph[key]:
                Container.append(part, mod, acquire=False)
                part.graph.append(mod)
            return part
        try:
            return self.graph[key]
        except IndexError:
            raise ModuleError(f"{self} has {len(self.graph)} modules, index {key} is out of range") from None

    def __iter__(self):
        return iter(self.graph)

    def __len__(self):
        return len(self.graph)

    def _children(self):
        return self.graph

    # -- compute ----------------------------------------------------------------------------------
    def _named(self, i, mod, error):
        return ModuleError(f"Sequential {self.name}: module #{i} ({mod}): {error}")

    def checkDataShape(self, shape):
        """Walk the shape through the chain so a bad input fails before any module computes."""
        for i, mod in enumerate(self.graph):
            try:
                mod.checkDataShape(shape)
                shape = mod.dataShapeFrom(shape)
            except ModuleError as e:
                raise self._named(i, mod, e) from e

    def checkDataType(self, dtype):
        if self.graph:
            self.graph[0].checkDataType(dtype)

    def checkGradShape(self, shape):
        if self.graph and self.inData is not None:
            expected = self.dataShapeFrom(self.inData.shape)
            if tuple(shape) != tuple(expected):
                raise ModuleError(f"Sequential {self.name}: expected grad shape {tuple(expected)}, got {tuple(shape)}")

    def checkGradType(self, dtype):
        if self.graph:
            self.graph[-1].checkGradType(dtype)

    def dataShapeFrom(self, shape):
        for mod in self.graph:
            shape = mod.dataShapeFrom(shape)
        return shape

    def gradShapeFrom(self, shape):
        for mod in reversed(self.graph):
            shape = mod.gradShapeFrom(shape)
        return shape

    def updateData(self, data):
        for i, mod in enumerate(self.graph):
            try:
                data = mod(data)
            except ModuleError as e:
                raise self._named(i, mod, e) from e
        self.data = data

    def backward(self, grad, updParamGrads=True, updGrad=True, scale=1.0, momentum=0.0):
        grad = self._checkedGrad(grad)
        for i in range(len(self.graph) - 1, -1, -1):
            mod = self.graph[i]
            # Every module but the first must pass a gradient on; the first only if asked.
            try:
                mod.backward(grad, updParamGrads=updParamGrads, updGrad=updGrad or i > 0,
                             scale=scale, momentum=momentum)
            except ModuleError as e:
                raise self._named(i, mod, e) from e
            grad = mod.grad
        self.grad = grad if updGrad else None
