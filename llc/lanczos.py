"""Lanczos tridiagonalisation with full reorthogonalisation, for symmetric operators.

Classical Gram-Schmidt applied twice against the whole basis at every step (Paige:
without it, converged extreme Ritz values come back as ghost copies). On breakdown
(an invariant subspace found) the next vector is a random one orthogonalised against
the basis, so the remaining steps keep exploring the orthogonal complement.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from llc._types import Array, PRNGKey


class Tridiagonal(NamedTuple):
    """``Q^T A Q = T`` with ``T`` tridiagonal.

    Attributes:
        basis: ``(m, n)`` orthonormal Lanczos vectors (rows).
        alphas: ``(m,)`` diagonal of ``T``.
        betas: ``(m,)`` off-diagonal of ``T`` (``betas[:-1]``) and the final residual
            norm ``betas[-1]``.
    """

    basis: Array
    alphas: Array
    betas: Array

    def matrix(self) -> Array:
        """The dense ``(m, m)`` tridiagonal matrix ``T``."""
        off = self.betas[:-1]
        return jnp.diag(self.alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)


def _orthogonalise(w: Array, basis: Array) -> Array:
    """Remove the components of ``w`` along the rows of ``basis`` (twice: CGS2)."""
    w = w - basis.T @ (basis @ w)
    return w - basis.T @ (basis @ w)


@partial(jax.jit, static_argnames=("matvec", "num_matvecs"))
def lanczos(rng_key: PRNGKey, matvec, v0: Array, num_matvecs: int) -> Tridiagonal:
    """``num_matvecs`` steps of Lanczos on ``matvec`` from ``v0`` (a flat vector).

    Args:
        rng_key: key for restart vectors after a breakdown.
        matvec: ``v -> A v`` on flat vectors, ``A`` symmetric.
        v0: starting vector (normalised inside).
        num_matvecs: Krylov dimension m, at most ``v0.size``.

    Returns:
        The :class:`Tridiagonal` decomposition.
    """
    n = v0.shape[0]
    if num_matvecs > n:
        msg = f"num_matvecs must be at most the dimension {n}; got {num_matvecs}."
        raise ValueError(msg)
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).eps * 10
    basis = jnp.zeros((num_matvecs, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def step(j, carry):
        basis, alphas, betas = carry
        q = basis[j]
        w = matvec(q)
        alpha = jnp.vdot(q, w)
        w = _orthogonalise(w, basis)
        beta = jnp.linalg.norm(w)
        restart = _orthogonalise(
            jax.random.normal(jax.random.fold_in(rng_key, j), (n,), dtype), basis
        )
        broke = beta <= tiny * jnp.maximum(1.0, jnp.abs(alpha))
        nxt = jnp.where(broke, restart / jnp.linalg.norm(restart), w / jnp.where(broke, 1.0, beta))
        basis = jnp.where(j + 1 < num_matvecs, basis.at[(j + 1) % num_matvecs].set(nxt), basis)
        return basis, alphas.at[j].set(alpha), betas.at[j].set(jnp.where(broke, 0.0, beta))

    zeros = jnp.zeros((num_matvecs,), dtype)
    basis, alphas, betas = jax.lax.fori_loop(0, num_matvecs, step, (basis, zeros, zeros))
    return Tridiagonal(basis, alphas, betas)
