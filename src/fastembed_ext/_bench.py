"""``python -m fastembed_ext bench``: a compact speed sweep, under a minute.

Every case is timed against its NumPy peer (and torch where installed) in the
same run, and reported as a ratio: peer time / fastembed_ext time.  The full
grid, with pytest-benchmark's statistics, is ``pytest bench`` in the source
tree.
"""

import json
import platform
import sys
from typing import Any, Callable, Iterator

import numpy as np

import fastembed_ext as fe

from . import _runtime
from ._workloads import median_seconds as _median
from ._workloads import zipf_ids

B = 65536


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _cases(quick: bool) -> Iterator[tuple[int, int, str]]:
    widths = (16, 128, 768) if quick else (16, 64, 128, 300, 768)
    tables = (30_000,) if quick else (30_000, 1_000_000)
    for num_rows in tables:
        for d in widths:
            for dist in ("uniform", "zipf"):
                yield num_rows, d, dist


def run(json_path: str | None = None, plot_path: str | None = None, quick: bool = False,
        threads: int | None = None) -> int:
    if _runtime.kernels is None:
        print(f"fastembed_ext: {_runtime.unavailable_message()}", file=sys.stderr)
        return 1
    threads = threads or max(2, fe.get_num_threads())
    torch = _torch()
    rng = np.random.default_rng(0)
    cases = list(_cases(quick))
    results = []
    tables: dict[tuple[int, int], np.ndarray[Any, Any]] = {}
    print(f"fastembed_ext {fe.__version__} bench: float32, B={B}, threads 1 and {threads}"
          f"{', torch ' + torch.__version__ if torch else ', torch not installed'}")
    for n_case, (num_rows, d, dist) in enumerate(cases, 1):
        print(f"\r[{n_case:>2}/{len(cases)}] T={num_rows} d={d} {dist:<8}", end="", file=sys.stderr,
              flush=True)
        key = (num_rows, d)
        if key not in tables:
            tables.clear()
            w = np.empty((num_rows, d), np.float32)
            w[...] = rng.random((num_rows, d), dtype=np.float32)
            tables[key] = w
        w = tables[key]
        ids = (rng.integers(0, num_rows, B) if dist == "uniform"
               else zipf_ids(rng, num_rows, B))
        g = rng.random((B, d), dtype=np.float32)
        out = np.empty((B, d), np.float32)
        gw = np.zeros((num_rows, d), np.float32)
        row = {"T": num_rows, "d": d, "dist": dist}
        t_take = _median(lambda: np.take(w, ids, axis=0))
        row["gather_1"] = t_take / _median(lambda: fe.gather(w, ids, out=out, num_threads=1))
        row["gather_n"] = t_take / _median(lambda: fe.gather(w, ids, out=out, num_threads=threads))
        t_addat = _median(lambda: np.add.at(gw, ids, g), budget=0.2, min_rounds=1, max_rounds=3)
        t_s1 = _median(lambda: fe.scatter_add(gw, ids, g, num_threads=1))
        t_sn = _median(lambda: fe.scatter_add(gw, ids, g, num_threads=threads))
        row["scatter_1"] = t_addat / t_s1
        row["scatter_n"] = t_addat / t_sn
        row["scatter_n_vs_1"] = t_s1 / t_sn
        if torch is not None:
            prev = torch.get_num_threads()
            wt, it, gt = torch.from_numpy(w), torch.from_numpy(ids), torch.from_numpy(g)
            gwt = torch.from_numpy(gw)
            torch.set_num_threads(threads)
            row["vs_torch_embedding_n"] = _median(lambda: torch.embedding(wt, it)) / _median(
                lambda: fe.gather(w, ids, num_threads=threads))
            row["vs_torch_index_add_n"] = _median(lambda: gwt.index_add_(0, it, gt)) / t_sn
            torch.set_num_threads(prev)
        results.append(row)
    print("\r" + " " * 40 + "\r", end="", file=sys.stderr)

    cols = [("gather_1", "gather 1t"), ("gather_n", f"gather {threads}t"),
            ("scatter_1", "scatter 1t"), ("scatter_n", f"scatter {threads}t"),
            ("scatter_n_vs_1", f"{threads}t/1t")]
    if torch is not None:
        cols += [("vs_torch_embedding_n", "vs torch.emb"), ("vs_torch_index_add_n", "vs index_add_")]
    print("ratios: peer time / fastembed_ext time (gather vs np.take, scatter vs np.add.at)")
    print(f"{'T':>9}{'d':>5}{'ids':>9}" + "".join(f"{title:>15}" for _, title in cols))
    for row in results:
        print(f"{row['T']:>9}{row['d']:>5}{row['dist']:>9}"
              + "".join(f"{row[key]:>14.2f}x" for key, _ in cols))

    meta = {"machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__ if torch else None, "threads": threads,
            "B": B, "dtype": "float32", "info": fe.info()}
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2, default=str)
        print(f"saved {json_path}")
    if plot_path:
        _plot(results, plot_path, threads)
    return 0


def _plot(results: list[dict[str, Any]], path: str, threads: int) -> None:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("--plot needs matplotlib: pip install 'fastembed_ext[plot]'", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (op, peer) in zip(axes, (("gather", "np.take"), ("scatter", "np.add.at"))):
        for (num_rows, dist) in sorted({(r["T"], r["dist"]) for r in results}):
            rows = [r for r in results if r["T"] == num_rows and r["dist"] == dist]
            ds = [r["d"] for r in rows]
            for suffix, style in (("1", "--"), ("n", "-")):
                label = f"T={num_rows} {dist} {1 if suffix == '1' else threads}t"
                ax.plot(ds, [r[f"{op}_{suffix}"] for r in rows], style, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("d (row width)")
        ax.set_ylabel(f"speedup over {peer}")
        ax.set_title(op)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


# --------------------------------------------------------------------------
# threads under load: python -m fastembed_ext bench --load

LOAD_T, LOAD_D = 200_000, 128

_WORKER = """
import sys, time
import numpy as np
import fastembed_ext as fe
T, D, B, seed, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[6])
n = None if sys.argv[5] == "default" else int(sys.argv[5])
rng = np.random.default_rng(seed)
w = rng.random((T, D), dtype=np.float32); gw = np.zeros((T, D), np.float32)
idx = rng.integers(0, T, B); g = rng.random((B, D), dtype=np.float32); out = np.empty((B, D), np.float32)
fe.gather(w, idx, out=out, num_threads=n); fe.scatter_add(gw, idx, g, num_threads=n)
print("ready", flush=True); sys.stdin.readline()
calls, end = 0, time.perf_counter() + seconds
while time.perf_counter() < end:
    fe.gather(w, idx, out=out, num_threads=n); fe.scatter_add(gw, idx, g, num_threads=n); calls += 1
print(calls / seconds, flush=True)
"""


def _processes_rate(processes: int, threads: str, seconds: float) -> float:
    """Aggregate gather + scatter_add pairs per second of `processes` processes at once."""
    import subprocess
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(LOAD_T), str(LOAD_D), str(B),
                               str(p), threads, str(seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for p in range(processes)]
    for p in procs:                      # every table built before any clock starts
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    return sum(float(p.communicate()[0]) for p in procs)


def _busy_neighbour() -> Any:
    import subprocess
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def explain_threads(op: str, table: np.ndarray[Any, Any], ids: np.ndarray[Any, Any],
                    threads: int) -> str:
    """Why a call of `op` on `threads` threads runs on one, or '' when it runs threaded."""
    from . import _runtime as rt
    if rt.kernels is None or not rt.kernels.build_info()["parallel"]:
        return "a serial build"
    build = rt.kernels.build_info()
    row_bytes = table.shape[1] * table.itemsize
    if ids.size * row_bytes < build["parallel_min_bytes"]:
        return f"below the {build['parallel_min_bytes'] >> 10} KiB a call needs for threads"
    if op != "scatter_add":
        return ""
    plan = rt.kernels.scatter_plan(table, np.ascontiguousarray(ids.reshape(-1)), threads)
    if plan["threads"] > 1:
        return ""
    if row_bytes < build["scatter_parallel_min_row_bytes"]:
        return f"rows of {row_bytes} B, under {build['scatter_parallel_min_row_bytes']} B"
    if row_bytes < build["scatter_long_row_bytes"] and \
            table.shape[0] < build["scatter_min_table_rows_per_update"] * ids.size:
        return (f"a table of {table.shape[0]} rows for {ids.size} updates: streaming the gradient "
                f"dominates, and two threads both stream it")
    if plan["distinct_percent"] < build["scatter_min_distinct_percent"]:
        return (f"{plan['distinct_percent']}% of sampled updates have a row of their own: a hot "
                f"set in cache, bound by streaming the gradient")
    if plan["largest_part_percent"] >= 90:
        return "one row range holds the hot set"
    others = rt.kernels.runnable_others()
    if others:
        return f"{others} other runnable task(s) on the CPUs: threads would share cores"
    return "the plan kept one thread"


def run_load(seconds: float = 3.0, processes: int | None = None) -> int:
    """Default threads against one thread: quiet, beside a busy loop, and with
    `processes` processes at once (default: one per CPU this process may use)."""
    from ._runtime import cpu_budget
    if _runtime.kernels is None:
        print(f"fastembed_ext: {_runtime.unavailable_message()}", file=sys.stderr)
        return 1
    processes = processes or max(2, cpu_budget()[0])
    default = fe.get_num_threads()
    rng = np.random.default_rng(0)
    w = rng.random((LOAD_T, LOAD_D), dtype=np.float32)
    gw = np.zeros((LOAD_T, LOAD_D), np.float32)
    ids = rng.integers(0, LOAD_T, B)
    g = rng.random((B, LOAD_D), dtype=np.float32)
    out = np.empty((B, LOAD_D), np.float32)
    calls: dict[str, Callable[[int | None], Any]] = {
             "gather(out=)": lambda n: fe.gather(w, ids, out=out, num_threads=n),
             "scatter_add": lambda n: fe.scatter_add(gw, ids, g, num_threads=n)}
    print(f"fastembed_ext {fe.__version__} bench --load: float32 T={LOAD_T} d={LOAD_D} B={B}, "
          f"default threads {default} ({fe.info()['num_threads_source']}), "
          f"engine {fe.info()['engine']}")
    print(f"{'condition':<18}{'operation':<15}{'1 thread ms':>12}{'default ms':>12}"
          f"{'default/1 thread':>18}")
    worst = float("inf")
    for condition in ("quiet", "busy neighbour"):
        busy = _busy_neighbour() if condition == "busy neighbour" else None
        try:
            for name, call in calls.items():
                t1 = _median(lambda: call(1), budget=1.0, min_rounds=5, max_rounds=40)
                td = _median(lambda: call(None), budget=1.0, min_rounds=5, max_rounds=40)
                worst = min(worst, t1 / td)
                why = explain_threads(name.split("(")[0], gw, ids, default)
                note = f"  (one thread: {why})" if why else ""
                print(f"{condition:<18}{name:<15}{t1 * 1e3:>12.2f}{td * 1e3:>12.2f}"
                      f"{t1 / td:>17.2f}x{note}")
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    r1 = _processes_rate(processes, "1", seconds)
    rd = _processes_rate(processes, "default", seconds)
    worst = min(worst, rd / r1)
    print(f"{processes} processes at once, gather + scatter_add pairs per second in total: "
          f"1 thread each {r1:.1f}, default each {rd:.1f}: {rd / r1:.2f}x")
    print(f"worst default/1 thread: {worst:.2f}x "
          f"({'holds' if worst >= 0.9 else 'SHORT of'} the 0.9x the engine is built for)")
    return 0
