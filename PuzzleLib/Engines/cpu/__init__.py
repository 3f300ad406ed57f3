"""The CPU engine: numpy and the BLAS numpy links against.

Its parts (``conv``, ``pad``, ``blas``, ...) are submodules, loaded on first use by
``PuzzleLib.Backend.getEngine()``.
"""

name = "cpu"
