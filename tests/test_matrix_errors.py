"""Every operation of the matrix refuses bad input with a precise error, on
every backend, and a call that raises has left every buffer it was given
byte-identical; a scratch allocation that fails is a MemoryError that has
written nothing.
"""

import numpy as np
import pytest

from fastembed_ext import _kernels

from .conftest import EDGE_CASES, Snapshot
from .matrix import OPS, ids, parallel_case

# nonempty 2-D indices: every kind of bag layout, index and destination error applies
BAD_INPUT_CASE = next(c for c in EDGE_CASES if c.name == "2d_indices")
BAD_INPUTS = [(op, bad) for op in OPS for bad in op.bad]


@pytest.mark.parametrize("backend", ["auto", "cython", "numpy"])
@pytest.mark.parametrize("op,bad", BAD_INPUTS, ids=[f"{op.name}-{bad[0]}" for op, bad in BAD_INPUTS])
def test_every_operation_refuses_bad_input_precisely_and_writes_nothing(op, bad, backend, rng):
    _, mutate, exc, pattern = bad
    call = mutate(op.make(rng, BAD_INPUT_CASE, np.dtype(np.float32), np.dtype(np.int64)))
    before = Snapshot(**call.arrays())
    with pytest.raises(exc, match=pattern):
        call.fn(*call.args, **{"backend": backend, **call.kwargs})
    before.assert_unchanged()


@pytest.mark.parametrize("op", [op for op in OPS if op.allocates], ids=ids)
def test_a_failed_scratch_allocation_is_a_memory_error_that_writes_nothing(op, rng):
    call = op.make(rng, parallel_case(), np.dtype(np.float32), np.dtype(np.int64))
    failures = 0
    for k in range(1, 16):
        before = Snapshot(**call.arrays())
        _kernels.fail_allocation(k)
        try:
            call.fn(*call.args, **{"backend": "cython", "num_threads": 2, **call.kwargs})
        except MemoryError as err:
            assert "could not allocate scratch memory" in str(err)
            before.assert_unchanged()
            failures += 1
            continue
        finally:
            _kernels.fail_allocation(0)
        # the call went through: it made fewer than k allocations, all of them tried
        break
    assert failures > 0, "the operation took no scratch memory that the hook could fail"
