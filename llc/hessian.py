"""Hessian-vector products of a loss over a parameter pytree, never forming the Hessian.

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

from functools import partial

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from llc._types import ArrayTree, Batch, LossFn, PRNGKey

__all__ = ["hvp", "largest_eigenvalue_magnitude"]


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
    """
    grad_fn = jax.grad(lambda p: loss_fn(p, batch))

    def matvec(v: ArrayTree) -> ArrayTree:
        return jax.jvp(grad_fn, (params,), (v,))[1]

    return matvec


@partial(jax.jit, static_argnames=("loss_fn", "num_iters"))
def largest_eigenvalue_magnitude(
    rng_key: PRNGKey, loss_fn: LossFn, params: ArrayTree, batch: Batch, num_iters: int = 50
):
    """``max_i |mu_i|`` of the Hessian at ``params`` by power iteration on HVPs.

    This is the curvature that bounds the SGLD step size (stable iff
    ``step_size * (nbeta * mu_max + localization) < 4``). It costs ``num_iters``
    Hessian-vector products.

    Args:
        rng_key: key for the random start.
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: the point.
        batch: the data.
        num_iters: number of power-iteration steps.

    Returns:
        The Rayleigh-quotient magnitude after ``num_iters`` steps (a scalar array).
    """
    flat, unravel = ravel_pytree(params)
    matvec = hvp(loss_fn, params, batch)

    def flat_matvec(v):
        return ravel_pytree(matvec(unravel(v)))[0]

    v0 = jax.random.normal(rng_key, flat.shape, flat.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(_, carry):
        v, _ = carry
        w = flat_matvec(v)
        norm = jnp.linalg.norm(w)
        return jnp.where(norm > 0, w / norm, v), jnp.abs(jnp.vdot(v, w))

    _, estimate = jax.lax.fori_loop(0, num_iters, body, (v0, jnp.zeros((), flat.dtype)))
    return estimate
