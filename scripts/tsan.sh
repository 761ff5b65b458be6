#!/usr/bin/env bash
# Build the extension with ThreadSanitizer into a fresh virtual environment
# (from a copy of this checkout) and run the threaded tests under it: the
# engine's pool, every parallel kernel at 1 to 8 threads, Python threads
# calling at once, Ctrl-C during a threaded call.  Exits non-zero on a test
# failure or on any ThreadSanitizer report.
#
#   scripts/tsan.sh                  # the threaded tests
#   scripts/tsan.sh -k gather        # extra arguments go to pytest
#
# Python and NumPy are not instrumented: TSan checks the extension's own
# accesses (and memcpy/memset through its interceptors), which is where the
# engine's hand-offs are.  fork() of a process that has threads is not
# supported by TSan, so the fork tests are left to scripts/sanitize.sh.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init tsan

TSAN_FLAGS="-fsanitize=thread -g -O1 -fno-omit-frame-pointer"
LIBTSAN="$(gcc -print-file-name=libtsan.so)"
[ -e "$LIBTSAN" ] || { echo "tsan: no libtsan.so from gcc" >&2; exit 2; }

fe_say "copy of the checkout, fresh venv, ThreadSanitizer build"
fe_copy_checkout "$WORK/src"
fe_fresh_venv "$PY" "$WORK/venv"
# shellcheck disable=SC1091
. "$WORK/venv/bin/activate"
PINS=$(fe_pins 'pytest|hypothesis|numpy|cython|ml_dtypes|threadpoolctl')
# shellcheck disable=SC2086
fe_logged "$LOGS/deps.log" python -m pip install "Cython>=3.1" "numpy>=2.0" "setuptools>=68" wheel \
    pytest hypothesis pytest-benchmark ml_dtypes threadpoolctl $PINS
(cd "$WORK/src" && CC="${CC:-gcc} $TSAN_FLAGS" CFLAGS="$TSAN_FLAGS" LDFLAGS="-fsanitize=thread" \
    fe_logged "$LOGS/build.log" python -m pip install --no-build-isolation --no-deps .)
cd "$WORK"
SO="$(ls "$WORK"/venv/lib/python*/site-packages/fastembed_ext/_kernels*.so | head -1)"
nm -D "$SO" | grep -q "__tsan_" || { echo "tsan: $SO is not instrumented" >&2; exit 2; }

fe_say "threaded tests under ThreadSanitizer"
export LD_PRELOAD="$LIBTSAN"
export TSAN_OPTIONS="halt_on_error=1 abort_on_error=1 second_deadlock_stack=1 log_path=$LOGS/tsan"
export PYTHONNOUSERSITE=1
python -c "import fastembed_ext as fe; i = fe.info(); assert i['parallel'], i['build']; print(i['engine'])"
rc=0
python -m pytest -p no:cacheprovider -q -ra --rootdir "$WORK/src" --capture=sys \
    "$WORK/src/tests/test_threads_and_config.py" \
    "$WORK/src/tests/test_kernel_paths.py" \
    "$WORK/src/tests/test_matrix_bits.py" \
    "$WORK/src/tests/test_hostile_conditions.py" \
    -k "(thread or parallel or ctrl_c or python_threads or concurrent) and not fork" \
    -m "not slow" "$@" 2>&1 | tee "$LOGS/pytest.txt" || rc=$?
unset LD_PRELOAD
reports=$(ls "$LOGS"/tsan* 2>/dev/null || true)
if [ -n "$reports" ]; then
    echo "== ThreadSanitizer reports"
    for f in $reports; do echo "--- $f"; cat "$f"; done
    rc=1
fi
if grep -q "WARNING: ThreadSanitizer" "$LOGS/pytest.txt"; then
    echo "tsan: ThreadSanitizer output in the test log" >&2
    rc=1
fi
echo "== tsan: exit $rc after $(fe_elapsed) s"
exit "$rc"
