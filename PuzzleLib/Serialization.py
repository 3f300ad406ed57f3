"""Saving and loading modules in PuzzleLib's HDF5 layout.

A weight file holds:

* ``params/<i>``: one dataset per distinct Variable (a Variable shared by several modules is
  stored once), gzip-compressed by default;
* ``links/<prefix>.<param>``: a scalar int pointing into ``params``. The prefix of a module is
  its name ("" when unnamed, so an unnamed module's W is ``.W``); inside a container it is
  ``<container prefix>.<child name>`` (an unnamed Sequential's first child: ``.0.W``), or just
  the child's name with ``assumeUniqueNames``;
* ``attrs/<prefix>.<attr>``: module attributes that are arrays or numbers (batch-norm running
  statistics, for example);
* an empty group ``attrs.<prefix>`` for each container;
* optionally ``blueprint``: a JSON string describing the architecture (only ever parsed as JSON).

Files written by the original PuzzleLib load unchanged. Loading never executes anything from the
file: it reads plain numeric datasets and nothing else.
"""

import contextlib
import io
import json
import numbers
import os
import tempfile

import h5py
import numpy as np

from PuzzleLib.Backend.gpuarray import GPUArray
from PuzzleLib.Modules.Module import ModuleError


# -- the layout ------------------------------------------------------------------------------------
class _Layout:
    """Where every Variable and attribute of a module tree lives in a weight file."""

    def __init__(self, module, name, assumeUniqueNames):
        self.params = []  # (link name, owner module, variable name, Variable)
        self.attrs = []  # (dataset name, owner module, attribute name, value)
        self.groups = []  # empty groups marking containers
        self._visit(module, _text(module.name if name is None else name), assumeUniqueNames)

    def _visit(self, mod, prefix, assumeUniqueNames):
        from PuzzleLib.Containers.Container import Container

        for key, var in mod.vars.items():
            self.params.append((f"{prefix}.{key}", mod, key, var))
        for key, value in mod.attrs.items():
            if _storable(value):
                self.attrs.append((f"{prefix}.{key}", mod, key, value))
        if isinstance(mod, Container):
            self.groups.append(f"attrs.{prefix}")
            for childName, child in mod.modules.items():
                childPrefix = _text(childName) if assumeUniqueNames else f"{prefix}.{childName}"
                self._visit(child, childPrefix, assumeUniqueNames)

    def check(self):
        """Refuse names HDF5 would misread and names that two entries share, before touching a file."""
        for kind, names in (("parameter", [p[0] for p in self.params]), ("attribute", [a[0] for a in self.attrs])):
            seen = set()
            for entry in names:
                if "/" in entry:
                    raise ModuleError(f"{kind} name {entry!r} contains '/' (module names must not)")
                if entry in seen:
                    raise ModuleError(
                        f"two {kind}s are both named {entry!r} (give the modules unique names, "
                        "or save without assumeUniqueNames)"
                    )
                seen.add(entry)


def _text(name):
    return "" if name is None else str(name)


def _storable(value):
    """Attributes saved to a file: arrays and plain numbers; anything else is configuration, not state."""
    if isinstance(value, (GPUArray, np.ndarray)):
        return value.dtype.kind in "biuf"
    return isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, str)


def _hostArray(value):
    return value.get() if isinstance(value, GPUArray) else np.asarray(value)


# -- saving ---------------------------------------------------------------------------------------
def save(module, hdf=None, varlinks=None, name=None, compress="gzip", assumeUniqueNames=False,
         withBlueprint=False):
    """Write ``module`` (and, for a container, its children) to ``hdf``.

    hdf: a path (written atomically: a temporary file in the same folder, then renamed over the
    target), an open h5py File or Group (written into and left open), or None (the file image
    is returned as bytes). varlinks: an optional dict {Variable: index} shared by several saves
    into one file, so that a Variable is stored once.
    """
    layout = _Layout(module, name, assumeUniqueNames)
    layout.check()
    varlinks = {} if varlinks is None else varlinks

    def write(group):
        _writeModule(group, module, layout, varlinks, compress, withBlueprint)

    if hdf is None:
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as group:
            write(group)
        return buffer.getvalue()
    if isinstance(hdf, h5py.Group):
        write(hdf)
        return None
    if isinstance(hdf, (str, os.PathLike)):
        _atomicWrite(os.fspath(hdf), write)
        return None
    raise ModuleError(f"{module}: save expects a path, an h5py file or group, or None (got {type(hdf).__name__})")


def _writeModule(group, module, layout, varlinks, compress, withBlueprint):
    paramGrp, linkGrp = group.require_group("params"), group.require_group("links")
    for linkName, _, _, var in layout.params:
        if linkName in linkGrp:
            raise ModuleError(f"the file already holds a parameter named {linkName!r}")
        index = varlinks.get(var)
        if index is None:
            index = len(varlinks)
            # Never overwrite a dataset another save put into the same file.
            while str(index) in paramGrp:
                index += 1
            paramGrp.create_dataset(str(index), data=var.data.get(), compression=compress)
            varlinks[var] = index
        linkGrp.create_dataset(linkName, data=np.int64(index))

    if layout.attrs:
        attrGrp = group.require_group("attrs")
        for attrName, _, _, value in layout.attrs:
            value = _hostArray(value)
            # HDF5 cannot compress a scalar dataset.
            attrGrp.create_dataset(attrName, data=value, compression=compress if value.ndim > 0 else None)

    for groupName in layout.groups:
        group.require_group(groupName)

    if withBlueprint:
        if "blueprint" in group:
            del group["blueprint"]
        group.create_dataset("blueprint", data=json.dumps(_blueprint(module), default=_jsonDefault))


def _atomicWrite(path, write):
    """Write a new HDF5 file to a temporary name next to ``path``, then rename it over ``path``.

    A failure at any point removes the temporary file and leaves whatever was at ``path`` untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as group:
            write(group)
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        # mkstemp creates the file private (0600); give it the mode a plain open() would have.
        os.chmod(tmp, _newFileMode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _newFileMode(path):
    with contextlib.suppress(OSError):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _blueprint(module):
    """The module's blueprint; for a container, with its children's blueprints and order."""
    from PuzzleLib.Containers.Container import Container

    blueprint = dict(module.getBlueprint())
    if isinstance(module, Container) and "modules" not in blueprint:
        blueprint["modules"] = {key: _blueprint(child) for key, child in module.modules.items()}
        graph = getattr(module, "graph", None)
        if graph is not None:
            keyOf = {id(child): key for key, child in module.modules.items()}
            blueprint["graph"] = [keyOf[id(child)] for child in graph]
    return blueprint


def _jsonDefault(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, GPUArray)):
        return _hostArray(value).tolist()
    if isinstance(value, type):
        return value.__name__
    return str(value)


def loadBlueprint(hdf):
    """The blueprint stored in a weight file, parsed as JSON, or None when there is none."""
    with _openForReading(hdf) as group:
        if "blueprint" not in group:
            return None
        text = group["blueprint"][()]
    return json.loads(text.decode() if isinstance(text, bytes) else str(text))


# -- loading ---------------------------------------------------------------------------------------
def load(module, hdf, initvars=None, name=None, assumeUniqueNames=False):
    """Load the parameters and attributes of ``module`` (and its children) from ``hdf``.

    hdf: a path, the bytes of a file, or an open h5py File or Group (left open). Every value is
    read and checked (shape, and a dtype that casts safely) before any is assigned, so on any
    error the module is left exactly as it was and a ModuleError names the offending entry.
    Values are copied into the existing arrays, so optimizers set up on the module stay valid.
    initvars: an optional dict, filled with {file parameter index: Variable} for what was loaded.
    """
    label = module.name if name is None else name
    try:
        with _openForReading(hdf) as group:
            actions, loaded = _plan(group, _Layout(module, name, assumeUniqueNames))
    except ModuleError as e:
        raise ModuleError(f"Module {label} load error: {e}") from e
    except Exception as e:  # h5py reports damaged files with several exception types
        raise ModuleError(f"Module {label} load error: {type(e).__name__}: {e}") from e

    # Every check has passed: assignments below cannot fail half-way.
    for action in actions:
        action()
    if initvars is not None:
        initvars.update(loaded)


@contextlib.contextmanager
def _openForReading(hdf):
    if isinstance(hdf, h5py.Group):
        yield hdf
        return
    if isinstance(hdf, (bytes, bytearray, memoryview)):
        source, what = io.BytesIO(bytes(hdf)), "the given bytes"
    elif isinstance(hdf, (str, os.PathLike)):
        source, what = os.fspath(hdf), repr(os.fspath(hdf))
    else:
        raise ModuleError(f"expected a path, bytes or an h5py file or group (got {type(hdf).__name__})")
    try:
        file = h5py.File(source, "r")
    except (OSError, ValueError) as e:
        raise ModuleError(f"cannot read {what} as an HDF5 weight file ({e})") from e
    with file:
        yield file


def _plan(group, layout):
    """Read and check everything the layout needs; return the assignments to make and the loaded vars."""
    actions, loaded, cache = [], {}, {}

    if layout.params:
        params, links = _subgroup(group, "params"), _subgroup(group, "links")
        for linkName, owner, _, var in layout.params:
            index = _linkIndex(links, linkName)
            if index not in cache:
                cache[index] = _readDataset(params, str(index), f"parameter {linkName!r} (params/{index})")
            value = _conform(cache[index], var.data, owner, f"parameter {linkName!r}")
            actions.append(_setter(var.data, value))
            loaded[index] = var

    if layout.attrs:
        attrs = _subgroup(group, "attrs")
        for attrName, owner, key, current in layout.attrs:
            stored = _readDataset(attrs, attrName, f"attribute {attrName!r}")
            if isinstance(current, (GPUArray, np.ndarray)):
                actions.append(_setter(current, _conform(stored, current, owner, f"attribute {attrName!r}")))
            else:
                actions.append(_scalarSetter(owner, key, _conformScalar(stored, current, attrName)))

    return actions, loaded


def _subgroup(group, name):
    sub = group.get(name)
    if not isinstance(sub, h5py.Group):
        raise ModuleError(f"the file has no '{name}' group (not a PuzzleLib weight file?)")
    return sub


def _linkIndex(links, linkName):
    link = links.get(linkName)
    if link is None:
        raise ModuleError(f"parameter {linkName!r} is missing from the file (links/{linkName})")
    if not isinstance(link, h5py.Dataset) or link.shape != () or link.dtype.kind not in "iu":
        raise ModuleError(f"links/{linkName} must be a scalar integer (got {link!r})")
    return int(link[()])


def _readDataset(group, key, what):
    dataset = group.get(key)
    if not isinstance(dataset, h5py.Dataset):
        raise ModuleError(f"{what} is missing from the file")
    try:
        return np.asarray(dataset[()])
    except Exception as e:  # a damaged chunk or filter pipeline
        raise ModuleError(f"{what} cannot be read ({type(e).__name__}: {e})") from e


def _conform(value, target, owner, what):
    """``value`` cast and shaped like ``target``; ModuleError when that would lose or invent data."""
    if not np.can_cast(value.dtype, target.dtype, "safe"):
        raise ModuleError(f"{what} has dtype {value.dtype}, which does not cast safely to {target.dtype}")
    if value.shape != target.shape and not _legacyShape(owner, value.shape, target.shape):
        raise ModuleError(f"{what} has shape {value.shape} in the file, expected {target.shape}")
    return np.ascontiguousarray(value.astype(target.dtype).reshape(target.shape))


def _legacyShape(owner, shape, expected):
    """The original keeps Conv1D tensors as 2-d ones with height 1: (out, in/g, 1, k), (1, out, 1, 1)."""
    from PuzzleLib.Modules.ConvND import ConvND

    return isinstance(owner, ConvND) and owner.nd == 1 and tuple(shape) == expected[:2] + (1,) + expected[2:]


def _conformScalar(value, current, attrName):
    if value.shape != ():
        raise ModuleError(f"attribute {attrName!r} has shape {value.shape} in the file, expected a scalar")
    expected = np.asarray(current).dtype
    if not np.can_cast(value.dtype, expected, "safe"):
        raise ModuleError(f"attribute {attrName!r} has dtype {value.dtype}, which does not cast safely to {expected}")
    return type(current)(value.item())


def _setter(target, value):
    if isinstance(target, GPUArray):
        return lambda: target.set(value)
    return lambda: np.copyto(target, value)


def _scalarSetter(owner, key, value):
    return lambda: owner.setAttr(key, value)
