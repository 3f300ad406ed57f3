"""Per-algorithm timings of the CPU convolution engine (no module layer, no peers).

    python benchmarks/engine_micro.py                 # every case, every applicable algorithm
    python benchmarks/engine_micro.py --cases 1,6 --reps 9 --tile 4,8,16   # also sweep the tile bound (MiB)
    python benchmarks/engine_micro.py --page          # per-call overhead of the page's first example
    python benchmarks/engine_micro.py --sgemm         # the engine's GEMM tile against np.matmul, one thread

For each case and direction it runs every applicable algorithm round-robin (interleaved, so a
noisy neighbour hits all alike), after one warm-up call each, and prints the median ms and GFLOP/s
and the algorithm the heuristic would pick. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed first.
"""

import os
import sys

_BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if __name__ == "__main__" and any(name in os.environ for name in _BLAS_OVERRIDES):
    os.execve(sys.executable, [sys.executable, *sys.argv],
              {k: v for k, v in os.environ.items() if k not in _BLAS_OVERRIDES})

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from PuzzleLib.Engines.cpu import conv, conv_common  # noqa: E402

# id: (N, C, spatial, O, kernel, stride, pad, dilation, groups) - the cases of benchmarks/conv.py.
CASES = {
    "1": (8, 64, (56, 56), 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "2": (8, 256, (56, 56), 64, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    "3": (8, 3, (224, 224), 64, (7, 7), (2, 2), (3, 3), (1, 1), 1),
    "4": (8, 512, (7, 7), 512, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "5": (8, 128, (28, 28), 256, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    "6": (8, 256, (28, 28), 256, (3, 3), (1, 1), (1, 1), (1, 1), 256),
    "7": (8, 128, (28, 28), 128, (3, 3), (1, 1), (1, 1), (1, 1), 4),
    "8": (8, 64, (56, 56), 64, (3, 3), (1, 1), (2, 2), (2, 2), 1),
    "9": (1, 64, (56, 56), 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "1d": (8, 64, (1024,), 64, (5,), (1,), (2,), (1,), 1),
    "3d": (4, 32, (16, 28, 28), 32, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1),
}


def flops(case):
    n, c, spatial, o, kernel, stride, pad, dilation, groups = case
    out = conv.outputShape(spatial, kernel, stride, pad, dilation)
    return 2 * n * o * np.prod(out) * (c // groups) * np.prod(kernel)


def runCase(cid, case, reps, directions):
    n, c, spatial, o, kernel, stride, pad, dilation, groups = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c) + spatial).astype(np.float32)
    w = rng.standard_normal((o, c // groups) + kernel).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    out = conv.outputShape(spatial, kernel, stride, pad, dilation)
    dy = rng.standard_normal((n, o) + out).astype(np.float32)
    calls = {
        "forward": lambda a: conv.forward(x, w, b, stride, pad, dilation, groups, algo=a),
        "backwardData": lambda a: conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo=a),
        "backwardParams": lambda a: conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups,
                                                        algo=a),
    }
    gflop = flops(case) / 1e9
    for direction in directions:
        algos = conv.algorithms(direction, x.shape, w.shape, stride, pad, dilation, groups)
        pick = conv.chooseAlgorithm(direction, x.shape, w.shape, stride, pad, dilation, groups)
        times = {a: [] for a in algos}
        for a in algos:
            calls[direction](a)
        for _ in range(reps):
            for a in algos:
                start = time.perf_counter()
                calls[direction](a)
                times[a].append(time.perf_counter() - start)
        row = "  ".join(f"{a} {statistics.median(t) * 1e3:8.2f} ms {gflop / statistics.median(t):6.1f} GF/s"
                        for a, t in times.items())
        print(f"case {cid:>3} {direction:<15} pick={pick:<9} {row}", flush=True)


def pageOverhead(reps=20000):
    from PuzzleLib.Backend import gpuarray
    from PuzzleLib.Modules.Conv2D import Conv2D

    conv2 = Conv2D(1, 2, 2, useBias=False)
    data = gpuarray.to_gpu(np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5))
    for _ in range(100):
        conv2(data)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            conv2(data)
        samples.append((time.perf_counter() - start) / reps)
    pick = conv.chooseAlgorithm("forward", (1, 1, 5, 5), (2, 1, 2, 2), (1, 1), (0, 0), (1, 1), 1)
    print(f"page example (1x1x5x5, 2 maps, 2x2): {statistics.median(samples) * 1e6:.2f} us per forward call "
          f"through the module (algorithm {pick})")


# (M, K, N) of thin products: a 7x7 stem's im2col tile as BLAS gets it (147 taps and a bias row; case 3 itself
# runs conv_implicit), case 5's per-item GEMM, case 4's F(2x2) block.
SGEMM_SHAPES = ((64, 148, 3472), (256, 1152, 196), (504, 512, 128))


def sgemmVersusBlas(reps=21):
    """sgemm (A packed, B and C in place) against np.matmul on one thread, interleaved after one untimed call
    each, median GFLOP/s."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        for m, k, n in SGEMM_SHAPES:
            rates = _sgemmShape(rng, m, k, n, reps)
            row = "  ".join(f"{name} {rate:6.1f} GFLOP/s" for name, rate in rates.items())
            print(f"({m} x {k}) @ ({k} x {n}): {row}")


def _sgemmShape(rng, m, k, n, reps):
    from PuzzleLib.Engines.cpu import sgemm

    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), dtype=np.float32)
    panels, scratch = sgemm.packA(a), sgemm.Scratch()
    calls = {"sgemm": lambda: sgemm.gemm(panels, b, c, scratch=scratch, packed=True),
             "np.matmul": lambda: np.matmul(a, b, out=c)}
    for call in calls.values():
        call()  # one untimed call each, as runCase does (sgemm's first call may compile its kernel)
    samples = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return {name: 2 * m * k * n / statistics.median(t) / 1e9 for name, t in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--directions", default="forward,backwardData,backwardParams")
    parser.add_argument("--tile", default="", help="comma-separated tile bounds in MiB to sweep")
    parser.add_argument("--page", action="store_true", help="only the page example's per-call overhead")
    parser.add_argument("--sgemm", action="store_true", help="only the GEMM tile against np.matmul")
    args = parser.parse_args()
    if args.page:
        pageOverhead()
        return
    if args.sgemm:
        sgemmVersusBlas()
        return
    print(f"numpy {np.__version__}, BLAS: {_blasName()}")
    tiles = [float(t) for t in args.tile.split(",") if t] or [None]
    for tile in tiles:
        if tile is not None:
            conv_common.TILE_BYTES = int(tile * (1 << 20))
            conv.clearWorkspace()
            print(f"-- tile bound {tile} MiB")
        for cid in args.cases.split(","):
            runCase(cid, CASES[cid], args.reps, args.directions.split(","))


def _blasName():
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version', '')}"
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


if __name__ == "__main__":
    main()
