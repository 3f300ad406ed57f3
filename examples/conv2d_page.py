"""Every example of PuzzleLib's Conv2D documentation page, as written there.

Run: python examples/conv2d_page.py
It prints what the page prints, in the page's order.
"""

import numpy as np

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Containers import Sequential
from PuzzleLib.Modules import Conv2D
from PuzzleLib.Variable import Variable


def customW(size):
    w1 = np.diag(np.full(size, 1)).reshape((1, 1, size, size))
    w2 = np.flip(np.diag(np.arange(1, size + 1) * (-1)), 1).reshape((1, 1, size, size))
    w = np.vstack([w1, w2]).astype(np.float32)

    return w


def withCustomW(conv):
    """The page sets every example's weights with customW (and then leaves that line out)."""
    conv.setVar("W", Variable(gpuarray.to_gpu(customW(conv.W.shape[-1]))))
    return conv


def main():
    # Basic example
    batchsize, inmaps, h, w = 1, 1, 5, 5
    outmaps = 2

    data = gpuarray.to_gpu(np.arange(batchsize * inmaps * h * w).reshape((batchsize, inmaps, h, w)).astype(np.float32))
    print(data)

    size = 2
    conv = Conv2D(inmaps=inmaps, outmaps=outmaps, size=size, useBias=False)

    w = customW(size)
    print(w)

    conv.setVar("W", Variable(gpuarray.to_gpu(w)))

    conv(data)
    print(conv.data)

    # The size parameter
    conv = withCustomW(Conv2D(inmaps=inmaps, outmaps=outmaps, size=3, useBias=False))
    conv(data)
    print(conv.data)

    # The pad parameter
    conv = withCustomW(Conv2D(inmaps=inmaps, outmaps=outmaps, size=3, pad=1, useBias=False))
    conv(data)
    print(conv.data)

    conv = withCustomW(Conv2D(inmaps=inmaps, outmaps=outmaps, size=3, pad=(1, 0), useBias=False))
    conv(data)
    print(conv.data)

    # The stride parameter
    conv = withCustomW(Conv2D(inmaps=inmaps, outmaps=outmaps, size=2, stride=2, useBias=False))
    conv(data)
    print(conv.data)

    conv = withCustomW(Conv2D(inmaps=inmaps, outmaps=outmaps, size=2, stride=2, pad=3, useBias=False))
    conv(data)
    print(conv.data)

    conv = withCustomW(Conv2D(inmaps=inmaps, outmaps=outmaps, size=2, stride=(2, 4), pad=3, useBias=False))
    conv(data)
    print(conv.data)

    # The dilation parameter
    conv = withCustomW(Conv2D(inmaps=inmaps, outmaps=outmaps, size=2, stride=1, pad=0, dilation=2, useBias=False))
    conv(data)
    print(conv.data)

    conv = withCustomW(Conv2D(inmaps=inmaps, outmaps=outmaps, size=2, stride=1, pad=0, dilation=(3, 1),
                              useBias=False))
    print(conv(data))

    # The groups parameter
    batchsize, inmaps, h, w = 1, 16, 5, 5
    outmaps = 32
    groups = 1
    conv = Conv2D(inmaps, outmaps, size=2, initscheme="gaussian", groups=groups)
    print(conv.W.shape)

    groups = 4
    conv = Conv2D(inmaps, outmaps, size=2, initscheme="gaussian", groups=groups)
    print(conv.W.shape)

    # A depthwise separable block
    batchsize, inmaps, h, w = 1, 3, 5, 5
    outmaps = 32
    seq = Sequential()
    seq.append(Conv2D(inmaps, inmaps, size=4, initscheme="gaussian", groups=inmaps, name="depthwise"))
    seq.append(Conv2D(inmaps, outmaps, size=1, initscheme="gaussian", name="pointwise"))
    print(seq["depthwise"].W.shape)
    print(seq["pointwise"].W.shape)

    data = gpuarray.to_gpu(np.random.randn(batchsize, inmaps, h, w).astype(np.float32))
    seq(data)
    print(seq.data.shape)


if __name__ == "__main__":
    main()
