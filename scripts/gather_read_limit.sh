#!/usr/bin/env bash
# How much room the gather has over NumPy on this machine, at the gather shapes
# of bench/test_gather.py (B=65536 uniform int64 ids, float32), in one run.
# For each (T, d), timed interleaved on the same table in the same process
# (medians of 21):
#   - the row-read limit (bench/native/row_read_limit.c: read every cache line
#     of every looked-up row and nothing else, best prefetch distance): no
#     gather can finish sooner, even one whose output cost nothing to write;
#   - the output alone: out[...] = 0, the B x d result written once;
#   - the same bytes sequentially: the first B rows read alone
#     (row_read_limit.c in order) and copied (np.copyto): a copy that takes
#     the read plus the write shows that this machine does not overlap them;
#   - fastembed_ext.gather(out=) and the fastest NumPy spelling
#     (np.take(out=, mode="clip") or W[idx]).
# It prints the ratios NumPy / fastembed_ext and NumPy / read limit: the
# second is the most any gather could gain over NumPy here.
#
#   scripts/gather_read_limit.sh     # the active python3 (PYTHON=...) needs fastembed_ext
#   SHAPES="T,d ..." THREADS="1 2" scripts/gather_read_limit.sh
#
# Run it on a quiet machine; it takes about three minutes and 3 GB.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init gather_read_limit
"$PY" -c "import fastembed_ext" 2>/dev/null || fe_die "needs fastembed_ext in $PY"
cc -O3 -shared -fPIC -o "$WORK/librow_read_limit.so" "$ROOT/bench/native/row_read_limit.c"

B=65536
SHAPES="${SHAPES:-200000,64 200000,128 200000,384 200000,768 1000000,64 1000000,128 1000000,384 1000000,768}"
THREADS="${THREADS:-1}"
for shape in $SHAPES; do
    IFS=, read -r T d <<<"$shape"
    for threads in $THREADS; do
        "$PY" - "$ROOT/scripts" "$WORK/librow_read_limit.so" "$T" "$d" "$B" "$threads" <<'PYEOF'
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import fastembed_ext as fe

sys.path.insert(0, sys.argv[1])
import _read_limit  # noqa: E402

lib = _read_limit.load(sys.argv[2])
T, d, B, threads = map(int, sys.argv[3:7])
rng = np.random.default_rng(0)
w = rng.random((T, d), dtype=np.float32)
idx = rng.integers(0, T, B)
in_order = np.arange(B, dtype=np.int64)
out = np.empty((B, d), np.float32)
with ThreadPoolExecutor(2) as pool:
    calls = _read_limit.touch_calls(lib, w, idx, 1, threads, pool)
    calls.update({
        "fastembed_ext": lambda: fe.gather(w, idx, out=out, num_threads=threads),
        "take-clip": lambda: np.take(w, idx, axis=0, out=out, mode="clip"),
        "fancy": lambda: w[idx],
        "write": lambda: out.fill(0),
        "sequential read": _read_limit.touch_calls(lib, w, in_order, 1, 1, None)["limit rows D8"],
        "sequential copy": lambda: np.copyto(out, w[:B]),
    })
    ms = _read_limit.medians_ms(calls, 21)
best, limit = _read_limit.best_limit(ms)
numpy_ms = min(ms["take-clip"], ms["fancy"])
seq_read, seq_copy = ms["sequential read"], ms["sequential copy"]
print(f"T={T} d={d} B={B} threads={threads}: read limit {limit:.2f} ms ({best}), output write "
      f"{ms['write']:.2f} ms, fastembed_ext {ms['fastembed_ext']:.2f} ms, NumPy {numpy_ms:.2f} ms"
      f" | NumPy/fastembed_ext {numpy_ms / ms['fastembed_ext']:.2f}x, NumPy/read limit "
      f"{numpy_ms / limit:.2f}x | sequential (1 thread): read {seq_read:.2f}, copy {seq_copy:.2f}"
      f" ms, copy/(read + write) {seq_copy / (seq_read + ms['write']):.2f}")
PYEOF
    done
done
