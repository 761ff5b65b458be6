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
# shellcheck source=scripts/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
fe_init fuzz
export FASTEMBED_EXT_FUZZ_EXAMPLES="${FASTEMBED_EXT_FUZZ_EXAMPLES:-20000}"
export FASTEMBED_EXT_FUZZ_DB="${FASTEMBED_EXT_FUZZ_DB:-${XDG_CACHE_HOME:-$HOME/.cache}/fastembed_ext-fuzz}"
mkdir -p "$FASTEMBED_EXT_FUZZ_DB"
cd "$WORK"
echo "fuzz: $FASTEMBED_EXT_FUZZ_EXAMPLES examples per test, database $FASTEMBED_EXT_FUZZ_DB"
rc=0
"$PY" -m pytest -p no:cacheprovider "$ROOT/tests/test_hostile_fuzz.py" -q \
    --hypothesis-show-statistics "$@" || rc=$?
echo "fuzz: exit $rc after $(fe_elapsed) s"
exit "$rc"
