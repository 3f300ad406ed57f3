"""Dispatch layer: picks the compute engine lazily and hands it plain arrays.

Nothing here imports an engine at import time. ``getEngine()`` resolves
``Config.backend`` on first use and caches the result until the setting changes.
"""

import importlib

from PuzzleLib import Config

# Backend -> engine package under PuzzleLib.Engines. Backends not listed have no engine yet.
_ENGINES = {Config.Backend.cpu: "cpu"}


class BackendError(Exception):
    pass


class _Engine:
    """An engine package whose submodules (``conv``, ``pad``, ...) load on first access."""

    def __init__(self, name):
        self.name = name
        self._package = importlib.import_module(f"PuzzleLib.Engines.{name}")

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        try:
            module = importlib.import_module(f"PuzzleLib.Engines.{self.name}.{attr}")
        except ModuleNotFoundError as e:
            if e.name != f"PuzzleLib.Engines.{self.name}.{attr}":
                raise
            raise AttributeError(f"engine {self.name!r} has no part {attr!r}") from None
        setattr(self, attr, module)
        return module


_cache = {}
# (the Config.backend value last resolved, its engine): one tuple, replaced whole, so a reader never pairs a
# setting with another setting's engine.
_last = (object(), None)


def availableBackends():
    return [backend for backend in Config.Backend if backend in _ENGINES]


def getEngine():
    global _last
    backend = setting = Config.backend
    # Every kernel call comes through here: the common case (setting unchanged) is one identity test.
    last = _last
    if backend is last[0]:
        return last[1]
    if isinstance(backend, str):
        try:
            backend = Config.Backend[backend.lower()]
        except KeyError:
            backend = None
    if backend not in _ENGINES:
        names = ", ".join(b.name for b in availableBackends())
        raise BackendError(f"Backend {setting!r} is not available (available: {names})")
    engine = _cache.get(backend)
    if engine is None:
        engine = _cache[backend] = _Engine(_ENGINES[backend])
    _last = (setting, engine)
    return engine
