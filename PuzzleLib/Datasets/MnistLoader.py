"""A reader for MNIST in its IDX file format (plain or gzip-compressed).

IDX files are big-endian: a 4-byte magic number (2051 for a ubyte image file with three
dimensions, 2049 for a ubyte label file with one), one 4-byte size per dimension, then the
values row-major.
"""

import gzip
import os
import struct

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# MNIST's four files, under the names of the official download; a dot before "idx" (as in
# the original PuzzleLib) and a ".gz" suffix are accepted too.
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def _readBytes(path):
    with open(path, "rb") as file:
        raw = file.read()
    # Detect compression by content, not by name: a gzip stream starts with 1f 8b.
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _readIdx(path, magic, ndim):
    raw = _readBytes(path)
    headerSize = 4 * (1 + ndim)
    if len(raw) < headerSize:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes, expected at least {headerSize})")
    got, *dims = struct.unpack(f">{1 + ndim}I", raw[:headerSize])
    if got != magic:
        raise ValueError(f"{path}: bad magic number (got {got}, expected {magic})")
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - headerSize != count:
        raise ValueError(
            f"{path}: header announces {count} values of shape {tuple(dims)}, the file holds {len(raw) - headerSize}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=headerSize).reshape(dims)


def readIdxImages(path):
    """The images of an IDX image file as uint8, shape (N, rows, cols)."""
    return _readIdx(path, IMAGES_MAGIC, 3)


def readIdxLabels(path):
    """The labels of an IDX label file as uint8, shape (N,)."""
    return _readIdx(path, LABELS_MAGIC, 1)


def findIdxFile(folder, name):
    """The path of an MNIST file in ``folder`` under any of its usual spellings."""
    dotted = name.replace("-idx", ".idx")
    candidates = [name, dotted, name + ".gz", dotted + ".gz"]
    for candidate in candidates:
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"No MNIST file {name} in {folder} (looked for: {', '.join(candidates)})")


class MnistLoader:
    """Reads MNIST from a folder holding its four IDX files.

    onSample: optional function applied to a whole uint8 batch of images (N, rows, cols) and
    returning the float samples (N, ...); by default images are scaled by 1/255 to float32
    (N, 1, rows, cols).
    """

    def __init__(self, onSample=None):
        self.onSample = self._scale if onSample is None else onSample

    @staticmethod
    def _scale(images):
        return (images.astype(np.float32) / np.float32(255))[:, np.newaxis]

    def _pair(self, path, imagesName, labelsName):
        images = readIdxImages(findIdxFile(path, imagesName))
        labels = readIdxLabels(findIdxFile(path, labelsName))
        if len(images) != len(labels):
            raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels in {imagesName}/{labelsName}")
        return np.ascontiguousarray(self.onSample(images)), labels.astype(np.int32)

    def loadSplit(self, path):
        """((train data, train labels), (test data, test labels))."""
        return self._pair(path, TRAIN_IMAGES, TRAIN_LABELS), self._pair(path, TEST_IMAGES, TEST_LABELS)

    def load(self, path, log=False):
        """(data, labels) for all 70,000 samples: the test set first, then the training set,
        the order in which the original PuzzleLib returns them (data[:10000] is the test set)."""
        (trainData, trainLabels), (testData, testLabels) = self.loadSplit(path)
        if log:
            print(f"[{type(self).__name__}] Loaded {len(trainData)} training and {len(testData)} test samples")
        return np.concatenate([testData, trainData]), np.concatenate([testLabels, trainLabels])
