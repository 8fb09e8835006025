"""Planning a run: the data checks, ``L_n(w*)`` and the compiled run's configuration.

:func:`make_plan` turns validated :class:`llc.settings.Settings` and the user's
``(rng_key, loss_fn, params, data)`` into a :class:`Plan`: everything
:func:`llc.execute.execute` needs to run the chains and :func:`llc.report.assemble`
needs to report them. Every check runs eagerly, before anything is compiled.

The burn-in is one of three explicit variants: :class:`FixedBurnin` (a number of steps),
:class:`AutoBurnin` (``num_burnin_steps="auto"``: window by window until the chains stop
rising) and :class:`FollowBurnin` (``step_size="auto"`` with a fixed burn-in: the step
size follows the chains). With ``step_size="auto"`` a :class:`Spread` phase may come
first: the chains spread at a larger, stable step before the burn-in proper.
"""

import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llc import _chunks, _progress, loop, samplers
from llc import _validation as check
from llc import mesh as llc_mesh
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.settings import AUTO_BURNIN_WINDOWS, Settings, default_nbeta

__all__ = ["AutoBurnin", "FixedBurnin", "FollowBurnin", "Plan", "Spread", "make_plan"]

DEFAULT_EVAL_ROWS = 8192
DEFAULT_ACCEPTANCE_CHECKS = 50
BLOWUP_PER_PARAM = 1e4  # nbeta * (L - L*) above this many times d counts as diverged


class FixedBurnin(NamedTuple):
    """A fixed burn-in of ``steps`` steps per chain."""

    steps: int


class AutoBurnin(NamedTuple):
    """``num_burnin_steps="auto"``: windows of ``window`` steps, at most ``cap`` in all."""

    window: int
    cap: int


class FollowBurnin(NamedTuple):
    """``step_size="auto"``: ``steps`` burn-in steps whose step size follows the chains.

    After each segment the step shrinks where the chains are if its predicted step-size
    bias there exceeds ``max_bias`` (to ``SHRINK_MARGIN`` of it, see :func:`llc.burnin.follow`).
    """

    steps: int
    max_bias: float


class Spread(NamedTuple):
    """``step_size="auto"``: the chains first spread at ``step_size``, larger than the draws'.

    From w* the chains must spread along the flat directions, where only the localizer
    pulls them: that takes about ``1 / (step * localization)`` steps (see
    :func:`llc.spread.spread`). ``step_size`` is the largest step of the calibration grid
    whose chains stayed stable (:func:`llc.spread.spread_plan`); the phase runs at most
    ``cap`` steps at it, then ``settle`` at the calibrated step. The step is then
    re-judged where the chains are, and shrunk if its predicted step-size bias exceeds
    ``max_bias``.
    """

    step_size: float
    cap: int
    max_bias: float
    settle: int


class Plan(NamedTuple):
    """A validated call: everything needed to run and report it."""

    rng_key: PRNGKey
    loss_fn: LossFn
    params: ArrayTree
    data: Batch
    num_data: int
    num_params: int
    step_size: float | str | None
    localization: float
    nbeta: float
    sampler: str
    options: dict
    config: loop.RunConfig
    eval_rows: int
    init_loss: float
    direction: ArrayTree | None
    held: tuple | None
    show_progress: bool
    burnin: FixedBurnin | AutoBurnin | FollowBurnin
    chunk_draws: int | None = None
    mask: ArrayTree | None = None  # 0/1 leaves shaped like params: the weights that move
    observe: tuple | None = None  # (means, samples): name -> data set, for loop.run_chains
    observed_init: dict | None = None  # name -> the observable at w* (host, float64)
    per_sample_path: str | None = None  # stream per-sample observables to files here
    spread: Spread | None = None  # step_size="auto": spread at a larger step first

    @property
    def capabilities(self) -> samplers.Capabilities:
        """What the plan's sampler can do."""
        return samplers.CAPABILITIES[self.sampler]

    @property
    def mesh_shape(self) -> dict:
        """``{axis: size}`` of the mesh the run is laid over (``{}``: one device)."""
        return llc_mesh.mesh_shape(self.config.mesh)

    @property
    def num_devices(self) -> int:
        """How many devices the chains are sharded over (1: no sharding)."""
        mesh = self.config.mesh
        return 1 if mesh is None else int(mesh.devices.size)

    @property
    def moving_dimension(self) -> int:
        """The weights the chains move: those in the mask, less the projected-out directions."""
        projected = 0 if self.held is None else int(np.sum(np.isinf(np.asarray(self.held[1]))))
        return self.num_params - projected

    def head(self) -> Batch:
        """The first ``eval_rows`` samples: the batch of the curvature probes."""
        rows = min(self.eval_rows, self.num_data)
        return jax.tree.map(lambda x: x[:rows], self.data)


def make_plan(
    rng_key: PRNGKey, loss_fn: LossFn, params: ArrayTree, data: Batch, settings: Settings
) -> Plan:
    """Check the data against ``settings``, evaluate ``L_n(w*)`` and configure the run.

    ``num_burnin_steps="auto"`` becomes an :class:`AutoBurnin` whose first window is the
    span of the draws; :func:`llc.estimate_llc` turns a fixed burn-in into a
    :class:`FollowBurnin` when it calibrates the step size.
    """
    s = settings
    rng_key = check.check_key(rng_key)
    check.check_callable(loss_fn)
    num_params = check.check_params(params)
    mask = None
    if s.weight_mask is not None:
        mask, num_params = check_mask(s.weight_mask, params)
    n = check.check_data(data)
    batch_size = check.check_batch_size(s.batch_size, n)
    nbeta = s.nbeta
    if nbeta is None:
        if n < 2:
            msg = "nbeta=None means n / log n, which needs n >= 2 samples; pass nbeta."
            raise ValueError(msg)
        nbeta = default_nbeta(n)
    window = s.num_draws * s.num_steps_bw_draws
    if s.auto_burnin:
        burnin = AutoBurnin(window, s.max_burnin_steps or AUTO_BURNIN_WINDOWS * window)
        num_burnin_steps = window  # the first window; more follow in llc.burnin
    else:
        burnin = FixedBurnin(s.num_burnin_steps)
        num_burnin_steps = s.num_burnin_steps
    eval_rows = s.eval_batch_size or max(batch_size or 0, DEFAULT_EVAL_ROWS)
    can = samplers.CAPABILITIES[s.sampler]
    config = loop.RunConfig(
        num_chains=s.num_chains,
        num_burnin_steps=num_burnin_steps,
        num_draws=s.num_draws,
        num_steps_bw_draws=s.num_steps_bw_draws,
        num_data=n,
        batch_size=batch_size,
        control_variate=s.control_variate,
        progress_rate=0,
        full_loss_every_draws=_full_loss_every_draws(s, batch_size),
        eval_chunk=min(eval_rows, n),
        track_direction=s.escape_direction is not None,
        sampler=s.sampler if can.step_size else "sgld",
        acceptance_every_draws=_acceptance_every_draws(s, can),
        blowup_per_param=BLOWUP_PER_PARAM,
        mesh=s.mesh if s.mesh is not None else llc_mesh.chain_mesh(s.num_chains, s.num_devices),
        param_specs=llc_mesh.check_param_specs(s.param_specs, params, s.mesh),
        record_scale=can.step_bias,
        per_sample_loss_fn=s.per_sample_loss_fn,
    )
    if s.escape_direction is not None:
        check.check_like_params("escape_direction", s.escape_direction, params)
    held = None if s.held_directions is None else _check_held(s.held_directions, params)
    if held is not None and np.isinf(held[1]).any():
        config = config._replace(project_held=True)  # static: no projection otherwise
        _check_projected_in_mask(held, mask)
    probe = jax.tree.map(lambda x: x[: batch_size or n], data)
    check.check_loss_shape(loss_fn, params, probe)

    params = jax.tree.map(jnp.asarray, params)
    data = jax.tree.map(jnp.asarray, data)
    init_loss = _chunks.full_data_loss(loss_fn, params, data, eval_rows)
    check.check_finite_loss(init_loss)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    direction = None
    if s.escape_direction is not None:
        direction = jax.tree.map(lambda v, p: jnp.asarray(v, p.dtype), s.escape_direction, params)
    if held is not None:
        held = (held[0], jnp.asarray(held[1], dtype))
    observe, observed_init, chunk_draws = _observables(s, loss_fn, params, config)
    return Plan(
        rng_key=rng_key,
        loss_fn=loss_fn,
        params=params,
        data=data,
        num_data=n,
        num_params=num_params,
        step_size=s.step_size,
        localization=s.localization,
        nbeta=nbeta,
        sampler=s.sampler,
        options=s.sampler_options,
        config=config,
        eval_rows=eval_rows,
        init_loss=init_loss,
        direction=direction,
        held=held,
        show_progress=_progress.enabled(s.progress_bar),
        burnin=burnin,
        chunk_draws=chunk_draws,
        mask=mask,
        observe=observe,
        observed_init=observed_init,
        per_sample_path=s.per_sample_path,
    )


def _observables(s: Settings, loss_fn, params, config) -> tuple:
    """Check the observables' data sets and evaluate each observable at w*.

    Returns ``(observe, init, chunk_draws)``: with ``per_sample_path`` the run goes in
    chunks whose per-sample losses fit ``max_per_sample_bytes`` and are streamed to files.
    """
    means, samples = dict(s.observables or {}), dict(s.per_sample_observables or {})
    if not means and not samples:
        return None, None, s.chunk_draws
    init = {}
    for name, q in means.items():
        check.check_data(q)
        q = means[name] = jax.tree.map(jnp.asarray, q)
        init[name] = _chunks.full_data_loss(loss_fn, params, q, config.eval_chunk)
    per_row = config.per_sample_loss_fn or loop.per_row_loss(loss_fn)
    total = 0
    for name, q in samples.items():
        check.check_data(q)
        q = samples[name] = jax.tree.map(jnp.asarray, q)
        shape = jax.eval_shape(per_row, params, q)
        total += config.num_chains * config.num_draws * int(np.prod(shape.shape)) * 4
        init[name] = np.asarray(per_row(params, q), np.float64)
    chunk_draws = s.chunk_draws
    if s.per_sample_path is not None:
        path = Path(s.per_sample_path)
        if not path.is_dir():
            msg = f"per_sample_path must be an existing folder; got {str(path)!r}."
            raise ValueError(msg)
        per_draw = max(1, total // config.num_draws)
        fits = max(1, s.max_per_sample_bytes // per_draw)
        chunk_draws = min(chunk_draws or config.num_draws, fits)
    elif total > s.max_per_sample_bytes:
        msg = (
            f"per_sample_observables would hold {total / 2**20:.1f} MiB of per-sample losses "
            f"(chains x draws x samples x 4 bytes), above max_per_sample_bytes = "
            f"{s.max_per_sample_bytes / 2**20:.1f} MiB; stream them to files with "
            "per_sample_path, raise the limit, or record fewer samples or draws "
            "(num_steps_bw_draws thins them)."
        )
        raise ValueError(msg)
    return (means, samples), init, chunk_draws


def _full_loss_every_draws(s: Settings, batch_size: int | None) -> int:
    """Draws between full-batch checks (0: none; full batch needs none)."""
    if batch_size is None:
        return 0  # the recorded losses are already full-data
    if s.full_loss_every is None:
        return max(1, s.num_draws // 10)
    every = s.full_loss_every
    return max(1, round(every / s.num_steps_bw_draws)) if every else 0


def _acceptance_every_draws(s: Settings, can: samplers.Capabilities) -> int:
    """Draws between MALA acceptance checks (0: none)."""
    if not can.mala_check:
        return 0
    checks = DEFAULT_ACCEPTANCE_CHECKS if s.acceptance_checks is None else s.acceptance_checks
    return max(1, s.num_draws // checks) if checks else 0


def check_mask(weight_mask, params) -> tuple[ArrayTree, int]:
    """A weight mask as 0/1 arrays of the leaves' shapes and dtypes, and its count.

    ``weight_mask`` has the pytree structure of ``params``; each leaf is a bool or a
    boolean array broadcastable to the parameter leaf.

    Examples:
        >>> mask, count = check_mask({"w": True, "b": np.array([True, False])},
        ...                          {"w": np.zeros((2, 3)), "b": np.zeros(2)})
        >>> count, mask["b"].tolist()
        (7, [1.0, 0.0])
    """
    params_def = jax.tree.structure(params)
    try:
        leaves = params_def.flatten_up_to(weight_mask)
    except (ValueError, TypeError):
        msg = (
            "weight_mask must have the pytree structure of params, with a bool or a boolean "
            f"array per leaf (build one with llc.masks); params: {params_def}."
        )
        raise ValueError(msg) from None
    out, count = [], 0
    for (path, p), m in zip(jax.tree_util.tree_flatten_with_path(params)[0], leaves, strict=True):
        where = "weight_mask" + jax.tree_util.keystr(path)
        m = np.asarray(m)
        if m.dtype != np.bool_:
            msg = f"{where} has dtype {m.dtype}; every leaf of weight_mask must be boolean."
            raise TypeError(msg)
        try:
            m = np.broadcast_to(m, np.shape(p))
        except ValueError:
            msg = f"{where} of shape {m.shape} does not broadcast to the parameter's {np.shape(p)}."
            raise ValueError(msg) from None
        count += int(m.sum())
        out.append(jnp.asarray(m, jnp.result_type(p)))
    if count == 0:
        msg = "weight_mask selects no weight; at least one must be sampled."
        raise ValueError(msg)
    return jax.tree.unflatten(params_def, out), count


def _check_projected_in_mask(held, mask) -> None:
    """A projected-out direction (strength inf) must lie inside ``weight_mask``.

    Its projection would otherwise move frozen weights, and the chains would not sample
    the complement of the directions within the weights that move.
    """
    if mask is None:
        return
    directions, strengths = held
    for i in np.flatnonzero(np.isinf(strengths)):
        norm = math.sqrt(
            sum(
                float(np.sum(np.square(np.asarray(v[i], np.float64) * (1.0 - np.asarray(m)))))
                for v, m in zip(jax.tree.leaves(directions), jax.tree.leaves(mask), strict=True)
            )
        )
        if norm > 1e-3:
            msg = (
                f"held_directions direction {i} (strength inf) has norm {norm:.3g} on weights "
                "outside weight_mask; a projected-out direction must be zero on the frozen "
                "weights (project it onto the mask and renormalise)."
            )
            raise ValueError(msg)


def _check_held(held_directions, params):
    """Validate ``(directions, strengths)`` and stack the directions on a leading axis."""
    try:
        directions, strengths = held_directions
    except (TypeError, ValueError):
        msg = "held_directions must be a pair (directions, strengths)."
        raise ValueError(msg) from None
    directions = list(directions)
    strengths = np.asarray(strengths, np.float64).reshape(-1)
    if not directions or len(directions) != strengths.size:
        msg = (
            f"held_directions needs one strength per direction; got {len(directions)} "
            f"directions and {strengths.size} strengths."
        )
        raise ValueError(msg)
    if np.any(np.isnan(strengths)) or np.any(strengths < 0):
        msg = (
            "held_directions strengths must be >= 0 (float('inf'): project the direction "
            f"out of the sampling); got {strengths.tolist()}."
        )
        raise ValueError(msg)
    for i, v in enumerate(directions):
        check.check_like_params(f"held_directions direction {i}", v, params)
    stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *directions)
    flat = np.concatenate(
        [np.asarray(x, np.float64).reshape(len(directions), -1) for x in jax.tree.leaves(stacked)],
        axis=1,
    )
    if not np.allclose(flat @ flat.T, np.eye(len(directions)), atol=1e-3):
        msg = "held_directions directions must be orthonormal (e.g. Hessian eigenvectors)."
        raise ValueError(msg)
    return stacked, strengths
