#!/usr/bin/env bash
# The long fuzz run: tests/test_hostile_fuzz.py with 20000 examples per test
# (the default run uses a few hundred).  Runs against the installed package,
# from a scratch directory so that nothing lands in the checkout.
#
#   scripts/fuzz.sh                      # 20000 examples per test
#   FASTEMBED_EXT_FUZZ_EXAMPLES=100000 scripts/fuzz.sh -x
#
# Failing examples are kept in a Hypothesis database (FASTEMBED_EXT_FUZZ_DB,
# default ~/.cache/fastembed_ext-fuzz) so that the next run replays them first.
# Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export FASTEMBED_EXT_FUZZ_EXAMPLES="${FASTEMBED_EXT_FUZZ_EXAMPLES:-20000}"
export FASTEMBED_EXT_FUZZ_DB="${FASTEMBED_EXT_FUZZ_DB:-${XDG_CACHE_HOME:-$HOME/.cache}/fastembed_ext-fuzz}"
mkdir -p "$FASTEMBED_EXT_FUZZ_DB"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
cd "$SCRATCH"
echo "fuzz: $FASTEMBED_EXT_FUZZ_EXAMPLES examples per test, database $FASTEMBED_EXT_FUZZ_DB"
start=$(date +%s)
rc=0
"$PY" -m pytest -p no:cacheprovider "$ROOT/tests/test_hostile_fuzz.py" -q \
    --hypothesis-show-statistics "$@" || rc=$?
echo "fuzz: exit $rc after $(( $(date +%s) - start )) s"
exit "$rc"
