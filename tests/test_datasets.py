import gzip
import struct

import numpy as np
import pytest

from PuzzleLib.Datasets import MnistLoader, readIdxImages, readIdxLabels


def writeIdx(path, magic, values, compress=False):
    """An IDX file written from the format's definition: big-endian magic and sizes, then ubytes."""
    values = np.asarray(values, dtype=np.uint8)
    raw = struct.pack(f">{1 + values.ndim}I", magic, *values.shape) + values.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def makeMnist(folder, ntrain, ntest, rows=28, cols=28, compress=False, dotted=False, seed=0):
    rng = np.random.default_rng(seed)
    sets = {}
    for prefix, n in (("train", ntrain), ("t10k", ntest)):
        images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        sep = "." if dotted else "-"
        suffix = ".gz" if compress else ""
        writeIdx(folder / f"{prefix}-images{sep}idx3-ubyte{suffix}", 2051, images, compress)
        writeIdx(folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}", 2049, labels, compress)
        sets[prefix] = (images, labels)
    return sets


@pytest.mark.parametrize("compress,dotted", [(False, False), (True, False), (False, True), (True, True)])
def test_loadSplitScalesAndShapes(tmp_path, compress, dotted):
    sets = makeMnist(tmp_path, ntrain=7, ntest=3, compress=compress, dotted=dotted)
    (trainX, trainY), (testX, testY) = MnistLoader().loadSplit(str(tmp_path))

    for (x, y), (images, labels) in (((trainX, trainY), sets["train"]), ((testX, testY), sets["t10k"])):
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == np.float32
        assert y.shape == (len(images),) and y.dtype == np.int32
        np.testing.assert_allclose(x[:, 0], images.astype(np.float64) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, labels)
    assert trainX.min() >= 0.0 and trainX.max() <= 1.0


def test_loadPutsTestSetFirstLikeTheOriginal(tmp_path):
    sets = makeMnist(tmp_path, ntrain=5, ntest=2)
    data, labels = MnistLoader().load(str(tmp_path))
    assert data.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(labels, np.concatenate([sets["t10k"][1], sets["train"][1]]))
    np.testing.assert_allclose(data[:2, 0], sets["t10k"][0] / 255.0, rtol=1e-6)


def test_readersKeepRawValuesAndOtherSizes(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(readIdxImages(writeIdx(tmp_path / "i", 2051, images)), images)
    np.testing.assert_array_equal(readIdxLabels(writeIdx(tmp_path / "l", 2049, [9, 0, 4])), [9, 0, 4])


def test_onSampleGetsTheWholeBatch(tmp_path):
    makeMnist(tmp_path, ntrain=4, ntest=2, rows=5, cols=6)
    loader = MnistLoader(onSample=lambda images: images.reshape(len(images), -1).astype(np.float32))
    (trainX, _), (testX, _) = loader.loadSplit(tmp_path)
    assert trainX.shape == (4, 30) and testX.shape == (2, 30)


@pytest.mark.parametrize("reader,magic", [(readIdxImages, 2049), (readIdxLabels, 2051), (readIdxLabels, 0)])
def test_wrongMagicIsValueError(tmp_path, reader, magic):
    values = np.zeros((2, 3, 3) if magic == 2049 else (3,), dtype=np.uint8)
    path = writeIdx(tmp_path / "f", magic, values)
    with pytest.raises(ValueError, match=f"bad magic number \\(got {magic}, expected"):
        reader(path)


def test_truncatedFileIsValueError(tmp_path):
    path = writeIdx(tmp_path / "f", 2051, np.zeros((4, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="header announces 3136 values"):
        readIdxImages(path)
    (tmp_path / "short").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        readIdxLabels(tmp_path / "short")


def test_missingFileNamesTheCandidates(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images.idx3-ubyte.gz"):
        MnistLoader().loadSplit(str(tmp_path))


def test_countMismatchBetweenImagesAndLabels(tmp_path):
    makeMnist(tmp_path, ntrain=3, ntest=2)
    writeIdx(tmp_path / "train-labels-idx1-ubyte", 2049, [1, 2])
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        MnistLoader().loadSplit(tmp_path)
