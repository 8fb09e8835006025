"""The loss kernel, the Bayesian influence function and susceptibilities from the draws.

All three are posterior covariances of observables recorded along the chains.

Record the observables with ``estimate_llc(..., observables={name: data_q})`` (a data
set's mean loss at every draw) or ``per_sample_observables={name: data_q}`` (every
sample's loss at every draw). The covariances below are over the localized posterior,
estimated from every draw of the chains that did not diverge (pooled: the chains sample
the same distribution, so their draws are draws of it).

Conventions (beyond-global-llc.md, with its sources):

- loss kernel (Adam, Furman & Hoogland 2025): ``K_ij = Cov(l_i(w), l_j(w))``;
- Bayesian influence function (Kreer et al. 2025): ``BIF(z_i, phi) = -Cov(l_i(w), phi(w))``,
  here with ``phi`` the losses of another recorded set (or the same one);
- susceptibility (Baker et al. 2025): the response of ``E[phi]`` to moving the data
  distribution towards ``q'``, ``chi = -Cov(phi(w), nbeta (L_q'(w) - L_n(w)))``, with
  ``L_n`` the sampling loss (the recorded loss trace).

Examples:
    >>> import jax, jax.numpy as jnp, llc
    >>> x = jax.random.normal(jax.random.key(0), (500, 2))
    >>> y = x @ jnp.array([1.0, -1.0]) + jax.random.normal(jax.random.key(1), (500,))
    >>> loss_fn = lambda w, b: 0.5 * jnp.mean((b[0] @ w - b[1]) ** 2)
    >>> w_star = jnp.linalg.lstsq(x, y)[0]
    >>> r = llc.estimate_llc(jax.random.key(2), loss_fn, w_star, (x, y), step_size=1e-4,
    ...                      num_draws=500, per_sample_observables={"q": (x[:3], y[:3])})
    >>> loss_kernel(r, "q").shape
    (3, 3)
"""

import numpy as np

__all__ = ["bif", "loss_kernel", "susceptibilities"]


def _draws(result, name: str) -> np.ndarray:
    """``(draws of every alive chain, m)``: an observable's per-draw values, pooled."""
    observables = result.observables or {}
    if name not in observables:
        known = sorted(observables) or "none"
        msg = f"no observable {name!r} was recorded (recorded: {known}); pass it to estimate_llc."
        raise KeyError(msg)
    delta = np.asarray(observables[name].delta, np.float64)[~np.asarray(result.diverged)]
    if not delta.size:
        msg = f"every chain diverged: the observable {name!r} has no draws."
        raise ValueError(msg)
    return delta.reshape(delta.shape[0] * delta.shape[1], -1)


def _cross_covariance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Cov(a_i, b_j)`` over the rows of ``(draws, m_a)`` and ``(draws, m_b)`` (ddof=1)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    return a.T @ b / (a.shape[0] - 1)


def loss_kernel(result, name: str) -> np.ndarray:
    """``K_ij = Cov(l_i(w), l_j(w))``: the ``m x m`` posterior covariance of the losses.

    Args:
        result: an :class:`llc.LLCResult` with ``per_sample_observables[name]`` (a mean
            observable gives a ``1 x 1`` kernel, its variance).
        name: the recorded set.

    Returns:
        ``(m, m)`` float64 (trailing per-sample axes, e.g. tokens, are flattened into m).
    """
    d = _draws(result, name)
    return _cross_covariance(d, d)


def bif(result, name_i: str, name_j: str | None = None) -> np.ndarray:
    """``BIF_ij = -Cov(l_i(w), l_j(w))``: the Bayesian influence of sample i on sample j.

    ``l_i`` are the losses of ``name_i``'s samples and ``l_j`` those of ``name_j`` (the
    same set when None). Positive: upweighting sample i lowers the expected loss on j.

    Returns:
        ``(m_i, m_j)`` float64.
    """
    a = _draws(result, name_i)
    b = a if name_j is None else _draws(result, name_j)
    return -_cross_covariance(a, b)


def susceptibilities(result, name: str, perturbation: str | None = None) -> np.ndarray:
    """``chi = -Cov(phi(w), nbeta (L_q'(w) - L_n(w)))`` for each observable ``phi`` of ``name``.

    Baker et al.'s susceptibility: the first-order response of ``E[phi]`` to moving the
    data distribution from the sampling data towards ``q'``. ``phi`` are the losses
    recorded as ``name`` (per sample, or the set's mean); ``q'`` is the data set recorded
    as the (mean) observable ``perturbation``; ``L_n`` is the sampling loss (the loss
    trace: with minibatches its noise is independent of ``w``, so the covariance is
    unbiased). Without ``perturbation``, ``chi = -Cov(phi, nbeta L_n)``: the response to
    a change of the inverse temperature, ``d E[phi] / d log(nbeta)``.

    Returns:
        ``(m,)`` float64, one susceptibility per observable of ``name``.
    """
    phi = _draws(result, name)
    loss = np.asarray(result.loss_trace, np.float64)[~np.asarray(result.diverged)].reshape(-1, 1)
    shift = loss
    if perturbation is not None:
        other = _draws(result, perturbation)
        if other.shape[1] != 1:
            msg = f"perturbation {perturbation!r} must be a mean observable (observables=...)."
            raise ValueError(msg)
        init = float(result.observables[perturbation].init_loss)
        shift = (other + init) - loss
    return -result.nbeta * _cross_covariance(phi, shift)[:, 0]
