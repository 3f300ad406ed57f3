"""Convolution benchmark: PuzzleLib's CPU engine against torch and onnxruntime, side by side.

    python benchmarks/conv.py                      # every case, writes benchmarks/results/conv.json
    python benchmarks/conv.py --cases 1,4,page --reps 7 --optimize
    python benchmarks/conv.py --quick              # a fast, rougher run
    python benchmarks/conv.py --cases 4,5 --inprocess   # every engine in this one process (old method)

Ours runs through the public module (Conv1D/2D/3D: ``conv(data)`` for forward,
``conv.backward(grad, updParamGrads=False)`` for backward-data, ``conv.backward(grad, updGrad=False)`` for
backward-params); torch through F.convNd and aten.convolution_backward with an output mask per direction;
onnxruntime (forward only) through a one-node Conv model. Each engine runs in its own worker process
(ours never imports a peer); the parent asks the workers for one timed sample at a time, interleaved
round-robin within every repetition, so one engine runs at a time. ``--inprocess`` times all engines in
this one process instead (the old method). The reported time is the median over repetitions after warm-up.
Peak extra memory is measured in separate processes (see ``probe`` and benchmarks/README.md).
See benchmarks/README.md for the method and how to read the output.
"""

import os
import sys

# OpenBLAS reads these once when numpy loads it: a forced core type or L2 size changes which GEMM kernel runs.
# They must be gone before numpy is imported, so re-execute with a cleaned environment when they are set.
_BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if __name__ == "__main__" and any(name in os.environ for name in _BLAS_OVERRIDES):
    _removed = {name: os.environ[name] for name in _BLAS_OVERRIDES if name in os.environ}
    _env = {k: v for k, v in os.environ.items() if k not in _BLAS_OVERRIDES}
    _env["PUZZLELIB_BENCH_REMOVED"] = ",".join(f"{k}={v}" for k, v in _removed.items())
    os.execve(sys.executable, [sys.executable, *sys.argv], _env)

# Idle OpenMP threads of torch must sleep, not spin, or they steal a core from numpy's next call.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _peers  # noqa: E402

DEFAULT_JSON = HERE / "results" / "conv.json"
DIRECTIONS = _peers.DIRECTIONS
SHORT = {"forward": "fwd", "backwardData": "bwd-data", "backwardParams": "bwd-params"}
# Memory goal: RSS is counted in 4 KiB pages and the allocator rounds; smaller differences are noise.
MEMORY_SLACK = 64 * 1024
# The page example's forward goal, microseconds per call through the module.
PAGE_LIMIT_US = 10.0


def case(cid, label, nd, n, inmaps, outmaps, spatial, size, stride=1, pad=0, dilation=1, groups=1, bias=True,
         micro=False, default=True):
    def tup(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd

    return dict(id=cid, label=label, nd=nd, batch=n, inmaps=inmaps, outmaps=outmaps, spatial=tup(spatial),
                size=tup(size), stride=tup(stride), pad=tup(pad), dilation=tup(dilation), groups=groups,
                bias=bias, micro=micro, default=default)


CASES = [
    case("1", "N8 64->64 56x56 k3 p1", 2, 8, 64, 64, 56, 3, pad=1),
    case("2", "N8 256->64 56x56 k1", 2, 8, 256, 64, 56, 1),
    case("3", "N8 3->64 224x224 k7 s2 p3", 2, 8, 3, 64, 224, 7, stride=2, pad=3),
    case("4", "N8 512->512 7x7 k3 p1", 2, 8, 512, 512, 7, 3, pad=1),
    case("5", "N8 128->256 28x28 k3 s2 p1", 2, 8, 128, 256, 28, 3, stride=2, pad=1),
    case("6", "N8 256->256 g256 (depthwise) 28x28 k3 p1", 2, 8, 256, 256, 28, 3, pad=1, groups=256),
    case("7", "N8 128->128 g4 28x28 k3 p1", 2, 8, 128, 128, 28, 3, pad=1, groups=4),
    case("8", "N8 64->64 56x56 k3 p2 d2", 2, 8, 64, 64, 56, 3, pad=2, dilation=2),
    case("9", "N1 64->64 56x56 k3 p1", 2, 1, 64, 64, 56, 3, pad=1),
    # The Conv2D page's first example: np.arange(25) as 1x1x5x5, two maps, 2x2 kernel, no bias; per call.
    case("page", "page example 1x1x5x5 -> 2 maps k2, no bias", 2, 1, 1, 2, 5, 2, bias=False, micro=True),
    case("1d", "Conv1D N8 64->64 L4096 k3 p1", 1, 8, 64, 64, 4096, 3, pad=1),
    case("3d", "Conv3D N2 32->32 16x32x32 k3 p1", 3, 2, 32, 32, (16, 32, 32), 3, pad=1),
    # Tiny cases for the smoke test only (not in the default list).
    case("tiny2d", "tiny N2 4->6 g2 9x7 k3 s2 p1", 2, 2, 4, 6, (9, 7), 3, stride=2, pad=1, groups=2, default=False),
    case("tiny1d", "tiny Conv1D N2 3->4 L11 k3 d2", 1, 2, 3, 4, 11, 3, dilation=2, default=False),
    case("tiny3d", "tiny Conv3D N1 2->3 5x4x6 k2", 3, 1, 2, 3, (5, 4, 6), 2, default=False),
]
CASE_IDS = {c["id"]: c for c in CASES}
# The page example is "case 10" in the issue.
CASE_IDS["10"] = CASE_IDS["page"]


def outSpatial(c):
    return tuple((i + 2 * p - d * (k - 1) - 1) // s + 1
                 for i, k, s, p, d in zip(c["spatial"], c["size"], c["stride"], c["pad"], c["dilation"]))


def flops(c):
    """2 x multiply-adds of one direction (forward, backward-data and backward-params all do the same count)."""
    return 2 * c["batch"] * c["outmaps"] * math.prod(outSpatial(c)) * (c["inmaps"] // c["groups"]) * \
        math.prod(c["size"])


def makeArrays(c, np):
    """Seeded inputs; the page example uses the page's own data and weights."""
    rng = np.random.default_rng(1234)
    xshape = (c["batch"], c["inmaps"]) + c["spatial"]
    wshape = (c["outmaps"], c["inmaps"] // c["groups"]) + c["size"]
    yshape = (c["batch"], c["outmaps"]) + outSpatial(c)
    if c["id"] == "page":
        x = np.arange(25, dtype=np.float32).reshape(xshape)
        w1 = np.diag(np.full(2, 1)).reshape(1, 1, 2, 2)
        w2 = np.flip(np.diag(np.arange(1, 3) * -1), 1).reshape(1, 1, 2, 2)
        w = np.vstack([w1, w2]).astype(np.float32)
    else:
        x = rng.standard_normal(xshape, dtype=np.float32)
        w = rng.standard_normal(wshape, dtype=np.float32) * np.float32(1 / math.sqrt(wshape[1] * math.prod(c["size"])))
    return {"x": x, "W": w, "b": rng.standard_normal(c["outmaps"], dtype=np.float32),
            "dy": rng.standard_normal(yshape, dtype=np.float32)}


# -- measurement ------------------------------------------------------------------------------------------
def timeCall(fn, inner):
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


ENGINES = ("ours", "torch", "onnxruntime")
# Fewest untimed calls whose fastest sets a sample's loop count (benchmarkCase).
CALIBRATION_CALLS = 3


class LocalEngine:
    """One engine's calls for the current case, run in this process (by a worker, or by --inprocess)."""

    def __init__(self, name, module, args):
        self.name, self.module, self.args = name, module, args
        self.calls, self.results = {}, {}

    @classmethod
    def open(cls, name, args):
        """Imports the engine (its peer module, or nothing for ours); None if that peer is not installed."""
        module = None
        if name == "torch":
            module = _peers.availableTorch(args.threads)
        elif name == "onnxruntime":
            module = _peers.availableOrt()
        if name != "ours" and module is None:
            return None
        return cls(name, module, args)

    def setup(self, cid):
        """Builds the case's calls; ours also calls each direction once, in order, timing these first calls."""
        import numpy as np

        c = CASE_IDS[cid]
        self.calls, self.results = {}, {}
        gc.collect()
        arrays = makeArrays(c, np)
        info = {}
        if self.name == "ours":
            calls, self.results, conv, info["optimize"] = _peers.setupOurs(c, arrays, optimize=self.args.optimize)
            # The module needs the directions in this order (forward stores the input backward uses).
            info["first_call_ms"] = {d: timeCall(calls[d], 1) * 1e3 for d in DIRECTIONS}
            info["algos"] = _peers.algosOf(conv)
        elif self.name == "torch":
            calls, self.results, _ = _peers.setupTorch(self.module, c, arrays)
        else:
            calls, self.results, _ = _peers.setupOrt(self.module, c, arrays, self.args.threads)
        self.calls = calls
        info["directions"] = [d for d in DIRECTIONS if d in calls]
        info["loaded_peers"] = loadedPeers()
        return info

    def best(self, direction, warmup):
        """Warm-up: the fastest of ``warmup`` single calls, in seconds."""
        return min(timeCall(self.calls[direction], 1) for _ in range(warmup))

    @staticmethod
    def puzzlelibPath():
        """Which copy of the package was timed (PYTHONPATH can put another one before the repository's);
        ours only, once it has set up a case."""
        return os.path.dirname(sys.modules["PuzzleLib"].__file__)

    def sample(self, direction, inner):
        return timeCall(self.calls[direction], inner)

    def output(self, direction):
        """The direction's latest result arrays (for the cross-check)."""
        return self.results[direction]()

    @staticmethod
    def timing(on):
        """The garbage collector stays off while samples are taken (it would pause whichever call it hits)."""
        gc.collect()
        if on:
            gc.disable()
        else:
            gc.enable()

    def close(self):
        self.calls, self.results = {}, {}


class WorkerEngine:
    """The same interface as LocalEngine, answered by a worker process that imports only this engine.

    Requests and replies are JSON lines on the worker's stdin and stdout; the worker sends everything
    else it prints to stderr. Result arrays come back through .npy files in a temporary folder.
    """

    def __init__(self, name, args, tmpdir):
        self.name, self.tmpdir = name, tmpdir
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", name, "--threads", str(args.threads)]
        cmd += ["--optimize"] if args.optimize else []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.hello = None  # the worker's first line, read by ``started`` (so the workers start side by side)

    def started(self):
        self.hello = self._ask()
        return self.hello["available"]

    def _ask(self, **request):
        if request:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited (status {self.proc.poll()}); see its stderr above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the {self.name} worker failed on {request}:\n{reply['error']}")
        return reply["value"]

    def setup(self, cid):
        info = self._ask(cmd="setup", cid=cid)
        self.hello["loaded_peers"] = info["loaded_peers"]  # proof, kept in the JSON, of what the worker imported
        return info

    def best(self, direction, warmup):
        return self._ask(cmd="best", direction=direction, warmup=warmup)

    def puzzlelibPath(self):
        return self._ask(cmd="puzzlelibPath")

    def sample(self, direction, inner):
        return self._ask(cmd="sample", direction=direction, inner=inner)

    def output(self, direction):
        import numpy as np

        return tuple(np.load(p) for p in self._ask(cmd="output", direction=direction, dir=self.tmpdir))

    def timing(self, on):
        self._ask(cmd="timing", on=on)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def loadedPeers():
    return sorted(m for m in ("torch", "onnxruntime", "onnx") if m in sys.modules)


def worker(name, args):
    """Runs inside a worker process: imports only its own engine and answers the parent's requests."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (ours, the peers' libraries, C code) must not corrupt the replies

    def reply(value=None, error=None):
        replies.write(json.dumps({"error": error} if error is not None else {"value": value}) + "\n")

    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    engine = LocalEngine.open(name, args)
    reply({"available": engine is not None, "pid": os.getpid(), "blas": blasInfo(),
           "loaded_peers": loadedPeers()})
    if engine is None:
        return 0
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")  # the rest are the method's keyword arguments
        if cmd == "quit":
            break
        try:
            if cmd == "output":
                folder = request.pop("dir")
                paths = []
                for i, array in enumerate(engine.output(request["direction"])):
                    paths.append(os.path.join(folder, f"{name}-{request['direction']}-{i}.npy"))
                    np.save(paths[-1], array)
                reply(paths)
            else:
                reply(getattr(engine, cmd)(**request))
        except Exception:
            import traceback

            reply(error=traceback.format_exc())
    engine.close()
    return 0


def openEngines(wanted, args, tmpdir):
    """Ours and the wanted peers: worker processes (default) or this process (--inprocess); absent peers dropped."""
    names = [name for name in ENGINES if name == "ours" or name in wanted]
    if args.inprocess:
        handles = {name: LocalEngine.open(name, args) for name in names}
        return {name: h for name, h in handles.items() if h is not None}
    handles = {}
    try:
        for name in names:
            handles[name] = WorkerEngine(name, args, tmpdir)
        for name in names:
            if not handles[name].started():
                handles.pop(name).close()
    except BaseException:
        for handle in handles.values():
            handle.close()
        raise
    return handles


def benchmarkCase(c, engines, args, np):
    """Times every (engine, direction) round-robin; returns the per-case record (times in ms).

    ``engines`` maps an engine name to a LocalEngine or a WorkerEngine; only one engine runs at a time.
    """
    rec = {"first_call_ms": {}, "optimize": None, "algos": {}}
    keys = []
    for name, engine in engines.items():
        info = engine.setup(c["id"])
        if name == "ours":
            rec["first_call_ms"], rec["optimize"], rec["algos"] = info["first_call_ms"], info["optimize"], info["algos"]
        keys += [(name, d) for d in info["directions"]]

    # Warm-up, and how many calls one timed sample needs to last about args.sample_s (tiny cases loop). The
    # fastest of at least CALIBRATION_CALLS calls sets that count: a single call slowed by the host (--quick warms
    # up once) made the page example's samples single 4 us calls.
    inner = {}
    for name, direction in keys:
        best = engines[name].best(direction, max(args.warmup, CALIBRATION_CALLS))
        inner[(name, direction)] = max(1, min(100000, int(args.sample_s / max(best, 1e-7))))
    rec["check"] = crossCheck(engines, keys, np)

    samples = {key: [] for key in keys}
    for engine in engines.values():
        engine.timing(True)
    try:
        for rep in range(args.reps):
            # Rotate who goes first, so no key always runs first in a repetition. Within a repetition the
            # cyclic order, and so each key's predecessor, stays the same (ours' forward follows onnxruntime).
            shift = rep % len(keys)
            for name, direction in keys[shift:] + keys[:shift]:
                samples[(name, direction)].append(engines[name].sample(direction, inner[(name, direction)]))
    finally:
        for engine in engines.values():
            engine.timing(False)

    rec["ms"], rec["spread"], rec["calls_per_sample"], rec["samples_ms"] = {}, {}, {}, {}
    for (engine, direction), values in samples.items():
        med = statistics.median(values)
        # Every sample, in the order taken (repetition k started its round at key k mod len(keys)).
        rec["samples_ms"].setdefault(engine, {})[direction] = [v * 1e3 for v in values]
        q = statistics.quantiles(values, n=4) if len(values) >= 2 else [med, med, med]
        rec["ms"].setdefault(engine, {})[direction] = med * 1e3
        # Interquartile range over the median: how noisy this measurement was.
        rec["spread"].setdefault(engine, {})[direction] = (q[2] - q[0]) / med if med else 0.0
        rec["calls_per_sample"].setdefault(engine, {})[direction] = inner[(engine, direction)]
    return rec


def crossCheck(engines, keys, np):
    """Max |ours - peer| / max |peer| per direction against torch (onnxruntime for forward if no torch)."""
    out = {}
    for direction in DIRECTIONS:
        peer = next((e for e in ("torch", "onnxruntime") if (e, direction) in keys), None)
        if peer is None:
            continue
        ours, theirs = engines["ours"].output(direction), engines[peer].output(direction)
        err = 0.0
        for a, b in zip(ours, theirs):
            a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
            err = max(err, float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)))
        out[direction] = {"against": peer, "max_rel_error": err}
    return out


# -- memory probes (separate processes) -----------------------------------------------------------------------
def _status():
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) * 1024
    return values


def _resetPeak():
    """Linux: writing 5 to clear_refs resets VmHWM (the RSS high-water mark) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def probeDirection(fn, forget, tracemallocToo):
    """First-call time, retained and peak extra RSS of one direction; tracemalloc's numpy peak if asked."""
    gc.collect()
    before = _status()["VmRSS"]
    first = timeCall(fn, 1)
    forget()
    fn()
    forget()
    gc.collect()
    peaks = []
    for _ in range(2):
        base = _status()["VmRSS"]
        _resetPeak()
        fn()
        peaks.append(_status()["VmHWM"] - base)
        forget()
        gc.collect()
    rec = {"first_call_ms": first * 1e3, "peak_bytes": max(peaks), "retained_bytes": base - before}
    if tracemallocToo:
        import tracemalloc

        tracemalloc.start()
        fn()
        forget()
        gc.collect()
        tracemalloc.reset_peak()
        current = tracemalloc.get_traced_memory()[0]
        fn()
        rec["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1] - current
        tracemalloc.stop()
    return rec


def probeHeld(calls, conv, optimizeShape=None):
    """Ours: numpy memory the engine still holds after a direction's calls besides its scratch (per-shape
    tables, prepared runners), by tracemalloc.

    Tracing starts before the first call, so buffers an engine allocates once and keeps are seen; the
    module's own new results (``.data``, ``.grad``, which the PuzzleLib contract keeps) are subtracted,
    and the scratch kept for the next call is freed first (the peak counts it).
    With --optimize, what optimizeForShape leaves held counts against every direction.
    """
    import tracemalloc

    out = {}
    tracemalloc.start()
    try:
        optimizeHeld = 0
        if optimizeShape is not None:
            before = _numpyBytes(tracemalloc)
            _peers.runOptimize(conv, optimizeShape)
            gc.collect()
            optimizeHeld = max(0, _numpyBytes(tracemalloc) - before)
        for d in DIRECTIONS:
            gc.collect()
            _peers.freeOursHeld()
            before, resultsBefore = _numpyBytes(tracemalloc), _resultBytes(conv)
            calls[d]()
            calls[d]()
            _peers.freeOursHeld()  # the kept scratch is in the peak (probe's forget)
            gc.collect()
            grown = _numpyBytes(tracemalloc) - before - (_resultBytes(conv) - resultsBefore)
            out[d] = {"held_bytes": max(0, grown) + optimizeHeld, "optimize_held_bytes": optimizeHeld,
                      "algos": _peers.algosOf(conv)}
    finally:
        tracemalloc.stop()
    return out


_NUMPY_TRACE_DOMAIN = 389047  # numpy reports its data buffers to tracemalloc under this domain


def _numpyBytes(tracemalloc):
    """Bytes of numpy data buffers alive now (Python objects, e.g. from importing the engine, left out)."""
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, _NUMPY_TRACE_DOMAIN)])
    return sum(stat.size for stat in snap.statistics("filename"))


def _resultBytes(conv):
    return sum(a.nbytes for a in (conv.data, conv.grad) if a is not None)


def probe(engine, caseIds, args):
    """Runs inside a fresh subprocess: measures memory for the given cases, prints one JSON line."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    out = {}
    for cid in caseIds:
        c = CASE_IDS[cid]
        arrays = makeArrays(c, np)
        if engine == "oursHeld":
            calls, _, conv, _ = _peers.setupOurs(c, arrays, optimize=False)
            out[cid] = probeHeld(calls, conv, arrays["x"].shape if args.optimize else None)
            continue
        if engine == "ours":
            calls, _, conv, _ = _peers.setupOurs(c, arrays, optimize=args.optimize)
            # The scratch our engine keeps between calls is freed before each measured call, so its peak holds
            # the call's scratch as pages it touches, as torch's does its per-call scratchpad.
            forget = _peers.freeOursHeld
        elif engine == "torch":
            torch = _peers.availableTorch(args.threads)
            calls, _, last = _peers.setupTorch(torch, c, arrays)
            forget = last.clear
        else:
            # No arena: per-call allocations go back to the system and show in RSS (the arena would hide them).
            calls, _, _ = _peers.setupOrt(_peers.availableOrt(), c, arrays, args.threads, arena=False)

            def forget():
                pass
        out[cid] = {d: probeDirection(calls[d], forget, engine == "ours") for d in DIRECTIONS if d in calls}
        del calls
        gc.collect()
    print("PROBE " + json.dumps(out))


def runProbes(caseIds, engines, args):
    """Ours: one fresh process per case (so its first call includes import/compile); peers: one per engine."""
    env = dict(os.environ)
    # A fixed mmap threshold makes glibc hand every large freed block back at once (no dynamic threshold,
    # no caching of freed big blocks), so each call's peak shows in the RSS high-water mark.
    env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    jobs = [(e, [cid]) for cid in caseIds for e in ("ours", "oursHeld")] + [(e, list(caseIds)) for e in engines]
    found = {}
    for engine, ids in jobs:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_probe", engine, "--cases", ",".join(ids),
               "--threads", str(args.threads)] + (["--optimize"] if args.optimize else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("PROBE ")), None)
        if proc.returncode != 0 or line is None:
            print(f"warning: memory probe for {engine} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        for cid, rec in json.loads(line[6:]).items():
            if engine == "oursHeld":  # merged into ours: peak + held is our footprint for the memory goal
                for d, held in rec.items():
                    found.setdefault(cid, {}).setdefault("ours", {}).setdefault(d, {}).update(held)
            else:
                for d, r in rec.items():
                    found.setdefault(cid, {}).setdefault(engine, {}).setdefault(d, {}).update(r)
    for engines_ in found.values():
        for r in engines_.get("ours", {}).values():
            if "peak_bytes" in r:
                r["footprint_bytes"] = r["peak_bytes"] + r.get("held_bytes", 0)
    return found


# -- report ----------------------------------------------------------------------------------------------
def goals(c, rec):
    """Issue 4's goals for this case: met or missed, and by how much (percent slower / bigger than the peer)."""
    ms, out = rec["ms"], {}

    def speed(name, mine, peers):
        peers = {p: t for p, t in peers.items() if t is not None}
        if not peers:
            return
        peer, best = min(peers.items(), key=lambda kv: kv[1])
        out[name] = {"met": mine <= best, "ours_ms": mine, "peer": peer, "peer_ms": best,
                     "slower_by_pct": (mine / best - 1) * 100}

    speed("forward_vs_fastest_peer", ms["ours"]["forward"],
          {e: ms.get(e, {}).get("forward") for e in ("torch", "onnxruntime")})
    for d in ("backwardData", "backwardParams"):
        speed(f"{d}_vs_torch", ms["ours"][d], {"torch": ms.get("torch", {}).get(d)})
    mem = rec.get("memory", {})
    if "ours" in mem and "torch" in mem:
        for d in DIRECTIONS:
            # Ours counts its kept workspace too (torch/oneDNN allocates its scratchpad per call, so its
            # transient peak already holds it).
            mine = mem["ours"][d].get("footprint_bytes", mem["ours"][d]["peak_bytes"])
            theirs = mem["torch"][d]["peak_bytes"]
            out[f"memory_{d}_vs_torch"] = {"met": mine <= theirs + MEMORY_SLACK, "ours_bytes": mine,
                                           "torch_bytes": theirs, "extra_bytes": mine - theirs}
    if c["id"] == "page":
        us = ms["ours"]["forward"] * 1e3
        out["page_forward_under_10us"] = {"met": us < PAGE_LIMIT_US, "ours_us": us}
    return out


def fmtTime(ms, micro):
    return f"{ms * 1e3:8.2f}us" if micro else f"{ms:8.2f}ms"


def fmtMem(rec, engine, direction):
    try:
        m = rec["memory"][engine][direction]
        return f"{m.get('footprint_bytes', m['peak_bytes']) / 2**20:7.1f}"
    except KeyError:
        return "      -"


def printCase(c, rec, engines):
    gflop = flops(c) / 1e9
    print(f"\n[{c['id']}] {c['label']}   {gflop:.4g} GFLOP per direction")
    peers = [e for e in ("torch", "onnxruntime") if e in engines]
    head = f"  {'direction':<11}{'ours':>10} {'GF/s':>6} {'1st call':>10}"
    for p in peers:
        head += f" | {p[:5]:>5}{'':>5} {'GF/s':>6} {'speed':>6}"
    head += " | peak MiB: ours  torch   ort"
    print(head)
    for d in DIRECTIONS:
        mine = rec["ms"]["ours"][d]
        first = rec.get("memory", {}).get("ours", {}).get(d, {}).get("first_call_ms", rec["first_call_ms"][d])
        row = f"  {SHORT[d]:<11}{fmtTime(mine, c['micro'])} {flops(c) / mine / 1e6:6.1f} {first:8.1f}ms"
        for p in peers:
            t = rec["ms"].get(p, {}).get(d)
            if t is None:
                row += f" | {'-':>10} {'':>6} {'':>6}"
            else:
                # speed = peer time / our time: above 1 we are faster.
                row += f" | {fmtTime(t, c['micro'])} {flops(c) / t / 1e6:6.1f} {t / mine:5.2f}x"
        row += f" |       {fmtMem(rec, 'ours', d)}{fmtMem(rec, 'torch', d)}{fmtMem(rec, 'onnxruntime', d)}"
        print(row)
    bad = {d: v["max_rel_error"] for d, v in rec["check"].items() if v["max_rel_error"] > 1e-3}
    if bad:
        print(f"  WARNING: ours differs from the peer: {bad}")
    if rec.get("optimize") and rec["optimize"].get("available"):
        print(f"  optimizeForShape: {rec['optimize']['seconds']:.2f} s (first calls then come after it)")
    if rec.get("algos"):
        print(f"  algorithms: {rec['algos']}")
    noisy = [f"{e}/{SHORT[d]} {s:.0%}" for e, ds in rec["spread"].items() for d, s in ds.items() if s > 0.1]
    if noisy:
        print(f"  noisy (interquartile range / median > 10%): {', '.join(noisy)}")


def printGoals(results):
    print("\nGoals (issue 4, item 3): met / MISSED, with how far off")
    for item in results:
        parts = []
        for name, g in item["goals"].items():
            tag = "met" if g["met"] else "MISSED"
            if "slower_by_pct" in g:
                parts.append(f"{name} {tag} ({g['slower_by_pct']:+.0f}% vs {g['peer']})")
            elif "extra_bytes" in g:
                parts.append(f"{name} {tag} ({g['extra_bytes'] / 2**20:+.1f} MiB)")
            else:
                parts.append(f"{name} {tag} ({g['ours_us']:.1f} us)")
        print(f"  [{item['case']['id']}] " + "; ".join(parts))


def blasInfo():
    from threadpoolctl import threadpool_info

    return [{k: v for k, v in info.items() if k in ("internal_api", "architecture", "version", "num_threads",
                                                     "threading_layer", "filepath", "user_api")}
            for info in threadpool_info()]


METHODS = {
    "isolated": "each engine in its own long-lived worker process (ours never imports torch or onnxruntime); "
                "the parent asks the workers for one timed sample at a time, round-robin over (engine, direction) "
                "with the start rotated every repetition, so only one engine runs at a time; times are taken "
                "inside the worker",
    "inprocess": "all engines imported into one process and timed there, round-robin over (engine, direction) "
                 "with the start rotated every repetition (--inprocess)",
}


def workerInfo(engines):
    return {name: {k: e.hello[k] for k in ("pid", "loaded_peers", "blas")}
            for name, e in engines.items() if isinstance(e, WorkerEngine)}


def meta(args, engines, peers, np):
    method = "inprocess" if args.inprocess else "isolated"
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "python": platform.python_version(), "machine": platform.machine(), "cpu": _cpuName(),
        "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "threads": args.threads,
        "pid": os.getpid(),  # the parent's: no worker may be it
        "reps": args.reps, "warmup": args.warmup, "sample_s": args.sample_s, "optimize": args.optimize,
        "method": method, "method_text": METHODS[method],
        "workers": None,  # run() fills it in at the end: what each worker had imported by then
        # What numpy's BLAS is in the process that times ours (the ours worker, unless --inprocess).
        "numpy": np.__version__, "blas": blasInfo() if args.inprocess else engines["ours"].hello["blas"],
        "removed_env": os.environ.get("PUZZLELIB_BENCH_REMOVED", ""),
        "git": _gitState(),
        "peers": {e: _peers.version(e) for e in ("torch", "onnxruntime", "onnx")},
        "peers_used": sorted(peers),
        "units": "ms per call (median over reps); GFLOP/s = flops / time; speed = peer time / our time",
        "memory_method": "peak extra RSS during one warm call, in a separate process (VmHWM reset via "
                         "/proc/self/clear_refs, glibc MALLOC_MMAP_THRESHOLD_ fixed), minus RSS just before it; "
                         "includes the output; ours also by tracemalloc (numpy allocations), and the numpy "
                         "memory our engine keeps between calls (held_bytes, tracemalloc from before the first "
                         "call; footprint = peak + held is what the memory goal compares with torch's peak)",
    }


def _gitState():
    """The commit measured, and the package files that differ from it (the benchmark times the working tree)."""
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=HERE, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"),
            "modified": git("status", "--porcelain", "--", "../PuzzleLib").splitlines()}


def _cpuName():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def parseArgs(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(c["id"] for c in CASES if c["default"]),
                   help=f"comma-separated case ids (default: all but tiny*): {', '.join(CASE_IDS)}")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per engine and direction (11)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls before timing (2)")
    p.add_argument("--quick", action="store_true", help="3 repetitions, 1 warm-up, short samples")
    p.add_argument("--json", default=str(DEFAULT_JSON), help=f"where to write the table (default {DEFAULT_JSON})")
    p.add_argument("--optimize", action="store_true", help="call optimizeForShape first (if the module has it)")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (2)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory probes (separate processes)")
    p.add_argument("--peers", default="torch,onnxruntime", help="peers to compare against, comma-separated")
    p.add_argument("--inprocess", action="store_true",
                   help="time all engines in this one process (the old method) instead of one worker each")
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_worker", default=None, choices=ENGINES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 11)
    args.warmup = args.warmup or (1 if args.quick else 2)
    args.sample_s = 0.002 if args.quick else 0.02
    ids = [s.strip() for s in args.cases.split(",") if s.strip()]
    unknown = [s for s in ids if s not in CASE_IDS]
    if unknown:
        p.error(f"unknown case ids {unknown}; known: {', '.join(CASE_IDS)}")
    args.caseIds = list(dict.fromkeys(CASE_IDS[s]["id"] for s in ids))
    return args


def main(argv=None):
    args = parseArgs(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    if args._probe:
        return probe(args._probe, args.caseIds, args)
    if args._worker:
        return worker(args._worker, args)

    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    wanted = {s.strip() for s in args.peers.split(",") if s.strip()}
    with tempfile.TemporaryDirectory(prefix="conv-bench-") as tmpdir:
        engines = openEngines(wanted, args, tmpdir)
        try:
            return run(args, engines, np)
        finally:
            for engine in engines.values():
                engine.close()


def run(args, engines, np):
    peers = [e for e in engines if e != "ours"]
    info = meta(args, engines, peers, np)
    numpyBlas = [b for b in info["blas"] if b.get("user_api") == "blas" and "numpy" in b.get("filepath", "")]
    print("BLAS used by numpy: " + ("; ".join(
        f"{b.get('internal_api')} {b.get('version')}, kernel {b.get('architecture')}, {b.get('num_threads')} threads"
        for b in numpyBlas) or "not found by threadpoolctl"))
    print(f"removed from the environment: {info['removed_env'] or 'nothing (OPENBLAS_CORETYPE/L2_SIZE unset)'}")
    print(f"method: {info['method']}: {info['method_text']}")
    peerText = ", ".join(f"{e} {info['peers'][e]}" for e in peers) or "none"
    print(f"peers: {peerText}; threads {args.threads}; "
          f"{args.reps} reps after {args.warmup} warm-up; load average at start {info['loadavg_at_start']}")
    print("times: median per call (ms; us for the page example); speed = peer time / our time (>1: we are faster)\n"
          "1st call: our first call of that direction in a fresh process (includes import and compile; with\n"
          "--no-memory, in this run); peak MiB: extra RSS during one warm call, output included (separate process),\n"
          "plus, for ours, the workspace the engine keeps between calls (tracemalloc)")

    memory = {} if args.no_memory else runProbes(args.caseIds, info["peers_used"], args)
    results = []
    for cid in args.caseIds:
        c = CASE_IDS[cid]
        rec = benchmarkCase(c, engines, args, np)
        rec["memory"] = memory.get(cid, {})
        rec["goals"] = goals(c, rec)
        rec["gflop"] = flops(c) / 1e9
        rec["gflops"] = {e: {d: flops(c) / t / 1e6 for d, t in ds.items()} for e, ds in rec["ms"].items()}
        rec["speed_vs_peer"] = {e: {d: t / rec["ms"]["ours"][d] for d, t in ds.items()}
                                for e, ds in rec["ms"].items() if e != "ours"}
        printCase(c, rec, peers)
        results.append({"case": {k: v for k, v in c.items() if k != "default"}, **rec})
        sys.stdout.flush()
    printGoals(results)
    if results:  # ours has imported the package by now
        info["puzzlelib_path"] = engines["ours"].puzzlelibPath()
    info["workers"] = workerInfo(engines)  # what each worker had imported by the end
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": info, "results": results}, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
