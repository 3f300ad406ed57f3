"""A module made of named child modules; training-state calls propagate to every child."""

from PuzzleLib.Modules.Module import Module, ModuleError


class Container(Module):
    def __init__(self, name=None):
        super().__init__(name)
        self.modules = {}

    def append(self, mod, acquire=True):
        if not isinstance(mod, Module):
            raise ModuleError(f"{self} can only hold modules, got {type(mod).__name__}")
        name = mod.name if mod.name is not None else self._freeName()
        if name in self.modules:
            raise ModuleError(f"{self} already holds a module named {name!r}")
        if acquire and mod.name is None:
            mod.name = name
        self.modules[name] = mod
        return self

    def _freeName(self):
        """Name an unnamed module by its position; after a pop that name may be taken, so count on."""
        index = len(self.modules)
        while str(index) in self.modules:
            index += 1
        return str(index)

    def removeModule(self, mod):
        for name, child in list(self.modules.items()):
            if child is mod:
                del self.modules[name]
                return
        raise ModuleError(f"{mod} is not in {self}")

    def getByName(self, name):
        """The module of this name among the children, searched depth-first; None if absent."""
        if name in self.modules:
            return self.modules[name]
        for child in self.modules.values():
            if isinstance(child, Container):
                found = child.getByName(name)
                if found is not None:
                    return found
        return None

    def getAllByType(self, typename):
        found = []
        for child in self.modules.values():
            if type(child).__name__ == typename or (isinstance(typename, type) and isinstance(child, typename)):
                found.append(child)
            if isinstance(child, Container):
                found.extend(child.getAllByType(typename))
        return found

    def _resolve(self, dottedName):
        """The owning module and the variable name of a dotted name such as 'block.conv.W'."""
        *path, varName = dottedName.split(".")
        owner = self
        for part in path:
            if not isinstance(owner, Container) or part not in owner.modules:
                raise ModuleError(f"{self} has no module {part!r} on the path {dottedName!r}")
            owner = owner.modules[part]
        return owner, varName

    def getVar(self, name):
        owner, varName = self._resolve(name)
        if owner is self:
            return super().getVar(varName)
        return owner.getVar(varName)

    def setVar(self, name, var):
        owner, varName = self._resolve(name)
        if owner is self:
            return super().setVar(varName, var)
        return owner.setVar(varName, var)

    def getVarTable(self, vartable=None, name=None, root=True):
        vartable = {} if vartable is None else vartable
        prefix = "" if name is None else name
        for childName, child in self.modules.items():
            child.getVarTable(vartable, f"{prefix}{childName}.", root=False)
        return vartable

    def _children(self):
        return self.modules.values()

    def zeroGradParams(self):
        for child in self._children():
            child.zeroGradParams()

    def updateParams(self, learnRate):
        for child in self._children():
            child.updateParams(learnRate)

    def trainMode(self):
        super().trainMode()
        for child in self._children():
            child.trainMode()

    def evalMode(self):
        super().evalMode()
        for child in self._children():
            child.evalMode()

    def reset(self):
        super().reset()
        for child in self._children():
            child.reset()

    def calcMode(self, T):
        for child in self._children():
            child.calcMode(T)
        super().calcMode(T)

    def numOfParams(self):
        return sum(child.numOfParams() for child in self._children())

    def paramSize(self, unit=None):
        return sum(child.paramSize(unit) for child in self._children())

    def __len__(self):
        return len(self.modules)
