"""The LLC along a training run: every checkpoint in one compiled call."""

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llc import _chunks, loop, mesh, samplers, stacked
from llc import _validation as check
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.calibration import calibrate_plan
from llc.plan import make_plan
from llc.relabel import Relabelling, relabel_targets, relabelled_loss
from llc.report import assemble
from llc.settings import STACKED_RUN_REFUSES, Settings, signature
from llc.step_bias import MAX_STEP_BIAS, end_step_bias

__all__ = ["TrajectoryResult", "estimate_llc_trajectory"]


class TrajectoryResult(NamedTuple):
    """What :func:`estimate_llc_trajectory` returns: :class:`llc.LLCResult`'s fields, per T.

    Attributes:
        llc_mean: ``(T,)`` the estimate at each checkpoint.
        llc_stderr: ``(T,)`` its standard error across chains.
        init_loss: ``(T,)`` the full-data loss ``L_n`` at each checkpoint.
        flags: ``T`` tuples, the flags of each checkpoint's estimate.
        results: ``T`` :class:`llc.LLCResult`, one per checkpoint (traces, evidence).
        wall_time: seconds for the whole call, compilation included.
        llc_std: ``(T,)`` the standard deviation across chains at each checkpoint.
        llc_per_chain: ``(T, chains)`` the per-chain estimates.
        evidence: ``T`` dicts, each checkpoint's evidence per flag.
        llc_step_corrected: ``(T,)`` each estimate less its predicted step-size bias.
    """

    llc_mean: np.ndarray
    llc_stderr: np.ndarray
    init_loss: np.ndarray
    flags: list
    results: list
    wall_time: float
    llc_std: np.ndarray | None = None
    llc_per_chain: np.ndarray | None = None
    evidence: list | None = None
    llc_step_corrected: np.ndarray | None = None


def estimate_llc_trajectory(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    checkpoints: ArrayTree,
    data: Batch,
    *,
    relabel: Relabelling | None = None,
    **settings,
) -> TrajectoryResult:
    """Estimate the LLC at every checkpoint of a training run, in one compiled call.

    The checkpoints run one after the other inside one XLA program (``lax.map`` over the
    stacked checkpoints), so memory is that of a single :func:`llc.estimate_llc` run.
    Every checkpoint uses the same key: checkpoint ``t``'s result is exactly what
    ``estimate_llc(rng_key, loss_fn, checkpoint_t, data, ...)`` returns (at a numeric
    ``step_size``), and neighbouring
    checkpoints share their noise and minibatches (common random numbers), which makes
    the curve smoother than independent runs would.

    Args:
        rng_key: a JAX PRNG key.
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        checkpoints: a pytree shaped like the parameters with one extra leading axis T
            on every leaf (e.g. ``jax.tree.map(lambda *p: jnp.stack(p), *param_list)``).
        data: a pytree of arrays with a leading sample axis.
        relabel: an :class:`llc.Relabelling` ``(predict_fn, inputs, divergence)``:
            estimate at each checkpoint the LLC of its realizable problem (targets: that
            checkpoint's own outputs, see :func:`llc.relabel`), defined mid-training and
            on plateaus where the training loss has no minimum. Pass ``loss_fn=None``
            and ``data=None`` with it.
        **settings: the keywords of :func:`llc.estimate_llc` but ``escape_direction``,
            ``held_directions``, ``num_devices``, ``chunk_draws``, ``max_burnin_steps``,
            ``progress_bar``, the observables' and the mesh's. ``step_size`` is one number
            for all checkpoints, or ``"auto"``: calibrated at each checkpoint by
            :func:`llc.estimate_llc`'s rule (short runs on the default grid, each
            checkpoint's result carrying its ``calibration``), every checkpoint then
            sampled at its own step in the one program. The burn-in is a fixed count
            (with ``"auto"``, :func:`llc.estimate_llc` also spreads the chains at a larger
            step first and lets its burn-in shrink the step where the chains go; here
            the calibrated step is kept, and there is no spread).

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
    s = Settings.build("estimate_llc_trajectory", refuse=_REFUSED, **settings)
    if not samplers.CAPABILITIES[s.sampler].step_size:
        msg = f"estimate_llc_trajectory runs the stochastic-gradient samplers, not {s.sampler!r}."
        raise ValueError(msg)
    if s.auto_burnin:
        msg = (
            "num_burnin_steps must be a count >= 0, not 'auto' (estimate_llc only): every "
            "checkpoint runs the same burn-in."
        )
        raise ValueError(msg)
    num_checkpoints = lengths.pop()
    check.check_params(checkpoints)
    first = jax.tree.map(lambda x: jnp.asarray(x)[0], checkpoints)
    targets = None
    if relabel is not None:
        loss_fn, data, targets = _relabelled(relabel, loss_fn, data, checkpoints)
    plan = make_plan(rng_key, loss_fn, first, data, s)
    checkpoints = jax.tree.map(lambda x, p: jnp.asarray(x, p.dtype), checkpoints, plan.params)
    anchors = [jax.tree.map(lambda x, t=t: x[t], checkpoints) for t in range(num_checkpoints)]

    def data_at(t):
        return plan.data if targets is None else {**plan.data, "targets": targets[t]}

    init_losses = [plan.init_loss] + [
        _chunks.full_data_loss(plan.loss_fn, a, data_at(t), plan.eval_rows)
        for t, a in enumerate(anchors[1:], 1)
    ]
    for t, value in enumerate(init_losses):
        if not np.isfinite(value):
            msg = f"the full-data loss at checkpoint {t} is {value}; it must be finite."
            raise ValueError(msg)
    at = [
        plan._replace(params=anchors[t], init_loss=init_losses[t], data=data_at(t))
        for t in range(num_checkpoints)
    ]
    calibrations = [None] * num_checkpoints
    if plan.step_size == "auto":  # each checkpoint's own step, all in the one program
        calibrations = [calibrate_plan(a, short=True) for a in at]
        at = [
            a._replace(step_size=c.recommended["step_size"])
            for a, c in zip(at, calibrations, strict=True)
        ]
    dtype = jnp.result_type(*jax.tree.leaves(plan.params))
    hypers = [
        loop.make_hyper(a.step_size, a.nbeta, a.localization, a.init_loss, dtype, 0, a.options)
        for a in at
    ]
    hypers = stacked.stack_hypers(hypers)
    keys = jnp.stack([plan.rng_key] * num_checkpoints)
    shared = plan.data if targets is None else {"inputs": plan.data["inputs"]}
    out = stacked.run_checkpoints(
        keys,
        checkpoints,
        shared,
        hypers,
        plan.mask,
        loss_fn=plan.loss_fn,
        config=plan.config,
        per_checkpoint=None if targets is None else {"targets": targets},
    )
    out = mesh.to_host(out)
    results = []
    for t, (a, calibration) in enumerate(zip(at, calibrations, strict=True)):
        one = jax.tree.map(lambda x, t=t: x[t], out)
        max_bias = MAX_STEP_BIAS if calibration is None else calibration.max_bias
        results.append(
            assemble(
                a,
                one,
                t0,
                warn=False,
                step_bias=end_step_bias(a, one),
                calibration=calibration,
                max_bias=max_bias,
            )
        )
    return TrajectoryResult(
        llc_mean=np.array([r.llc_mean for r in results]),
        llc_stderr=np.array([r.llc_stderr for r in results]),
        init_loss=np.array(init_losses),
        flags=[r.flags for r in results],
        results=results,
        wall_time=time.perf_counter() - t0,
        llc_std=np.array([r.llc_std for r in results]),
        llc_per_chain=np.stack([r.llc_per_chain for r in results]),
        evidence=[r.evidence for r in results],
        llc_step_corrected=np.array(
            [np.nan if r.llc_step_corrected is None else r.llc_step_corrected for r in results]
        ),
    )


def _relabelled(relabel, loss_fn, data, checkpoints):
    """The relabelled loss, checkpoint 0's data, and every checkpoint's targets (stacked)."""
    if not isinstance(relabel, Relabelling):
        msg = (
            "relabel must be llc.Relabelling(predict_fn, inputs, divergence); got "
            f"{type(relabel).__name__}."
        )
        raise TypeError(msg)
    if loss_fn is not None or data is not None:
        msg = (
            "with relabel=, pass loss_fn=None and data=None: the loss is the divergence from "
            "each checkpoint's own outputs on relabel.inputs."
        )
        raise ValueError(msg)
    predict_fn, inputs, divergence = relabel
    n = jax.tree.leaves(checkpoints)[0].shape[0]
    targets = jnp.stack(
        [
            relabel_targets(
                predict_fn, jax.tree.map(lambda x, t=t: x[t], checkpoints), inputs, divergence
            )
            for t in range(n)
        ]
    )
    data = {"inputs": inputs, "targets": targets[0]}
    return relabelled_loss(predict_fn, divergence), data, targets


_REFUSED = STACKED_RUN_REFUSES
estimate_llc_trajectory.__signature__ = signature(estimate_llc_trajectory, refuse=_REFUSED)
