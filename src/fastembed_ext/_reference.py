"""The NumPy twins of the compiled kernels: the definition of "correct".

Each function has the signature of its public counterpart less the dispatch
keywords, and takes arguments already validated by ``_api.py`` (value arrays
of one floating dtype, integer indices inside [0, T), padding_idx already
normalised to a row number or None).  The compiled path must return exactly
these bits, for every thread count.
"""

import numpy as np

__all__ = ["gather", "scatter_add", "embedding_backward", "scale_by_freq"]


def gather(weight, indices, *, out=None):
    """``out[k] = weight[indices[k]]``: ``np.take`` along the rows."""
    if out is None:
        return np.take(weight, indices, axis=0)
    np.take(weight, indices, axis=0, out=out)
    return out


def _without_padding(indices, grad, padding_idx):
    if padding_idx is None:
        return indices, grad
    keep = indices != padding_idx
    return indices[keep], grad[keep]


def scatter_add(grad_weight, indices, grad, *, padding_idx=None):
    """``grad_weight[indices[k]] += grad[k]`` in index order: ``np.add.at``.

    float16 rounds after every add, as ``np.add.at`` does.
    """
    indices, grad = _without_padding(indices, grad, padding_idx)
    # silent on inf - inf and NaN, like the compiled path: both backends behave alike
    with np.errstate(all="ignore"):
        np.add.at(grad_weight, indices, grad)
    return grad_weight


def scale_by_freq(grad, indices):
    """Each ``grad[k]`` scaled by 1 / (count of ``indices[k]`` in the batch).

    The scale is ``1.0 / count`` in float64, rounded to the arithmetic type of
    the value dtype (float32 for float16 and float32, float64 for float64);
    the product is formed in that type and rounded to the value dtype.
    """
    opmath = np.float64 if grad.dtype == np.float64 else np.float32
    _, inverse, counts = np.unique(indices, return_inverse=True, return_counts=True)
    scale = (1.0 / counts.astype(np.float64)).astype(opmath)[inverse.reshape(indices.shape)]
    with np.errstate(all="ignore"):
        return (grad.astype(opmath) * scale[..., None]).astype(grad.dtype)


def embedding_backward(grad, indices, num_embeddings, *, padding_idx=None,
                       scale_grad_by_freq=False):
    """A fresh (num_embeddings, d) weight gradient, PyTorch's meaning.

    Rows equal to ``padding_idx`` get no gradient; with ``scale_grad_by_freq``
    each gradient row is first scaled by ``scale_by_freq``.
    """
    d = grad.shape[-1]
    grad_weight = np.zeros((num_embeddings, d), dtype=grad.dtype)
    if scale_grad_by_freq and indices.size:
        grad = scale_by_freq(grad, indices)
    return scatter_add(grad_weight, indices, grad, padding_idx=padding_idx)
