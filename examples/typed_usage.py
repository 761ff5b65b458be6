"""A training-loop step with the public API; `mypy --strict examples/typed_usage.py` passes."""
from typing import Any

import numpy as np
import numpy.typing as npt

import fastembed_ext as fe


def sgd_step(table: npt.NDArray[np.float32], tokens: npt.NDArray[np.int64],
             grad_out: npt.NDArray[np.float32], lr: float) -> npt.NDArray[np.float32]:
    grad = fe.embedding_backward(grad_out, tokens, table.shape[0], padding_idx=0)
    table -= np.float32(lr) * grad
    return table


def main() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((1000, 32)).astype(np.float32)
    tokens = rng.integers(0, 1000, (8, 16))
    out = np.empty((8, 16, 32), np.float32)
    x: npt.NDArray[Any] = fe.gather(table, tokens, out=out, num_threads=1)
    grad_table = np.zeros_like(table)
    fe.scatter_add(grad_table, tokens, x, backend="auto")
    sgd_step(table, tokens, x.astype(np.float32), 0.1)
    fe.set_num_threads(fe.get_num_threads())
    print(fe.info()["backend"], float(grad_table.sum()))


if __name__ == "__main__":
    main()
