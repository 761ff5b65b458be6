#!/usr/bin/env bash
# How far two threads can speed up scatter_add on this machine, at the
# scatter shapes of the engine's target (B=65536 uniform int64 ids, float32),
# in one run.  For each (T, d), timed interleaved in the same process
# (medians of 21):
#   - fastembed_ext.scatter_add at 1 and 2 threads;
#   - the split limit (bench/native/scatter_split_limit.c) at 1 and 2
#     threads: the same loop over two halves of the updates, with the same
#     prefetches and the same memory traffic, and nothing that keeps a row's
#     updates in order (no check, nothing deferred, no pool), on a scratch
#     table of the same shape.
# It prints 2 threads / 1 for both, the limit's 2-thread time over ours, and
# how many of our 2-thread calls ran threaded (the engine keeps a call on one
# thread while another task waits for a CPU).  The limit's ratio is the most
# any split that streams each update once could reach here.  The calls
# alternate, so each of ours finds the engine's helper asleep, as a call
# between other work does; pytest-benchmark's back-to-back rounds do not.
#
#   scripts/scatter_thread_limit.sh   # the active python3 (PYTHON=...) needs fastembed_ext
#   SHAPES="T,d ..." scripts/scatter_thread_limit.sh
#
# Run it on a quiet machine with 2 CPUs free; it takes about two minutes and 2 GB.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init scatter_thread_limit
"$PY" -c "import fastembed_ext" 2>/dev/null || fe_die "needs fastembed_ext in $PY"
cc -O3 -shared -fPIC -pthread -o "$WORK/libscatter_split_limit.so" \
    "$ROOT/bench/native/scatter_split_limit.c"

SHAPES="${SHAPES:-200000,64 200000,128 200000,768 1000000,64 1000000,128 1000000,768}"
for shape in $SHAPES; do
    IFS=, read -r T d <<<"$shape"
    "$PY" - "$ROOT/scripts" "$WORK/libscatter_split_limit.so" "$T" "$d" <<'PYEOF'
import ctypes
import sys

import numpy as np

import fastembed_ext as fe

sys.path.insert(0, sys.argv[1])
import _read_limit  # noqa: E402

lib = ctypes.CDLL(sys.argv[2])
lib.scatter_split_limit.restype = ctypes.c_int
lib.scatter_split_limit.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
                                    ctypes.c_void_p, ctypes.c_long, ctypes.c_int]
T, d = map(int, sys.argv[3:5])
B = 65536
rng = np.random.default_rng(0)
grad = rng.random((B, d), dtype=np.float32)
idx = rng.integers(0, T, B)
table = np.ones((T, d), np.float32)     # every page written before timing
scratch = np.ones((T, d), np.float32)   # the limit's adds race: never read


def limit(threads: int) -> None:
    if lib.scatter_split_limit(scratch.ctypes.data, d, grad.ctypes.data, idx.ctypes.data, B,
                               threads) != 0:
        raise RuntimeError("could not start the second thread")


threaded = [0, 0]   # 2-thread calls that ran as engine jobs, of all


def ours_on_2() -> None:
    # a 2-thread call runs on one where the engine sees another task waiting
    # for a CPU (README, "Threads and backends"): count the calls that did not
    jobs = fe._kernels.engine_state()["jobs"]
    fe.scatter_add(table, idx, grad, num_threads=2)
    threaded[0] += fe._kernels.engine_state()["jobs"] > jobs
    threaded[1] += 1


calls = {
    "fastembed_ext 1T": lambda: fe.scatter_add(table, idx, grad, num_threads=1),
    "fastembed_ext 2T": ours_on_2,
    "limit 1T": lambda: limit(1),
    "limit 2T": lambda: limit(2),
}
ms = _read_limit.medians_ms(calls, 21)
ours, lim = ms["fastembed_ext 1T"] / ms["fastembed_ext 2T"], ms["limit 1T"] / ms["limit 2T"]
print(f"T={T} d={d}: fastembed_ext {ms['fastembed_ext 1T']:.2f} / {ms['fastembed_ext 2T']:.2f} ms, "
      f"limit {ms['limit 1T']:.2f} / {ms['limit 2T']:.2f} ms (1 / 2 threads) | 2T/1T "
      f"fastembed_ext {ours:.2f}x, limit {lim:.2f}x | limit 2T / fastembed_ext 2T "
      f"{ms['limit 2T'] / ms['fastembed_ext 2T']:.2f} | fastembed_ext's 2-thread calls that ran "
      f"threaded: {threaded[0]} of {threaded[1]}")
PYEOF
done
