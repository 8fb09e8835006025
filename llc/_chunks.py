"""Full-data reductions in fixed-size chunks (bounded memory, one compiled body)."""

from functools import partial

import jax
import numpy as np

from llc._types import Array, ArrayTree, Batch, LossFn


def split(data: Batch, chunk: int):
    """Split ``data`` into full chunks and a remainder.

    Returns:
        ``(head, tail, weights)``: ``head`` stacks the full chunks on a leading axis,
        ``tail`` holds the remaining rows (None if none), and ``weights = (chunk / n,
        rest / n)`` turn chunk means into the full-data mean.
    """
    n = jax.tree.leaves(data)[0].shape[0]
    k, rest = divmod(n, chunk)
    head = jax.tree.map(lambda x: x[: k * chunk].reshape(k, chunk, *x.shape[1:]), data)
    tail = jax.tree.map(lambda x: x[k * chunk :], data) if rest else None
    return head, tail, (chunk / n, rest / n)


def mean(fn, data: Batch, chunk: int):
    """The full-data mean of ``fn(batch)`` (a mean over the batch), chunk by chunk.

    Traceable; ``fn`` may return a scalar or an array (a gradient, an HVP).
    """
    head, tail, (w_head, w_tail) = split(data, chunk)
    total = jax.lax.map(fn, head).sum(axis=0) * w_head
    if tail is not None:
        total = total + fn(tail) * w_tail
    return total


def rows(fn, data: Batch, chunk: int):
    """``fn(batch)`` for every row of ``data`` (``fn`` returns one value per row), in chunks.

    Traceable; returns an array with a leading axis n.
    """
    head, tail, _ = split(data, chunk)
    out = jax.lax.map(fn, head)
    out = out.reshape(-1, *out.shape[2:])
    if tail is not None:
        out = jax.numpy.concatenate([out, fn(tail)])
    return out


def host_mean(fn_over_chunks, fn, data: Batch, chunk: int) -> float:
    """The full-data mean of a scalar ``fn(batch)``, combined in float64 on the host.

    ``fn_over_chunks(head)`` maps ``fn`` over the stacked chunks on the device.
    """
    head, tail, (w_head, w_tail) = split(data, chunk)
    total = float(np.sum(np.asarray(fn_over_chunks(head), np.float64))) * w_head
    if tail is not None:
        total += float(np.asarray(fn(tail), np.float64)) * w_tail
    return total


@partial(jax.jit, static_argnames=("loss_fn",))
def _chunk_means(loss_fn: LossFn, params: ArrayTree, chunks: Batch) -> Array:
    return jax.lax.map(lambda chunk: loss_fn(params, chunk), chunks)


def full_data_loss(loss_fn: LossFn, params: ArrayTree, data: Batch, chunk_size: int) -> float:
    """L_n(params) over all of ``data``, in chunks, combined in float64 on the host.

    Args:
        loss_fn: the mean loss over a batch.
        params: the point.
        data: a pytree of arrays with a leading axis n.
        chunk_size: rows per evaluation (bounds memory).

    Returns:
        The full-data mean loss as a Python float.
    """
    chunk = min(chunk_size, jax.tree.leaves(data)[0].shape[0])
    return host_mean(
        partial(_chunk_means, loss_fn, params),
        lambda tail: _chunk_means(loss_fn, params, jax.tree.map(lambda x: x[None], tail))[0],
        data,
        chunk,
    )
