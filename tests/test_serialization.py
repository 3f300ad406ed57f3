import io
import os

import h5py
import numpy as np
import pytest

from PuzzleLib import Serialization
from PuzzleLib.Backend import gpuarray
from PuzzleLib.Containers import Sequential
from PuzzleLib.Modules import Conv1D, Conv2D, Conv3D, ModuleError
from PuzzleLib.Variable import Variable

# The weight files the original PuzzleLib wrote, next to the repository (../shared/testdata).
ORIGINAL = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "testdata",
                                        "original-puzzlelib"))
needsOriginal = pytest.mark.skipif(not os.path.isdir(ORIGINAL), reason=f"original weight files not found at {ORIGINAL}")


def randomize(module, seed):
    """Give every parameter (biases included) distinct random values, so that loads are visible."""
    rng = np.random.default_rng(seed)
    for var in module.getVarTable():
        var.data.set(rng.standard_normal(var.data.shape).astype(np.float32))
    return module


def buildNet(name="net", seed=0):
    inner = Sequential(name="block")
    inner.append(Conv2D(4, 4, 3, pad=1, groups=2, name="dw"))
    inner.append(Conv2D(4, 3, 1, useBias=False))
    net = Sequential(name=name)
    net.append(Conv2D(2, 4, 3, pad=1, name="conv1"))
    net.append(inner)
    return randomize(net, seed)


def snapshot(module):
    return {tuple(names): (var, var.data, var.data.get()) for var, names in module.getVarTable().items()}


def assertSameParams(a, b):
    ta, tb = a.getVarTable(), b.getVarTable()
    byName = {tuple(names): var for var, names in tb.items()}
    assert sorted(map(tuple, ta.values())) == sorted(byName)
    for var, names in ta.items():
        other = byName[tuple(names)].data.get()
        assert other.dtype == var.data.dtype
        assert np.array_equal(other, var.data.get())  # bit-exact


def assertUnchanged(module, before):
    after = snapshot(module)
    assert after.keys() == before.keys()
    for key, (var, data, values) in before.items():
        nowVar, nowData, nowValues = after[key]
        assert nowVar is var and nowData is data
        assert np.array_equal(nowValues, values)


# -- round trips -----------------------------------------------------------------------------------
def test_roundTripThroughPathIsBitExact(tmp_path):
    net, fresh = buildNet(seed=1), buildNet(seed=2)
    path = tmp_path / "net.hdf"
    assert net.save(str(path)) is None
    fresh.load(str(path))
    assertSameParams(net, fresh)

    data = np.random.default_rng(3).standard_normal((2, 2, 5, 6)).astype(np.float32)
    assert np.array_equal(net(data).get(), fresh(data).get())


def test_roundTripThroughBytesAndPathlib(tmp_path):
    net, fresh = buildNet(seed=1), buildNet(seed=2)
    image = net.save()
    assert isinstance(image, bytes) and image[:8] == b"\x89HDF\r\n\x1a\n"
    fresh.load(image)
    assertSameParams(net, fresh)

    other = buildNet(seed=4)
    net.save(tmp_path / "net.hdf")  # a pathlib.Path works as well as a str
    other.load(tmp_path / "net.hdf")
    assertSameParams(net, other)


def test_roundTripThroughOpenFileLeavesItOpen(tmp_path):
    net, fresh = buildNet(seed=1), buildNet(seed=2)
    with h5py.File(tmp_path / "net.hdf", "w") as file:
        net.save(file)
        assert file.id.valid  # the caller's file is not closed
        file.create_dataset("extra", data=[1, 2])
    with h5py.File(tmp_path / "net.hdf", "r") as file:
        fresh.load(file)
        assert file.id.valid
        assert list(file["extra"][()]) == [1, 2]
    assertSameParams(net, fresh)


def test_roundTripIntoGroupOfLargerFile(tmp_path):
    net, fresh = buildNet(seed=1), buildNet(seed=2)
    with h5py.File(tmp_path / "all.hdf", "w") as file:
        net.save(file.create_group("model"))
    with h5py.File(tmp_path / "all.hdf", "r") as file:
        fresh.load(file["model"])
    assertSameParams(net, fresh)


def test_conv1dAnd3dRoundTrip():
    for build in (lambda: Conv1D(3, 4, 3, stride=2), lambda: Conv3D(2, 3, 2, groups=1, name="c3")):
        mod, fresh = randomize(build(), 1), randomize(build(), 2)
        fresh.load(mod.save())
        assertSameParams(mod, fresh)


# -- the layout ------------------------------------------------------------------------------------
def test_layoutOfNestedNamedContainers():
    net = buildNet()
    with h5py.File(io.BytesIO(net.save()), "r") as file:
        links = {name: int(file["links"][name][()]) for name in file["links"]}
        assert sorted(links) == ["net.block.1.W", "net.block.dw.W", "net.block.dw.b", "net.conv1.W", "net.conv1.b"]
        assert sorted(links.values()) == list(range(5))
        assert "attrs.net" in file and "attrs.net.block" in file and len(file["attrs.net"]) == 0
        for index in links.values():
            dataset = file["params"][str(index)]
            assert dataset.compression == "gzip" and dataset.dtype == np.float32
        conv1 = net["conv1"]
        assert np.array_equal(file["params"][str(links["net.conv1.W"])][()], conv1.W.get())
        assert np.array_equal(file["params"][str(links["net.conv1.b"])][()], conv1.b.get())


def test_layoutOfUnnamedModules():
    seq = Sequential().append(Conv2D(1, 2, 3)).append(Conv2D(2, 2, 1))
    with h5py.File(io.BytesIO(seq.save()), "r") as file:
        assert sorted(file["links"]) == [".0.W", ".0.b", ".1.W", ".1.b"]
        assert "attrs." in file
    with h5py.File(io.BytesIO(Conv2D(1, 2, 3).save(compress=None)), "r") as file:
        assert sorted(file["links"]) == [".W", ".b"]
        assert file["params"]["0"].compression is None


def test_sharedVariableIsStoredOnce():
    first, second = Conv2D(2, 2, 3, name="a"), Conv2D(2, 2, 3, name="b")
    second.setVar("W", first.getVar("W"))
    seq = randomize(Sequential(name="s").append(first).append(second), 5)
    with h5py.File(io.BytesIO(seq.save()), "r") as file:
        assert len(file["params"]) == 3
        assert int(file["links"]["s.a.W"][()]) == int(file["links"]["s.b.W"][()])

    fresh = Sequential(name="s").append(Conv2D(2, 2, 3, name="a")).append(Conv2D(2, 2, 3, name="b"))
    initvars = {}
    fresh.load(seq.save(), initvars=initvars)
    assert np.array_equal(fresh["a"].W.get(), first.W.get()) and np.array_equal(fresh["b"].W.get(), first.W.get())
    assert sorted(initvars) == [0, 1, 2]


def test_assumeUniqueNamesAndNameOverride():
    net, fresh = buildNet(seed=1), buildNet(seed=2)
    image = net.save(assumeUniqueNames=True)
    with h5py.File(io.BytesIO(image), "r") as file:
        assert sorted(file["links"]) == ["1.W", "conv1.W", "conv1.b", "dw.W", "dw.b"]
    fresh.load(image, assumeUniqueNames=True)
    assertSameParams(net, fresh)

    conv = randomize(Conv2D(2, 4, 3, pad=1), 7)
    conv.load(net.save(), name="net.conv1")  # load one child out of a container's file
    assert np.array_equal(conv.W.get(), net["conv1"].W.get())


def test_duplicateNamesAreRefusedBeforeWriting(tmp_path):
    seq = Sequential(name="s").append(Sequential(name="x").append(Conv2D(1, 1, 1, name="c")))
    seq.append(Sequential(name="y").append(Conv2D(1, 1, 1, name="c")))
    with pytest.raises(ModuleError, match="both named 'c.W'"):
        seq.save(str(tmp_path / "f.hdf"), assumeUniqueNames=True)
    assert os.listdir(tmp_path) == []


def test_attributesRoundTrip():
    def build(seed):
        mod = randomize(Conv2D(1, 2, 3, name="bn"), seed)
        mod.setAttr("mean", gpuarray.to_gpu(np.full((1, 2, 1, 1), seed, dtype=np.float32)))
        mod.setAttr("steps", seed * 10)
        mod.setAttr("label", "not state")  # configuration: neither saved nor expected
        return mod

    mod, fresh = build(1), build(2)
    image = mod.save()
    with h5py.File(io.BytesIO(image), "r") as file:
        assert sorted(file["attrs"]) == ["bn.mean", "bn.steps"]
    meanArray = fresh.mean
    fresh.load(image)
    assert fresh.mean is meanArray and np.array_equal(fresh.mean.get(), mod.mean.get())
    assert fresh.steps == 10 and type(fresh.steps) is int


def test_blueprintIsJson():
    net = buildNet()
    image = net.save(withBlueprint=True)
    blueprint = Serialization.loadBlueprint(image)
    assert blueprint["classname"] == "Sequential"
    assert blueprint["graph"] == ["conv1", "block"]
    assert blueprint["modules"]["conv1"]["scheme"]["pad"] == 1
    assert Serialization.loadBlueprint(net.save()) is None
    buildNet(seed=9).load(image)  # a blueprint in the file does not disturb loading


# -- files written by the original PuzzleLib ---------------------------------------------------------
def originalNetA():
    from PuzzleLib.Modules import Activation, Flatten, Linear

    net = Sequential(name="net")
    net.append(Conv2D(1, 4, 3, pad=1, name="conv1"))
    net.append(Activation("relu", name="act1"))
    net.append(Conv2D(4, 6, 3, stride=2, name="conv2"))
    net.append(Flatten(name="flat"))
    net.append(Linear(54, 5, name="fc"))
    return net


def originalNetB():
    from PuzzleLib.Modules import Flatten, Linear

    net = Sequential()
    net.append(Conv2D(2, 3, 2, dilation=2, pad=(1, 0)))
    net.append(Conv2D(3, 3, 3))
    net.append(Flatten())
    net.append(Linear(30, 4))
    return net


@needsOriginal
@pytest.mark.parametrize("folder,build", [("net_a", originalNetA), ("net_b", originalNetB)])
@pytest.mark.parametrize("how", ["path", "bytes", "h5py"])
def test_originalFilesReproduceOriginalOutputs(folder, build, how):
    path = os.path.join(ORIGINAL, folder, "net.hdf")
    net = build()
    if how == "path":
        net.load(path)
    elif how == "bytes":
        with open(path, "rb") as file:
            net.load(file.read())
    else:
        with h5py.File(path, "r") as file:
            net.load(file)
            assert file.id.valid

    data = np.load(os.path.join(ORIGINAL, folder, "input.npy"))
    expected = np.load(os.path.join(ORIGINAL, folder, "output.npy")).astype(np.float64)
    out = net(data).get().astype(np.float64)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # Loading really replaced the random initialisation: the biases were saved non-zero.
    assert np.abs(net.getByIndex(0).b.get()).max() > 0


@needsOriginal
def test_originalFileResavesIdentically():
    net = originalNetA()
    net.load(os.path.join(ORIGINAL, "net_a", "net.hdf"))
    original = os.path.join(ORIGINAL, "net_a", "net.hdf")
    with h5py.File(original, "r") as orig, h5py.File(io.BytesIO(net.save()), "r") as ours:
        assert sorted(orig["links"]) == sorted(ours["links"])
        assert sorted(k for k in orig if k.startswith("attrs")) == sorted(k for k in ours if k.startswith("attrs"))
        for name in orig["links"]:
            a = orig["params"][str(int(orig["links"][name][()]))][()]
            b = ours["params"][str(int(ours["links"][name][()]))][()]
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_conv1dLoadsTheOriginalFourDimensionalLayout():
    source = randomize(Conv1D(4, 6, 3, groups=2), 1)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:  # the original keeps W as (out, in/g, 1, k), b as (1, out, 1, 1)
        file["params/0"] = source.W.get().reshape(6, 2, 1, 3)
        file["params/1"] = source.b.get().reshape(1, 6, 1, 1)
        file["links/.W"], file["links/.b"] = 0, 1
    fresh = randomize(Conv1D(4, 6, 3, groups=2), 2)
    fresh.load(buffer.getvalue())
    assertSameParams(source, fresh)
    assert fresh.W.shape == (6, 2, 3)


# -- failures leave the module as it was -------------------------------------------------------------
def fileWith(build):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        build(file)
    return buffer.getvalue()


def test_truncatedFile(tmp_path):
    net = buildNet(seed=1)
    image = buildNet(seed=2).save()
    before = snapshot(net)
    for cut in (0, 100, len(image) // 2, len(image) - 1):
        with pytest.raises(ModuleError, match="Module net load error"):
            net.load(image[:cut])
        (tmp_path / "cut.hdf").write_bytes(image[:cut])
        with pytest.raises(ModuleError, match="Module net load error"):
            net.load(str(tmp_path / "cut.hdf"))
    assertUnchanged(net, before)


def test_corruptedDataNamesTheParameter(tmp_path):
    net = buildNet(seed=1)
    path = tmp_path / "net.hdf"
    buildNet(seed=2).save(str(path))
    with h5py.File(path, "r") as file:
        index = int(file["links"]["net.block.dw.W"][()])
        chunk = file["params"][str(index)].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xa5" * chunk.size  # not a deflate stream
    path.write_bytes(bytes(raw))

    before = snapshot(net)
    with pytest.raises(ModuleError, match=r"Module net load error: parameter 'net\.block\.dw\.W' .*cannot be read"):
        net.load(str(path))
    assertUnchanged(net, before)


def test_wrongShapeLaterInTheFileLeavesEarlierParametersAlone():
    net = buildNet(seed=1)
    other = Sequential(name="net").append(Conv2D(2, 4, 3, pad=1, name="conv1"))
    other.append(Sequential(name="block").append(Conv2D(4, 6, 3, pad=1, groups=2, name="dw"))
                 .append(Conv2D(4, 3, 1, useBias=False)))
    image = randomize(other, 2).save()

    before = snapshot(net)
    with pytest.raises(ModuleError) as info:
        net.load(image)
    message = str(info.value)
    assert message.startswith("Module net load error: parameter 'net.block.dw.W'")
    assert "(6, 2, 3, 3)" in message and "(4, 2, 3, 3)" in message
    assertUnchanged(net, before)  # conv1, which matched, was not assigned either


def test_unsafeDtypeIsRefusedAndSafeOneCast():
    conv = randomize(Conv2D(1, 2, 1), 1)
    before = snapshot(conv)
    wide = fileWith(lambda f: (f.create_dataset("params/0", data=np.ones((2, 1, 1, 1))),
                               f.create_dataset("params/1", data=np.ones((1, 2, 1, 1), np.float32)),
                               f.create_dataset("links/.W", data=0), f.create_dataset("links/.b", data=1)))
    with pytest.raises(ModuleError, match="parameter '.W' has dtype float64, which does not cast safely to float32"):
        conv.load(wide)
    assertUnchanged(conv, before)

    narrow = fileWith(lambda f: (f.create_dataset("params/0", data=np.full((2, 1, 1, 1), 3, np.int16)),
                                 f.create_dataset("params/1", data=np.ones((1, 2, 1, 1), np.float16)),
                                 f.create_dataset("links/.W", data=0), f.create_dataset("links/.b", data=1)))
    conv.load(narrow)
    assert conv.W.dtype == np.float32 and np.array_equal(conv.W.get(), np.full((2, 1, 1, 1), 3, np.float32))


@pytest.mark.parametrize("build,match", [
    (lambda f: f.create_dataset("x", data=1), "no 'params' group"),
    (lambda f: (f.create_group("params"), f.create_dataset("links/.b", data=0)), r"parameter '\.W' is missing"),
    (lambda f: (f.create_group("params"), f.create_dataset("links/.W", data=[0, 1])), "must be a scalar integer"),
    (lambda f: (f.create_group("params"), f.create_dataset("links/.W", data=7)), r"params/7\) is missing"),
    (lambda f: (f.create_dataset("params/0", data=np.bytes_(b"cos\nsystem\n")), f.create_dataset("links/.W", data=0)),
     "does not cast safely"),
])
def test_malformedFiles(build, match):
    conv = randomize(Conv2D(1, 2, 1), 1)
    before = snapshot(conv)
    with pytest.raises(ModuleError, match=match):
        conv.load(fileWith(build))
    assertUnchanged(conv, before)


def test_badSourceTypes(tmp_path):
    conv = Conv2D(1, 2, 1)
    with pytest.raises(ModuleError, match="expected a path, bytes or an h5py file"):
        conv.load(12)
    with pytest.raises(ModuleError, match="load error: cannot read"):
        conv.load(str(tmp_path / "missing.hdf"))
    with pytest.raises(ModuleError, match="save expects a path"):
        conv.save(12)


# -- atomic writes -----------------------------------------------------------------------------------
def test_failedSaveKeepsTheOldFileAndLeavesNoTemporary(tmp_path, monkeypatch):
    path = tmp_path / "net.hdf"
    old = buildNet(seed=1)
    old.save(str(path))
    oldBytes = path.read_bytes()

    realWrite = Serialization._writeModule

    def crashHalfWay(group, *args, **kwargs):
        realWrite(group, *args, **kwargs)  # everything written, then the process "dies" before the rename
        group.file.flush()
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(Serialization, "_writeModule", crashHalfWay)
    with pytest.raises(RuntimeError, match="simulated crash"):
        buildNet(seed=2).save(str(path))
    monkeypatch.undo()

    def failRename(src, dst):
        raise OSError("simulated rename failure")

    monkeypatch.setattr(os, "replace", failRename)
    with pytest.raises(OSError, match="simulated rename failure"):
        buildNet(seed=3).save(str(path))
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["net.hdf"]
    assert path.read_bytes() == oldBytes
    fresh = buildNet(seed=4)
    fresh.load(str(path))
    assertSameParams(old, fresh)


def test_saveReplacesAndKeepsPermissions(tmp_path):
    path = tmp_path / "net.hdf"
    buildNet(seed=1).save(str(path))
    os.chmod(path, 0o640)
    net = buildNet(seed=2)
    net.save(str(path))
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["net.hdf"]
    fresh = buildNet(seed=3)
    fresh.load(str(path))
    assertSameParams(net, fresh)


def test_saveIntoMissingFolderFailsCleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        Conv2D(1, 1, 1).save(str(tmp_path / "nowhere" / "net.hdf"))
    assert os.listdir(tmp_path) == []


def test_loadAssignsInPlace():
    # Loading assigns values in place: Variables and their arrays keep their identity.
    conv = Conv2D(1, 2, 3)
    var, array = conv.getVar("W"), conv.W
    conv.load(randomize(Conv2D(1, 2, 3), 3).save())
    assert conv.getVar("W") is var and conv.W is array
    assert isinstance(var, Variable)


def test_batchNormRunningStatisticsRoundTrip():
    from PuzzleLib.Modules import BatchNorm2D

    def build(seed):
        np.random.seed(seed)
        return Sequential(name="s").append(Conv2D(2, 3, 3, name="conv")).append(BatchNorm2D(3, name="bn"))

    net, fresh = build(1), build(2)
    data = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32)
    for _ in range(3):
        net(data * 3 + 1)  # train mode: the running statistics move away from (0, 1)
    assert not np.allclose(net["bn"].mean.get(), 0)

    image = net.save()
    with h5py.File(io.BytesIO(image), "r") as file:
        assert sorted(file["attrs"]) == ["s.bn.mean", "s.bn.var"]
    fresh.load(image)
    assertSameParams(net, fresh)
    for attr in ("mean", "var"):
        assert np.array_equal(getattr(fresh["bn"], attr).get(), getattr(net["bn"], attr).get())
    net.evalMode()
    fresh.evalMode()
    assert np.array_equal(net(data).get(), fresh(data).get())

    # A wrong-shaped statistic is refused by name, and nothing is assigned.
    other = Sequential(name="s").append(Conv2D(2, 3, 3, name="conv")).append(BatchNorm2D(3, name="bn"))
    with h5py.File(io.BytesIO(image), "r") as file:
        bad = fileWith(lambda f: ([file.copy(file[key], f, key) for key in file],
                                  f["attrs"].__delitem__("s.bn.var"),
                                  f["attrs"].create_dataset("s.bn.var", data=np.ones((1, 4, 1, 1), np.float32))))
    before = snapshot(other)
    meanBefore = other["bn"].mean.get()
    with pytest.raises(ModuleError, match=r"attribute 's\.bn\.var' has shape \(1, 4, 1, 1\) in the file"):
        other.load(bad)
    assertUnchanged(other, before)
    assert np.array_equal(other["bn"].mean.get(), meanBefore)
