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
from llc.hessian import largest_eigenvalue_magnitude
from llc.mesh import to_host

__all__ = [
    "MAX_STEP_BIAS",
    "CurvatureModel",
    "chain_bias",
    "chain_prediction",
    "curvature_model",
    "end_step_bias",
    "less_step_bias",
]

MAX_STEP_BIAS = 0.025  # the calibration rule's default max_bias, and step_size_bias's
_NUM_PROBES = 16  # full-batch Hutchinson probes on the head rows
_NUM_MINIBATCH_PROBES = 32  # minibatch probes: twice as many, each on fresh rows


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
    copies: int = 1,
) -> CurvatureModel:
    """Curvature and gradient noise at w*: the default grid's unit and the stability bound.

    Costs 30 Hessian-vector products on up to ``eval_rows`` samples and 32 on minibatches
    (16 on the ``eval_rows`` for full batch), ``copies`` times with their own keys
    (averaged: pass the run's chain count, and on one device the probe shares the
    program that probes the chains' positions). (The rule's bias prediction uses the same
    two quantities, but measured where each calibration setting's chains ended: see the
    module docstring.)

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
    lanczos_key, probe_key = jax.random.split(rng_key)
    mu = float(largest_eigenvalue_magnitude(lanczos_key, loss_fn, params, head))
    diag, variance = _local_noise(probe_key, loss_fn, params, data, head, batch_size, copies)
    return CurvatureModel(mu, diag, variance, 1.0 / (nbeta * mu + localization))


@jax.jit(static_argnames=("loss_fn", "batch_size"))
def _probe_noise(rng_key, loss_fn, positions, data, head, batch_size):
    """Hutchinson's ``diag(H)`` and the minibatch-gradient variance at every chain's position.

    Each probe is one forward-over-reverse pass, ``jax.jvp`` of ``jax.grad``, which gives
    the gradient and ``H z`` together: on a fresh minibatch of ``batch_size`` rows (an
    unbiased ``diag(H)``, and the gradient's variance across probes), or on ``head`` for
    full-batch runs (no gradient noise). Chains are vmapped, probes scanned with running
    sums (Welford's for the variance), so memory stays a few ``(chains, d)`` vectors
    whatever the number of probes: the whole evaluation is one program, 32 passes per
    chain of about two minibatch gradients each (16 on ``head`` for full batch).

    Returns:
        ``(diag, variance)``, each ``(chains, d)``.
    """
    n = jax.tree.leaves(data)[0].shape[0]
    probes = _NUM_PROBES if batch_size is None else _NUM_MINIBATCH_PROBES

    def at(key, where):
        flat, unravel = jax.flatten_util.ravel_pytree(where)

        def one(k):
            sign_key, batch_key = jax.random.split(k)
            z = jax.random.rademacher(sign_key, flat.shape, flat.dtype)
            batch = head
            if batch_size is not None:
                idx = jax.random.randint(batch_key, (batch_size,), 0, n)
                batch = jax.tree.map(lambda x: x[idx], data)
            grad_fn = jax.grad(lambda p: loss_fn(p, batch))
            g, hz = jax.jvp(grad_fn, (where,), (unravel(z),))
            return jax.flatten_util.ravel_pytree(g)[0], z * jax.flatten_util.ravel_pytree(hz)[0]

        def accumulate(carry, k):
            count, mean_g, m2, sum_zhz = carry
            g, zhz = one(k)
            count = count + 1
            delta = g - mean_g
            mean_g = mean_g + delta / count
            return (count, mean_g, m2 + delta * (g - mean_g), sum_zhz + zhz), None

        zero = jnp.zeros_like(flat)
        start = (jnp.zeros((), flat.dtype), zero, zero, zero)
        (_, _, m2, sum_zhz), _ = jax.lax.scan(accumulate, start, jax.random.split(key, probes))
        return sum_zhz / probes, zero if batch_size is None else m2 / (probes - 1)

    chains = jax.tree.leaves(positions)[0].shape[0]
    return jax.vmap(at)(jax.random.split(rng_key, chains), positions)


def _local_noise(rng_key, loss_fn, params, data, head, batch_size, copies=1):
    """:func:`_probe_noise` at one point, ``copies`` times averaged, as ``(d,)`` host arrays."""
    rows = jax.tree.map(lambda x: jnp.broadcast_to(x, (copies, *jnp.shape(x))), params)
    diag, variance = _probe_noise(rng_key, loss_fn, rows, data, head, batch_size)
    return tuple(np.mean(np.asarray(x, np.float64), axis=0) for x in (diag, variance))


def _bias(plan, diag, variance, steps):
    """``max(steps @ (nbeta diag(H) + nbeta^2 c), 0) / 8`` and ``nbeta diag(H)^+``.

    The sum takes the unbiased Hutchinson diagonal as it is: clipping each noisy entry
    at 0 first biases it up by about ``sd / sqrt(2 pi)`` per entry, which at a degenerate
    minimum (many ``H_ii`` near 0) raised the prediction by a fifth and halved the step
    that ``"auto"`` chose. Only the total is clipped; the clipped diagonal is returned
    for the stiffness check.
    """
    curv = plan.nbeta * np.clip(diag, 0, None)
    total = np.asarray(steps, np.float64) * (plan.nbeta * diag + plan.nbeta**2 * variance)
    return np.clip(np.sum(total, axis=-1), 0, None) / 8, curv


def chain_bias(plan, positions, steps, alive) -> np.ndarray:
    """The rule's predicted (absolute) step-size bias at every chain's position.

    Args:
        plan: the :class:`llc.plan.Plan` of the run.
        positions: the chains' positions (every leaf with a leading chain axis).
        steps: ``(chains, d)`` each chain's per-coordinate steps.
        alive: ``(chains,)`` bool, the chains to evaluate (not diverged).

    Returns:
        ``(chains,)``: :func:`_bias` in units of ``nbeta (L - L*)``, NaN for
        the chains not evaluated or with non-finite steps.
    """
    return chain_prediction(plan, positions, steps, alive)[0]


def chain_prediction(plan, positions, steps, alive) -> tuple[np.ndarray, np.ndarray]:
    """:func:`chain_bias` and each chain's ``nbeta diag(H)`` clipped at 0, ``(chains, d)``.

    One program evaluates every chain (:func:`_probe_noise`); rows of chains not
    evaluated are NaN.
    """
    steps = np.asarray(steps, np.float64)
    keep = np.asarray(alive) & np.all(np.isfinite(steps), axis=1)
    if not keep.any():
        return np.full(steps.shape[0], np.nan), np.full(steps.shape, np.nan)
    key = jax.random.fold_in(plan.rng_key, 13)
    diag, variance = _probe_noise(
        key, plan.loss_fn, positions, plan.data, plan.head(), plan.config.batch_size
    )
    diag, variance = (np.asarray(x, np.float64) for x in to_host((diag, variance)))
    absolute, curv = _bias(plan, diag, variance, np.where(keep[:, None], steps, 0.0))
    return np.where(keep, absolute, np.nan), np.where(keep[:, None], curv, np.nan)


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
