"""Fast, deterministic, bit-exact embedding-table kernels for NumPy."""

from ._api import (
    BackendUnavailableError,
    adagrad_step,
    coalesce,
    renorm_,
    rowwise_adagrad_step,
    sgd_step,
    __version__,
    embedding_backward,
    embedding_bag,
    embedding_bag_backward,
    gather,
    get_num_threads,
    info,
    scatter_add,
    set_num_threads,
)

__all__ = [
    "BackendUnavailableError",
    "adagrad_step",
    "coalesce",
    "renorm_",
    "rowwise_adagrad_step",
    "sgd_step",
    "__version__",
    "embedding_backward",
    "embedding_bag",
    "embedding_bag_backward",
    "gather",
    "get_num_threads",
    "info",
    "scatter_add",
    "set_num_threads",
]
