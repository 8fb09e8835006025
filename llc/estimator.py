"""The LLC estimator: localized, tempered SGLD at w*, many chains in one compiled run.

lambda_hat = nbeta * (E_w[L_n(w)] - L_n(w*)),   w ~ exp(-nbeta L_n(w) - gamma/2 |w - w*|^2)

:func:`estimate_llc` plans the run (:mod:`llc.plan`), calibrates the step size when
asked (:mod:`llc.calibration`), runs the chains (:mod:`llc.execute`, :mod:`llc.burnin`)
and reports them (:mod:`llc.report`).
"""

import math
import time

from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.burnin import FOLLOW_SEGMENTS, SHRINK_MARGIN
from llc.calibration import calibrate_plan
from llc.execute import execute
from llc.plan import FixedBurnin, FollowBurnin, make_plan
from llc.report import assemble
from llc.result import LLCResult
from llc.settings import Settings, signature
from llc.spread import SPREAD_MAX_FACTOR, SPREAD_SETTLE, spread_for
from llc.step_bias import MAX_STEP_BIAS, end_step_bias

__all__ = ["estimate_llc"]


def estimate_llc(
    rng_key: PRNGKey, loss_fn: LossFn, params: ArrayTree, data: Batch, **settings
) -> LLCResult:
    """Estimate the local learning coefficient of ``loss_fn`` at ``params``.

    Runs ``num_chains`` chains of localized SGLD (Lau convention),

        w <- w - step_size/2 * (nbeta * grad L_B(w) + localization * (w - w*))
               + sqrt(step_size) * N(0, I),

    all started at w* = ``params``, as one compiled program, and returns
    ``nbeta * (E[L_n(w)] - L_n(w*))`` averaged over the draws after burn-in.

    Computation happens in the parameters' dtype (float32 unless ``params`` are float64
    with ``jax_enable_x64`` on, which roughly doubles the run time); the estimate itself
    is formed in float64 on the host from loss *differences*, so a large nbeta does not
    amplify float32 rounding.

    Args:
        rng_key: a JAX PRNG key; the same key gives the same result.
        loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss over a batch.
        params: w*, any pytree of floating-point arrays.
        data: a pytree of arrays sharing a leading axis n, e.g. ``(x, y)``.
        **settings: the sampling settings below (:class:`llc.settings.Settings`); an
            unknown keyword is a ``TypeError`` that names it.

    Keyword Args:
        step_size: epsilon > 0 (noise variance per step, Lau convention; blackjax's
            step size is half of it). Stable only if
            ``step_size * (nbeta * mu_max + localization) < 4``. ``"auto"`` (the default) runs
            :func:`llc.calibrate` first (a short vectorised grid of step sizes around
            the curvature scale ``1 / (nbeta * mu_max + localization)``) and uses the
            step size it recommends; the calibration is kept in ``result.calibration``.
            With SGLD the chains then first spread along the soft and flat directions
            at a larger step (the largest stable one of the grid, at most 16 times the
            chosen one) until their loss stops rising and they stop moving out (the
            virial ratio, as for ``not_equilibrated``; judged from one localizer
            relaxation time ``1 / (step * localization)`` on), for at most three and 8
            spans of the draws,
            then at least 500 steps at the chosen step (:func:`llc.spread.spread`;
            ``result.spread_steps``); the step is re-judged where they are.
            With a fixed ``num_burnin_steps`` the burn-in then follows the chains: it
            runs in four segments, and after each the rule's predicted bias is
            re-evaluated where the chains are and, where it exceeds the rule's cap,
            the step shrunk to 0.8 of the cap (``result.step_size`` is the final one).
            The draws start once the step is inside the cap and the chains are steady
            (the last segment's mean not moved from the one before, up or down, and
            R-hat at most 1.05);
            until then, and for at most four segments more, the burn-in goes on
            (``result.num_burnin_steps`` is the burn-in run).
            None (or ``"auto"``) for ``sampler="nuts"``, which adapts its own.
        localization: gamma >= 0, strength of the Gaussian localizer at w*.
        nbeta: n times the inverse temperature; default ``n / log n``.
        sampler: ``"sgld"`` (default), ``"rmsprop_sgld"``, ``"sghmc"``, ``"sgnht"`` (see
            :mod:`llc.samplers`), or ``"nuts"``: full-batch NUTS with window adaptation
            (blackjax), exact up to Monte Carlo error, the gold standard for small models
            (``num_burnin_steps`` are its adaptation steps).
        sampler_options: the sampler's own hyperparameters, e.g. ``{"alpha": 0.99,
            "eps": 1e-8}`` for ``"rmsprop_sgld"``, ``{"friction": 0.1}`` for ``"sghmc"``,
            ``{"diffusion": 0.1}`` for ``"sgnht"``.
        num_chains: independent chains (own noise and own minibatch sequence each). With
            one chain the spread, and so ``llc_std`` and ``llc_stderr``, is undefined
            (NaN).
        num_draws: draws per chain used for the estimate.
        num_burnin_steps: SGLD steps per chain before the first draw, discarded; or
            ``"auto"``: burn in until the chains stop rising. The burn-in then runs in
            windows of ``W = num_draws * num_steps_bw_draws`` steps; it passes at the
            first ``T = 2W, 4W, 8W, ...`` where the mean of ``nbeta (L - L*)`` over
            ``[T/2, T)`` provably no longer exceeds that over ``[T/4, T/2)`` (the rise
            plus two standard errors is below 2% of it or two standard errors of the
            draws' precision) and the chains agree there (R-hat <= 1.05), and stops at
            ``T + W`` if that window does not rise from ``[T/2, T)`` (the draws'
            ``not_stationary`` test; else the doubling goes on), or at
            ``max_burnin_steps``. Windows that grow with T keep a slow, diffusive
            approach (along flat directions) from passing for stationarity, R-hat a
            plateau that the chains leave at different times, and the confirming
            window one that ends within W steps. No trace test can see a plateau that
            every chain is still on for longer.
            ``result.num_burnin_steps`` says how many steps were run; the chains are
            those of a fixed burn-in of that length. Needs ``num_chains >= 2``; not for
            ``sampler="nuts"``.
        num_steps_bw_draws: SGLD steps per draw (thinning).
        batch_size: minibatch size in 1..n, or None for full-batch SGLD. Each chain
            draws its own batch of uniform random indices at every step, independent
            of its position (which keeps the recorded losses unbiased; epoch-wise
            shuffling does not, see ``llc._batching``).
        control_variate: record ``L_B(w_t) - L_B(w*) + L_n(w*)`` (same minibatch at
            w*), which has the same mean as ``L_n(w_t)`` and a far smaller variance. It
            costs one forward pass per step; only used with minibatches.
        progress_bar: show a progress bar; default: only in an interactive terminal
            outside CI.
        eval_batch_size: rows per evaluation of the full-data loss ``L_n(w*)``
            (default ``max(batch_size, 8192)``).
        full_loss_every: with minibatches, evaluate every chain's full-data loss every
            this many steps (rounded to whole draws) to confirm lower-loss escapes;
            default: 10 checks spread over the draws; 0 turns them off. Each check costs
            about ``n / batch_size`` forward passes per chain.
        escape_direction: a unit direction shaped like ``params`` (e.g. the most
            negative Hessian eigenvector from :func:`llc.diagnose`); each draw records
            the projection of ``w - w*`` on it.
        held_directions: ``(directions, strengths)`` for an anisotropic localizer:
            ``directions`` a list of k orthonormal pytrees shaped like ``params`` (e.g.
            the negative-curvature eigenvectors of :func:`llc.diagnose`),
            ``strengths`` k extra localizations ``c_i >= 0`` added along them only. With
            ``c_i > nbeta |mu_i| - localization`` a saddle's negative directions are
            held, and the estimate is the LLC of the remaining directions (each held
            direction contributes ``0.5 nbeta mu_i / (nbeta mu_i + gamma + c_i)``). A
            strength ``float("inf")`` projects that direction out of the sampling: the
            chains move in its orthogonal complement and it contributes 0 (exact for
            SGLD; other samplers are projected after each step).
        acceptance_checks: how many draws per chain also compute the MALA acceptance
            of their step (two extra gradient evaluations each; default 50, 0 turns
            them off). Langevin samplers only.
        num_devices: shard the chains over this many local devices (a mesh with one
            "chains" axis; the data is replicated; for more, see ``mesh``). Default: as
            many devices as are present and divide ``num_chains`` (1 on a single device:
            no sharding). The chains do not interact, so the result equals the
            single-device one for the same key.
        chunk_draws: run the draws this many at a time, each chunk one compiled call
            driven from Python (the chains are the same as in one call): for very long
            runs, it stops early once every chain has diverged, and Ctrl-C after the
            first chunk returns the draws done so far (flag ``interrupted``). Default:
            the whole run is one call.
        max_burnin_steps: the most burn-in steps ``num_burnin_steps="auto"`` may run
            (default ``128 W``); ignored otherwise.
        weight_mask: sample only some weights (the weight-refined LLC): a pytree with the
            structure of ``params`` whose leaves are bools or boolean arrays
            broadcastable to the leaf (see :mod:`llc.masks`). Only the weights inside it
            move (gradient step, localization and noise); the rest stay at w*, and the
            estimate is the LLC of the loss restricted to them. ``result.num_params`` is
            the number sampled, and the flags that use the dimension use it. Many masks
            at once: :func:`llc.estimate_refined_llc`.
        observables: ``{name: data_q}``: at every draw, record each chain's mean loss on
            the data set ``q`` (evaluated in chunks of ``eval_batch_size`` rows; about
            ``|q| / batch_size`` forward passes per chain per draw).
            ``result.observables[name]`` holds the trace, ``L_q(w*)`` and
            ``nbeta (E[L_q] - L_q(w*))``. (The data-refined LLC in the peer's sense is
            sampling with q itself: pass ``data=q``.)
        per_sample_observables: ``{name: data_q}``: at every draw, every sample's loss
            on ``q`` (per token for sequence models, through ``per_sample_loss_fn``):
            ``chains x draws x |q|`` float32 values held in memory, refused above
            ``max_per_sample_bytes`` (1 GiB). :func:`llc.loss_kernel`, :func:`llc.bif`
            and :func:`llc.susceptibilities` read them.
        per_sample_loss_fn: ``(params, batch) -> losses`` with one entry (or one array,
            e.g. per token) per row; default: ``loss_fn`` on single-row batches.
        max_per_sample_bytes: the memory the per-sample observables may take (in all,
            or per chunk with ``per_sample_path``).
        per_sample_path: a folder: stream the per-sample observables to
            ``<folder>/<name>.npy`` as the run goes (in chunks of draws that fit
            ``max_per_sample_bytes``) instead of holding them in memory; the result holds
            them as read-only memory maps of those files.
        mesh: a ``jax.sharding.Mesh`` whose axes are named from ``"chains"``, ``"data"``
            and ``"model"`` (any subset, any sizes; see :mod:`llc.mesh`): the chains split
            over ``"chains"``, each minibatch over ``"data"`` (data-parallel gradients),
            the parameters and the chains' states over ``"model"`` by ``param_specs``.
            The numbers are those of one device up to the order of float32 reductions.
            ``num_devices`` is the short form of a chains-only mesh; pass one or the other.
        param_specs: a pytree of ``jax.sharding.PartitionSpec`` matching ``params``
            that splits leaves over ``"model"`` (default: replicated;
            :func:`llc.mesh.default_param_specs` shards every large matrix).

    Returns:
        An :class:`LLCResult`.

    Raises:
        TypeError, ValueError: on bad input, before anything is compiled.

    Examples:
        A regular model: linear regression with d = 3 has lambda = d/2 = 1.5.

        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (2000, 3))
        >>> y = x @ jnp.array([1.0, -2.0, 0.5]) + jax.random.normal(jax.random.key(1), (2000,))
        >>> w_star = jnp.linalg.lstsq(x, y)[0]
        >>> loss_fn = lambda w, b: 0.5 * jnp.mean((b[0] @ w - b[1]) ** 2)
        >>> result = estimate_llc(jax.random.key(2), loss_fn, w_star, (x, y),
        ...                       step_size=1e-4, batch_size=200, num_draws=2000)
        >>> abs(result.llc_mean - 1.5) < 0.2
        True
    """
    t0 = time.perf_counter()
    plan = make_plan(rng_key, loss_fn, params, data, Settings.build("estimate_llc", **settings))
    calibration, max_bias = None, MAX_STEP_BIAS
    if plan.step_size == "auto":
        calibration = calibrate_plan(plan, short=True)
        max_bias = calibration.max_bias
        plan = plan._replace(step_size=calibration.recommended["step_size"])
        if isinstance(plan.burnin, FixedBurnin):  # the burn-in follows the chains
            plan = plan._replace(burnin=FollowBurnin(plan.burnin.steps, max_bias))
        plan = plan._replace(spread=spread_for(plan, calibration))
    out = execute(plan)
    if not isinstance(plan.burnin, FixedBurnin):  # the burn-in that was run
        config = plan.config._replace(num_burnin_steps=out.burnin_delta.shape[1])
        plan = plan._replace(config=config)
    if out.step_sizes and not math.isclose(out.step_sizes[-1], plan.step_size, rel_tol=1e-6):
        plan = plan._replace(step_size=float(out.step_sizes[-1]))  # shrunk where the chains went
    if calibration is not None:
        calibration = calibration._replace(rule=calibration.rule + _burnin_story(out, max_bias))
    step_bias = end_step_bias(plan, out)  # None for NUTS, which records no steps
    return assemble(plan, out, t0, calibration=calibration, step_bias=step_bias, max_bias=max_bias)


def _burnin_story(out, max_bias: float) -> str:
    """What the burn-in of ``step_size="auto"`` did to the step, for the calibration's rule."""
    story = ""
    if out.spread:
        step, steps = out.spread
        story += (
            f" The chains first spread at {step:.3g}, the largest stable step of the grid up "
            f"to {SPREAD_MAX_FACTOR:g} times the chosen one, for {steps} steps (ending with at "
            f"least {SPREAD_SETTLE} at the chosen step)."
        )
    if len(set(out.step_sizes)) > 1 or len(out.step_sizes) > FOLLOW_SEGMENTS:
        story += (
            " The burn-in then followed the chains: step sizes "
            + ", ".join(f"{e:.3g}" for e in out.step_sizes)
            + f" in its {len(out.step_sizes)} segments (shrunk where the chains were, when "
            f"their predicted bias exceeded {max_bias:.1%}, to {SHRINK_MARGIN:g} of it)."
        )
    elif out.spread and out.step_sizes:
        story += f" The burn-in then ran at {out.step_sizes[-1]:.3g}."
    return story


estimate_llc.__signature__ = signature(estimate_llc)
