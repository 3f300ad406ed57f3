"""Global switches, named as in PuzzleLib.

``backend`` picks the compute engine. It is read lazily, when the first array
operation needs an engine, so it may be set right after ``import PuzzleLib.Config``.
The ``PUZZLELIB_BACKEND`` environment variable (``cpu``, ``cuda``, ...) sets the
initial value.
"""

import enum
import os


class Backend(enum.Enum):
    cuda = 0
    hip = 1
    cpu = 2
    intel = 3


class ConfigError(Exception):
    pass


def _backendFromEnv():
    value = os.environ.get("PUZZLELIB_BACKEND", "").strip().lower()
    if not value:
        return Backend.cpu
    try:
        return Backend[value]
    except KeyError:
        names = ", ".join(b.name for b in Backend)
        raise ConfigError(f"PUZZLELIB_BACKEND={value!r} is not a backend name (one of: {names})") from None


backend = _backendFromEnv()

# New modules start in eval mode and new Variables get no gradient.
globalEvalMode = False
# Skip every shape and dtype check in Module.__call__ and Module.backward.
disableDtypeShapeChecks = False
disableModuleCompatChecks = False
# Range checks on cost labels.
verifyData = False
showWarnings = True
