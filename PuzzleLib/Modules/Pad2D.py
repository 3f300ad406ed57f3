"""Padding of 2-D maps: pad is an int or (top, bottom, left, right)."""

from PuzzleLib.Modules.PadND import PadND


class Pad2D(PadND):
    def __init__(self, pad, mode="constant", fillValue=None, name=None):
        super().__init__(2, pad, mode=mode, fillValue=fillValue, name=name)
