"""Smoke tests of the main job, examples/train_digits.py: short runs of the real script."""

import gzip
import importlib.util
import os
import struct

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "examples", "train_digits.py")


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script, args):
    lines = []
    state = np.random.get_state()
    try:
        result = script.main(args + ["--no-progress"], log=lines.append)
    finally:
        np.random.set_state(state)
    return result, "\n".join(lines)


def test_digitsShortRunLearnsSavesAndReloadsIdentically(script, tmp_path):
    pytest.importorskip("sklearn")
    path = tmp_path / "lenet.hdf"
    result, output = run(script, ["--epochs", "4", "--subset", "600", "--min-accuracy", "0.85", "--save", str(path)])

    assert result["accuracy"] >= 0.85, output
    assert result["identical"] and result["reloadedAccuracy"] == result["accuracy"]
    assert result["ok"]
    assert path.is_file() and path.stat().st_size > 0
    assert "epoch   4/4" in output and "360 held-out test images" in output
    assert "identical to the trained model's" in output and "bit-identical" in output


def test_accuracyBarDecidesTheStatus(script):
    pytest.importorskip("sklearn")
    result, output = run(script, ["--epochs", "1", "--subset", "64", "--min-accuracy", "0.999"])
    assert not result["ok"] and result["identical"]
    assert "FAILED: test accuracy" in output


def writeIdx(path, magic, values):
    values = np.asarray(values, dtype=np.uint8)
    raw = struct.pack(f">{1 + values.ndim}I", magic, *values.shape) + values.tobytes()
    path.write_bytes(gzip.compress(raw))


def test_mnistPathTrainsOnIdxFiles(script, tmp_path):
    # A tiny stand-in for MNIST in the official file names (gzip); learning is checked on the digits above,
    # this checks the path: the IDX files are read, a 28x28 network trains on them, saves and reloads.
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 32), ("t10k", 16)):
        writeIdx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, size=(n, 28, 28)))
        writeIdx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", 2049, rng.integers(0, 10, size=n))

    args = ["--mnist", str(tmp_path), "--epochs", "1", "--batchsize", "16", "--min-accuracy", "0"]
    result, output = run(script, args)
    assert "MNIST from" in output and "32 training and 16 held-out test images of 28x28" in output
    assert "epoch   1/1" in output
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["identical"] and result["ok"]
