"""The Hessian of a loss over a parameter pytree: products, extremes and spectral density.

Everything here works through Hessian-vector products (forward-over-reverse), never
forming the Hessian, except :func:`dense_hessian_eigenvalues`, the exact oracle for
small models. :func:`hessian_spectrum` runs Lanczos with full reorthogonalisation
(``llc.lanczos``, a small in-house implementation: the project depends on nothing
else for it, and the smallest eigenvalues need the same care as the largest) from
several random sign vectors, which gives the extreme eigenvalues, a Hutchinson trace
and a stochastic-Lanczos-quadrature density in one pass.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> loss_fn = lambda w, batch: 0.5 * (3.0 * jnp.sum(w["a"] ** 2) - jnp.sum(w["b"] ** 2))
    >>> params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    >>> Hv = hvp(loss_fn, params, None)
    >>> Hv({"a": jnp.ones(2), "b": jnp.ones(1)})["b"]
    Array([-1.], dtype=float32)
    >>> round(float(largest_eigenvalue_magnitude(jax.random.key(0), loss_fn, params, None)), 3)
    3.0
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from llc import _chunks
from llc import _validation as check
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.lanczos import lanczos

__all__ = [
    "HessianSpectrum",
    "dense_hessian_eigenvalues",
    "hessian_spectrum",
    "hvp",
    "largest_eigenvalue_magnitude",
]


def hvp(loss_fn: LossFn, params: ArrayTree, batch: Batch):
    """The map ``v -> H v`` with ``H`` the Hessian of ``loss_fn(., batch)`` at ``params``.

    Forward-over-reverse (``jax.jvp`` of ``jax.grad``): about the cost of two
    gradients per product, with gradient-sized memory.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: the point, any pytree.
        batch: the data the loss is evaluated on (the full data for L_n).

    Returns:
        A function from a pytree shaped like ``params`` to one shaped like ``params``.

    Examples:
        >>> import jax.numpy as jnp
        >>> loss_fn = lambda w, b: w["a"] ** 2 * w["b"]
        >>> matvec = hvp(loss_fn, {"a": jnp.array(1.0), "b": jnp.array(2.0)}, None)
        >>> out = matvec({"a": jnp.array(1.0), "b": jnp.array(0.0)})
        >>> float(out["a"]), float(out["b"])  # H = [[2b, 2a], [2a, 0]] = [[4, 2], [2, 0]]
        (4.0, 2.0)
    """
    grad_fn = jax.grad(lambda p: loss_fn(p, batch))

    def matvec(v: ArrayTree) -> ArrayTree:
        return jax.jvp(grad_fn, (params,), (v,))[1]

    return matvec


@partial(jax.jit, static_argnames=("loss_fn", "num_iters"))
def largest_eigenvalue_magnitude(
    rng_key: PRNGKey, loss_fn: LossFn, params: ArrayTree, batch: Batch, num_iters: int = 30
):
    """``max_i |mu_i|`` of the Hessian of ``loss_fn(., batch)`` at ``params`` (Lanczos).

    This is the curvature that bounds the SGLD step size (stable iff
    ``step_size * (nbeta * mu_max + localization) < 4``). It costs ``num_iters``
    Hessian-vector products on ``batch`` (capped at the number of parameters).

    Args:
        rng_key: key for the random start.
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: the point.
        batch: the data.
        num_iters: Lanczos steps.

    Returns:
        The largest Ritz value in magnitude (a scalar array).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(jnp.array([3.0, -5.0, 1.0]) * w**2)
        >>> round(float(largest_eigenvalue_magnitude(jax.random.key(0), loss_fn,
        ...                                          jnp.zeros(3), None)), 4)
        5.0
    """
    flat, unravel = ravel_pytree(params)
    matvec = hvp(loss_fn, params, batch)
    start_key, restart_key = jax.random.split(rng_key)
    v0 = jax.random.normal(start_key, flat.shape, flat.dtype)
    tri = lanczos(
        restart_key, lambda v: ravel_pytree(matvec(unravel(v)))[0], v0, min(num_iters, flat.size)
    )
    return jnp.max(jnp.abs(jnp.linalg.eigvalsh(tri.matrix())))


class HessianSpectrum(NamedTuple):
    """What :func:`hessian_spectrum` returns (host arrays).

    Attributes:
        min_eigenvalue: the smallest Ritz value (the most negative curvature).
        max_eigenvalue: the largest Ritz value.
        smallest: the ``k`` smallest Ritz values, ascending.
        largest: the ``k`` largest Ritz values, descending.
        smallest_residuals: Ritz residual norms ``|beta_m s_mi|`` of ``smallest``; a
            value converged to within about this much of a true eigenvalue.
        largest_residuals: the same for ``largest``.
        smallest_eigenvectors: unit eigenvector estimates as parameter pytrees
            (only with ``eigenvectors=True``), else None.
        largest_eigenvectors: likewise.
        trace: Hutchinson estimate of ``tr(H)`` from the sign probes (exact when
            ``m = d``).
        trace_stderr: its standard error across probes (NaN with one probe, 0 when exact).
        nodes: ``(probes, m)`` Ritz values of each probe (quadrature nodes); with
            ``m = d`` one probe, whose nodes are the eigenvalues.
        weights: ``(probes, m)`` quadrature weights (first eigenvector components
            squared; ``1 / d`` each when ``m = d``: the exact density); each row sums to 1.
        num_params: d.
        num_matvecs: Hessian-vector products spent.
    """

    min_eigenvalue: float
    max_eigenvalue: float
    smallest: np.ndarray
    largest: np.ndarray
    smallest_residuals: np.ndarray
    largest_residuals: np.ndarray
    smallest_eigenvectors: list | None
    largest_eigenvectors: list | None
    trace: float
    trace_stderr: float
    nodes: np.ndarray
    weights: np.ndarray
    num_params: int
    num_matvecs: int

    def density(self, grid, sigma: float | None = None) -> np.ndarray:
        """Spectral density on ``grid`` (integrates to about 1), Gaussian-smoothed SLQ.

        Args:
            grid: points at which to evaluate the density.
            sigma: smoothing width; default ``(max - min) / m``.

        Returns:
            The density at each grid point.
        """
        grid = np.asarray(grid, np.float64)
        if sigma is None:
            span = float(self.nodes.max() - self.nodes.min()) or 1.0
            sigma = span / self.nodes.shape[1]
        z = (grid[None, None, :] - self.nodes[..., None]) / sigma
        kernel = np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
        return np.mean(np.sum(self.weights[..., None] * kernel, axis=1), axis=0)

    def fraction_below(self, threshold: float) -> float:
        """Estimated fraction of eigenvalues below ``threshold`` (raw SLQ weights).

        Use a strictly negative threshold to count negative curvature: a bulk around 0
        puts mass on both sides of it.
        """
        return float(np.mean(np.sum(np.where(self.nodes < threshold, self.weights, 0.0), axis=1)))

    @property
    def zero_tolerance(self) -> float:
        """Eigenvalues with ``|mu|`` at most this count as zero (the one threshold).

        ``max(1e-5 |mu_max|, 2 x the smallest Ritz value's residual)``: used by
        :func:`llc.diagnose` to count negative directions and by
        :func:`llc.plot.hessian_spectrum` to shade them.
        """
        return max(1e-5 * abs(self.max_eigenvalue), 2.0 * float(self.smallest_residuals[0]))

    def negative_fraction(self) -> float:
        """Estimated fraction of eigenvalues below ``-zero_tolerance``."""
        return self.fraction_below(-self.zero_tolerance)


@partial(jax.jit, static_argnames=("loss_fn", "chunk"))
def _value_and_grad_norm(loss_fn, params, data, chunk):
    value, grad = jax.value_and_grad(lambda p: _chunks.mean(lambda b: loss_fn(p, b), data, chunk))(
        params
    )
    return value, jnp.linalg.norm(ravel_pytree(grad)[0])


def checked_point(rng_key, loss_fn, params, data, eval_batch_size) -> tuple:
    """The checks every probe of a point makes, with :func:`llc.estimate_llc`'s messages.

    Returns:
        ``(params as arrays, n, d, chunk, L_n(w*), ||grad L_n(w*)||)``.
    """
    check.check_key(rng_key)
    check.check_callable(loss_fn)
    d = check.check_params(params)
    n = check.check_data(data)
    chunk = min(check.check_count("eval_batch_size", eval_batch_size, minimum=1), n)
    check.check_loss_shape(loss_fn, params, jax.tree.map(lambda x: x[:1], data))
    params = jax.tree.map(jnp.asarray, params)
    data = jax.tree.map(jnp.asarray, data)
    value, norm = (float(v) for v in _value_and_grad_norm(loss_fn, params, data, chunk))
    check.check_finite_loss(value)
    check.check_finite_gradient(norm)
    return params, n, d, chunk, value, norm


def full_data_flat_matvec(loss_fn: LossFn, params: ArrayTree, data: Batch, chunk: int):
    """``v -> H v`` on flat vectors for the full-data mean loss, summed over chunks."""
    flat, unravel = ravel_pytree(params)

    def matvec(v):
        def chunk_hvp(batch):
            return ravel_pytree(hvp(loss_fn, params, batch)(unravel(v)))[0]

        return _chunks.mean(chunk_hvp, data, chunk)

    return flat, unravel, matvec


@partial(jax.jit, static_argnames=("loss_fn", "num_matvecs", "num_probes", "chunk"))
def _spectrum_core(rng_key, loss_fn, params, data, num_matvecs, num_probes, chunk):
    flat, _, matvec = full_data_flat_matvec(loss_fn, params, data, chunk)
    probe_key, restart_key = jax.random.split(rng_key)
    signs = jax.random.rademacher(probe_key, (num_probes, flat.size), flat.dtype)

    def one(i, v0):
        tri = lanczos(jax.random.fold_in(restart_key, i), matvec, v0, num_matvecs)
        theta, vecs = jnp.linalg.eigh(tri.matrix())
        return theta, vecs, tri

    theta, vecs, tri = jax.lax.map(lambda a: one(*a), (jnp.arange(num_probes), signs))
    return theta, vecs, tri.basis[0], tri.betas[:, -1]


def hessian_spectrum(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    k: int = 5,
    num_matvecs: int = 50,
    num_probes: int = 4,
    eigenvectors: bool = False,
    eval_batch_size: int = 8192,
) -> HessianSpectrum:
    """Extreme eigenvalues, trace and spectral density of the full-data Hessian.

    Lanczos with full reorthogonalisation from ``num_probes`` random sign vectors, each
    ``num_matvecs`` steps; the extremes come from the first probe (Lanczos finds both
    ends at once, and the smallest are as reliable as the largest). Never read
    multiplicities off Ritz values: a converged value can repeat.

    Args:
        rng_key: a JAX PRNG key.
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        params: the point, any pytree.
        data: a pytree of arrays with a leading axis n (the Hessian is of L_n).
        k: how many of the smallest and largest eigenvalues to return.
        num_matvecs: Lanczos steps per probe (capped at d).
        num_probes: random starts for the trace and density (>= 1; one when
            ``num_matvecs >= d``, where a single run gives every eigenvalue).
        eigenvectors: also return eigenvector estimates as parameter pytrees.
        eval_batch_size: rows per Hessian-vector product chunk.

    Returns:
        A :class:`HessianSpectrum`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> mu = jnp.array([3.0, 1.0, -0.5, 2.0])
        >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(mu * w**2)
        >>> spec = hessian_spectrum(jax.random.key(0), loss_fn, jnp.zeros(4),
        ...                         jnp.zeros((1, 1)), k=1, num_matvecs=4)
        >>> round(spec.min_eigenvalue, 4), round(spec.max_eigenvalue, 4), round(spec.trace, 4)
        (-0.5, 3.0, 5.5)
    """
    params, _, d, chunk, _, _ = checked_point(rng_key, loss_fn, params, data, eval_batch_size)
    num_probes = check.check_count("num_probes", num_probes, minimum=1)
    k = check.check_count("k", k, minimum=1)
    m = min(check.check_count("num_matvecs", num_matvecs, minimum=2), d)
    # m = d: the Krylov space is the whole space (a breakdown restarts it), the Ritz values
    # are the eigenvalues, and the density is exact with weights 1/d: one probe suffices
    exact = m == d
    probes = 1 if exact else num_probes
    theta, vecs, basis0, beta_last = jax.tree.map(
        np.asarray, _spectrum_core(rng_key, loss_fn, params, data, m, probes, chunk)
    )
    weights = np.full(theta.shape, 1.0 / d) if exact else vecs[:, 0, :] ** 2
    residuals = np.abs(beta_last[0] * vecs[0, -1, :])
    k = min(k, m)
    lo, hi = np.arange(k), np.arange(m - 1, m - 1 - k, -1)
    per_probe = d * np.sum(weights * theta, axis=1)
    trace_se = float(np.std(per_probe, ddof=1) / math.sqrt(probes)) if probes > 1 else math.nan
    trace_se = 0.0 if exact else trace_se

    def vectors(idx):
        if not eigenvectors:
            return None
        _, unravel = ravel_pytree(params)
        return [unravel(jnp.asarray(basis0.T @ vecs[0][:, i])) for i in idx]

    return HessianSpectrum(
        min_eigenvalue=float(theta[0, 0]),
        max_eigenvalue=float(theta[0, -1]),
        smallest=theta[0, lo],
        largest=theta[0, hi],
        smallest_residuals=residuals[lo],
        largest_residuals=residuals[hi],
        smallest_eigenvectors=vectors(lo),
        largest_eigenvectors=vectors(hi),
        trace=float(np.mean(per_probe)),
        trace_stderr=trace_se,
        nodes=theta,
        weights=weights,
        num_params=d,
        num_matvecs=m * probes,
    )


def dense_hessian_eigenvalues(loss_fn: LossFn, params: ArrayTree, data: Batch) -> np.ndarray:
    """All eigenvalues of the full-data Hessian, ascending: the exact path for small d.

    Materialises ``jax.hessian`` on the raveled parameters (d x d) and calls ``eigh``;
    run it under ``jax.enable_x64(True)`` with float64 inputs for an exact oracle.

    Examples:
        >>> import jax.numpy as jnp
        >>> loss_fn = lambda w, b: 0.5 * (2.0 * w[0] ** 2 - w[1] ** 2)
        >>> dense_hessian_eigenvalues(loss_fn, jnp.zeros(2), None).tolist()
        [-1.0, 2.0]
    """
    flat, unravel = ravel_pytree(params)
    hess = jax.hessian(lambda f: loss_fn(unravel(f), data))(flat)
    return np.linalg.eigvalsh(np.asarray(hess))
