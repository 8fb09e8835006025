"""The step-size bias model: what a step size costs the estimate, to first order.

A direction of curvature k sampled by Langevin steps of size s (with minibatch-gradient
noise of variance c per coordinate) has stationary variance
``(1 + s nbeta^2 c / 4) / (k (1 - s k / 4))`` (slt-reference 3.1). Summed over the
coordinates, the first-order excess of ``nbeta (E[L] - L*)`` is
``sum_i s_i (nbeta H_ii + nbeta^2 c_i) / 8``, with ``H_ii`` Hutchinson's estimate of the
Hessian diagonal and ``c_i`` the variance of a minibatch-gradient coordinate, measured
where the chains are (not at w*: a noise-free fit has no gradient noise at w* itself, and
a loss flat at w* can be stiff where the chains go). On a 3-parameter regression it
predicts +16% at the step where the measured bias is +18%.

:func:`llc.calibrate` judges step sizes by it, the ``step_size="auto"`` burn-in shrinks
the step by it (:func:`llc.burnin.follow`), and every result reports it at the chains'
end points (``LLCResult.predicted_step_bias``, the ``step_size_bias`` flag and
``LLCResult.llc_step_corrected``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.hessian import hvp, largest_eigenvalue_magnitude

__all__ = [
    "MAX_STEP_BIAS",
    "CurvatureModel",
    "chain_bias",
    "curvature_model",
    "end_step_bias",
    "less_step_bias",
    "predicted_bias_at",
]

MAX_STEP_BIAS = 0.025  # the calibration rule's default max_bias, and step_size_bias's
_NUM_PROBES = 16


class CurvatureModel(NamedTuple):
    """What the rule knows about w* before sampling (host arrays).

    Attributes:
        mu_max: the largest Hessian eigenvalue magnitude (Lanczos).
        hessian_diagonal: ``(d,)`` Hutchinson estimate of ``diag(H)`` at w*.
        gradient_variance: ``(d,)`` variance of a minibatch-gradient coordinate at w*
            (zeros for full batch).
        scale: ``1 / (nbeta mu_max + gamma)``, the default grid's unit for SGLD.
    """

    mu_max: float
    hessian_diagonal: np.ndarray
    gradient_variance: np.ndarray
    scale: float


def curvature_model(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    nbeta: float,
    localization: float,
    batch_size: int | None = None,
    eval_rows: int = 8192,
) -> CurvatureModel:
    """Curvature and gradient noise at w*: the default grid's unit and the stability bound.

    Costs ``30 + 16`` Hessian-vector products on up to ``eval_rows`` samples and 16
    minibatch gradients. (The rule's bias prediction uses the same two quantities, but
    measured where each calibration setting's chains ended: see the module docstring.)

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(jnp.array([4.0, 1.0]) * w**2)
        >>> m = curvature_model(jax.random.key(0), loss_fn, jnp.zeros(2), jnp.zeros((10, 1)),
        ...                     nbeta=1.0, localization=0.0)
        >>> round(m.mu_max, 3), m.hessian_diagonal.round(3).tolist()
        (4.0, [4.0, 1.0])
    """
    n = jax.tree.leaves(data)[0].shape[0]
    rows = min(eval_rows, n)
    head = jax.tree.map(lambda x: x[:rows], data)
    lanczos_key, probe_key, batch_key = jax.random.split(rng_key, 3)
    mu = float(largest_eigenvalue_magnitude(lanczos_key, loss_fn, params, head))
    diag, variance = _local_noise(probe_key, batch_key, loss_fn, params, data, head, batch_size)
    return CurvatureModel(mu, diag, variance, 1.0 / (nbeta * mu + localization))


@jax.jit(static_argnames=("loss_fn",))
def _hutchinson_diagonal(rng_key, loss_fn, params, batch):
    """``E[z * (H z)]`` over Rademacher probes ``z``: an unbiased estimate of diag(H)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    matvec = hvp(loss_fn, params, batch)
    signs = jax.random.rademacher(rng_key, (_NUM_PROBES, flat.size), flat.dtype)

    def one(z):
        return z * jax.flatten_util.ravel_pytree(matvec(unravel(z)))[0]

    return jnp.mean(jax.lax.map(one, signs), axis=0)


@jax.jit(static_argnames=("loss_fn", "batch_size"))
def _minibatch_gradient_variance(rng_key, loss_fn, params, data, batch_size):
    """Per-coordinate variance of the minibatch-mean gradient at ``params``."""
    n = jax.tree.leaves(data)[0].shape[0]

    def one(key):
        idx = jax.random.randint(key, (batch_size,), 0, n)
        batch = jax.tree.map(lambda x: x[idx], data)
        return jax.flatten_util.ravel_pytree(jax.grad(loss_fn)(params, batch))[0]

    grads = jax.lax.map(one, jax.random.split(rng_key, _NUM_PROBES))
    return jnp.var(grads, axis=0, ddof=1)


def _local_noise(probe_key, batch_key, loss_fn, params, data, head, batch_size):
    """Hutchinson's ``diag(H)`` on ``head`` and the minibatch-gradient variance at a point."""
    diag = np.asarray(_hutchinson_diagonal(probe_key, loss_fn, params, head), np.float64)
    if batch_size is None:
        return diag, np.zeros_like(diag)
    variance = _minibatch_gradient_variance(batch_key, loss_fn, params, data, batch_size)
    return diag, np.asarray(variance, np.float64)


def predicted_bias_at(noise_keys, plan, where, head, steps):
    """The rule's first-order step-size bias of steps ``steps`` at the point ``where``.

    Returns ``(absolute, curv)``: ``steps @ (nbeta diag(H) + nbeta^2 c) / 8`` (one value
    per row of ``steps``, the per-coordinate steps of a chain) and ``nbeta diag(H)``
    clipped at 0, both measured at ``where`` (the module docstring has the derivation).
    """
    diag, variance = _local_noise(
        *noise_keys, plan.loss_fn, where, plan.data, head, plan.config.batch_size
    )
    curv = plan.nbeta * np.clip(diag, 0, None)
    noise = plan.nbeta**2 * variance
    return np.asarray(steps, np.float64) @ (curv + noise) / 8, curv


def chain_bias(plan, positions, steps, alive) -> np.ndarray:
    """The rule's predicted (absolute) step-size bias at every chain's position.

    Args:
        plan: the :class:`llc.plan.Plan` of the run.
        positions: the chains' positions (every leaf with a leading chain axis).
        steps: ``(chains, d)`` each chain's per-coordinate steps.
        alive: ``(chains,)`` bool, the chains to evaluate (not diverged).

    Returns:
        ``(chains,)``: :func:`predicted_bias_at` in units of ``nbeta (L - L*)``, NaN for
        the chains not evaluated or with non-finite steps.
    """
    rows = min(plan.eval_rows, plan.num_data)
    head = jax.tree.map(lambda x: x[:rows], plan.data)
    noise_keys = jax.random.split(jax.random.fold_in(plan.rng_key, 13), 2)
    steps = np.asarray(steps, np.float64)
    out = np.full(steps.shape[0], np.nan)
    for c in np.flatnonzero(np.asarray(alive) & np.all(np.isfinite(steps), axis=1)):
        where = jax.tree.map(lambda x, c=c: x[c], positions)
        out[c] = float(predicted_bias_at(noise_keys, plan, where, head, steps[c][None])[0][0])
    return out


def less_step_bias(llc_mean: float, predicted_step_bias) -> float | None:
    """``llc_mean - mean(predicted_step_bias) * |llc_mean|``: the estimate less its bias.

    ``predicted_step_bias`` is per chain and relative to ``|llc_mean|`` (as
    :attr:`LLCResult.predicted_step_bias`); the bias is upward whatever the estimate's
    sign. NaN entries (diverged chains) are skipped; None when none is finite.

    Examples:
        >>> less_step_bias(100.0, [0.02, 0.04])
        97.0
    """
    bias = np.asarray(predicted_step_bias, np.float64)
    if not np.isfinite(bias).any():
        return None
    return llc_mean - float(np.nanmean(bias)) * abs(llc_mean)


def end_step_bias(plan, out) -> np.ndarray | None:
    """The rule's predicted step-size bias at each chain's final position.

    In units of ``nbeta (L - L*)`` per chain (NaN for a diverged chain), or None when the
    run did not record its steps (``record_scale``); :func:`llc.report.assemble` turns it into the
    ``step_size_bias`` flag.
    """
    if not out.scale.size or not jax.tree.leaves(out.final_position):
        return None
    return chain_bias(plan, out.final_position, out.scale, out.first_nonfinite_step < 0)
