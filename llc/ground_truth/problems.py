"""Problem builders: a model at a point whose learning coefficient is known exactly."""

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from llc._types import ArrayTree, Batch, LossFn
from llc._validation import check_count
from llc.ground_truth.exact import (
    dln_hessian_rank,
    dln_learning_coefficient,
    dln_local_learning_coefficient,
    dln_minimal_point,
    normal_crossing_learning_coefficient,
    product_rank,
    rrr_learning_coefficient,
)

__all__ = [
    "Problem",
    "make_dln_problem",
    "make_normal_crossing_problem",
    "make_regular_problem",
    "make_rrr_problem",
]


class Problem(NamedTuple):
    """A model at a point whose learning coefficient is known exactly.

    Attributes:
        name: a short description.
        params: the true parameter w* (a pytree).
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        data: a pytree of arrays with a leading axis n.
        true_lambda: the exact learning coefficient at ``params``.
        multiplicity: its multiplicity.
        num_params: d.
        rank: the realised rank of the end-to-end map (linear models), else None.
        widths: layer widths (linear models), else None.
        lambda_lower_bound: a proven lower bound on the LLC *at* ``params``:
            ``max(true_lambda, hessian_rank / 2)`` for deep linear networks (the global
            coefficient never exceeds a local one; the splitting lemma gives the rest).
        local_lambda: the exact LLC at ``params`` when known (a Morse-Bott point, see
            :func:`dln_local_learning_coefficient`, or a minimal point, see
            :func:`dln_minimal_point`), else None. For deep linear
            networks ``true_lambda`` is Aoyagi's global value, which a generic teacher
            can exceed locally.
    """

    name: str
    params: ArrayTree
    loss_fn: LossFn
    data: Batch
    true_lambda: Fraction
    multiplicity: int
    num_params: int
    rank: int | None = None
    widths: tuple[int, ...] | None = None
    lambda_lower_bound: Fraction | None = None
    local_lambda: Fraction | None = None


def _linear_chain_mse(params, batch):
    """Mean squared error (over samples and outputs) of ``x @ W1 @ W2 @ ...``."""
    x, y = batch
    out = x
    for w in params:
        out = out @ w
    return jnp.mean((out - y) ** 2)


def _haiku_like_init(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Truncated normal (2 std), std = 1/sqrt(fan_in): Haiku's default for Linear."""
    std = 1.0 / math.sqrt(fan_in)
    draws = rng.standard_normal((fan_in, fan_out))
    while np.any(bad := np.abs(draws) > 2):
        draws[bad] = rng.standard_normal(int(bad.sum()))
    return draws * std / 0.87962566103423978  # std of N(0,1) truncated to [-2, 2]


def _reduce_rank(rng: np.random.Generator, w: np.ndarray) -> np.ndarray:
    """Drop a uniform random number (0..r-1) of singular values: rank stays >= 1."""
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    new_rank = len(s) - int(rng.integers(0, max(1, len(s))))
    s[new_rank:] = 0.0
    return (u * s) @ vt


def make_dln_problem(
    widths: Sequence[int],
    *,
    seed: int = 0,
    num_data: int = 100_000,
    prop_rank_reduce: float = 0.5,
    input_range: float = 10.0,
    point: str = "teacher",
) -> Problem:
    """A deep linear network teacher in the set-up of Furman & Lau.

    Each weight matrix gets Haiku's default init; with probability
    ``prop_rank_reduce`` its rank is reduced by a uniform random amount (SVD
    truncation). Inputs are ``Uniform[-input_range, input_range]``, targets are the
    network's noise-free outputs, and the loss is the MSE (mean over samples and
    outputs), so ``L_n(w*) = 0``. The true lambda uses the realised rank of the product.

    Args:
        widths: ``[input, hidden..., output]``.
        seed: seed of everything random here.
        num_data: n.
        prop_rank_reduce: probability that a layer is rank-reduced.
        input_range: half-width of the input distribution.
        point: where the LLC is to be estimated. ``"teacher"`` (Furman & Lau): the
            random teacher itself, whose local coefficient can exceed Aoyagi's lambda
            (``lambda_lower_bound``, ``local_lambda``). ``"minimal"``: the same
            function factorised with every layer of rank ``r``
            (:func:`dln_minimal_point`), where the LLC is Aoyagi's lambda exactly
            (``local_lambda == true_lambda``). The architecture, the data and the
            function are the same for both.

    Returns:
        A :class:`Problem` with ``params`` a tuple of float32 matrices (``x @ W``).

    Raises:
        ValueError: for an unknown ``point``.

    Examples:
        >>> p = make_dln_problem([3, 4, 2], seed=0, num_data=100, prop_rank_reduce=0.0)
        >>> p.rank, p.num_params, p.true_lambda
        (2, 20, Fraction(3, 1))
        >>> q = make_dln_problem([6, 5, 4], seed=1, num_data=100, point="minimal")
        >>> q.local_lambda == q.true_lambda
        True
    """
    widths = tuple(check_count("each width", h, minimum=1) for h in widths)
    if point not in ("teacher", "minimal"):
        msg = f"point must be 'teacher' or 'minimal'; got {point!r}."
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        w = _haiku_like_init(rng, fan_in, fan_out)
        if rng.random() < prop_rank_reduce:
            w = _reduce_rank(rng, w)
        layers.append(w.astype(np.float32))
    rank = product_rank(layers)
    if point == "minimal":
        layers = [w.astype(np.float32) for w in dln_minimal_point(layers)]
    lam, mult = dln_learning_coefficient(widths, rank)
    x = rng.uniform(-input_range, input_range, (num_data, widths[0])).astype(np.float32)
    y = x.astype(np.float64)
    for w in layers:
        y = y @ w.astype(np.float64)
    params = tuple(jnp.asarray(w) for w in layers)
    data = (jnp.asarray(x), jnp.asarray(y.astype(np.float32)))
    name = f"DLN {list(widths)} rank {rank}" + (" (minimal point)" if point == "minimal" else "")
    d = sum(w.size for w in layers)
    bound = max(lam, Fraction(dln_hessian_rank(layers), 2))
    local = lam if point == "minimal" else dln_local_learning_coefficient(layers)
    return Problem(name, params, _linear_chain_mse, data, lam, mult, d, rank, widths, bound, local)


def make_rrr_problem(
    M: int, H: int, N: int, r: int, *, seed: int = 0, num_data: int = 10_000
) -> Problem:
    """Reduced-rank regression ``y = x A B`` at a true point of rank ``r``.

    The teacher ``(A, B)`` has ``A`` of shape ``(M, H)`` and ``B`` of shape ``(H, N)``
    with ``rank(A B) = r``; inputs are standard normal, targets noise-free, loss MSE.

    Args:
        M: input dimension.
        H: inner dimension.
        N: output dimension.
        r: true rank, ``0..min(M, H, N)``.
        seed: seed.
        num_data: n.

    Returns:
        A :class:`Problem` with ``params = (A, B)``.

    Examples:
        >>> make_rrr_problem(5, 3, 5, 0, num_data=50).true_lambda
        Fraction(13, 2)
    """
    lam, mult = rrr_learning_coefficient(M, H, N, r)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, H)) / math.sqrt(M)
    b = rng.standard_normal((H, N)) / math.sqrt(H)
    a[:, r:] = 0.0  # only r inner units carry signal: rank(A B) = r generically
    b[r:, :] = 0.0
    x = rng.standard_normal((num_data, M))
    y = x @ a @ b
    params = (jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    data = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    realised = product_rank([a, b])
    name = f"RRR M={M} H={H} N={N} r={r}"
    return Problem(
        name, params, _linear_chain_mse, data, lam, mult, H * (M + N), realised, (M, H, N)
    )


def make_normal_crossing_problem(
    k: Sequence[int], *, seed: int = 0, num_data: int = 10_000
) -> Problem:
    """The model ``f(x; w) = x * prod_j w_j^(k_j)`` with true point ``w* = 0``.

    Inputs are normalised so that ``mean(x^2) = 1`` exactly and targets are 0, so the
    full-data loss ``mean((f(x; w) - y)^2)`` *is* the normal crossing
    ``K(w) = prod_j w_j^(2 k_j)``; minibatch losses fluctuate around it.

    Args:
        k: exponents ``k_j >= 1``.
        seed: seed of the inputs.
        num_data: n.

    Returns:
        A :class:`Problem` with ``params`` a float32 vector of zeros.

    Examples:
        >>> p = make_normal_crossing_problem([1, 2], num_data=10)
        >>> p.true_lambda
        Fraction(1, 4)
        >>> import jax
        >>> bool(jax.numpy.isfinite(jax.hessian(p.loss_fn)(p.params, p.data)).all())
        True
    """
    k = tuple(check_count("each k_j", v, minimum=1) for v in k)
    lam, mult = normal_crossing_learning_coefficient(k)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(num_data)
    x /= math.sqrt(np.mean(x**2))

    def loss_fn(w, batch):
        xb, yb = batch
        # integer powers: w ** float has a NaN derivative at w = 0 (log 0), which made the
        # Hessian at w* = 0, and so step_size="auto", NaN
        monomial = math.prod(w[j] ** kj for j, kj in enumerate(k))
        return jnp.mean((xb * monomial - yb) ** 2)

    data = (jnp.asarray(x, jnp.float32), jnp.zeros(num_data, jnp.float32))
    params = jnp.zeros(len(k), jnp.float32)
    return Problem(f"normal crossing k={list(k)}", params, loss_fn, data, lam, mult, len(k))


def make_regular_problem(
    d: int, *, seed: int = 0, num_data: int = 10_000, noise: float = 1.0
) -> Problem:
    """Linear regression with Gaussian noise at its least-squares solution: lambda = d/2.

    The loss is ``0.5 * mean((x w - y)^2)`` and ``w*`` minimises it exactly, so w* is a
    non-degenerate minimum of the empirical loss.

    Args:
        d: number of parameters (features).
        seed: seed.
        num_data: n.
        noise: standard deviation of the target noise.

    Returns:
        A :class:`Problem`.

    Examples:
        >>> make_regular_problem(4, num_data=100).true_lambda
        Fraction(2, 1)
    """
    d = check_count("d", d, minimum=1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_data, d))
    y = x @ rng.standard_normal(d) + noise * rng.standard_normal(num_data)
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]

    def loss_fn(w, batch):
        xb, yb = batch
        return 0.5 * jnp.mean((xb @ w - yb) ** 2)

    data = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    return Problem(
        f"linear regression d={d}",
        jnp.asarray(w_star, jnp.float32),
        loss_fn,
        data,
        Fraction(d, 2),
        1,
        d,
    )
