"""The Conv2D documentation page, to the digit: its examples as data, and its code run as a script."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Containers import Sequential
from PuzzleLib.Modules import Conv2D
from PuzzleLib.Variable import Variable

PAGE = "000_fd406b217a6f6584.txt"
EXAMPLES = "conv2d_doc_examples.json"


def customW(size):
    """The page's weight recipe, transcribed from its text."""
    w1 = np.diag(np.full(size, 1)).reshape((1, 1, size, size))
    w2 = np.flip(np.diag(np.arange(1, size + 1) * (-1)), 1).reshape((1, 1, size, size))
    return np.vstack([w1, w2]).astype(np.float32)


def _examples(spec):
    return json.loads((spec / EXAMPLES).read_text(encoding="utf-8"))


def _kwargs(raw):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def test_custom_w_matches_the_page():
    np.testing.assert_array_equal(customW(2), np.array([[[[1, 0], [0, 1]]], [[[0, -1], [-2, 0]]]], np.float32))


def test_json_examples_to_the_digit(spec):
    examples = _examples(spec)["examples"]
    assert len(examples) == 9
    data = gpuarray.to_gpu(np.arange(25).reshape((1, 1, 5, 5)).astype(np.float32))
    for example in examples:
        kwargs = _kwargs(example["kwargs"])
        conv = Conv2D(**kwargs)
        conv.setVar("W", Variable(gpuarray.to_gpu(customW(kwargs["size"]))))
        out = conv(data)
        expected = np.array(example["expected"], dtype=np.float32)
        assert out is conv.data
        assert out.shape == expected.shape, kwargs
        np.testing.assert_array_equal(out.get(), expected, err_msg=str(kwargs))
        # The page prints the array: what it prints must be numpy's text of the same values.
        assert str(out) == str(expected)


def test_json_shape_examples(spec):
    shapes = [tuple(e["expected"]) for e in _examples(spec)["shape_examples"]]
    assert Conv2D(16, 32, size=2, initscheme="gaussian", groups=1).W.shape == shapes[0]
    assert Conv2D(16, 32, size=2, initscheme="gaussian", groups=4).W.shape == shapes[1]
    seq = Sequential()
    seq.append(Conv2D(3, 3, size=4, initscheme="gaussian", groups=3, name="depthwise"))
    seq.append(Conv2D(3, 32, size=1, initscheme="gaussian", name="pointwise"))
    assert seq["depthwise"].W.shape == shapes[2]
    assert seq["pointwise"].W.shape == shapes[3]
    seq(gpuarray.to_gpu(np.random.randn(1, 3, 5, 5).astype(np.float32)))
    assert seq.data.shape == shapes[4]


def _pageBlocks(text):
    """Every block the page shows as output: arrays (lines from '[' to the closing brackets) and shape tuples."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("[["):
            block = [lines[i].rstrip()]
            depth = line.count("[") - line.count("]")
            while depth > 0:
                i += 1
                block.append(lines[i].rstrip())
                depth += lines[i].count("[") - lines[i].count("]")
            blocks.append("\n".join(block))
        elif re.fullmatch(r"\(\d+(, \d+)*\)", line):
            blocks.append(line)
        i += 1
    return blocks


def _normalise(text):
    """Runs of blank lines become one (numpy prints two between 4-d blocks, the page shows one)."""
    return re.sub(r"\n\s*\n+", "\n\n", "\n".join(line.rstrip() for line in text.splitlines())).strip()


# The page draws the padded input of the pad example to explain it; the code never prints it.
ILLUSTRATION_FIRST_ROW = "[[[[ 0.  0.  0.  0.  0.  0.  0.]"


def test_page_script_prints_every_block_in_order(spec):
    blocks = _pageBlocks((spec / PAGE).read_text(encoding="utf-8"))
    illustrations = [b for b in blocks if b.startswith(ILLUSTRATION_FIRST_ROW)]
    assert len(illustrations) == 1, "the page's padded-input illustration was not found where expected"
    blocks = [b for b in blocks if b not in illustrations]
    # 9 convolution outputs, the input, the weights, 4 weight shapes; the page's text stops before the last print.
    assert len(blocks) == 15

    result = subprocess.run([sys.executable, str(REPO / "examples" / "conv2d_page.py")], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    output = _normalise(result.stdout)
    position = 0
    for block in blocks:
        found = output.find(_normalise(block), position)
        assert found >= 0, f"block not printed (in order) by the page script:\n{block}"
        position = found + len(_normalise(block))
    # The last line the script prints is the block's output shape, which the page's text cuts off.
    assert output.splitlines()[-1] == "(1, 32, 2, 2)"


def test_page_blocks_parser_sees_the_arrays(spec):
    """Guard the parser above: it must see the input tensor and the first convolution output."""
    blocks = _pageBlocks((spec / PAGE).read_text(encoding="utf-8"))
    assert blocks[0].startswith("[[[[ 0.  1.  2.  3.  4.]")
    assert any(b.startswith("[[[[  6.   8.  10.  12.]") for b in blocks)


@pytest.mark.parametrize("example", range(9))
def test_json_examples_match_page_text(spec, example):
    """The JSON and the page text tell the same story: each expected array is printed on the page."""
    expected = np.array(_examples(spec)["examples"][example]["expected"], dtype=np.float32)
    page = _normalise((spec / PAGE).read_text(encoding="utf-8"))
    assert _normalise(str(expected)) in page
