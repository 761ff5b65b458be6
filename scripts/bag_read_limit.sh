#!/usr/bin/env bash
# How close the bag kernels run to the machine's limit, at the bag shapes of
# bench/test_layers.py, in one run: the row-read limit
# (bench/native/row_read_limit.c: read every cache line of every looked-up
# row and nothing else, best of several orders and prefetch distances, timed
# on the same table in the same process), fastembed_ext.embedding_bag and
# torch's embedding_bag (FBGEMM's kernel), sum and mean, at 1 and 2 threads,
# all timed interleaved (medians of 21).  Prints each time and the ratios
# torch / fastembed_ext and torch / limit: the second is the most any kernel
# could gain over torch here.
#
#   scripts/bag_read_limit.sh       # the active python3 (PYTHON=...) needs fastembed_ext and torch
#   SHAPES="T,d,L,B ..." THREADS="1 2" scripts/bag_read_limit.sh
#
# After each call the script sleeps 20 ms, untimed: torch's OpenMP threads
# spin for about 10 ms after its calls, and a fastembed_ext call made meanwhile
# would see a busy CPU and run on one thread (README, "Threads and backends").
#
# Run it on a quiet machine; it takes about three minutes and 1.5 GB.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init bag_read_limit
"$PY" -c "import fastembed_ext, torch" 2>/dev/null || fe_die "needs fastembed_ext and torch in $PY"
cc -O3 -shared -fPIC -o "$WORK/librow_read_limit.so" "$ROOT/bench/native/row_read_limit.c"

SHAPES="${SHAPES:-1000000,64,20,16384 100000,128,100,4096 1000000,256,4,16384}"
THREADS="${THREADS:-1 2}"
for shape in $SHAPES; do
    IFS=, read -r T d L B <<<"$shape"
    for threads in $THREADS; do
        "$PY" - "$ROOT/scripts" "$WORK/librow_read_limit.so" "$T" "$d" "$L" "$B" "$threads" <<'PYEOF'
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

import fastembed_ext as fe

sys.path.insert(0, sys.argv[1])
import _read_limit  # noqa: E402

lib = _read_limit.load(sys.argv[2])
T, d, L, B, threads = map(int, sys.argv[3:8])
torch.set_num_threads(threads)
rng = np.random.default_rng(0)
w = rng.random((T, d), dtype=np.float32)
idx = rng.integers(0, T, B * L)
offsets = np.arange(B, dtype=np.int64) * L
wt, it, ot = torch.from_numpy(w), torch.from_numpy(idx), torch.from_numpy(offsets)
with ThreadPoolExecutor(2) as pool:
    calls = _read_limit.touch_calls(lib, w, idx, L, threads, pool)
    for mode in ("sum", "mean"):
        calls[f"fastembed_ext {mode}"] = (
            lambda mode=mode: fe.embedding_bag(w, idx, offsets, mode=mode, num_threads=threads))
        calls[f"torch {mode}"] = lambda mode=mode: F.embedding_bag(it, wt, ot, mode=mode)
    ms = _read_limit.medians_ms(calls, 21, settle_s=0.02)
best, limit = _read_limit.best_limit(ms)
print(f"T={T} d={d} L={L} B={B} threads={threads} (table at {w.ctypes.data % 64} bytes into a "
      f"line): limit {limit:.2f} ms ({best})")
for mode in ("sum", "mean"):
    ours, theirs = ms[f"fastembed_ext {mode}"], ms[f"torch {mode}"]
    print(f"  {mode:4}: fastembed_ext {ours:.2f} ms, torch {theirs:.2f} ms | "
          f"torch/fastembed_ext {theirs / ours:.2f}x, torch/limit {theirs / limit:.2f}x, "
          f"fastembed_ext/limit {ours / limit:.2f}")
PYEOF
    done
done
