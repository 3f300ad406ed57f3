"""PuzzleLib.Config and engine selection: lazy, CPU by default, clear errors for unavailable engines."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from PuzzleLib import Config
from PuzzleLib.Backend import BackendError, availableBackends, getEngine, gpuarray
from PuzzleLib.Modules import Conv2D


def runPython(code, **env):
    """Run code in a fresh interpreter with extra environment variables; returns the completed process."""
    environment = dict(os.environ)
    environment.pop("PUZZLELIB_BACKEND", None)
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=environment)


def test_backend_enum():
    assert [(b.name, b.value) for b in Config.Backend] == [("cuda", 0), ("hip", 1), ("cpu", 2), ("intel", 3)]


def test_cpu_is_the_default_and_available():
    result = runPython("from PuzzleLib import Config; print(Config.backend.name)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpu"
    assert Config.Backend.cpu in availableBackends()


def test_environment_variable_selects_backend():
    result = runPython("from PuzzleLib import Config; print(Config.backend.name)", PUZZLELIB_BACKEND="CUDA")
    assert result.stdout.strip() == "cuda", result.stderr


def test_environment_variable_unknown_name():
    result = runPython("import PuzzleLib.Config", PUZZLELIB_BACKEND="tpu")
    assert result.returncode != 0
    assert "tpu" in result.stderr and "cpu" in result.stderr


def test_unavailable_engine_from_environment_fails_on_first_use_naming_available():
    code = (
        "import numpy as np\n"
        "from PuzzleLib.Modules import Conv2D\n"       # importing and constructing touch no engine
        "from PuzzleLib.Backend import BackendError\n"
        "conv = Conv2D(1, 1, 1, initscheme='gaussian', useBias=False)\n"
        "try:\n"
        "    conv(np.ones((1, 1, 2, 2), np.float32))\n"
        "except BackendError as e:\n"
        "    print('ERROR', e)\n"
    )
    result = runPython(code, PUZZLELIB_BACKEND="hip")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERROR"), result.stdout
    assert "hip" in result.stdout and "cpu" in result.stdout


@pytest.mark.parametrize("backend", [Config.Backend.cuda, Config.Backend.intel, "hip", "nonsense"])
def test_unavailable_engine_set_in_config(backend):
    Config.backend = backend
    with pytest.raises(BackendError) as info:
        getEngine()
    assert "cpu" in str(info.value) and "available" in str(info.value)
    name = backend.name if isinstance(backend, Config.Backend) else backend
    assert name in str(info.value)


def test_switching_back_to_cpu_works():
    conv = Conv2D(1, 1, 1, initscheme="gaussian", useBias=False)
    Config.backend = Config.Backend.cuda
    with pytest.raises(BackendError):
        conv(np.ones((1, 1, 2, 2), np.float32))
    Config.backend = "cpu"
    assert conv(np.ones((1, 1, 2, 2), np.float32)).shape == (1, 1, 2, 2)
    Config.backend = Config.Backend.cpu
    assert getEngine().conv is not None


ENGINE_MODULES = "[m for m in sys.modules if m.startswith('PuzzleLib.Engines.')]"


@pytest.mark.parametrize("imports", [
    "import PuzzleLib",
    "import PuzzleLib.Modules",
    "from PuzzleLib.Modules import Conv2D, Conv1D, Conv3D, Pad2D",
    "from PuzzleLib.Containers import Sequential",
    "from PuzzleLib.Backend import gpuarray, Dnn",
    "from PuzzleLib.Variable import Variable",
])
def test_import_touches_no_engine(imports):
    result = runPython(f"import sys\n{imports}\nprint({ENGINE_MODULES})")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_engine_loads_lazily_on_first_use():
    code = (
        "import sys\nimport numpy as np\nfrom PuzzleLib.Modules import Conv2D\n"
        "conv = Conv2D(1, 2, 2)\n"
        f"print('conv' in str({ENGINE_MODULES}))\n"
        "conv(np.ones((1, 1, 3, 3), np.float32))\n"
        "print('PuzzleLib.Engines.cpu.conv' in sys.modules)\n"
    )
    result = runPython(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_switches_exist_with_defaults():
    for name, default in [("globalEvalMode", False), ("disableDtypeShapeChecks", False),
                          ("disableModuleCompatChecks", False), ("verifyData", False), ("showWarnings", True)]:
        assert getattr(Config, name) is default, name


def test_global_eval_mode():
    Config.globalEvalMode = True
    conv = Conv2D(1, 1, 1)
    assert conv.train is False
    assert conv.vars["W"].grad is None


def test_disable_dtype_shape_checks():
    conv = Conv2D(2, 2, 1, initscheme="gaussian", useBias=False)
    Config.disableDtypeShapeChecks = True
    # A wrong map count no longer raises ModuleError at the module layer (the engine may still fail).
    with pytest.raises(Exception) as info:
        conv(gpuarray.to_gpu(np.ones((1, 3, 2, 2), np.float32)))
    assert type(info.value).__name__ != "ModuleError"
