"""``python -m fastembed_ext bench``: a compact speed sweep, under a minute.

Every case is timed against its NumPy peer (and torch where installed) in the
same run, and reported as a ratio: peer time / fastembed_ext time.  The full
grid, with pytest-benchmark's statistics, is ``pytest bench`` in the source
tree.
"""

import json
import platform
import sys
from typing import Any, Iterator

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
