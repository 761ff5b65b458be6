# Hand-written stub of the compiled module; checked by mypy.stubtest in tests/.
# Every function takes arrays already validated by _api.py.
from typing import Any

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[Any]

__test__: dict[str, str]
VALUE_FLOAT16: int
VALUE_BFLOAT16: int

def first_out_of_range(indices: _Array, num_rows: int) -> int: ...
def gather_rows(weight: _Array, indices: _Array, out: _Array, num_threads: int) -> None: ...
def naive_gather_rows(weight: _Array, indices: _Array, out: _Array) -> None: ...
def scatter_add_rows(
    grad_weight: _Array,
    indices: _Array,
    grad: _Array,
    padding_idx: int,
    scale_by_freq: bool,
    num_threads: int,
    kind16: int = ...,
    src_rows: _Array | None = ...,
    scales: _Array | None = ...,
) -> None: ...
def bag_rows(
    weight: _Array,
    indices: _Array,
    bounds: _Array,
    out: _Array,
    mode: int,
    per_sample_weights: _Array | None,
    max_indices: _Array | None,
    padding_idx: int,
    num_threads: int,
    kind16: int = ...,
) -> None: ...
def bag_max_backward_rows(
    grad_weight: _Array, grad: _Array, max_indices: _Array, kind16: int = ...
) -> None: ...
def row_dots(
    grad: _Array,
    weight: _Array,
    indices: _Array,
    bag: _Array,
    padding_idx: int,
    out: _Array,
    kind16: int = ...,
) -> None: ...
def naive_scatter_add_rows(
    grad_weight: _Array, indices: _Array, grad: _Array, padding_idx: int, kind16: int = ...
) -> None: ...
def gather_lean(weight: object, indices: object, out: object, num_threads: int) -> bool: ...
def scatter_add_lean(grad_weight: object, indices: object, grad: object, num_threads: int) -> bool: ...
def copy_bytes(src: _Array, dst: _Array, num_threads: int) -> None: ...
def omp_max_threads() -> int: ...
def pool_started() -> bool: ...
def cpu_features() -> dict[str, bool]: ...
def build_info() -> dict[str, Any]: ...
def use_f16c(on: bool) -> bool: ...
def f16c_active() -> bool: ...
def set_isa_level(cap: int) -> int: ...
def isa_level() -> int: ...
def half_to_float_portable(h: npt.NDArray[np.uint16], out: npt.NDArray[np.float32]) -> None: ...
def float_to_half_portable(f: npt.NDArray[np.float32], out: npt.NDArray[np.uint16]) -> None: ...
def renorm_rows(
    weight: _Array,
    rows: _Array,
    max_norm: float,
    norm_type: float,
    num_threads: int,
    kind16: int = ...,
) -> None: ...
def optimizer_rows(
    weight: _Array,
    rows: _Array,
    values: _Array,
    state: _Array | None,
    kind: int,
    lr: float,
    eps: float,
    weight_decay: float,
    num_threads: int,
    kind16: int = ...,
) -> None: ...
