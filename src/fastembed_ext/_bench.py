"""``python -m fastembed_ext bench``: a compact speed sweep, about a minute.

Every case is timed against the fastest NumPy spelling of its operation,
measured in the same run (and against torch where it is installed), and
reported as a ratio: peer time / fastembed_ext time.  ``--json`` keeps the
medians themselves, the machine, the versions, the thread counts and the load
the run saw, so that two runs can be compared; ``scripts/readme_numbers.py``
turns that file into the README's tables.  ``--plot`` draws one figure of the
same ratios.  The full grid, with pytest-benchmark's statistics, is
``pytest bench`` in the source tree.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from typing import IO, Any, Callable, Iterator

import numpy as np

import fastembed_ext as fe

from . import _runtime
from ._workloads import median_seconds as _median
from ._workloads import zipf_ids

B = 65536
SCHEMA = 2
OPERATIONS = ("gather", "scatter_add")
# what each operation's fastembed_ext call is, as printed and saved
CALLS = {"gather": "fe.gather(W, idx, out=out)", "scatter_add": "fe.scatter_add(dW, idx, G)"}


# --------------------------------------------------------------------------
# the peers: every NumPy spelling of an operation, the fastest one wins

def gather_peers(w: np.ndarray[Any, Any], ids: np.ndarray[Any, Any],
                 out: np.ndarray[Any, Any]) -> dict[str, Callable[[], Any]]:
    """The NumPy spellings of a row gather.  ``np.take(..., out=)`` with the
    default mode="raise" is left out: it buffers the whole result before it
    writes ``out`` and runs about half as fast as these."""
    return {"np.take": lambda: np.take(w, ids, axis=0),
            "W[idx]": lambda: w[ids],
            "np.take(out=, mode='clip')": lambda: np.take(w, ids, axis=0, out=out, mode="clip")}


def scatter_peers(gw: np.ndarray[Any, Any], ids: np.ndarray[Any, Any],
                  g: np.ndarray[Any, Any]) -> dict[str, Callable[[], Any]]:
    """NumPy's one spelling of an unbuffered scatter-add."""
    return {"np.add.at": lambda: np.add.at(gw, ids, g)}


PEER_SPELLINGS = {
    "gather": {"np.take": "np.take(W, idx, axis=0)", "W[idx]": "W[idx]",
               "np.take(out=, mode='clip')": "np.take(W, idx, axis=0, out=out, mode='clip')"},
    "scatter_add": {"np.add.at": "np.add.at(dW, idx, G)"},
}


def fastest(medians: dict[str, float]) -> str:
    return min(medians, key=lambda k: medians[k])


# --------------------------------------------------------------------------
# the machine and the load, so that two runs can be compared

_X86_LEVELS = (
    ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)


def _cpuinfo(path: str = "/proc/cpuinfo") -> list[dict[str, str]]:
    """The processor blocks of /proc/cpuinfo (Linux), or [] elsewhere."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return []
    blocks = []
    for block in text.strip().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        blocks.append(fields)
    return blocks


def isa_level(arch: str, flags: set[str]) -> str:
    """The x86-64 micro-architecture level (v1 to v4) the CPU's flags reach,
    the AArch64 extensions that matter here, or "unknown"."""
    if arch.lower() in ("x86_64", "amd64"):
        if not flags:
            return "unknown"
        level = "x86-64-v1"
        for name, needs in _X86_LEVELS:
            if not needs <= flags:
                break
            level = name
        return level
    if arch.lower() in ("aarch64", "arm64"):
        extra = [f for f in ("asimdhp", "sve", "sve2") if f in flags]
        return "aarch64" + (f" ({', '.join(extra)})" if extra else "")
    return "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores, ISA level and the CPUs this process may use."""
    blocks = _cpuinfo()
    first = blocks[0] if blocks else {}
    arch = platform.machine()
    flags = set((first.get("flags") or first.get("Features") or "").split())
    model = (first.get("model name") or first.get("Model") or first.get("Hardware")
             or platform.processor() or arch)
    cores = {(b.get("physical id"), b.get("core id")) for b in blocks if "core id" in b}
    usable, facts = _runtime.cpu_budget()
    info = fe.info()
    return {
        "cpu_model": model,
        "arch": arch,
        "isa_level": isa_level(arch, flags),
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "usable_cpus": usable,
        "affinity": facts["affinity"],
        "cgroup_quota": facts["cgroup_quota"],
        "cpu_features": info["cpu"],
        "prefetch_hint": info["prefetch_hint"],
        "gather_stream_min_row_bytes": info["gather_stream_min_row_bytes"],
        "os": platform.platform(),
    }


def versions(torch: Any) -> dict[str, Any]:
    info = fe.info()
    return {"fastembed_ext": fe.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "torch": torch.__version__ if torch else None,
            "engine": info["engine"], "build_cflags": info["build"].get("cflags")}


def load_now() -> dict[str, Any]:
    """The 1-minute load average and the tasks other than this process that want a CPU now."""
    try:
        loadavg: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        loadavg = None
    others = int(_runtime.kernels.runnable_others()) if _runtime.kernels is not None else 0
    return {"loadavg_1min": loadavg, "runnable_others": others}


def _load_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    avgs = [s["loadavg_1min"] for s in samples if s["loadavg_1min"] is not None]
    others = [s["runnable_others"] for s in samples]
    return {"samples": len(samples),
            "loadavg_1min_min": min(avgs) if avgs else None,
            "loadavg_1min_max": max(avgs) if avgs else None,
            "runnable_others_median": statistics.median(others) if others else None,
            "runnable_others_max": max(others) if others else None}


# --------------------------------------------------------------------------
# output paths: checked before the sweep, so a bad one costs nothing

def check_output_path(path: str, option: str) -> str | None:
    """Why ``path`` cannot be written, or None when it can."""
    full = os.path.abspath(path)
    directory = os.path.dirname(full)
    if os.path.isdir(full):
        return f"{option} {path}: is a directory"
    if not os.path.isdir(directory):
        return f"{option} {path}: the directory {directory} does not exist"
    if not os.access(directory, os.W_OK) or (os.path.exists(full) and not os.access(full, os.W_OK)):
        return f"{option} {path}: not writable"
    return None


def check_plot_path(path: str) -> str | None:
    """Why ``--plot path`` cannot be drawn (matplotlib missing, unknown format), or None."""
    try:
        from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return ("--plot needs matplotlib, which is not installed: "
                "pip install 'fastembed_ext[plot]' (or pip install matplotlib)")
    problem = check_output_path(path, "--plot")
    if problem:
        return problem
    formats = Figure().canvas.get_supported_filetypes()
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix not in formats:
        return (f"--plot {path}: the name must end in an image format matplotlib writes "
                f"({', '.join('.' + f for f in sorted(formats))}), got "
                f"{('.' + suffix) if suffix else 'no extension'}")
    return None


# --------------------------------------------------------------------------
# progress: a line that rewrites itself on a terminal, plain lines in a log

class Progress:
    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = 0

    def step(self, n: int, text: str) -> None:
        line = f"[{n:>{len(str(self.total))}}/{self.total}] {text}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


# --------------------------------------------------------------------------
# the sweep

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
        for dist in ("uniform", "zipf"):
            for d in widths:
                yield num_rows, d, dist


def _measure(op: str, peers: dict[str, Callable[[], Any]], fast: Callable[[int], Any],
             torch_call: Callable[[], Any] | None, torch: Any, counts: list[int],
             slow_peer: bool, explain: Callable[[], str]) -> dict[str, Any]:
    """Medians of every peer spelling and of fastembed_ext at each thread count; ratios
    against the fastest spelling; and why the engine kept the call on one thread, if it
    did, read right after fastembed_ext's timings (torch's OpenMP threads, still
    spinning after its calls, would read as other runnable tasks)."""
    if slow_peer:   # np.add.at: seconds per call on the larger cases
        peer_s = {k: _median(f, budget=0.3, min_rounds=3, max_rounds=5) for k, f in peers.items()}
    else:
        peer_s = {k: _median(f) for k, f in peers.items()}
    peer = fastest(peer_s)
    fe_s = {str(n): _median(lambda: fast(n)) for n in counts}
    entry: dict[str, Any] = {
        "call": CALLS[op], "peer": peer, "peer_seconds": peer_s, "fastembed_seconds": fe_s,
        "speedup": {n: peer_s[peer] / t for n, t in fe_s.items()},
        "one_thread_because": explain() or None,
    }
    if torch_call is not None:
        prev = torch.get_num_threads()
        try:
            torch_s = {}
            for n in counts:
                torch.set_num_threads(n)
                torch_s[str(n)] = _median(torch_call)
        finally:
            torch.set_num_threads(prev)
        entry["torch_seconds"] = torch_s
        entry["vs_torch"] = {n: torch_s[n] / fe_s[n] for n in fe_s}
    return entry


def sweep(quick: bool, threads: int, torch: Any, progress: Progress | None = None
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every case's measurements, and the load samples taken between cases."""
    rng = np.random.default_rng(0)
    cases = list(_cases(quick))
    counts = [1, threads]
    results = []
    load = [load_now()]
    tables: dict[tuple[int, int], np.ndarray[Any, Any]] = {}
    for n_case, (num_rows, d, dist) in enumerate(cases, 1):
        if progress is not None:
            progress.step(n_case, f"T={num_rows} d={d} {dist} ids")
        key = (num_rows, d)
        if key not in tables:
            tables.clear()
            w = np.empty((num_rows, d), np.float32)
            w[...] = rng.random((num_rows, d), dtype=np.float32)
            tables[key] = w
        w = tables[key]
        ids = (rng.integers(0, num_rows, B) if dist == "uniform" else zipf_ids(rng, num_rows, B))
        g = rng.random((B, d), dtype=np.float32)
        out = np.empty((B, d), np.float32)
        gw = np.zeros((num_rows, d), np.float32)
        row: dict[str, Any] = {"T": num_rows, "d": d, "ids": dist}
        t_gather = t_scatter = None
        if torch is not None:
            wt, it, gt, gwt = (torch.from_numpy(w), torch.from_numpy(ids), torch.from_numpy(g),
                               torch.from_numpy(gw))
            t_gather = lambda: torch.embedding(wt, it)          # noqa: E731
            t_scatter = lambda: gwt.index_add_(0, it, gt)       # noqa: E731
        row["gather"] = _measure(
            "gather", gather_peers(w, ids, out),
            lambda n: fe.gather(w, ids, out=out, num_threads=n), t_gather, torch, counts, False,
            lambda: explain_threads("gather", w, ids, threads))
        row["scatter_add"] = _measure(
            "scatter_add", scatter_peers(gw, ids, g),
            lambda n: fe.scatter_add(gw, ids, g, num_threads=n), t_scatter, torch, counts, True,
            lambda: explain_threads("scatter_add", gw, ids, threads))
        results.append(row)
        load.append(load_now())
    if progress is not None:
        progress.done()
    return results, load


def print_table(data: dict[str, Any], stream: IO[str] | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    n = data["meta"]["threads"][-1]
    rows = data["results"]

    def p(text: str = "") -> None:
        print(text, file=out)

    p(f"speedup over the fastest NumPy spelling, measured in this run "
      f"(peer median / fastembed_ext median; higher is faster)")
    p(f"{'':<26}{'gather(out=), vs the fastest NumPy spelling':<58}{'scatter_add, vs np.add.at'}")
    p(f"{'T':>9}{'d':>6}{'ids':>9}  {'fastest spelling':<28}{'1 thread':>9}{f'{n} threads':>11}"
      f"{f'{n}t/1t':>8}  {'1 thread':>9}{f'{n} threads':>11}{f'{n}t/1t':>8}")
    for r in rows:
        g, s = r["gather"], r["scatter_add"]
        g1, gn = g["speedup"]["1"], g["speedup"][str(n)]
        s1, sn = s["speedup"]["1"], s["speedup"][str(n)]
        p(f"{r['T']:>9}{r['d']:>6}{r['ids']:>9}  {g['peer']:<28}{g1:>8.2f}x{gn:>10.2f}x"
          f"{gn / g1:>7.2f}x  {s1:>8.1f}x{sn:>10.1f}x{sn / s1:>7.2f}x")
    p(f"{n}t/1t: {n} threads over 1 thread, for that operation.  Medians and the losing "
      f"spellings are in --json.")
    if any("vs_torch" in r["gather"] for r in rows):
        p()
        p("against torch at the same thread count (torch median / fastembed_ext median)")
        p(f"{'T':>9}{'d':>6}{'ids':>9}  {'torch.embedding 1t':>19}{f'{n}t':>8}"
          f"{'index_add_ 1t':>16}{f'{n}t':>8}")
        for r in rows:
            g, s = r["gather"]["vs_torch"], r["scatter_add"]["vs_torch"]
            p(f"{r['T']:>9}{r['d']:>6}{r['ids']:>9}  {g['1']:>18.2f}x{g[str(n)]:>7.2f}x"
              f"{s['1']:>15.2f}x{s[str(n)]:>7.2f}x")
    notes = [f"{op}, T={r['T']} d={r['d']} {r['ids']} ids: {r[op]['one_thread_because']}"
             for r in rows for op in OPERATIONS if r[op].get("one_thread_because")]
    if notes:
        p()
        p(f"where {n} threads were asked for and the engine ran one (its plan, read right "
          f"after its timings):")
        for note in notes:
            p(f"  {note}")


def run(json_path: str | None = None, plot_path: str | None = None, quick: bool = False,
        threads: int | None = None) -> int:
    problems = []
    if json_path:
        problems.append(check_output_path(json_path, "--json"))
    if plot_path:
        problems.append(check_plot_path(plot_path))
    if any(problems):
        for problem in filter(None, problems):
            print(f"fastembed_ext bench: {problem}", file=sys.stderr)
        return 2
    if _runtime.kernels is None:
        print(f"fastembed_ext: {_runtime.unavailable_message()}", file=sys.stderr)
        return 1
    threads = threads or max(2, fe.get_num_threads())
    torch = _torch()
    mach = machine()
    print(f"fastembed_ext {fe.__version__} bench: float32, B={B} ids per call, threads 1 and "
          f"{threads}; {mach['cpu_model']} ({mach['isa_level']}), {mach['usable_cpus']} usable "
          f"CPU(s); {'torch ' + torch.__version__ if torch else 'torch not installed'}",
          flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    progress = Progress(len(list(_cases(quick))))
    results, load = sweep(quick, threads, torch, progress)
    info = fe.info()
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "quick": quick,
            "dtype": "float32",
            "B": B,
            "threads": [1, threads],
            "default_threads": info["num_threads"],
            "default_threads_source": info["num_threads_source"],
            "machine": mach,
            "versions": versions(torch),
            "load": _load_summary(load),
            "calls": CALLS,
            "peers": PEER_SPELLINGS,
            "units": "seconds (medians); speedup = fastest peer median / fastembed_ext median",
        },
        "results": results,
    }
    data["meta"]["summary"] = machine_line(data["meta"])
    print_table(data)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        print(f"saved {json_path}")
    if plot_path:
        plot(data, plot_path)
        print(f"saved {plot_path}")
    return 0


# --------------------------------------------------------------------------
# the picture

def machine_line(meta: dict[str, Any]) -> str:
    """One line saying where and under what load a run was taken (plot and README)."""
    m, v, load = meta["machine"], meta["versions"], meta["load"]
    cores = f"{m['usable_cpus']} usable CPU(s)"
    if m.get("physical_cores"):
        cores += f" of {m['logical_cpus']} logical, {m['physical_cores']} physical cores"
    text = f"{m['cpu_model']} ({m['arch']}, {m['isa_level']}), {cores}"
    if load.get("loadavg_1min_max") is not None:
        text += (f"; load average {load['loadavg_1min_min']:.1f}-{load['loadavg_1min_max']:.1f}, "
                 f"other runnable tasks max {load['runnable_others_max']} during the run")
    text += (f"; fastembed_ext {v['fastembed_ext']}, NumPy {v['numpy']}, "
             f"Python {v['python']}, {meta['started'][:10]}")
    return text


def plot(data: dict[str, Any], path: str) -> None:
    """One figure: speedup over the fastest NumPy spelling, per operation (a panel each)
    and thread count (a bar each), for every case of the run."""
    import textwrap

    import matplotlib  # type: ignore[import-not-found, unused-ignore]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.lines import Line2D  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.patches import Patch  # type: ignore[import-not-found, unused-ignore]

    meta, rows = data["meta"], data["results"]
    n = meta["threads"][-1]
    colours = {"1": "#9ecae1", str(n): "#08519c"}
    fig, axes = plt.subplots(2, 1, figsize=(12, 8.5), layout="constrained")
    x = np.arange(len(rows))
    width = 0.38
    for ax, op in zip(axes, OPERATIONS):
        peers = [r[op]["peer"] for r in rows]
        if op == "gather":
            won = ", ".join(f"{k} {peers.count(k)}" for k in PEER_SPELLINGS[op] if k in peers)
            ax.set_title(f"gather(out=)  against the fastest of {', '.join(PEER_SPELLINGS[op])}, "
                         f"per case (fastest: {won} of {len(rows)} cases)", fontsize=10, loc="left")
        else:
            ax.set_title("scatter_add  against np.add.at (repeated indices accumulate in order)",
                         fontsize=10, loc="left")
        for k, key in enumerate(("1", str(n))):
            vals = [r[op]["speedup"][key] for r in rows]
            bars = ax.bar(x + (k - 0.5) * width, vals, width, color=colours[key],
                          edgecolor="white", linewidth=0.5)
            for bar, r, v in zip(bars, rows, vals):
                if key != "1" and r[op].get("one_thread_because"):
                    bar.set_hatch("///")
                ax.annotate(f"{v:.1f}" if v < 100 else f"{v:.0f}",
                            (bar.get_x() + bar.get_width() / 2, v), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7.5)
        ax.axhline(1.0, color="#d62728", lw=1, ls="--")
        ax.set_ylabel("speedup (x)")
        ax.set_xticks(x, [f"d={r['d']}" for r in rows], fontsize=8)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        top = max(max(r[op]["speedup"].values()) for r in rows)
        ax.set_ylim(0, top * 1.32)   # headroom for the labels and the legend
        # the (T, ids) blocks under the d labels, with a line between blocks
        blocks: list[tuple[int, int, str]] = []
        for i, r in enumerate(rows):
            if not blocks or (blocks[-1][1], blocks[-1][2]) != (r["T"], r["ids"]):
                blocks.append((i, r["T"], r["ids"]))
        for b, (start, num_rows, dist) in enumerate(blocks):
            end = blocks[b + 1][0] if b + 1 < len(blocks) else len(rows)
            if start:
                ax.axvline(start - 0.5, color="grey", lw=0.6)
            ax.annotate(f"T = {num_rows:,} rows, {dist} ids", ((start + end - 1) / 2, 0),
                        xycoords=("data", "axes fraction"), xytext=(0, -20),
                        textcoords="offset points", ha="center", va="top", fontsize=8.5)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#eeeeee")
        ax.set_axisbelow(True)
    handles: list[Any] = [Patch(color=colours["1"]), Patch(color=colours[str(n)]),
                          Line2D([], [], color="#d62728", lw=1, ls="--")]
    labels = ["1 thread", f"{n} threads", "1x: as fast as the NumPy peer"]
    if any(r[op].get("one_thread_because") for r in rows for op in OPERATIONS):
        handles.insert(2, Patch(facecolor=colours[str(n)], hatch="///", edgecolor="white"))
        labels.insert(2, f"{n} threads asked, the engine ran 1 (why: bench's table, --json)")
    axes[0].legend(handles, labels, loc="upper left", ncol=len(labels), fontsize=8,
                   frameon=False)
    quick = " (--quick sweep)" if meta.get("quick") else ""
    fig.suptitle(f"fastembed_ext against the fastest NumPy spelling: float32, "
                 f"B = {meta['B']:,} ids per call{quick}", fontsize=12, fontweight="bold",
                 x=0.01, ha="left")
    fig.supxlabel("\n".join(textwrap.wrap("Measured on " + machine_line(meta) + ". Speedup = "
                                          "median time of the peer / median time of "
                                          "fastembed_ext, both from this run.", 175)),
                  fontsize=8, color="#444444", x=0.01, ha="left")
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
        others = rt.kernels.runnable_others()
        if others and others + threads > rt.cpu_budget()[0]:
            return f"{others} other runnable task(s) on the CPUs: threads would share cores"
        return ""
    plan = rt.kernels.scatter_plan(table, np.ascontiguousarray(ids.reshape(-1)), threads)
    if plan["threads"] > 1:
        return ""
    if row_bytes < build["scatter_parallel_min_row_bytes"]:
        return f"rows of {row_bytes} B, under {build['scatter_parallel_min_row_bytes']} B"
    if ids.size * row_bytes < build["scatter_parallel_min_bytes"]:
        return (f"updates of {ids.size * row_bytes >> 10} KiB, under the "
                f"{build['scatter_parallel_min_bytes'] >> 20} MiB a threaded scatter-add needs")
    if row_bytes < build["scatter_long_row_bytes"] and \
            table.shape[0] < build["scatter_min_table_rows_per_update"] * ids.size:
        return (f"a table of {table.shape[0]} rows for {ids.size} updates: split by position, "
                f"too many updates would wait behind an earlier range's; split by rows, every thread "
                f"would stream the whole gradient for rows of {row_bytes} B (that pays from "
                f"{build['scatter_long_row_bytes']} B)")
    if plan["distinct_percent"] < build["scatter_min_distinct_percent"]:
        hot = (f"{plan['distinct_percent']}% of sampled updates have a row of their own: a hot "
               f"set in cache, whose rows take their updates in index order")
        if plan["distinct_percent"] < build["scatter_bands_min_distinct_percent"]:
            return (f"{hot}, and under {build['scatter_bands_min_distinct_percent']}%: threads "
                    f"that own bands of columns would stream the gradient twice for nothing")
        if row_bytes < 2 * build["scatter_min_band_bytes"]:
            return (f"{hot}; rows of {row_bytes} B are too short for threads that own bands "
                    f"of columns (from {2 * build['scatter_min_band_bytes']} B)")
        return (f"{hot}; rows {row_bytes} B apart cannot be cut on "
                f"{build['scatter_band_align_bytes']}-byte blocks for threads that own bands "
                f"of columns")
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
