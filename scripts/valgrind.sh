#!/usr/bin/env bash
# valgrind memcheck over a representative subset: a direct script that calls
# every kernel on small inputs (float16 through F16C and the portable
# converters, every ISA level the CPU and valgrind offer, both index widths,
# padding, scaling, the lean entry points, the parallel paths, error paths),
# then a few bit-exactness tests and a short fuzz run under pytest.
#
# Builds the checkout (with -g, otherwise the shipping flags) into a fresh
# venv in a temp dir.  Exits non-zero on any invalid read or write, invalid
# free, overlapping memcpy or use of freed memory, or on a failed check.
# Leak checking is off (Python keeps its objects at exit) and so are
# uninitialised-value errors: np.empty buffers are uninitialised by design and
# the tests snapshot them.
#
#   scripts/valgrind.sh              # extra arguments go to the pytest part
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init valgrind
command -v valgrind >/dev/null || { echo "valgrind: not installed (apt-get install valgrind)" >&2; exit 2; }

fe_say "copy of the checkout, fresh venv, build with -g"
fe_copy_checkout "$WORK/src"
fe_fresh_venv "$PY" "$WORK/venv"
# shellcheck disable=SC1091
. "$WORK/venv/bin/activate"
# the test tools at the versions the calling interpreter has, where it has them
PINS=$(fe_pins 'pytest|hypothesis|numpy|cython|ml_dtypes')
python -m pip install -q "Cython>=3.1" "numpy>=2.0" "setuptools>=68" wheel pytest hypothesis ml_dtypes $PINS
(cd "$WORK/src" && CFLAGS="-g -fno-omit-frame-pointer" python -m pip install -q --no-build-isolation --no-deps .)
cd "$WORK"

cat > "$WORK/every_kernel.py" <<'PYEOF'
"""Every kernel on small inputs, each result held to NumPy bit for bit."""
import sys

import numpy as np

import fastembed_ext as fe
from fastembed_ext import _kernels

try:
    import ml_dtypes
    BF16 = [np.dtype(ml_dtypes.bfloat16)]
except ImportError:
    BF16 = []

rng = np.random.default_rng(0)
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
checks = 0


def same(got, want, what):
    global checks
    got, want = np.ascontiguousarray(got), np.ascontiguousarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    assert got.tobytes() == want.tobytes(), f"{what}: bits differ"
    checks += 1


def values(dtype, shape):
    dtype = np.dtype(dtype)
    out = (rng.standard_normal(shape) * 3).astype(np.float32).astype(dtype)
    raw = rng.integers(0, 2 ** (8 * dtype.itemsize) - 1, size=shape,
                       dtype=UINT[dtype.itemsize], endpoint=True).view(dtype)
    pick = rng.random(shape) < 0.2
    out[pick] = raw[pick]
    return out


def add_at(table, idx, grad, pad=None):
    table = table.copy()
    if pad is not None:
        keep = idx != pad
        idx, grad = idx[keep], grad[keep]
    with np.errstate(all="ignore"):
        np.add.at(table, idx, grad)
    return table


print("cpu:", _kernels.cpu_features())
levels = sorted({_kernels.set_isa_level(level) for level in (0, 1, 2)})
f16c = sorted({_kernels.use_f16c(on) for on in (False, True)})
print("isa levels reachable here:", levels, "f16c states:", f16c)

for level in (0, 1, 2):
    _kernels.set_isa_level(level)
    for on in (False, True):
        _kernels.use_f16c(on)
        for dtype in [np.dtype(t) for t in ("float16", "float32", "float64")] + BF16:
            for d in (1, 3, 7, 8, 9, 15, 16, 17, 32, 33, 64, 65):
                for idt in (np.int32, np.int64):
                    T = 13
                    w = values(dtype, (T, d))
                    idx = rng.integers(0, T, size=(6, 4)).astype(idt)
                    flat = idx.reshape(-1)
                    want = np.take(w, idx, axis=0)
                    same(fe.gather(w, idx, backend="cython"), want, "gather")
                    out = np.empty((flat.size, d), dtype)
                    fe.gather(w, flat, out=out)                          # lean
                    same(out, want.reshape(-1, d), "gather lean")
                    out2 = np.empty_like(out)
                    _kernels.naive_gather_rows(w, flat, out2)
                    same(out2, out, "naive gather")
                    g = values(dtype, (flat.size, d))
                    gw = values(dtype, (T, d))
                    res = gw.copy()
                    fe.scatter_add(res, flat, g)                         # lean
                    same(res, add_at(gw, flat, g), "scatter_add lean")
                    res = gw.copy()
                    fe.scatter_add(res, idx, g.reshape(idx.shape + (d,)), padding_idx=-2,
                                   backend="cython")
                    same(res, add_at(gw, flat, g, T - 2), "scatter_add padding")
                    if dtype.itemsize == 2 and dtype != np.float16:
                        continue  # the naive kernel's bfloat16 flag is internal
                    res = gw.copy()
                    _kernels.naive_scatter_add_rows(res, flat, g, -1, False)
                    same(res, add_at(gw, flat, g), "naive scatter_add")
                    for scale in (False, True):
                        got = fe.embedding_backward(g.reshape(idx.shape + (d,)), idx, T,
                                                    padding_idx=0, scale_grad_by_freq=scale,
                                                    backend="cython")
                        ref = fe.embedding_backward(g.reshape(idx.shape + (d,)), idx, T,
                                                    padding_idx=0, scale_grad_by_freq=scale,
                                                    backend="numpy")
                        same(got, ref, "embedding_backward")

# the portable float16 converters
h = np.arange(0, 1 << 16, 97, dtype=np.uint16)
f = np.empty(h.size, np.float32)
_kernels.half_to_float_portable(h, f)
same(f, h.view(np.float16).astype(np.float32), "half_to_float_portable")
x = values(np.float32, (4096,))
hb = np.empty(4096, np.uint16)
_kernels.float_to_half_portable(x, hb)
with np.errstate(all="ignore"):
    same(hb, x.astype(np.float16).view(np.uint16), "float_to_half_portable")

# the parallel paths (thresholds from the build), 2 threads
b = fe.info()["build"]
_kernels.set_isa_level(2)
_kernels.use_f16c(True)
d = 64
n = max(8192, 2 * b.get("gather_parallel_min_bytes", 0) // (d * 4) + 1)
w = values(np.float32, (2000, d))
idx = rng.integers(0, 2000, size=n)
same(fe.gather(w, idx, num_threads=2), np.take(w, idx, axis=0), "parallel gather")
T = b.get("scatter_parallel_min_table_bytes", 0) // (d * 4) + 1
n = max(8192, 2 * b.get("scatter_parallel_min_bytes", 0) // (d * 4) + 1)
gw = np.zeros((T, d), np.float32)
idx = rng.integers(0, T, size=n)
g = values(np.float32, (n, d))
fe.scatter_add(gw, idx, g, num_threads=2)
touched = np.unique(idx)
same(gw[touched], add_at(np.zeros((touched.size, d), np.float32), np.searchsorted(touched, idx), g),
     "parallel scatter_add")
got = fe.embedding_backward(g, idx, T, scale_grad_by_freq=True, num_threads=2)
ref = fe.embedding_backward(g, idx, T, scale_grad_by_freq=True, backend="numpy")
same(got[touched], ref[touched], "parallel embedding_backward")

# error paths write nothing
w = values(np.float32, (5, 4))
out = np.zeros((3, 4), np.float32)
for bad in ([0, 5, 1], [0, -1, 2]):
    try:
        fe.gather(w, np.array(bad), out=out)
    except IndexError:
        pass
    else:
        raise AssertionError("no IndexError")
same(out, np.zeros((3, 4), np.float32), "failed gather wrote nothing")
print(f"every_kernel: {checks} checks passed")
PYEOF

# glibc's own over-reads, which valgrind 3.19 reports on Debian 12 without these:
# ld.so's SSE2 strncmp on $ORIGIN in RPATHs (dlopen of an extension), and the
# AVX2 wmemcmp that CPython's str comparison uses.  Both read whole aligned words
# past the end of a string, by design.  Nothing of fastembed_ext is suppressed.
cat > "$WORK/glibc.supp" <<'SUPP'
{
   ld.so strncmp over-read on $ORIGIN (is_dst)
   Memcheck:Addr8
   fun:strncmp
   fun:is_dst
}
{
   glibc AVX2 wmemcmp over-read (CPython str compare), 32-byte loads
   Memcheck:Addr32
   fun:__wmemcmp_avx2_movbe
}
{
   glibc AVX2 wmemcmp over-read (CPython str compare), 16-byte loads
   Memcheck:Addr16
   fun:__wmemcmp_avx2_movbe
}
SUPP

LOG="$WORK/valgrind.log"
VG=(valgrind --tool=memcheck --error-exitcode=97 --leak-check=no --undef-value-errors=no
    --track-origins=no --num-callers=30 --show-error-list=yes --suppressions="$WORK/glibc.supp"
    --log-file="$LOG.%p")
export PYTHONMALLOC=malloc
rc=0

echo "== valgrind: every kernel, directly"
"${VG[@]}" python "$WORK/every_kernel.py" || rc=$?

echo "== valgrind: bit-exactness tests and a short fuzz run"
FASTEMBED_EXT_FUZZ_EXAMPLES="${FASTEMBED_EXT_FUZZ_EXAMPLES:-15}" "${VG[@]}" \
    python -m pytest -p no:cacheprovider -q -x --rootdir "$WORK/src" \
    "$WORK/src/tests/test_bitexact.py" "$WORK/src/tests/test_hostile_fuzz.py" \
    -k "special_values or nan_plus_nan or fast_scatter_kernel or fast_gather_kernel or scale_grad_by_freq_divides or negative_padding or fuzz_gather or fuzz_scatter or destination_sharing" \
    "$@" || rc=$?

errors=0
for f in "$LOG".*; do
    if grep -q "ERROR SUMMARY: [1-9]" "$f"; then
        errors=1
        echo "--- $f"
        cat "$f"
    fi
done
grep -h "ERROR SUMMARY" "$LOG".* | sort | uniq -c
[ "$errors" = 0 ] || rc=1
echo "== valgrind: exit $rc after $(fe_elapsed) s"
exit "$rc"
