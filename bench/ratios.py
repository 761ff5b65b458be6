"""The ratio tables of one `pytest bench` run, read from its JSON.

    pytest bench --benchmark-json=run.json [-k ...]
    python bench/ratios.py run.json

Every ratio is a median of the peer over a median of fastembed_ext, both from
the same run (a row whose peer or whose own case did not run is left out):

- gather(out=): against the fastest NumPy spelling of that case (the fastest
  of np.take(out=, mode="clip"), np.take and W[idx]), against
  torch.index_select(out=) at the same thread count, and the share of a
  plain row copy's speed (copy-N median over cython-N median);
- scatter_add: against np.add.at and Tensor.index_add_, and N threads over 1;
- embedding_bag and its backward: against torch at the same thread count
  (float32; and float16 and bfloat16 bags against torch's of the same dtype);
- load: the default thread count over one thread, quiet and beside a busy loop.

Last, the cases asked for more than one thread whose measured calls did not
all run threaded (the engine's job count over the measured calls, from
bench/conftest.py): under the load rule such a "2 threads" figure is partly
or wholly one thread's.
"""
import json
import re
import sys
from collections import defaultdict

NUMPY_GATHER = ("numpy-take-clip", "numpy-take", "numpy-fancy")


def _medians(path):
    """{test name: {param id: median seconds}}"""
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    out = defaultdict(dict)
    for run in runs:
        m = re.fullmatch(r"(test_\w+)\[(.*)\]", run["name"])
        if m:
            out[m.group(1)][m.group(2)] = run["stats"]["median"]
    return out


def _split(params, backends):
    """(case, backend) for a param id ending in one of the backend names."""
    for b in sorted(backends, key=len, reverse=True):
        if params.endswith("-" + b):
            return params[: -len(b) - 1], b
    return None, None


def _by_case(medians, backends):
    cases = defaultdict(dict)
    for params, t in medians.items():
        case, b = _split(params, backends)
        if case is not None:
            cases[case][b] = t
    return cases


def _x(peer, ours):
    return f"{peer / ours:6.2f}x" if peer and ours else "      -"


def gather(m, n):
    names = NUMPY_GATHER + ("cython-1", f"cython-{n}", "torch-1", f"torch-{n}", "copy-1", f"copy-{n}")
    into = _by_case(m.get("test_gather_into_out", {}), names)
    fresh = _by_case(m.get("test_gather_fresh", {}), names)
    if not into:
        return
    print(f"gather(out=)  (T-d-ids-index dtype)   vs fastest NumPy 1t {n}t | vs torch.index_select"
          f"(out=) 1t {n}t | share of copy 1t {n}t | fastest NumPy spelling")
    for case, t in into.items():
        numpy = {k: v for k, v in {**fresh.get(case, {}), **t}.items() if k in NUMPY_GATHER}
        best = min(numpy, key=numpy.get) if numpy else None
        peer = numpy.get(best)
        c1, cn = t.get("cython-1"), t.get(f"cython-{n}")
        print(f"  {case:32} {_x(peer, c1)} {_x(peer, cn)} | {_x(t.get('torch-1'), c1)} "
              f"{_x(t.get(f'torch-{n}'), cn)} | {_x(t.get('copy-1'), c1)} "
              f"{_x(t.get(f'copy-{n}'), cn)} | {best}")


def scatter(m, n):
    names = ("numpy", "cython-1", f"cython-{n}", "torch-1", f"torch-{n}")
    cases = _by_case(m.get("test_scatter_add", {}), names)
    if not cases:
        return
    print(f"scatter_add  (T-d-ids-index dtype)     vs np.add.at 1t {n}t | vs index_add_ 1t {n}t"
          f" | {n}t over 1t")
    for case, t in cases.items():
        c1, cn = t.get("cython-1"), t.get(f"cython-{n}")
        print(f"  {case:32} {_x(t.get('numpy'), c1)} {_x(t.get('numpy'), cn)} | "
              f"{_x(t.get('torch-1'), c1)} {_x(t.get(f'torch-{n}'), cn)} | {_x(c1, cn)}")


def bags(m, n, test, numpy_name, title):
    modes = ("sum", "mean", "max")
    names = [f"{b}-{mode}" for b in (numpy_name, "cython-1", f"cython-{n}", "torch-1", f"torch-{n}")
             for mode in modes]
    cases = _by_case(m.get(test, {}), names)
    if not cases:
        return
    print(f"{title}  (T-d-L-B)       mode   vs torch 1t {n}t | vs {numpy_name} 1t | {n}t over 1t")
    for case, t in cases.items():
        for mode in modes:
            c1, cn = t.get(f"cython-1-{mode}"), t.get(f"cython-{n}-{mode}")
            if c1 is None and cn is None:
                continue
            print(f"  {case:28} {mode:5} {_x(t.get(f'torch-1-{mode}'), c1)} "
                  f"{_x(t.get(f'torch-{n}-{mode}'), cn)} | {_x(t.get(f'{numpy_name}-{mode}'), c1)} | "
                  f"{_x(c1, cn)}")


def load(m):
    cases = _by_case(m.get("test_default_threads_against_one_thread", {}),
                     ("cython-1", "cython-default"))
    procs = m.get("test_processes_calling_at_once", {})
    if not cases and not procs:
        return
    print("load  default threads over one thread (1t median / default median; >= 1 is no loss)")
    for case, t in cases.items():
        print(f"  {case:32} {_x(t.get('cython-1'), t.get('cython-default'))}")
    if procs:
        print(f"  {'processes, one per CPU, at once':32} {_x(procs.get('1'), procs.get('default'))}")


def serial_calls(path):
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    rows = []
    for run in runs:
        info = run.get("extra_info", {})
        threads, calls = info.get("threads"), info.get("measured_calls")
        if info.get("backend") != "cython" or threads == 1 or not calls or "engine_jobs" not in info:
            continue
        share = info["engine_jobs"] / calls
        if share < 1:
            rows.append((run["name"], share))
    if rows:
        print("threads asked for, not all taken  (engine jobs per measured call; < 1: some calls "
              "ran on one thread)")
        for name, share in rows:
            print(f"  {name:70} {share:6.3f}")


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    m = _medians(argv[1])
    # the N of the cython-N cases in this run
    found = [int(k) for v in m.values() for p in v for k in re.findall(r"cython-(\d+)", p)]
    n = max([k for k in found if k > 1], default=2)
    for report in (lambda: gather(m, n), lambda: scatter(m, n),
                   lambda: bags(m, n, "test_embedding_bag", "numpy-reduceat", "embedding_bag"),
                   lambda: bags(m, n, "test_embedding_bag_16bit", "numpy-reduceat",
                                "embedding_bag, 16-bit"),
                   lambda: bags(m, n, "test_embedding_bag_backward", "numpy-add-at",
                                "embedding_bag backward"),
                   lambda: load(m), lambda: serial_calls(argv[1])):
        report()


if __name__ == "__main__":
    main(sys.argv)
