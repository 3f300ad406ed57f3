"""3-D convolution: ConvND with nd=3."""

from PuzzleLib.Modules.ConvND import ConvND


class Conv3D(ConvND):
    def __init__(self, inmaps, outmaps, size, stride=1, pad=0, dilation=1, wscale=1.0, useBias=True, name=None,
                 initscheme=None, empty=False, groups=1):
        super().__init__(3, inmaps, outmaps, size, stride=stride, pad=pad, dilation=dilation, wscale=wscale,
                         useBias=useBias, name=name, initscheme=initscheme, empty=empty, groups=groups)
