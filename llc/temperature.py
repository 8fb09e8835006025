"""The multi-temperature (WBIC-style) estimator: E_beta[n L_n] regressed on 1 / beta.

At inverse temperature beta the localized posterior gives
``f(beta) = n (E_beta[L_n(w)] - L_n(w*))``. Watanabe's expansion of the free energy,
``F(beta) = n beta L_n(w*) + lambda log(n beta) + ...``, makes ``f = dF/dbeta`` close to
``lambda / beta + c`` near ``beta* = 1/log n``: the single-temperature estimate
``lambda_hat(beta) = beta f(beta)`` carries the term ``c beta``, and the slope of ``f``
against ``1 / beta`` does not. Following Lau et al.'s ``extrapolated_multiitemp_lambdahat``,
the temperatures are spread over ``beta* (1 +- 1/sqrt(2 log n))``. All temperatures run
as one vectorised program with common random numbers, so the slope is taken per chain and
its spread across chains gives the standard error.

Whether this closes the finite-n gap is an empirical question; ``benchmarks/multitemp.py``
measures it against exact finite-n values (see the README).
"""

import dataclasses
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llc import loop, mesh, samplers, stacked
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.plan import make_plan
from llc.report import assemble
from llc.settings import STACKED_RUN_REFUSES, Settings, signature

__all__ = ["MultiTemperatureResult", "estimate_llc_multitemp", "default_nbetas"]


class MultiTemperatureResult(NamedTuple):
    """What :func:`estimate_llc_multitemp` returns.

    Attributes:
        llc: the slope of ``n E_beta[L_n - L_n(w*)]`` against ``1 / beta``, averaged over
            the chains.
        llc_stderr: its standard error across chains (NaN with one chain).
        llc_per_chain: ``(chains,)`` the slope of each chain.
        nbetas: ``(K,)`` the temperatures, as ``n beta``.
        llc_per_temperature: ``(K,)`` the single-temperature estimates
            ``nbeta_k E_k[L_n - L_n(w*)]``.
        results: ``K`` :class:`llc.LLCResult`, one per temperature.
        wall_time: seconds for the whole call.
    """

    llc: float
    llc_stderr: float
    llc_per_chain: np.ndarray
    nbetas: np.ndarray
    llc_per_temperature: np.ndarray
    results: list
    wall_time: float


def default_nbetas(num_data: int, num_temperatures: int = 5) -> np.ndarray:
    """``n beta`` for beta evenly spaced over ``(1 / log n) (1 +- 1 / sqrt(2 log n))``.

    Examples:
        >>> default_nbetas(10_000, 3).round(1)
        array([ 832.8, 1085.7, 1338.7])
    """
    log_n = math.log(num_data)
    spread = 1 / math.sqrt(2 * log_n)
    return num_data / log_n * np.linspace(1 - spread, 1 + spread, num_temperatures)


def estimate_llc_multitemp(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    nbetas=None,
    num_temperatures: int = 5,
    **settings,
) -> MultiTemperatureResult:
    """The multi-temperature LLC estimate (see the module docstring).

    Args:
        rng_key: a JAX PRNG key (shared by all temperatures: common random numbers).
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        params: w*.
        data: a pytree of arrays with a leading sample axis n.
        nbetas: the temperatures as ``n beta`` (default :func:`default_nbetas`).
        num_temperatures: how many default temperatures (>= 2).
        **settings: the keywords of :func:`llc.estimate_llc` but ``nbeta`` (set by
            ``nbetas``), ``escape_direction``, ``held_directions``, ``num_devices``,
            ``chunk_draws``, ``max_burnin_steps``, ``progress_bar``, the observables'
            and the mesh's. ``step_size`` is
            one number for all temperatures (choose it for the largest nbeta), the burn-in
            a fixed count, and ``localization`` the same at every temperature.

    Returns:
        A :class:`MultiTemperatureResult`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(w**2)  # a regular model: lambda = d/2 = 1
        >>> data = jnp.zeros((1000, 1))
        >>> r = estimate_llc_multitemp(jax.random.key(0), loss_fn, jnp.zeros(2), data,
        ...                            step_size=1e-4, localization=0.0, num_draws=10_000)
        >>> r.nbetas.shape
        (5,)
        >>> abs(r.llc - 1.0) < 0.2
        True
    """
    t0 = time.perf_counter()
    s = Settings.build("estimate_llc_multitemp", refuse=_REFUSED, **settings)
    if not samplers.CAPABILITIES[s.sampler].step_size or s.step_size == "auto" or s.auto_burnin:
        msg = (
            "estimate_llc_multitemp takes a stochastic-gradient sampler with a numeric "
            "step_size (one for all temperatures) and a fixed num_burnin_steps."
        )
        raise ValueError(msg)
    nbeta = None if nbetas is None else float(np.max(nbetas))
    plan = make_plan(rng_key, loss_fn, params, data, dataclasses.replace(s, nbeta=nbeta))
    n = plan.num_data
    if nbetas is None:
        if isinstance(num_temperatures, bool) or int(num_temperatures) != num_temperatures:
            msg = f"num_temperatures must be an integer >= 2; got {num_temperatures!r}."
            raise TypeError(msg)
        if num_temperatures < 2 or n < 3:
            msg = "the default temperatures need num_temperatures >= 2 and n >= 3; pass nbetas."
            raise ValueError(msg)
        nbetas = default_nbetas(n, int(num_temperatures))
    nbetas = np.sort(np.asarray(nbetas, np.float64).reshape(-1))
    if nbetas.size < 2 or not np.all(np.isfinite(nbetas) & (nbetas > 0)):
        msg = f"nbetas must hold at least two finite values > 0; got {nbetas.tolist()}."
        raise ValueError(msg)
    if np.unique(nbetas).size != nbetas.size:
        msg = "nbetas must be distinct (the slope needs different temperatures)."
        raise ValueError(msg)
    dtype = jnp.result_type(*jax.tree.leaves(plan.params))
    hypers = [
        loop.make_hyper(
            plan.step_size, nb, plan.localization, plan.init_loss, dtype, 0, plan.options
        )
        for nb in nbetas
    ]
    hypers = stacked.stack_hypers(hypers)
    out = stacked.run_grid(
        plan.rng_key,
        plan.params,
        plan.data,
        hypers,
        None,
        None,
        plan.mask,
        loss_fn=plan.loss_fn,
        config=plan.config,
    )
    out = mesh.to_host(out)
    results = [
        assemble(plan, jax.tree.map(lambda x, k=k: x[k], out), t0, nbeta=float(nb), warn=False)
        for k, nb in enumerate(nbetas)
    ]
    per_temp_chain = np.stack([r.llc_per_chain for r in results])  # (K, chains)
    inv_beta = n / nbetas  # 1 / beta
    f = per_temp_chain * inv_beta[:, None]  # n (E[L] - L*) per chain
    x = inv_beta - inv_beta.mean()
    slopes = (x[:, None] * (f - f.mean(axis=0))).sum(axis=0) / np.sum(x**2)
    alive = slopes[np.isfinite(slopes)]
    llc = float(alive.mean()) if alive.size else math.nan
    stderr = float(alive.std(ddof=1) / math.sqrt(alive.size)) if alive.size > 1 else math.nan
    return MultiTemperatureResult(
        llc=llc,
        llc_stderr=stderr,
        llc_per_chain=slopes,
        nbetas=nbetas,
        llc_per_temperature=np.array([r.llc_mean for r in results]),
        results=results,
        wall_time=time.perf_counter() - t0,
    )


_REFUSED = ("nbeta", *STACKED_RUN_REFUSES)
estimate_llc_multitemp.__signature__ = signature(estimate_llc_multitemp, refuse=_REFUSED)
