"""Threads under load: the default thread count against one thread, quiet, with a
busy-loop process beside it, and with P processes calling at once.

A default that only wins on idle cores is a defect: each group holds
"cython-1" (num_threads=1) and "cython-default" (num_threads=None) for one
condition, so that the table reads as default / one-thread.  The P-process
groups time a round in which every process makes the same calls at the same
time; ``extra_info["calls_per_second"]`` is the aggregate.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastembed_ext
from conftest import describe, prefaulted

T, D, B = 200_000, 128, 65536
PROCESSES = int(os.environ.get("FASTEMBED_EXT_BENCH_PROCESSES", str(os.cpu_count() or 2)))

WORKER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import fastembed_ext as fe
    T, D, B = map(int, sys.argv[1:4])
    rng = np.random.default_rng(int(sys.argv[4]))
    w = rng.random((T, D), dtype=np.float32)
    gw = np.zeros((T, D), np.float32)
    idx = rng.integers(0, T, B)
    g = rng.random((B, D), dtype=np.float32)
    out = np.empty((B, D), np.float32)
    gw.fill(0)                                # pages faulted in before the clock (conftest.prefaulted)
    out.fill(0)
    print("ready", flush=True)
    for line in sys.stdin:                    # "<calls> <threads or default>"
        calls, threads = line.split()
        n = None if threads == "default" else int(threads)
        t0 = time.perf_counter()
        for _ in range(int(calls)):
            fe.gather(w, idx, out=out, num_threads=n)
            fe.scatter_add(gw, idx, g, num_threads=n)
        print(time.perf_counter() - t0, flush=True)
""")


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(11)
    return (rng.random((T, D), dtype=np.float32), prefaulted(np.zeros((T, D), np.float32)),
            rng.integers(0, T, B), rng.random((B, D), dtype=np.float32),
            prefaulted(np.empty((B, D), np.float32)))


@pytest.fixture(params=["quiet", "busy-neighbour"])
def condition(request):
    """Nothing else, or one busy-loop process competing for the cores."""
    if request.param == "quiet":
        yield request.param
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield request.param
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.parametrize("backend", ["cython-1", "cython-default"])
@pytest.mark.parametrize("op", ["gather(out=)", "scatter_add"])
def test_default_threads_against_one_thread(benchmark, inputs, op, backend, condition):
    w, gw, idx, g, out = inputs
    n = 1 if backend == "cython-1" else None
    benchmark.group = f"load {op} float32 T={T} d={D} B={B} {condition}"
    describe(benchmark, "cython", n or fastembed_ext.get_num_threads())
    benchmark.extra_info["condition"] = condition
    if op == "gather(out=)":
        benchmark(fastembed_ext.gather, w, idx, out=out, num_threads=n)
    else:
        benchmark(fastembed_ext.scatter_add, gw, idx, g, num_threads=n)


@pytest.fixture(scope="module")
def workers():
    """PROCESSES warm worker processes, each with its own table, taking commands."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(T), str(D), str(B), str(p)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for p in range(PROCESSES)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    yield procs
    for p in procs:
        p.stdin.close()
        p.wait(timeout=60)
        p.stdout.close()


@pytest.mark.parametrize("threads", ["1", "default"])
def test_processes_calling_at_once(benchmark, workers, threads):
    calls = 2 if benchmark.disabled else 10

    def one_round():
        for p in workers:
            p.stdin.write(f"{calls} {threads}\n")
            p.stdin.flush()
        return max(float(p.stdout.readline()) for p in workers)

    benchmark.group = f"load {PROCESSES} processes, gather + scatter_add float32 T={T} d={D} B={B}"
    describe(benchmark, "cython", threads)
    benchmark.extra_info["in_subprocesses"] = True   # this process's engine runs no job
    slowest = benchmark.pedantic(one_round, rounds=3 if not benchmark.disabled else 1, iterations=1)
    benchmark.extra_info["calls_per_second"] = PROCESSES * calls / slowest
