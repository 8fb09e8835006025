"""The realizable problem of a point: the LLC anywhere, saddles and plateaus included.

At a point w* that is not a local minimum of the training loss (a saddle, a plateau,
a checkpoint mid-training) the LLC of the training loss is undefined. Relabelling the
data with the model's own outputs at w* gives a loss ``K(w)`` -- the divergence
between the function ``w`` computes and the one ``w*`` computes -- of which w* is a
*global* minimum (``K(w*) = 0``). Its learning coefficient is defined at every point
and measures the degeneracy of the function w* computes (beyond-global-llc.md,
"realizable relabelling"). At a rank-k point of a deep linear network it is Aoyagi's
``lambda(widths, k)``.

Examples:
    A linear model relabelled at an arbitrary point: the loss is zero there and
    positive elsewhere.

    >>> import jax, jax.numpy as jnp
    >>> predict_fn = lambda w, x: x @ w
    >>> x = jax.random.normal(jax.random.key(0), (100, 3))
    >>> loss_fn, data = relabel(predict_fn, jnp.array([1.0, 0.0, -2.0]), x)
    >>> float(loss_fn(jnp.array([1.0, 0.0, -2.0]), data))
    0.0
    >>> bool(loss_fn(jnp.zeros(3), data) > 0)
    True
"""

from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llc import _chunks
from llc import _validation as check
from llc._types import ArrayTree, Batch, LossFn

__all__ = ["DIVERGENCES", "Relabelling", "relabel", "relabel_targets", "relabelled_loss"]

DIVERGENCES = ("squared", "kl")


class Relabelling(NamedTuple):
    """How to relabel each checkpoint of :func:`llc.estimate_llc_trajectory`.

    Attributes:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` (logits for ``"kl"``).
        inputs: a pytree of arrays with a leading sample axis.
        divergence: ``"squared"`` or ``"kl"`` (see :func:`relabel`).
    """

    predict_fn: Callable
    inputs: Batch
    divergence: str = "squared"


def _check_divergence(divergence) -> str:
    if divergence not in DIVERGENCES:
        msg = (
            f"divergence must be one of {DIVERGENCES}: 'squared' for regression outputs, "
            f"'kl' for logits of a classifier or language model; got {divergence!r}."
        )
        raise ValueError(msg)
    return divergence


@lru_cache(maxsize=64)
def relabelled_loss(predict_fn: Callable, divergence: str = "squared") -> LossFn:
    """The relabelled loss ``loss_fn(params, {"inputs", "targets"})``, one object per pair.

    The same ``(predict_fn, divergence)`` always returns the same function, so runs that
    share it (the checkpoints of a trajectory) compile once.

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs``.
        divergence: ``"squared"``: ``0.5 * ||f_w(x) - f_{w*}(x)||^2`` summed over the
            outputs of a sample (a unit-variance Gaussian likelihood); ``"kl"``:
            ``KL(p_{w*}(.|x) || p_w(.|x))`` over the last (class) axis of the logits,
            averaged over any other axes (positions), as the per-token cross-entropy is.

    Returns:
        The mean of that divergence over a batch.
    """
    _check_divergence(divergence)

    def loss_fn(params, batch):
        out = predict_fn(params, batch["inputs"])
        target = batch["targets"]
        if divergence == "squared":
            diff = (out - target).reshape(out.shape[0], -1)
            return 0.5 * jnp.mean(jnp.sum(diff**2, axis=1))
        log_q = jax.nn.log_softmax(out, axis=-1)
        kl = jnp.sum(jnp.exp(target) * (target - log_q), axis=-1)
        return jnp.mean(kl.reshape(kl.shape[0], -1).mean(axis=1))

    return loss_fn


def relabel_targets(
    predict_fn: Callable,
    params: ArrayTree,
    inputs: Batch,
    divergence: str = "squared",
    *,
    eval_batch_size: int = 8192,
) -> jax.Array:
    """The targets of the relabelled problem: w*'s outputs (or log-probabilities for kl).

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs``.
        params: w*.
        inputs: a pytree of arrays with a leading sample axis.
        divergence: ``"squared"`` or ``"kl"``.
        eval_batch_size: rows per evaluation (bounds memory).

    Returns:
        An array with a leading axis n.

    Raises:
        ValueError: when an output at w* is not finite.
    """
    _check_divergence(divergence)
    n = check.check_data(inputs)
    chunk = min(check.check_count("eval_batch_size", eval_batch_size, minimum=1), n)
    targets = _targets(predict_fn, params, inputs, divergence, chunk)
    bad = ~np.isfinite(np.asarray(targets))
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(n, -1))[0])
        msg = (
            f"predict_fn(params, inputs) is not finite on {rows.size} of {n} samples "
            f"(first: row {int(rows[0])}); relabelling needs finite outputs at params."
        )
        raise ValueError(msg)
    return targets


def _targets(predict_fn, params, inputs, divergence, chunk):
    def fn(batch):
        out = predict_fn(params, batch)
        return jax.nn.log_softmax(out, axis=-1) if divergence == "kl" else out

    return jax.jit(lambda p, x: _chunks.rows(fn, x, chunk))(params, inputs)


def relabel(
    predict_fn: Callable,
    params: ArrayTree,
    inputs: Batch,
    *,
    divergence: str = "squared",
    eval_batch_size: int = 8192,
) -> tuple[LossFn, Batch]:
    """The realizable problem whose targets are the model's own outputs at ``params``.

    ``params`` is a global minimum of the returned loss (its value there is 0), so its
    LLC is defined at a saddle, on a plateau or mid-training: it measures the degeneracy
    of the function ``params`` computes. Pass the result to :func:`llc.estimate_llc` as
    ``loss_fn, data``. For runs along training, see ``relabel=`` of
    :func:`llc.estimate_llc_trajectory`.

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` on a batch of inputs
            (logits with classes on the last axis for ``divergence="kl"``).
        params: w*, any pytree.
        inputs: a pytree of arrays with a leading sample axis (token batches of shape
            ``(n, positions)`` too).
        divergence: ``"squared"`` (regression: half the squared distance between outputs,
            summed over a sample's outputs) or ``"kl"`` (classifiers and language models:
            the KL divergence from w*'s predictive distribution, averaged over positions).
        eval_batch_size: rows per evaluation of the targets.

    Returns:
        ``(loss_fn, data)`` with ``data = {"inputs": inputs, "targets": targets}``.

    Raises:
        ValueError: for an unknown ``divergence`` or non-finite outputs at ``params``.

    Examples:
        A classifier: the KL divergence is zero at w* and the data carry log-probabilities.

        >>> import jax, jax.numpy as jnp
        >>> predict_fn = lambda w, x: x @ w
        >>> x = jax.random.normal(jax.random.key(0), (50, 4))
        >>> w = jax.random.normal(jax.random.key(1), (4, 3))
        >>> loss_fn, data = relabel(predict_fn, w, x, divergence="kl")
        >>> data["targets"].shape, abs(float(loss_fn(w, data))) < 1e-6
        ((50, 3), True)
    """
    _check_divergence(divergence)
    if not callable(predict_fn):
        msg = f"predict_fn must be a function predict_fn(params, inputs); got {predict_fn!r}."
        raise TypeError(msg)
    check.check_params(params)
    targets = relabel_targets(
        predict_fn, params, inputs, divergence, eval_batch_size=eval_batch_size
    )
    return relabelled_loss(predict_fn, divergence), {"inputs": inputs, "targets": targets}
