"""Refined LLCs: the LLC of a subset of the weights, for many subsets in one compiled call.

With a weight mask the chains move only the weights inside it and the rest stay at w*
(Wang et al. 2024's weight-refined LLC): the estimate is the LLC of the loss restricted to
those weights, at w*. :func:`estimate_refined_llc` runs every mask's chains in one
program (``vmap`` over the masks, as :func:`llc.calibrate` vectorises settings), with the
same key, noise and minibatches for every mask: each entry is exactly
``estimate_llc(..., weight_mask=mask)``.
"""

import dataclasses
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from llc import loop, mesh, samplers, stacked
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.estimator import estimate_llc
from llc.plan import check_mask, make_plan
from llc.report import assemble
from llc.result import LLCResult
from llc.settings import Settings, signature
from llc.step_bias import end_step_bias

__all__ = ["estimate_refined_llc"]


def estimate_refined_llc(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    masks: Mapping[str, ArrayTree],
    **settings,
) -> dict[str, LLCResult]:
    """The LLC restricted to each of several weight subsets, all in one compiled call.

    Memory: the masks' chains run side by side (``vmap``), so the sampler state, the
    gradients and the traces are those of ``len(masks)`` runs of ``estimate_llc`` (a
    mask costs the memory of one run); the data and w* are shared. Time: each step
    computes every mask's full gradient (a masked-out weight is not moved but is still
    differentiated), so k masks cost about k single runs' arithmetic, in one program
    with no per-call overhead. With ``step_size="auto"``, ``num_burnin_steps="auto"``,
    ``chunk_draws`` or observables the masks run one after the other (each calibrates and
    burns in on its own), still each equal to its own ``estimate_llc`` call.

    Args:
        rng_key: a JAX PRNG key, shared by every mask (common random numbers).
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        params: w*.
        data: a pytree of arrays with a leading sample axis.
        masks: name -> weight mask (see :mod:`llc.masks`: ``by_path``, ``layers``,
            ``attention_heads``).
        **settings: the keywords of :func:`llc.estimate_llc` but ``weight_mask``.

    Returns:
        name -> :class:`llc.LLCResult` (``num_params`` is the mask's weight count).

    Raises:
        TypeError, ValueError: on bad input (a mask of the wrong structure or that
            selects nothing, among others), before anything is compiled.

    Examples:
        The two weights of a regular quadratic model each have lambda = 1/2.

        >>> import jax, jax.numpy as jnp, llc
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(w["a"]**2 + w["b"]**2) + 0.0 * jnp.sum(b)
        >>> params = {"a": jnp.zeros(1), "b": jnp.zeros(1)}
        >>> out = estimate_refined_llc(
        ...     jax.random.key(0), loss_fn, params, jnp.zeros((1000, 1)),
        ...     masks=llc.masks.layers(params), step_size=1e-3, localization=0.0,
        ...     num_draws=4000)
        >>> {k: round(v.llc_mean, 1) for k, v in out.items()}
        {'a': 0.5, 'b': 0.5}
    """
    t0 = time.perf_counter()
    if not isinstance(masks, Mapping) or not masks:
        msg = "masks must be a non-empty dict of name -> weight mask (see llc.masks)."
        raise ValueError(msg)
    s = Settings.build("estimate_refined_llc", refuse=("weight_mask",), **settings)
    checked = {name: check_mask(m, params) for name, m in masks.items()}
    if (
        s.step_size == "auto"
        or s.auto_burnin
        or s.chunk_draws
        or s.observables
        or s.per_sample_observables
        or not samplers.CAPABILITIES[s.sampler].step_size
    ):
        return {
            name: estimate_llc(rng_key, loss_fn, params, data, weight_mask=m, **settings)
            for name, m in masks.items()
        }
    first = next(iter(masks.values()))
    plan = make_plan(rng_key, loss_fn, params, data, dataclasses.replace(s, weight_mask=first))
    mask_stack = jax.tree.map(lambda *ms: jnp.stack(ms), *[m for m, _ in checked.values()])
    dtype = jnp.result_type(*jax.tree.leaves(plan.params))
    hyper = loop.make_hyper(
        plan.step_size, plan.nbeta, plan.localization, plan.init_loss, dtype, 0, plan.options
    )
    hypers = stacked.stack_hypers([hyper] * len(masks))
    out = stacked.run_grid(
        plan.rng_key,
        plan.params,
        plan.data,
        hypers,
        plan.direction,
        plan.held,
        mask_stack,
        loss_fn=plan.loss_fn,
        config=plan.config,
        stacked_masks=True,
    )
    out = mesh.to_host(out)
    results = {}
    for k, (name, (mask, count)) in enumerate(checked.items()):
        one = jax.tree.map(lambda x, k=k: x[k], out)
        at = plan._replace(mask=mask, num_params=count)
        results[name] = assemble(at, one, t0, step_bias=end_step_bias(at, one))
    return results


estimate_refined_llc.__signature__ = signature(estimate_refined_llc, refuse=("weight_mask",))
