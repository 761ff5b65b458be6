"""Fast, deterministic, bit-exact embedding-table kernels for NumPy."""

from ._bag import embedding_bag, embedding_bag_backward
from ._dropin import add_at, patch, patch_stats, patched, take, unpatch
from ._embedding import embedding_backward, gather, scatter_add
from ._layers import SGD, Adagrad, Embedding, EmbeddingBag, RowwiseAdagrad
from ._runtime import BackendUnavailableError, get_num_threads, info, set_num_threads
from ._sparse import adagrad_step, coalesce, renorm_, rowwise_adagrad_step, sgd_step
from ._version import __version__

__all__ = [
    "SGD",
    "Adagrad",
    "BackendUnavailableError",
    "Embedding",
    "EmbeddingBag",
    "RowwiseAdagrad",
    "__version__",
    "adagrad_step",
    "add_at",
    "coalesce",
    "embedding_backward",
    "embedding_bag",
    "embedding_bag_backward",
    "gather",
    "get_num_threads",
    "info",
    "patch",
    "patch_stats",
    "patched",
    "renorm_",
    "rowwise_adagrad_step",
    "scatter_add",
    "set_num_threads",
    "sgd_step",
    "take",
    "unpatch",
]
