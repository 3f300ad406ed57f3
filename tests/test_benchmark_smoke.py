"""Smoke test of benchmarks/conv.py: a tiny run end to end, the JSON it writes, and its hand-made ONNX model."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import convForward

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
DIRECTIONS = ("forward", "backwardData", "backwardParams")


def _run(tmp_path, *extra, env=None):
    out = tmp_path / "conv.json"
    cmd = [sys.executable, str(BENCH / "conv.py"), "--quick", "--reps", "2", "--json", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def _installed(name):
    return importlib.util.find_spec(name) is not None


def test_tiny_run_writes_the_table(tmp_path):
    # A forced OpenBLAS core type must be dropped before numpy loads: the script re-executes itself without it.
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_L2_SIZE="1048576")
    stdout, table = _run(tmp_path, "--cases", "page,tiny2d", env=env)

    assert "BLAS used by numpy:" in stdout
    meta = table["meta"]
    assert "OPENBLAS_CORETYPE=Haswell" in meta["removed_env"] and "OPENBLAS_L2_SIZE" in meta["removed_env"]
    assert meta["reps"] == 2 and meta["threads"] == 2 and isinstance(meta["blas"], list)
    assert [r["case"]["id"] for r in table["results"]] == ["page", "tiny2d"]

    peers = [p for p in ("torch", "onnxruntime") if _installed(p)]
    # Default method: one worker process per engine, and ours' worker never loaded a peer.
    assert meta["method"] == "isolated" and "method: isolated" in stdout
    workers = meta["workers"]
    assert set(workers) == {"ours", *peers} and workers["ours"]["loaded_peers"] == []
    assert len({w["pid"] for w in workers.values()} | {meta["pid"]}) == len(workers) + 1
    assert any(b.get("user_api") == "blas" for b in workers["ours"]["blas"])
    assert (Path(meta["puzzlelib_path"]) / "Modules").is_dir()
    for p in peers:
        assert p in workers[p]["loaded_peers"]
    if "onnxruntime" in peers:
        assert "torch" not in workers["onnxruntime"]["loaded_peers"]
    for rec in table["results"]:
        assert set(rec["ms"]["ours"]) == set(DIRECTIONS)
        assert all(t > 0 for t in rec["ms"]["ours"].values())
        for engine, times in rec["ms"].items():  # each median is that of the samples kept beside it
            for d, t in times.items():
                samples = rec["samples_ms"][engine][d]
                assert len(samples) == meta["reps"] and t == pytest.approx(float(np.median(samples)))
        assert set(rec["first_call_ms"]) == set(DIRECTIONS)
        assert rec["gflop"] > 0 and set(rec["gflops"]["ours"]) == set(DIRECTIONS)
        for d in DIRECTIONS:
            mem = rec["memory"]["ours"][d]
            assert mem["peak_bytes"] >= 0 and "tracemalloc_peak_bytes" in mem and mem["first_call_ms"] > 0
            assert mem["footprint_bytes"] == mem["peak_bytes"] + mem["held_bytes"]
        if "torch" in peers:
            assert set(rec["ms"]["torch"]) == set(DIRECTIONS)
            assert set(rec["speed_vs_peer"]["torch"]) == set(DIRECTIONS)
            assert set(rec["memory"]["torch"]) == set(DIRECTIONS)
            assert {"forward_vs_fastest_peer", "backwardData_vs_torch", "backwardParams_vs_torch",
                    "memory_forward_vs_torch"} <= set(rec["goals"])
            # The benchmark only praises a fast engine that is also right.
            assert all(v["max_rel_error"] < 1e-4 for v in rec["check"].values())
        if "onnxruntime" in peers:
            assert set(rec["ms"]["onnxruntime"]) == {"forward"}

    page = table["results"][0]
    assert page["case"]["micro"] and "page_forward_under_10us" in page["goals"]
    assert page["calls_per_sample"]["ours"]["forward"] > 1  # microsecond calls are timed in loops


def test_inprocess_mode(tmp_path):
    # The old method (every engine in the benchmark's own process) stays available for comparison.
    peers = [p for p in ("torch", "onnxruntime") if _installed(p)]
    stdout, table = _run(tmp_path, "--cases", "tiny2d", "--no-memory", "--inprocess")
    meta = table["meta"]
    assert meta["method"] == "inprocess" and meta["workers"] == {} and meta["peers_used"] == sorted(peers)
    assert Path(meta["puzzlelib_path"]).name == "PuzzleLib"
    for rec in table["results"]:
        assert set(rec["ms"]) == {"ours", *peers} and all(t > 0 for t in rec["ms"]["ours"].values())
        assert set(rec["first_call_ms"]) == set(DIRECTIONS) and rec["memory"] == {}
        assert all(v["max_rel_error"] < 1e-4 for v in rec["check"].values())
        if peers:
            assert set(rec["check"]) == (set(DIRECTIONS) if "torch" in peers else {"forward"})
    assert "method: inprocess" in stdout


def test_runs_without_peers_or_memory(tmp_path):
    stdout, table = _run(tmp_path, "--cases", "tiny1d,tiny3d", "--peers", "", "--no-memory")
    assert table["meta"]["peers_used"] == [] and set(table["meta"]["workers"]) == {"ours"}
    for rec in table["results"]:
        assert set(rec["ms"]) == {"ours"} and rec["memory"] == {} and rec["check"] == {}
    assert "[tiny3d]" in stdout and "Goals" in stdout


@pytest.mark.parametrize("forceMinimal", [True, False])
def test_onnx_model_matches_reference(forceMinimal):
    ort = pytest.importorskip("onnxruntime")
    if not forceMinimal:
        pytest.importorskip("onnx")
    sys.path.insert(0, str(BENCH))
    try:
        import _peers
    finally:
        sys.path.remove(str(BENCH))

    rng = np.random.default_rng(0)
    case = dict(nd=2, inmaps=4, outmaps=6, size=(3, 2), stride=(2, 1), pad=(1, 2), dilation=(1, 2), groups=2,
                bias=True)
    x = rng.standard_normal((2, 4, 9, 8), dtype=np.float32)
    w = rng.standard_normal((6, 2, 3, 2), dtype=np.float32)
    b = rng.standard_normal(6, dtype=np.float32)
    expected = convForward(x, w, b, case["stride"], case["pad"], case["dilation"], case["groups"])
    arrays = {"x": x, "W": w, "b": b, "dy": np.zeros(expected.shape, np.float32)}

    calls, results, _ = _peers.setupOrt(ort, case, arrays, threads=1, forceMinimal=forceMinimal)
    calls["forward"]()
    (y,) = results["forward"]()
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
