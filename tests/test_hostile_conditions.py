"""Hard conditions: many Python threads at once, fork/spawn/forkserver children,
a million calls (memory stays flat), Ctrl-C during a long call, and tables or
batches past 2**31 elements.

Everything that can hang or kill a process (fork, signals, huge thread pools)
runs in a child process with a timeout, so that a regression fails the test
instead of stopping the suite.
"""

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import numpy as np
import pytest

import fastembed_ext as fe
from fastembed_ext import _kernels

BUILD = fe.info()["build"]
needs_threads = pytest.mark.skipif(not fe.info()["parallel"], reason="a serial build starts no threads")

UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
# Under AddressSanitizer (scripts/sanitize.sh) freed blocks sit in a quarantine of
# up to 256 MiB, so RSS grows in a correct program: the RSS bounds are not checked
# there (the sanitizer is that run's leak and use-after-free check).
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _ceil_div(a, b):
    return -(-a // b)


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(UINT[a.dtype.itemsize])


def assert_same_bits(got, want, what="result"):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (
        f"{what}: {got.dtype}{got.shape} != {want.dtype}{want.shape}")
    differ = bits(got) != bits(want)
    if differ.any():
        pos = tuple(int(i) for i in np.argwhere(differ)[0])
        raise AssertionError(f"{what}: {int(differ.sum())} items differ in their bits, first at {pos}: "
                             f"0x{int(bits(got)[pos]):x} != 0x{int(bits(want)[pos]):x}")


def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def mixed_values(rng, dtype, shape):
    """Ordinary numbers with random bit patterns (NaN payloads, inf, subnormals) mixed in."""
    dtype = np.dtype(dtype)
    out = (rng.standard_normal(shape) * 3).astype(dtype)
    raw = rng.integers(0, np.iinfo(UINT[dtype.itemsize]).max, size=shape,
                       dtype=UINT[dtype.itemsize], endpoint=True).view(dtype)
    pick = rng.random(shape) < 0.05
    out[pick] = raw[pick]
    return out


def add_at(table, indices, grad):
    table = np.array(table, copy=True)
    with np.errstate(all="ignore"):
        np.add.at(table, indices, grad)
    return table


# sizes past the kernels' parallel thresholds, read from the build
def parallel_gather_shape(dtype=np.float32, dim=64):
    row_bytes = dim * np.dtype(dtype).itemsize
    batch = max(8192, 2 * _ceil_div(BUILD.get("parallel_min_bytes", 0), row_bytes))
    return 4096, batch, dim


def parallel_scatter_shape(dtype=np.float32):
    itemsize = np.dtype(dtype).itemsize
    dim = max(64, _ceil_div(BUILD.get("scatter_parallel_min_row_bytes", 0), itemsize))
    batch = max(8192, 2 * _ceil_div(BUILD.get("parallel_min_bytes", 0), dim * itemsize))
    return 1 << 17, batch, dim


def pool_jobs():
    """How many jobs the engine has run on its pool in this process."""
    return _kernels.engine_state()["jobs"]


def parallel_inputs(seed):
    """Inputs for one parallel gather and one parallel scatter-add, the same in every process."""
    rng = np.random.default_rng(seed)
    T, B, d = parallel_gather_shape()
    weight = mixed_values(rng, np.float32, (T, d))
    g_idx = rng.integers(0, T, size=B)
    T2, B2, d2 = parallel_scatter_shape()
    s_idx = rng.integers(0, T2, size=B2)
    grad = mixed_values(rng, np.float32, (B2, d2))
    table = mixed_values(rng, np.float32, (64, d2))
    return weight, g_idx, (T2, d2), s_idx, grad, table


def parallel_results(seed, num_threads):
    """(gather result, scatter result) of the parallel-size calls for ``seed``."""
    weight, g_idx, (T2, d2), s_idx, grad, table = parallel_inputs(seed)
    out = fe.gather(weight, g_idx, num_threads=num_threads, backend="cython")
    gw = np.resize(table, (T2, d2))
    fe.scatter_add(gw, s_idx, grad, num_threads=num_threads, backend="cython")
    return out, gw


# --------------------------------------------------------------------------
# many Python threads at once

@needs_threads
def test_eight_python_threads_share_a_table_and_get_the_single_threaded_bits():
    rng = np.random.default_rng(7)
    T, B, d = parallel_gather_shape(np.float32)
    weight = mixed_values(rng, np.float32, (T, d))
    weight.flags.writeable = False       # shared and read-only
    T2, B2, d2 = parallel_scatter_shape(np.float32)
    start = np.resize(mixed_values(rng, np.float32, (256, d2)), (T2, d2))
    start.flags.writeable = False
    n_workers = 8
    g_indices = [rng.integers(0, T, size=B) for _ in range(n_workers)]
    s_indices = [rng.integers(0, T2, size=B2) for _ in range(n_workers)]
    grads = [mixed_values(rng, np.float32, (B2, d2)) for _ in range(n_workers)]

    # what one thread gives, held to NumPy once
    want_g = [fe.gather(weight, i, num_threads=1, backend="cython") for i in g_indices]
    want_s = []
    for i, g in zip(s_indices, grads):
        gw = start.copy()
        fe.scatter_add(gw, i, g, num_threads=1, backend="cython")
        want_s.append(gw)
    assert_same_bits(want_g[0], np.take(weight, g_indices[0], axis=0), "gather vs np.take")
    assert_same_bits(want_s[0], add_at(start, s_indices[0], grads[0]), "scatter_add vs np.add.at")

    thread_counts = [1, 2, None, 3, 8, 2, 4, 1]
    barrier = threading.Barrier(n_workers)

    def work(w):
        barrier.wait()
        for rnd in range(3):
            n = thread_counts[(w + rnd) % len(thread_counts)]
            out = fe.gather(weight, g_indices[w], num_threads=n)
            assert_same_bits(out, want_g[w], f"worker {w} gather, num_threads={n}")
            into = np.empty_like(out)
            fe.gather(weight, g_indices[w], out=into)   # the lean entry point
            assert_same_bits(into, want_g[w], f"worker {w} gather into out")
            gw = start.copy()
            fe.scatter_add(gw, s_indices[w], grads[w], num_threads=n)
            assert_same_bits(gw, want_s[w], f"worker {w} scatter_add, num_threads={n}")
        return w

    with concurrent.futures.ThreadPoolExecutor(n_workers) as pool:
        done = list(pool.map(work, range(n_workers), timeout=300))
    assert done == list(range(n_workers))
    assert pool_jobs() > 0, "the parallel kernels never ran: the sizes are below the thresholds"


# --------------------------------------------------------------------------
# fork, spawn, forkserver

def _child_work(args):
    """Runs in a multiprocessing child: the parallel-size calls, and what the child thinks of itself."""
    seed, num_threads = args
    _kernels.scatter_heuristics(False)   # threads whenever asked for, whatever the load
    out, gw = parallel_results(seed, num_threads)
    return {"pid": os.getpid(), "pool_jobs": pool_jobs(),
            "gather": digest(out), "scatter": digest(gw)}


@needs_threads
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads running
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_children_after_a_multithreaded_parent_do_not_hang_and_give_the_same_bits(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    jobs = [(seed, n) for seed in (1, 2) for n in (2, None)]
    want = {}
    for seed, n in jobs:
        out, gw = parallel_results(seed, n)
        want[seed, n] = (digest(out), digest(gw))
    assert pool_jobs() > 0, "the parent ran no parallel job: the test proves nothing"

    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        got = pool.map_async(_child_work, jobs).get(timeout=120)
    for (seed, n), res in zip(jobs, got):
        assert res["pid"] != os.getpid()
        assert (res["gather"], res["scatter"]) == want[seed, n], f"{method} child, seed {seed}"
        # every child, forked or not, runs its own pool (a forked one starts it afresh)
        assert res["pool_jobs"] > 0, res


FORK_SCRIPT = textwrap.dedent(r"""
    import json, os, sys, time
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import fastembed_ext as fe
    from fastembed_ext import _kernels
    from tests.test_hostile_conditions import digest, parallel_results

    _kernels.scatter_heuristics(False)   # threads whenever asked for, whatever the load
    parallel_first = sys.argv[2] == "1"
    run_in_child = sys.argv[3] == "1"
    if parallel_first:
        out, gw = parallel_results(3, 2)
        want = [digest(out), digest(gw)]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        state = _kernels.engine_state()
        res = {"workers_at_fork": state["workers"], "jobs_at_fork": state["jobs"],
               "num_threads": fe.get_num_threads()}
        if run_in_child:
            out, gw = parallel_results(3, 2)   # asks for 2 threads
            res["bits"] = [digest(out), digest(gw)]
            res["child_jobs"] = _kernels.engine_state()["jobs"] - state["jobs"]
            res["child_workers"] = _kernels.engine_state()["workers"]
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    deadline = time.monotonic() + 90
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            print(json.dumps({"hung": True}))
            sys.exit(0)
        time.sleep(0.05)
    res = json.loads(os.read(r, 1 << 16).decode())
    res["hung"] = False
    res["exit"] = status
    if parallel_first:
        res["want"] = want
    print(json.dumps(res))
""")


def _run_fork_script(parallel_first, run_in_child):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, root, "1" if parallel_first else "0",
         "1" if run_in_child else "0"],
        env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_threads
def test_forked_child_of_a_multithreaded_parent_starts_its_own_pool_and_runs_parallel():
    # the parent's workers do not exist in the child: it starts with none, runs
    # its parallel calls on a pool of its own, and gives the parent's bits
    res = _run_fork_script(parallel_first=True, run_in_child=True)
    assert not res["hung"], "the forked child hung in its first parallel call"
    assert res["exit"] == 0
    assert res["jobs_at_fork"] > 0, "the parent ran no parallel job: the test proves nothing"
    assert res["workers_at_fork"] == 0
    assert res["child_jobs"] > 0 and res["child_workers"] >= 1, res
    assert res["num_threads"] >= 1
    assert res["bits"] == res["want"]


@needs_threads
def test_forked_child_of_a_parent_that_never_started_threads_runs_parallel_too():
    res = _run_fork_script(parallel_first=False, run_in_child=True)
    assert not res["hung"]
    assert res["exit"] == 0
    assert res["jobs_at_fork"] == 0
    assert res["child_jobs"] > 0, res


def test_a_thread_count_past_the_cap_on_a_parallel_size_call_does_not_kill_the_process():
    # 2**31 - 1 threads once made libgomp abort the interpreter ("Out of memory
    # allocating ... bytes") and 2**31 raised OverflowError; both must be a ValueError
    script = textwrap.dedent("""
        import numpy as np, fastembed_ext as fe
        w = np.ones((1000, 16), np.float32)
        idx = np.arange(100000) % 1000
        seen = []
        for n in (2**31 - 1, 2**31, 2**63, 100000):
            for call in (lambda: fe.gather(w, idx, num_threads=n),
                         lambda: fe.scatter_add(np.zeros((1 << 17, 64), np.float32),
                                                np.arange(8192), np.ones((8192, 64), np.float32),
                                                num_threads=n)):
                try:
                    call()
                    seen.append("ok")
                except ValueError:
                    seen.append("ValueError")
        print(" ".join(seen))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert set(proc.stdout.split()) <= {"ok", "ValueError"}, proc.stdout


# --------------------------------------------------------------------------
# a million calls: memory stays flat

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_million_calls_good_and_bad_leave_memory_and_refcounts_flat():
    rng = np.random.default_rng(3)
    w = mixed_values(rng, np.float32, (16, 8))
    w16 = mixed_values(rng, np.float16, (16, 8))
    idx = np.array([1, 3, 5, 3], np.int64)
    idx32 = idx.astype(np.int32)
    out = np.empty((4, 8), np.float32)
    out16 = np.empty((4, 8), np.float16)
    gw = np.zeros((16, 8), np.float32)
    g = np.full((4, 8), 0.5, np.float32)
    g16 = np.full((4, 8), 0.5, np.float16)
    bad_idx = np.array([1, 99, 2, 3], np.int64)
    neg_idx = np.array([[0, -1]], np.int32)
    g64 = g.astype(np.float64)
    ro = gw.copy()
    ro.flags.writeable = False
    swapped = w.astype(">f4")
    arrays = [w, w16, idx, idx32, out, out16, gw, g, g16, bad_idx, neg_idx, g64, ro, swapped]

    def rounds(n):
        failures = 0
        for _ in range(n):
            fe.gather(w, idx, out=out)                               # lean
            fe.gather(w16, idx32, out=out16)                         # lean, float16
            fe.gather(w, idx)                                        # full path, fresh result
            fe.scatter_add(gw, idx, g)                               # lean
            fe.scatter_add(gw, idx32, g, padding_idx=-1, num_threads=1)  # full path
            fe.embedding_backward(g16, idx, 16, scale_grad_by_freq=True)  # scratch counts
            for call, exc in ((lambda: fe.gather(w, bad_idx, out=out), IndexError),
                              (lambda: fe.scatter_add(gw, neg_idx, g[:2].reshape(1, 2, 8)), IndexError),
                              (lambda: fe.scatter_add(gw, idx, g64), TypeError),
                              (lambda: fe.scatter_add(ro, idx, g), ValueError),
                              (lambda: fe.gather(swapped, idx), TypeError),
                              (lambda: fe.gather(w, idx, num_threads=0), ValueError)):
                try:
                    call()
                except exc:
                    failures += 1
        return failures

    per_round = 12
    total = 1_000_000
    warm = 5_000
    assert rounds(warm) == 6 * warm
    gw[...] = 0
    refs = [sys.getrefcount(a) for a in arrays]
    rss0 = _rss_bytes()
    tracemalloc.start()
    try:
        traced0, _ = tracemalloc.get_traced_memory()
        t0 = time.perf_counter()
        n = _ceil_div(total, per_round) - warm
        assert rounds(n) == 6 * n
        elapsed = time.perf_counter() - t0
        traced1, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss1 = _rss_bytes()
    assert [sys.getrefcount(a) for a in arrays] == refs, "a call kept a reference to an input"
    assert traced1 - traced0 < 1 << 20, f"Python heap grew by {traced1 - traced0} bytes"
    # tracemalloc's own tables count here too; 2 MiB is far below one leaked byte per call
    if not UNDER_ASAN:
        assert rss1 - rss0 < 2 << 20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MiB in {elapsed:.1f} s"


@needs_threads
def test_parallel_scatter_scratch_memory_is_returned():
    # the parallel scatter allocates a count table per call with scale_grad_by_freq
    rng = np.random.default_rng(4)
    T, B, d = parallel_scatter_shape(np.float32)
    gw = np.zeros((T, d), np.float32)
    idx = rng.integers(0, T, size=B)
    grad = np.ones((B, d), np.float32)
    for _ in range(20):
        fe.scatter_add(gw, idx, grad, num_threads=2)
        fe.embedding_backward(grad, idx, T, scale_grad_by_freq=True, num_threads=2)
    rss0 = _rss_bytes()
    for k in range(300):
        fe.scatter_add(gw, idx, grad, num_threads=2)
        if k % 6 == 0:
            fe.embedding_backward(grad, idx, T, scale_grad_by_freq=True, num_threads=2)
    rss1 = _rss_bytes()
    # a leaked count table would be the touched pages of T * 8 bytes a call
    if not UNDER_ASAN:
        assert rss1 - rss0 < 4 << 20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MiB"
    assert pool_jobs() > 0


# --------------------------------------------------------------------------
# Ctrl-C during a long call

INTERRUPT_SCRIPT = textwrap.dedent(r"""
    import json, os, signal, sys, threading, time
    import numpy as np
    import fastembed_ext as fe
    from fastembed_ext import _kernels

    # Ctrl-C as a terminal delivers it, whatever this process inherited: a
    # parent that ignores or blocks SIGINT passes that on through exec
    try:
        with open("/proc/self/status") as f:
            inherited = {k: v.strip() for k, v in (l.split(":", 1) for l in f) if k in ("SigBlk", "SigIgn")}
    except OSError:   # not Linux
        inherited = None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])

    _kernels.use_f16c(False)         # the portable float16 path: slow enough to interrupt
    _kernels.scatter_heuristics(False)   # threads whenever asked for, whatever the load
    T, d = 64, 4096
    target = float(sys.argv[1])      # seconds the call should take
    threads = int(sys.argv[2])       # for the calls that are timed and interrupted
    # calibrate: as many updates as take about `target` seconds on this machine
    probe = np.zeros((T, d), np.float16)
    t0 = time.perf_counter()
    fe.scatter_add(probe, np.tile(np.arange(T), 50),
                   np.broadcast_to(np.ones((1, d), np.float16), (50 * T, d)),
                   num_threads=threads, backend="cython")
    per_update = (time.perf_counter() - t0) / (50 * T)
    reps = max(100, min(20000, int(target / per_update) // T))
    B = reps * T
    idx = np.tile(np.arange(T, dtype=np.int64), reps)
    row = np.full((1, d), 0.25, np.float16)
    row[0, ::3] = -0.125
    grad = np.broadcast_to(row, (B, d))           # costs nothing, read in place
    start = np.zeros((T, d), np.float16)
    start[:, 1::5] = 1000.0

    # np.add.at adds in index order and rounds to float16 after every add: every
    # row receives `row` reps times, one add after the other
    want = start.copy()
    for _ in range(reps):
        want = want + row
    check = start[:2].copy()
    np.add.at(check, np.tile([0, 1], 3), np.broadcast_to(row, (6, d)))
    assert np.array_equal(check.view(np.uint16), (start[:2] + row + row + row).view(np.uint16))

    # how long the call takes, uninterrupted
    gw = start.copy()
    t0 = time.perf_counter()
    fe.scatter_add(gw, idx, grad, num_threads=threads, backend="cython")
    clean = time.perf_counter() - t0
    assert np.array_equal(gw.view(np.uint16), want.view(np.uint16)), "uninterrupted result is wrong"

    gw = start.copy()
    fired = []
    def fire():
        fired.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)
    timer = threading.Timer(clean / 4, fire)
    t0 = time.perf_counter()
    timer.start()
    jobs = _kernels.engine_state()["jobs"]
    try:
        fe.scatter_add(gw, idx, grad, num_threads=threads, backend="cython")
        outcome = "returned"
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    t1 = time.perf_counter()
    timer.join()
    res = {
        "threaded": _kernels.engine_state()["jobs"] > jobs,
        "outcome": outcome,
        "clean_seconds": clean,
        "call_seconds": t1 - t0,
        "fired_after": fired[0] - t0 if fired else None,
        "fully_updated": bool(np.array_equal(gw.view(np.uint16), want.view(np.uint16))),
        "untouched": bool(np.array_equal(gw.view(np.uint16), start.view(np.uint16))),
        "inherited": inherited,
    }
    # still usable afterwards
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    res["usable"] = bool(np.array_equal(fe.gather(w, [3, 0]), w[[3, 0]]))
    small = np.zeros((4, 3), np.float32)
    fe.scatter_add(small, [1, 1], np.ones((2, 3), np.float32))
    res["usable"] &= bool(small[1, 0] == 2.0)
    print(json.dumps(res))
""")


@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=needs_threads)])
def test_ctrl_c_during_a_long_scatter_add_arrives_after_it_with_the_result_complete(threads):
    # the script sizes the call to take a second or two on this machine
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_SCRIPT, "1.0", str(threads)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["threaded"] is (threads > 1), res
    assert res["clean_seconds"] > 0.3, f"the call is too short to interrupt: {res}"
    # the signal arrived while the call ran (not before it, not after it)
    assert res["fired_after"] is not None and res["fired_after"] < res["call_seconds"], res
    # what actually happens: the kernel runs to completion with the GIL released,
    # and the KeyboardInterrupt is raised when it returns, the result whole
    assert res["outcome"] == "KeyboardInterrupt", res
    assert res["fully_updated"] and not res["untouched"], res
    assert res["usable"], res


# --------------------------------------------------------------------------
# memory-mapped tables

def test_a_memmap_table_is_read_in_place_and_a_memmap_gradient_is_written(tmp_path):
    rng = np.random.default_rng(5)
    T, d = 3000, 48
    values = mixed_values(rng, np.float32, (T, d))
    path = tmp_path / "table.f32"
    values.tofile(path)
    table = np.memmap(path, dtype=np.float32, mode="r", shape=(T, d))
    idx = rng.integers(0, T, size=(40, 25))
    want = np.take(values, idx, axis=0)
    for backend in ("auto", "cython", "numpy"):
        assert_same_bits(fe.gather(table, idx, backend=backend), want, f"gather from memmap, {backend}")
        out = np.empty(idx.shape + (d,), np.float32)
        fe.gather(table, idx.reshape(-1), out=out.reshape(-1, d), backend=backend)
        assert_same_bits(out, want, f"gather from memmap into out, {backend}")
    # a read-only map cannot be a gradient
    with pytest.raises(ValueError, match="writable"):
        fe.scatter_add(table, idx, np.ones(idx.shape + (d,), np.float32))
    # a writable one can, and the file holds the result
    gpath = tmp_path / "grad.f32"
    values.tofile(gpath)
    gw = np.memmap(gpath, dtype=np.float32, mode="r+", shape=(T, d))
    grad = mixed_values(rng, np.float32, idx.shape + (d,))
    fe.scatter_add(gw, idx, grad)
    gw.flush()
    del gw
    assert_same_bits(np.fromfile(gpath, np.float32).reshape(T, d), add_at(values, idx, grad),
                     "scatter_add into a memmap")


# --------------------------------------------------------------------------
# past 2**31 elements

def _sample_rows(rng, lo, hi, n):
    rows = np.unique(rng.integers(lo, hi, size=n))
    return np.concatenate([[lo, hi - 1], rows]).astype(np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("dim", [64, 128])   # 128 x float16 = 256-byte rows: the parallel scatter
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_rows_past_element_2_to_the_31_of_a_float16_table(dim, index_dtype):
    rng = np.random.default_rng(dim)
    T = 2**31 // dim + 4096
    high = 2**31 // dim                   # first row whose first element is past 2**31
    table = np.zeros((T, dim), np.float16)   # 4 GiB of untouched pages: almost free
    assert table.size > 2**31
    rows = _sample_rows(rng, high, T, 64)
    low = _sample_rows(rng, 0, high, 16)
    table[rows] = mixed_values(rng, np.float16, (rows.size, dim))
    table[low] = mixed_values(rng, np.float16, (low.size, dim))

    # gather: high rows (and a few low ones), with int32 and int64 indices, 1 and 2 threads
    pick = rng.choice(np.concatenate([rows, low]), size=20000).astype(index_dtype)
    want = table[pick.astype(np.int64)]
    for n in (1, 2):
        assert_same_bits(fe.gather(table, pick, num_threads=n), want, f"gather, {n} threads")
    assert_same_bits(np.take(table, pick[:1000], axis=0), want[:1000], "np.take")

    # scatter_add into rows past 2**31 elements, half the updates on high rows and half
    # spread over the table (so that the parallel scatter, where the rows are wide
    # enough, does split the work), against np.add.at on a copy of the touched rows
    n_upd = 16384
    upd = np.where(rng.random(n_upd) < 0.5, rng.choice(rows, n_upd), rng.choice(low, n_upd))
    upd = upd.astype(index_dtype)
    grad = mixed_values(rng, np.float16, (n_upd, dim))
    touched = np.unique(np.concatenate([rows, low]))
    start = table[touched].copy()
    want_rows = add_at(start, np.searchsorted(touched, upd), grad)
    for n in (1, 2):
        table[touched] = start
        fe.scatter_add(table, upd, grad, num_threads=n)
        assert_same_bits(table[touched], want_rows, f"scatter_add, {n} threads")
    # and nothing else was written: every row that is not zero is a touched row
    nonzero = np.flatnonzero(table.view(np.uint16).any(axis=1))
    assert set(nonzero.tolist()) <= set(touched.tolist())


@pytest.mark.slow
def test_a_batch_of_more_than_2_to_the_31_elements_is_gathered_whole():
    rng = np.random.default_rng(11)
    d = 1024
    B = 2**31 // d + 8
    weight = mixed_values(rng, np.float16, (1000, d))
    idx = rng.integers(0, 1000, size=B)
    for how in ("fresh", "into_out"):
        if how == "fresh":
            out = fe.gather(weight, idx, num_threads=2)
        else:
            out = np.empty((B, d), np.float16)
            assert fe.gather(weight, idx, out=out) is out       # the lean entry point
        assert out.size > 2**31
        sample = np.concatenate([np.arange(8), B - 1 - np.arange(8), rng.integers(0, B, 256)])
        assert_same_bits(out[sample], np.take(weight, idx[sample], axis=0), f"{how}: sampled rows")
        # every row, in chunks so that the check needs little memory
        for lo in range(0, B, 1 << 17):
            hi = min(B, lo + (1 << 17))
            if not np.array_equal(bits(out[lo:hi]), bits(weight[idx[lo:hi]])):
                raise AssertionError(f"{how}: rows {lo}..{hi} differ from np.take")
        del out


@pytest.mark.slow
def test_a_sparse_memmap_table_past_4_gib_is_gathered_from_its_high_rows(tmp_path):
    rng = np.random.default_rng(12)
    d = 64
    T = 2**31 // d + 4096
    path = tmp_path / "big.f16"
    table = np.memmap(path, dtype=np.float16, mode="w+", shape=(T, d))   # a sparse file
    rows = _sample_rows(rng, 2**31 // d, T, 32)
    table[rows] = mixed_values(rng, np.float16, (rows.size, d))
    table.flush()
    ro = np.memmap(path, dtype=np.float16, mode="r", shape=(T, d))
    pick = rng.choice(rows, size=5000)
    want = np.asarray(ro[pick])
    for backend in ("auto", "cython"):
        assert_same_bits(fe.gather(ro, pick, backend=backend), want, f"memmap gather, {backend}")
    del table, ro
