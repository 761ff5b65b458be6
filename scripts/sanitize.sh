#!/usr/bin/env bash
# Build the extension with AddressSanitizer + UndefinedBehaviorSanitizer into a
# fresh virtual environment (from a copy of this checkout) and run the whole
# test suite under it.  Exits non-zero on a test failure or on any sanitizer
# report, in the test process or in any child it starts.
#
#   scripts/sanitize.sh                 # the whole suite, slow tests included
#   scripts/sanitize.sh -k fuzz         # extra arguments go to pytest
#
# Needs gcc with libasan/libubsan (Debian: gcc, libgcc-12-dev) and PyPI for the venv.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init sanitize

SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
# e.g. SANITIZE_EXTRA_CFLAGS=-fno-sanitize=alignment, to look past a known report
SAN_FLAGS="$SAN_FLAGS ${SANITIZE_EXTRA_CFLAGS:-}"
LIBASAN="$(gcc -print-file-name=libasan.so)"
LIBUBSAN="$(gcc -print-file-name=libubsan.so)"
[ -e "$LIBASAN" ] || { echo "sanitize: no libasan.so from gcc" >&2; exit 2; }

fe_say "copy of the checkout (no build products) in $WORK/src"
fe_copy_checkout "$WORK/src"

fe_say "fresh venv, build dependencies, instrumented build"
fe_fresh_venv "$PY" "$WORK/venv"
# shellcheck disable=SC1091
. "$WORK/venv/bin/activate"
# the test extras; ml_dtypes and threadpoolctl so that their tests run too.  torch
# is left out: a 700 MB uninstrumented runtime under ASan only slows the run, and
# its interop tests skip without it.
# The test tools at the versions the calling interpreter has, where it has them,
# so that this run differs from the ordinary one by the sanitizers only.
PINS=$(fe_pins 'pytest|hypothesis|pytest-benchmark|numpy|cython|ml_dtypes|threadpoolctl')
python -m pip install -q "Cython>=3.1" "numpy>=2.0" "setuptools>=68" wheel \
    pytest hypothesis pytest-benchmark ml_dtypes threadpoolctl $PINS
cd "$WORK/src"
# The flags go into CC as well as CFLAGS/LDFLAGS: distutils links with $CC alone.
CC="${CC:-gcc} $SAN_FLAGS" CFLAGS="$SAN_FLAGS" LDFLAGS="-fsanitize=address,undefined" \
    python -m pip install -q --no-build-isolation --no-deps .
cd "$WORK"
SO="$(ls "$WORK"/venv/lib/python*/site-packages/fastembed_ext/_kernels*.so 2>/dev/null | head -1)"
[ -n "$SO" ] || { echo "sanitize: no compiled extension in the venv" >&2; exit 2; }
if ! nm -D "$SO" | grep -q "__asan_report\|__ubsan_handle"; then
    echo "sanitize: $SO is not instrumented" >&2
    exit 2
fi
echo "instrumented: $SO"

fe_say "test suite under ASan + UBSan"
export LD_PRELOAD="$LIBASAN $LIBUBSAN"
# Python and NumPy leak on purpose at exit: leak checking off.  pymalloc would
# hide heap overflows of Python objects inside its arenas: plain malloc instead.
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$LOGS/asan:allocator_may_return_null=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$LOGS/ubsan"
# the test processes (and their subprocesses, which inherit all of the above)
# must not pick up the user's packages
export PYTHONNOUSERSITE=1
# the instrumented extension must load (else every test would quietly run the
# NumPy backend), and from the venv
python -c "
import sys, fastembed_ext as fe
i = fe.info()
assert i['compiled'], i['compiled_error']
assert i['parallel'] or '${FASTEMBED_EXT_THREADS:-1}' == '0', 'the instrumented build has no engine'
assert fe._runtime.kernels.__file__.startswith('$WORK/venv'), fe._runtime.kernels.__file__
print('loaded:', fe._runtime.kernels.__file__)
"

# Nothing is deselected.  The tests past 2**31 elements (4 GiB tables) run too:
# ASan maps large blocks directly and its shadow costs 1/8 of the pages touched.
# The two RSS-growth bounds in test_hostile_conditions.py are not checked under
# ASan (its quarantine keeps up to 256 MiB of freed blocks resident), but their
# refcount and tracemalloc checks are.
rc=0
# --capture=sys: pytest captures Python's sys.stdout/err only, so that a report the
# sanitizer writes to file descriptor 2 just before it aborts reaches the log
python -m pytest -p no:cacheprovider "$WORK/src/tests" -q -ra --rootdir "$WORK/src" --capture=sys \
    "$@" 2>&1 | tee "$LOGS/pytest.txt" || rc=$?
unset LD_PRELOAD

reports=$(find "$LOGS" -name 'asan*' -o -name 'ubsan*' | sort)
if [ -n "$reports" ]; then
    echo "== sanitizer reports"
    for f in $reports; do echo "--- $f"; cat "$f"; done
fi
# UBSan: "file:line:col: runtime error: ..." (not a test's source quoting one)
if grep -qE ":[0-9]+:[0-9]+: runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer" "$LOGS/pytest.txt"; then
    echo "sanitize: sanitizer output in the test log" >&2
    rc=1
fi
[ -z "$reports" ] || rc=1
echo "== sanitize: exit $rc after $(fe_elapsed) s"
exit "$rc"
