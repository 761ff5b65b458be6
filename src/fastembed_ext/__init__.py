"""Fast, deterministic, bit-exact embedding-table kernels for NumPy."""

from ._api import (
    BackendUnavailableError,
    __version__,
    adagrad_step,
    coalesce,
    embedding_backward,
    embedding_bag,
    embedding_bag_backward,
    gather,
    get_num_threads,
    info,
    renorm_,
    rowwise_adagrad_step,
    scatter_add,
    set_num_threads,
    sgd_step,
)
from ._layers import SGD, Adagrad, Embedding, EmbeddingBag, RowwiseAdagrad

__all__ = [
    "SGD",
    "Adagrad",
    "BackendUnavailableError",
    "Embedding",
    "EmbeddingBag",
    "RowwiseAdagrad",
    "__version__",
    "adagrad_step",
    "coalesce",
    "embedding_backward",
    "embedding_bag",
    "embedding_bag_backward",
    "gather",
    "get_num_threads",
    "info",
    "renorm_",
    "rowwise_adagrad_step",
    "scatter_add",
    "set_num_threads",
    "sgd_step",
]
