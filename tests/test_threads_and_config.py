"""Threads and configuration: the same bits for any thread count, the
default thread count and its validation, the environment variables read at
import (checked in a fresh interpreter), info(), and the backend switch.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastembed_ext as fe
from fastembed_ext import _kernels, _runtime

from .conftest import (
    THREAD_COUNTS,
    VALUE_DTYPES,
    assert_bits_equal,
    dtype_id,
    edge_values,
    expected_embedding_backward,
    expected_gather,
    expected_scatter_add,
    make_indices,
    parallel_gather_sizes,
    parallel_scatter_sizes,
)

# --------------------------------------------------------------------------
# thread-count independence


def _scatter_indices(rng, num_rows, batch, distribution):
    if distribution == "uniform":
        return rng.integers(0, num_rows, batch)
    if distribution == "zipf":
        return np.minimum(rng.zipf(1.2, batch) - 1, num_rows - 1)
    if distribution == "hot_row":  # one row owns most updates: the serial fallback
        return np.where(rng.random(batch) < 0.95, 11, rng.integers(0, num_rows, batch))
    if distribution == "two_ends":
        return np.where(rng.random(batch) < 0.5, 0, num_rows - 1)
    if distribution == "sorted":
        return np.sort(rng.integers(0, num_rows, batch))
    raise ValueError(distribution)


@pytest.mark.parametrize("distribution", ["uniform", "zipf", "hot_row", "two_ends", "sorted"])
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_scatter_add_gives_the_same_bits_for_any_thread_count(dtype, distribution, rng):
    num_rows, batch, d = parallel_scatter_sizes(dtype)
    idx = _scatter_indices(rng, num_rows, batch, distribution)
    grad = edge_values(rng, dtype, (batch, d))
    table = np.zeros((num_rows, d), dtype)
    table[:32] = edge_values(rng, dtype, (32, d))
    want = expected_scatter_add(table, idx, grad)
    for num_threads in THREAD_COUNTS + (5, 64, 100):
        gw = table.copy()
        fe.scatter_add(gw, idx, grad, num_threads=num_threads)
        assert_bits_equal(gw, want, f"{num_threads} threads")


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_embedding_backward_with_padding_and_scale_is_thread_count_independent(dtype, rng):
    num_rows, batch, d = parallel_scatter_sizes(dtype)
    idx = _scatter_indices(rng, num_rows, batch, "zipf")
    grad = edge_values(rng, dtype, (batch, d))
    want = expected_embedding_backward(grad, idx, num_rows, 0, True)
    for num_threads in THREAD_COUNTS:
        got = fe.embedding_backward(grad, idx.astype(np.int32), num_rows, padding_idx=0,
                                    scale_grad_by_freq=True, num_threads=num_threads)
        assert_bits_equal(got, want, f"{num_threads} threads")


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_gather_gives_the_same_bits_for_any_thread_count(dtype, rng):
    num_rows, batch, d = parallel_gather_sizes(dtype)
    weight = edge_values(rng, dtype, (num_rows, d))
    idx = make_indices(rng, num_rows, (batch,), np.int32)
    want = expected_gather(weight, idx)
    for num_threads in THREAD_COUNTS + (7, 64):
        assert_bits_equal(fe.gather(weight, idx, num_threads=num_threads), want)


@pytest.mark.parametrize("num_threads", THREAD_COUNTS)
def test_default_thread_count_set_by_set_num_threads_gives_the_same_bits(num_threads, rng):
    # num_threads=None and backend="auto": the path the lean entry points take
    num_rows, batch, d = parallel_scatter_sizes(np.float32)
    idx = _scatter_indices(rng, num_rows, batch, "uniform")
    grad = edge_values(rng, np.float32, (batch, d))
    weight = edge_values(rng, np.float32, (1000, d))
    fe.set_num_threads(num_threads)
    gw = np.zeros((num_rows, d), np.float32)
    fe.scatter_add(gw, idx, grad)
    assert_bits_equal(gw, expected_scatter_add(np.zeros((num_rows, d), np.float32), idx, grad))
    small_idx = idx % 1000
    out = np.empty((batch, d), np.float32)
    fe.gather(weight, small_idx, out=out)
    assert_bits_equal(out, expected_gather(weight, small_idx))


def test_concurrent_calls_from_python_threads_give_the_reference_bits(rng):
    # the kernels release the GIL: calls on separate buffers must not disturb each other
    num_rows, batch, d = 2000, 20000, 16
    jobs = []
    for _ in range(4):
        idx = rng.integers(0, num_rows, batch)
        grad = edge_values(rng, np.float32, (batch, d))
        jobs.append((idx, grad, expected_scatter_add(np.zeros((num_rows, d), np.float32),
                                                     idx, grad)))
    results = [None] * len(jobs)

    def work(k):
        idx, grad, _ = jobs[k]
        gw = np.zeros((num_rows, d), np.float32)
        for _ in range(5):
            gw[...] = 0
            fe.scatter_add(gw, idx, grad, num_threads=2)
        results[k] = gw

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (_, _, want), got in zip(jobs, results):
        assert_bits_equal(got, want)


# --------------------------------------------------------------------------
# set_num_threads / get_num_threads

@pytest.mark.parametrize("n", [1, 2, 3, 8, np.int64(4), np.uint8(5)])
def test_set_num_threads_round_trips_through_get_num_threads(n):
    fe.set_num_threads(n)
    assert fe.get_num_threads() == int(n)
    assert type(fe.get_num_threads()) is int
    assert fe.info()["num_threads"] == int(n)


@pytest.mark.parametrize("bad,exc,pattern", [
    (0, ValueError, r"^n must be >= 1, got 0"),
    (-3, ValueError, r"^n must be >= 1, got -3"),
    (1.5, TypeError, r"^n must be a positive integer.*got 1.5 \(float\)"),
    (2.0, TypeError, r"^n must be a positive integer.*got 2.0"),
    (True, TypeError, r"^n must be a positive integer.*got True \(bool\)"),
    (np.bool_(True), TypeError, r"^n must be a positive integer"),
    ("2", TypeError, r"^n must be a positive integer.*got '2' \(str\)"),
], ids=["zero", "negative", "float", "integral_float", "bool", "numpy_bool", "str"])
def test_set_num_threads_rejects_bad_values_and_keeps_the_old_default(bad, exc, pattern):
    fe.set_num_threads(3)
    with pytest.raises(exc, match=pattern):
        fe.set_num_threads(bad)
    assert fe.get_num_threads() == 3


def test_set_num_threads_none_is_refused_with_a_message_that_does_not_offer_none():
    # set_num_threads takes no None (only the per-call num_threads does), so the
    # message must not list None as a valid choice
    with pytest.raises(TypeError, match=r"^n must be a positive integer, got None"):
        fe.set_num_threads(None)


@pytest.mark.parametrize("huge", [2 ** 31, 2 ** 40], ids=["2**31", "2**40"])
def test_a_thread_count_too_large_for_a_c_int_is_refused_naming_it_or_works(huge, rng):
    # Either validation refuses it with a ValueError that names the argument, or the
    # call works (clamped); never an OverflowError from the kernel boundary, and never
    # a default that set_num_threads accepts but that breaks every later call.
    weight = edge_values(rng, np.float32, (5, 3))
    idx = np.array([1, 4])
    calls = {
        "gather": (lambda: fe.gather(weight, idx, num_threads=huge),
                   lambda: expected_gather(weight, idx)),
        "scatter_add": (lambda: fe.scatter_add(np.zeros((5, 3), np.float32), idx, weight[:2],
                                               num_threads=huge),
                        lambda: expected_scatter_add(np.zeros((5, 3), np.float32), idx,
                                                     weight[:2])),
        "embedding_backward": (lambda: fe.embedding_backward(weight[:2], idx, 5, num_threads=huge),
                               lambda: expected_embedding_backward(weight[:2], idx, 5)),
    }
    for name, (call, want) in calls.items():
        try:
            got = call()
        except ValueError as exc:
            assert "num_threads" in str(exc), name
        else:
            assert_bits_equal(got, want(), name)
    try:
        fe.set_num_threads(huge)
    except ValueError as exc:
        assert str(exc).startswith("n "), exc
        return
    out = np.empty((2, 3), np.float32)
    assert_bits_equal(fe.gather(weight, idx, out=out), expected_gather(weight, idx), "lean path")
    assert_bits_equal(fe.gather(weight, idx), expected_gather(weight, idx), "full path")


def test_num_threads_for_one_call_does_not_change_the_default(rng):
    fe.set_num_threads(2)
    fe.gather(edge_values(rng, np.float32, (4, 2)), [0, 3], num_threads=7)
    assert fe.get_num_threads() == 2


def test_default_thread_count_is_the_cpus_this_process_may_use_when_not_configured():
    if os.environ.get("FASTEMBED_EXT_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"):
        pytest.skip("FASTEMBED_EXT_NUM_THREADS or OMP_NUM_THREADS is set in this environment")
    cpus = fe.info()["cpus"]
    expected = cpus["affinity"]
    if cpus["cgroup_quota"] is not None:
        expected = max(1, min(expected, math.ceil(cpus["cgroup_quota"])))
    assert fe.get_num_threads() == (expected if fe.info()["parallel"] else 1)
    assert fe.info()["num_threads_source"] == ("cpus" if fe.info()["parallel"] else "serial build")


# --------------------------------------------------------------------------
# environment variables, read at import: each check in a fresh interpreter

PROBE = textwrap.dedent("""
    import json
    import numpy as np
    import fastembed_ext as fe
    from fastembed_ext import _kernels, _reference

    calls = {"reference": 0, "kernels": 0}

    def spy(module, name, counter):
        original = getattr(module, name)
        def wrapper(*args, **kwargs):
            calls[counter] += 1
            return original(*args, **kwargs)
        setattr(module, name, wrapper)

    spy(_reference, "gather", "reference")
    spy(_reference, "scatter_add", "reference")
    for name in ("gather_rows", "scatter_add_rows", "gather_lean", "scatter_add_lean"):
        if hasattr(_kernels, name):
            spy(_kernels, name, "kernels")

    def attempt(fn):
        try:
            fn()
            return "ok"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    rows = np.array([1, 3])
    report = {"info": fe.info()}
    report["threads"] = attempt(fe.get_num_threads)
    if report["threads"] == "ok":
        report["threads"] = fe.get_num_threads()
    report["auto_gather"] = attempt(lambda: fe.gather(w, rows))
    out = np.empty((2, 3), np.float32)
    report["auto_gather_out"] = attempt(lambda: fe.gather(w, rows, out=out))
    gw = np.zeros((4, 3), np.float32)
    report["auto_scatter"] = attempt(lambda: fe.scatter_add(gw, rows, w[:2]))
    report["auto_calls"] = dict(calls)
    report["explicit_threads"] = attempt(lambda: fe.gather(w, [1], num_threads=1))
    report["explicit_numpy"] = attempt(lambda: fe.gather(w, [1], backend="numpy"))
    report["explicit_cython"] = attempt(lambda: fe.gather(w, [1], backend="cython"))
    fe.set_num_threads(2)
    report["after_set"] = attempt(lambda: fe.gather(w, [1]))
    report["threads_after_set"] = fe.get_num_threads()
    print(json.dumps(report, default=str))
""")


def _run_probe(**env_vars):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FASTEMBED_EXT_") and k != "OMP_NUM_THREADS"}
    env.update(env_vars)
    # -W error: importing and configuring must not warn
    proc = subprocess.run([sys.executable, "-W", "error", "-c", PROBE], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)


def test_without_environment_variables_auto_is_the_compiled_backend():
    report = _run_probe()
    assert report["info"]["backend"] == "cython"
    assert report["info"]["forced_backend"] is None
    assert report["info"]["env_errors"] == []
    assert report["auto_calls"]["kernels"] >= 3 and report["auto_calls"]["reference"] == 0


def test_fastembed_ext_backend_numpy_sends_auto_calls_to_the_numpy_reference():
    report = _run_probe(FASTEMBED_EXT_BACKEND="numpy")
    assert report["info"]["backend"] == "numpy"
    assert report["info"]["forced_backend"] == "numpy"
    assert report["auto_gather"] == report["auto_gather_out"] == report["auto_scatter"] == "ok"
    assert report["auto_calls"] == {"reference": 3, "kernels": 0}
    assert report["explicit_cython"] == "ok"


@pytest.mark.parametrize("raw", ["cython", " CYTHON "])
def test_fastembed_ext_backend_cython_is_honoured_case_and_space_insensitively(raw):
    report = _run_probe(FASTEMBED_EXT_BACKEND=raw)
    assert report["info"]["backend"] == "cython"
    assert report["info"]["forced_backend"] == "cython"
    assert report["auto_calls"]["kernels"] >= 3 and report["auto_calls"]["reference"] == 0


def test_a_bad_fastembed_ext_backend_fails_auto_calls_loudly_but_not_the_import():
    report = _run_probe(FASTEMBED_EXT_BACKEND="fortran")
    assert report["info"]["backend"].startswith("error: FASTEMBED_EXT_BACKEND")
    errors = report["info"]["env_errors"]
    assert any("FASTEMBED_EXT_BACKEND" in e and "'fortran'" in e for e in errors)
    for key in ("auto_gather", "auto_gather_out", "auto_scatter"):
        assert report[key].startswith("ValueError: FASTEMBED_EXT_BACKEND must be 'cython' or "
                                      "'numpy', got 'fortran'")
    assert report["explicit_numpy"] == report["explicit_cython"] == "ok"


def test_fastembed_ext_num_threads_sets_the_default_thread_count():
    report = _run_probe(FASTEMBED_EXT_NUM_THREADS="3")
    assert report["threads"] == 3
    assert report["info"]["num_threads"] == 3
    assert report["auto_gather"] == report["auto_gather_out"] == "ok"


def test_fastembed_ext_num_threads_wins_over_omp_num_threads():
    report = _run_probe(FASTEMBED_EXT_NUM_THREADS="5", OMP_NUM_THREADS="1")
    assert report["threads"] == 5


def test_omp_num_threads_sets_the_default_when_fastembed_ext_num_threads_is_unset():
    report = _run_probe(OMP_NUM_THREADS="1")
    assert report["threads"] == 1


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_a_bad_fastembed_ext_num_threads_fails_default_thread_calls_until_set(raw):
    report = _run_probe(FASTEMBED_EXT_NUM_THREADS=raw)
    message = f"ValueError: FASTEMBED_EXT_NUM_THREADS must be an integer from 1 to 256, got {raw!r}"
    assert report["threads"] == message
    assert report["auto_gather"] == report["auto_gather_out"] == report["auto_scatter"] == message
    assert report["explicit_threads"] == "ok"
    assert report["after_set"] == "ok" and report["threads_after_set"] == 2


# --------------------------------------------------------------------------
# info()

INFO_KEYS = {"version", "backend", "compiled", "compiled_error", "forced_backend", "engine",
             "parallel", "num_threads", "num_threads_source", "cpus", "threadpoolctl",
             "value_dtypes", "cpu", "float16_path", "prefetch_hint",
             "gather_stream_min_row_bytes", "build"}


def test_info_reports_every_documented_key_with_a_json_friendly_value():
    report = fe.info()
    assert INFO_KEYS <= set(report)
    json.dumps(report)
    assert report["version"] == fe.__version__
    assert report["compiled"] is True and report["compiled_error"] is None
    assert report["backend"] == (os.environ.get("FASTEMBED_EXT_BACKEND", "").strip().lower()
                                 or "cython")
    assert report["num_threads"] == fe.get_num_threads()
    assert {"float16", "float32", "float64"} <= set(report["value_dtypes"])
    assert report["parallel"] == report["build"]["parallel"]
    assert report["engine"] == report["build"]["engine"]
    assert {"f16c", "avx", "avx2", "avx512f"} <= set(report["cpu"])
    assert all(isinstance(v, bool) for v in report["cpu"].values())


def test_info_says_from_which_rows_a_large_gather_streams_by_the_cpu_vendor():
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("reads the CPU's vendor from /proc/cpuinfo")
    with open("/proc/cpuinfo") as f:
        amd = "AuthenticAMD" in f.read()
    assert fe.info()["gather_stream_min_row_bytes"] == (512 if amd else 128)


def test_info_build_flags_keep_floating_point_exact():
    cflags = fe.info()["build"]["cflags"]
    assert "-ffp-contract=off" in cflags
    assert "-ffast-math" not in cflags.replace("-fno-fast-math", "")
    assert "-march=native" not in cflags


def test_info_float16_path_follows_the_f16c_switch():
    has_f16c = fe.info()["cpu"]["f16c"]
    assert _kernels.use_f16c(False) is False
    assert fe.info()["float16_path"] == "portable"
    assert _kernels.use_f16c(True) is has_f16c
    assert fe.info()["float16_path"] == ("f16c" if has_f16c else "portable")


def test_set_isa_level_never_picks_a_level_the_cpu_lacks():
    cpu = fe.info()["cpu"]
    assert _kernels.set_isa_level(0) == 0
    assert _kernels.set_isa_level(1) == (1 if cpu["avx"] else 0)
    top = 2 if cpu["avx512f"] else (1 if cpu["avx"] else 0)
    assert _kernels.set_isa_level(2) == top
    assert _kernels.isa_level() == top


# --------------------------------------------------------------------------
# backend selection without the compiled extension

def test_without_the_extension_cython_is_unavailable_and_auto_falls_back_to_numpy(monkeypatch,
                                                                                   rng):
    monkeypatch.setattr(_runtime, "kernels", None)
    monkeypatch.setattr(_runtime, "lean_kernels", None)
    monkeypatch.setattr(_runtime, "kernels_error", "ImportError: pretend it failed")
    monkeypatch.setattr(_runtime, "forced_backend", None)
    monkeypatch.setattr(_runtime, "backend_error", None)
    weight = edge_values(rng, np.float32, (5, 3))
    gw = np.zeros((5, 3), np.float32)
    with pytest.raises(fe.BackendUnavailableError, match=r"backend='cython'.*pretend it failed"):
        fe.gather(weight, [1], backend="cython")
    with pytest.raises(ImportError):
        fe.scatter_add(gw, [1], weight[:1], backend="cython")
    assert not gw.any()
    assert_bits_equal(fe.gather(weight, [4, 0]), expected_gather(weight, [4, 0]))
    report = fe.info()
    assert report["compiled"] is False
    assert report["backend"] == "numpy"
    assert report["compiled_error"] == "ImportError: pretend it failed"
    assert report["float16_path"] == "portable"


# --------------------------------------------------------------------------
# the engine: where the default thread count comes from, and when threads run

def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_smallest_of_the_process_cgroup_and_its_parents(tmp_path):
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/outer/inner\n")
    _write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    _write(tmp_path / "cg" / "outer" / "cpu.max", "300000 100000\n")
    _write(tmp_path / "cg" / "outer" / "inner" / "cpu.max", "150000 100000\n")
    assert _runtime.cgroup_cpu_quota(str(tmp_path / "cg"), str(proc)) == 1.5
    _write(tmp_path / "cg" / "outer" / "inner" / "cpu.max", "max 100000\n")
    assert _runtime.cgroup_cpu_quota(str(tmp_path / "cg"), str(proc)) == 3.0


def test_cgroup_v1_quota_is_read_from_the_cpu_controller(tmp_path):
    proc = tmp_path / "proc_cgroup"
    _write(proc, "12:memory:/job\n4:cpu,cpuacct:/job\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "200000\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "job" / "cpu.cfs_period_us", "100000\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert _runtime.cgroup_cpu_quota(str(tmp_path / "cg"), str(proc)) == 2.0


def test_no_cgroup_files_mean_no_quota(tmp_path):
    assert _runtime.cgroup_cpu_quota(str(tmp_path), str(tmp_path / "missing")) is None
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/\n")
    assert _runtime.cgroup_cpu_quota(str(tmp_path / "cg"), str(proc)) is None


def test_the_cpu_budget_is_the_affinity_mask_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(_runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7},
                        raising=False)
    monkeypatch.setattr(_runtime, "cgroup_cpu_quota", lambda *a, **k: 2.5)
    n, facts = _runtime.cpu_budget()
    assert n == 3 and facts["affinity"] == 8 and facts["cgroup_quota"] == 2.5
    monkeypatch.setattr(_runtime, "cgroup_cpu_quota", lambda *a, **k: None)
    assert _runtime.cpu_budget()[0] == 8
    monkeypatch.setattr(_runtime, "cgroup_cpu_quota", lambda *a, **k: 0.2)
    assert _runtime.cpu_budget()[0] == 1


AFFINITY_PROBE = textwrap.dedent("""
    import json, os, sys
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})   # one CPU, before the import
    import fastembed_ext as fe
    print(json.dumps({"threads": fe.get_num_threads(), "source": fe.info()["num_threads_source"],
                      "affinity": fe.info()["cpus"]["affinity"]}))
""")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
@pytest.mark.parametrize("env,threads,source", [
    ({}, 1, "cpus"),
    ({"OMP_NUM_THREADS": "3"}, 3, "OMP_NUM_THREADS"),
    ({"OMP_NUM_THREADS": "3", "FASTEMBED_EXT_NUM_THREADS": "2"}, 2, "FASTEMBED_EXT_NUM_THREADS"),
    ({"OMP_NUM_THREADS": "nonsense"}, 1, "cpus"),
], ids=["affinity", "omp_num_threads_wins", "fastembed_ext_num_threads_wins", "bad_omp_ignored"])
def test_default_thread_count_follows_the_documented_order(env, threads, source):
    if not fe.info()["parallel"]:
        pytest.skip("a serial build reports its own source")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("FASTEMBED_EXT_") and k != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", AFFINITY_PROBE], env={**base, **env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["affinity"] == 1
    assert report["threads"] == threads and report["source"] == source, report


def test_set_num_threads_wins_over_the_environment_and_reports_itself():
    if not fe.info()["parallel"]:
        pytest.skip("a serial build reports itself as the source")
    fe.set_num_threads(3)
    assert fe.get_num_threads() == 3
    assert fe.info()["num_threads_source"] == "set_num_threads"


@pytest.fixture
def scatter_plan_judges():
    """The scatter-add plan with its judgement on (the suite turns it off)."""
    _kernels.scatter_heuristics(True)
    yield
    _kernels.scatter_heuristics(False)


def _plan_inputs(rows, d, ids):
    return np.zeros((rows, d), np.float32), np.asarray(ids, np.int64)


def _quiet_plan(gw, idx, **kwargs):
    """The 2-thread plan, read while no other task wanted a CPU just before and
    just after it; skips when there are no threads to plan or no quiet moment."""
    if not fe.info()["parallel"] or fe.info()["cpus"]["affinity"] < 2:
        pytest.skip("one CPU or a serial build: no threads to plan")
    for _ in range(50):
        before = _kernels.runnable_others()
        plan = _kernels.scatter_plan(gw, idx, 2, **kwargs)
        if before == 0 and _kernels.runnable_others() == 0:
            return plan
        time.sleep(0.05)
    pytest.skip("other tasks kept the CPUs busy for the whole test")


@pytest.mark.parametrize("case", ["hot_set", "zipf", "table_small_for_the_batch", "narrow_rows",
                                  "few_updates"])
def test_scatter_plan_keeps_one_thread_where_threads_do_not_pay(case, rng, scatter_plan_judges):
    from fastembed_ext._workloads import zipf_ids
    n = 65536
    gw, idx = {
        "hot_set": lambda: _plan_inputs(1_000_000, 128, np.where(rng.random(n) < 0.95, 7,
                                                                  rng.integers(0, 1_000_000, n))),
        "zipf": lambda: _plan_inputs(1_000_000, 128, zipf_ids(rng, 1_000_000, n)),
        "table_small_for_the_batch": lambda: _plan_inputs(65_536, 128,
                                                          rng.integers(0, 65_536, n)),
        "narrow_rows": lambda: _plan_inputs(1_000_000, 16, rng.integers(0, 1_000_000, n)),
        # 2 MiB of updates: under the least a threaded scatter-add needs
        "few_updates": lambda: _plan_inputs(1_000_000, 128, rng.integers(0, 1_000_000, 4096)),
    }[case]()
    plan = _kernels.scatter_plan(gw, idx, 2)
    assert plan["threads"] == 1, plan
    if case in ("zipf", "few_updates") and fe.info()["parallel"] \
            and fe.info()["cpus"]["affinity"] >= 2:
        # on one thread even when no other task claims a CPU: judged by its
        # sample, or by its size
        plan = _quiet_plan(gw, idx)
        assert plan["threads"] == 1, plan
        if case == "zipf":
            assert plan["distinct_percent"] < fe.info()["build"]["scatter_min_distinct_percent"]


def test_scatter_plan_threads_uniform_updates_of_a_large_table_unless_cores_are_busy(
        rng, scatter_plan_judges):
    gw, idx = _plan_inputs(1_000_000, 128, rng.integers(0, 1_000_000, 65536))
    plan = _quiet_plan(gw, idx)
    # nothing else wanted a CPU around the call: the plan threads it, each
    # thread taking its own range of the updates
    assert plan["distinct_percent"] >= 90 and plan["largest_part_percent"] <= 60, plan
    assert plan["threads"] == 2 and plan["parts"] >= 2, plan
    assert plan["split"] == "position", plan


@pytest.mark.parametrize("hot", ["spread", "first"])
def test_scatter_plan_gives_a_hot_set_with_long_rows_to_threads_by_columns(hot, rng,
                                                                           scatter_plan_judges):
    # Zipf ids hit a hot set in cache: no split of the updates or the rows
    # pays, but 1.5 KiB rows do for threads that own bands of columns
    from fastembed_ext._workloads import zipf_ids
    build = fe.info()["build"]
    gw, idx = _plan_inputs(200_000, 384, zipf_ids(rng, 200_000, 65536, hot=hot))
    plan = _quiet_plan(gw, idx)
    assert plan["distinct_percent"] < build["scatter_min_distinct_percent"], plan
    assert plan["threads"] == 2 and plan["split"] == "columns", plan
    assert plan["bands"][0] == 0 and plan["bands"][-1] == 384 and len(plan["bands"]) == 3, plan
    # the same ids over 512-byte rows: each thread would stream most of every
    # gradient row for a band of 256 bytes
    gw, _ = _plan_inputs(200_000, 128, [])
    assert _quiet_plan(gw, idx)["threads"] == 1


def test_scatter_plan_keeps_one_row_taking_nearly_every_update_on_one_thread(rng,
                                                                          scatter_plan_judges):
    # 95% of the updates to one row: the gradient stream is the whole cost,
    # and bands of columns would stream it twice
    n = 65536
    gw, idx = _plan_inputs(200_000, 768, np.where(rng.random(n) < 0.95, 7,
                                                  rng.integers(0, 200_000, n)))
    plan = _quiet_plan(gw, idx)
    assert plan["distinct_percent"] < fe.info()["build"]["scatter_bands_min_distinct_percent"]
    assert plan["threads"] == 1, plan


def test_scatter_plan_gives_long_rows_of_a_small_table_to_threads_by_row(rng, scatter_plan_judges):
    # 65536 updates of a 65536-row table: too many would wait in a split by
    # position, but 3 KB rows pay for threads that own rows
    gw, idx = _plan_inputs(65_536, 768, rng.integers(0, 65_536, 65536))
    plan = _quiet_plan(gw, idx)
    assert plan["threads"] == 2 and plan["split"] == "rows", plan


def test_scatter_plan_threads_a_bag_backward_whose_gradient_rows_stay_in_cache(
        rng, scatter_plan_judges):
    # 65536 updates of a 100000-row table: as a scatter-add, too many would
    # be deferred and the plan keeps one thread; as a bag backward
    # whose entries read 4096 bag rows between them, threads own rows and the
    # destination dominates
    gw, idx = _plan_inputs(100_000, 128, rng.integers(0, 100_000, 65536))
    assert _kernels.scatter_plan(gw, idx, 2)["threads"] == 1
    plan = _quiet_plan(gw, idx, source_rows=4096)
    assert plan["threads"] == 2 and plan["parts"] >= 2, plan
    assert plan["split"] == "rows", plan


def test_a_busy_neighbour_is_seen_as_a_runnable_task():
    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/loadavg is Linux's")
    if not fe.info()["parallel"]:
        pytest.skip("the serial engine plans no threads and reads no load")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        seen = 0
        for _ in range(200):           # the neighbour needs a moment to start
            seen = max(seen, _kernels.runnable_others())
            if seen:
                break
            time.sleep(0.01)
    finally:
        busy.kill()
        busy.wait()
    assert seen >= 1


def test_why_one_thread_for_a_small_table_names_both_ways_to_cut_a_scatter(scatter_plan_judges):
    from fastembed_ext import _bench
    if not fe.info()["parallel"]:
        pytest.skip("a serial build runs everything on one thread")
    # 100000 rows for 65536 updates: too small to split by position; 512-byte
    # rows: too short for threads that own row ranges (neither depends on the load)
    gw, idx = _plan_inputs(100_000, 128, np.random.default_rng(0).integers(0, 100_000, 65_536))
    why = _bench.explain_threads("scatter_add", gw, idx, 2)
    assert why.startswith("a table of 100000 rows for 65536 updates: split by position"), why
    assert "every thread would stream the whole gradient for rows of 512 B" in why, why


def test_why_one_thread_for_a_hot_set_of_short_rows_names_the_bands(scatter_plan_judges):
    from fastembed_ext import _bench
    from fastembed_ext._workloads import zipf_ids
    if not fe.info()["parallel"] or fe.info()["cpus"]["affinity"] < 2:
        pytest.skip("one CPU or a serial build: no threads to plan")
    gw = np.zeros((200_000, 128), np.float32)
    idx = zipf_ids(np.random.default_rng(0), 200_000, 65_536)
    for _ in range(50):
        why = _bench.explain_threads("scatter_add", gw, idx, 2)
        if "other runnable" not in why:
            break
        time.sleep(0.05)
    else:
        pytest.skip("other tasks kept the CPUs busy for the whole test")
    assert "a hot set in cache" in why, why
    assert "rows of 512 B are too short for threads that own bands of columns (from 1536 B)" \
        in why, why
