"""The LLC along a training run: every checkpoint in one compiled call."""

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llc import _loop
from llc import _validation as check
from llc import estimator as _estimator
from llc._types import ArrayTree, Batch, LossFn, PRNGKey

__all__ = ["TrajectoryResult", "estimate_llc_trajectory"]


class TrajectoryResult(NamedTuple):
    """What :func:`estimate_llc_trajectory` returns.

    Attributes:
        llc_mean: ``(T,)`` the estimate at each checkpoint.
        llc_stderr: ``(T,)`` its standard error across chains.
        init_loss: ``(T,)`` the full-data loss ``L_n`` at each checkpoint.
        flags: ``T`` tuples, the flags of each checkpoint's estimate.
        results: ``T`` :class:`llc.LLCResult`, one per checkpoint (traces, evidence).
        wall_time: seconds for the whole call, compilation included.
    """

    llc_mean: np.ndarray
    llc_stderr: np.ndarray
    init_loss: np.ndarray
    flags: list
    results: list
    wall_time: float


def estimate_llc_trajectory(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    checkpoints: ArrayTree,
    data: Batch,
    *,
    step_size: float,
    localization: float = 1.0,
    nbeta: float | None = None,
    sampler: str = "sgld",
    sampler_options: dict | None = None,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin_steps: int = 1000,
    num_steps_bw_draws: int = 1,
    batch_size: int | None = None,
    control_variate: bool = True,
    eval_batch_size: int | None = None,
    full_loss_every: int | None = None,
    acceptance_checks: int | None = None,
) -> TrajectoryResult:
    """Estimate the LLC at every checkpoint of a training run, in one compiled call.

    The checkpoints run one after the other inside one XLA program (``lax.map`` over the
    stacked checkpoints), so memory is that of a single :func:`llc.estimate_llc` run.
    Every checkpoint uses the same key: checkpoint ``t``'s result is exactly what
    ``estimate_llc(rng_key, loss_fn, checkpoint_t, data, ...)`` returns, and neighbouring
    checkpoints share their noise and minibatches (common random numbers), which makes
    the curve smoother than independent runs would.

    Args:
        rng_key: a JAX PRNG key.
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        checkpoints: a pytree shaped like the parameters with one extra leading axis T
            on every leaf (e.g. ``jax.tree.map(lambda *p: jnp.stack(p), *param_list)``).
        data: a pytree of arrays with a leading sample axis.
        step_size: epsilon (one value for all checkpoints; calibrate it at the last
            checkpoint with :func:`llc.calibrate`, where the curvature is usually largest).
        localization: gamma.
        nbeta: n times the inverse temperature (default ``n / log n``).
        sampler: see :func:`llc.estimate_llc`.
        sampler_options: see :func:`llc.estimate_llc`.
        num_chains: chains per checkpoint.
        num_draws: draws per chain.
        num_burnin_steps: burn-in steps per chain.
        num_steps_bw_draws: steps per draw.
        batch_size: minibatch size (None: full batch).
        control_variate: see :func:`llc.estimate_llc`.
        eval_batch_size: rows per full-data loss evaluation.
        full_loss_every: see :func:`llc.estimate_llc`.
        acceptance_checks: see :func:`llc.estimate_llc`.

    Returns:
        A :class:`TrajectoryResult`.

    Raises:
        TypeError, ValueError: on bad input, before anything is compiled.

    Examples:
        Three checkpoints of a linear regression (a regular model: lambda = d/2 = 1 at each).

        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (1000, 2))
        >>> y = x @ jnp.array([1.0, -1.0]) + jax.random.normal(jax.random.key(1), (1000,))
        >>> loss_fn = lambda w, b: 0.5 * jnp.mean((b[0] @ w - b[1]) ** 2)
        >>> w_star = jnp.linalg.lstsq(x, y)[0]
        >>> checkpoints = jnp.stack([w_star, w_star + 0.001, w_star - 0.001])
        >>> traj = estimate_llc_trajectory(jax.random.key(2), loss_fn, checkpoints, (x, y),
        ...                                step_size=1e-4, batch_size=100, num_draws=500)
        >>> traj.llc_mean.shape
        (3,)
    """
    t0 = time.perf_counter()
    leaves = jax.tree.leaves(checkpoints)
    if not leaves or any(np.ndim(x) < 1 for x in leaves):
        msg = (
            "checkpoints must be a pytree whose every leaf has a leading checkpoint axis T "
            "(stack the parameter pytrees, e.g. jax.tree.map(lambda *p: jnp.stack(p), *ps))."
        )
        raise ValueError(msg)
    lengths = {np.shape(x)[0] for x in leaves}
    if len(lengths) != 1 or 0 in lengths:
        msg = f"every leaf of checkpoints needs the same non-zero leading axis T; got {lengths}."
        raise ValueError(msg)
    if isinstance(step_size, str) or step_size is None:
        msg = (
            "estimate_llc_trajectory takes a numeric step_size shared by all checkpoints; "
            "choose it with llc.calibrate at the last checkpoint."
        )
        raise ValueError(msg)
    if sampler == "nuts":
        msg = "estimate_llc_trajectory runs the stochastic-gradient samplers, not 'nuts'."
        raise ValueError(msg)
    num_checkpoints = lengths.pop()
    check.check_params(checkpoints)
    first = jax.tree.map(lambda x: jnp.asarray(x)[0], checkpoints)
    plan = _estimator.make_plan(
        rng_key,
        loss_fn,
        first,
        data,
        step_size=step_size,
        localization=localization,
        nbeta=nbeta,
        sampler=sampler,
        sampler_options=sampler_options,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin_steps=num_burnin_steps,
        num_steps_bw_draws=num_steps_bw_draws,
        batch_size=batch_size,
        control_variate=control_variate,
        eval_batch_size=eval_batch_size,
        full_loss_every=full_loss_every,
        acceptance_checks=acceptance_checks,
    )
    plan = plan._replace(config=plan.config._replace(record_scale=True))  # step_size_bias
    checkpoints = jax.tree.map(lambda x, p: jnp.asarray(x, p.dtype), checkpoints, plan.params)
    anchors = [jax.tree.map(lambda x, t=t: x[t], checkpoints) for t in range(num_checkpoints)]
    init_losses = [plan.init_loss] + [
        _loop.full_data_loss(loss_fn, a, plan.data, plan.eval_rows) for a in anchors[1:]
    ]
    for t, value in enumerate(init_losses):
        if not np.isfinite(value):
            msg = f"the full-data loss at checkpoint {t} is {value}; it must be finite."
            raise ValueError(msg)
    dtype = jnp.result_type(*jax.tree.leaves(plan.params))
    hypers = [
        _loop.make_hyper(
            plan.step_size, plan.nbeta, plan.localization, value, dtype, 0, plan.options
        )
        for value in init_losses
    ]
    stacked = _loop.stack_hypers(hypers)
    keys = jnp.stack([plan.rng_key] * num_checkpoints)
    out = _loop.run_checkpoints(
        keys, checkpoints, plan.data, stacked, loss_fn=plan.loss_fn, config=plan.config
    )
    out = jax.tree.map(np.asarray, out)
    results = []
    for t in range(num_checkpoints):
        one = jax.tree.map(lambda x, t=t: x[t], out)
        at = plan._replace(params=anchors[t], init_loss=init_losses[t])
        step_bias = _estimator.end_step_bias(at, one)
        results.append(_estimator.assemble(at, one, t0, warn=False, step_bias=step_bias))
    return TrajectoryResult(
        llc_mean=np.array([r.llc_mean for r in results]),
        llc_stderr=np.array([r.llc_stderr for r in results]),
        init_loss=np.array(init_losses),
        flags=[r.flags for r in results],
        results=results,
        wall_time=time.perf_counter() - t0,
    )
