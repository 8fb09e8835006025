"""The LLC estimator: localized, tempered SGLD at w*, many chains in one compiled run.

lambda_hat = nbeta * (E_w[L_n(w)] - L_n(w*)),   w ~ exp(-nbeta L_n(w) - gamma/2 |w - w*|^2)
"""

import math
import time
import warnings
from typing import NamedTuple

import blackjax.diagnostics as blackjax_diagnostics
import jax
import numpy as np

from llc import _loop, _progress, nuts, samplers
from llc import _validation as check
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.hessian import largest_eigenvalue_magnitude

__all__ = ["LLCResult", "estimate_llc", "llc_from_losses", "default_nbeta"]

_DEFAULT_EVAL_ROWS = 8192
_RHAT_LIMIT = 1.05
_DEFAULT_ACCEPTANCE_CHECKS = 50
_BLOWUP_PER_PARAM = 1e4
_RISE_T = 3.0  # not_stationary: the rise must exceed this many standard errors ...
_RISE_REL = 0.02  # ... and this fraction of the estimate
_AUTO_BURNIN_WINDOWS = 128  # num_burnin_steps="auto": default cap, in windows of the draws
_FOLLOW_SEGMENTS = 4  # step_size="auto": burn-in segments after which the step is re-judged
_FOLLOW_MAX_EXTRA = 4  # ... and at most this many more segments until the chains are steady
MAX_STEP_BIAS = 0.025  # the calibration rule's default max_bias, and step_size_bias's


class LLCResult(NamedTuple):
    """What :func:`estimate_llc` returns. Arrays are host (numpy) arrays.

    Attributes:
        llc_mean: mean of the per-chain estimates over the chains that did not diverge.
        llc_std: their standard deviation across chains (ddof=1; NaN with one chain).
        llc_per_chain: ``(chains,)`` estimates, NaN for a diverged chain.
        loss_trace: ``(chains, draws)`` float64 loss per draw after burn-in. With the
            control variate (the default) each entry is
            ``L_B(w_t) - L_B(w*) + L_n(w*)``, otherwise ``L_B(w_t)``.
        init_loss: the full-data ``L_n(w*)``.
        nbeta: the nbeta used.
        step_size: epsilon (Lau convention) used.
        localization: gamma used.
        num_chains: chains run.
        num_draws: draws per chain kept for the estimate.
        num_burnin_steps: steps per chain discarded before the draws.
        num_steps_bw_draws: SGLD steps between recorded draws.
        batch_size: minibatch size, or None for full batch.
        control_variate: whether the same-minibatch control variate was used.
        num_data: n, the number of samples.
        num_params: d, the number of parameters.
        burnin_loss_trace: ``(chains, burn-in steps)`` losses during burn-in.
        distance_trace: ``(chains, draws)`` distance ``||w_t - w*||`` per draw.
        diverged: ``(chains,)`` bool, True where the loss became NaN or inf, or blew up:
            ``nbeta * (L - L_n(w*)) > 1e4 * d`` (an LLC contribution 20,000 times the
            largest a local minimum allows; no chain that samples the local posterior
            gets there).
        diverged_at_step: ``(chains,)`` first such step, -1 if none.
        full_loss_trace: ``(chains, checks)`` full-data loss ``L_n(w_t)`` at the periodic
            full-batch checks (empty without checks).
        full_loss_steps: ``(checks,)`` the step of each check.
        projection_trace: ``(chains, draws)`` projection of ``w_t - w*`` on
            ``escape_direction``, or None.
        escaped: ``(chains,)`` True where a chain reached loss below ``L_n(w*)`` by more
            than one unit of temperature (``nbeta * (L - L*) < -1``): confirmed by a
            full-batch check, or, without checks, in the mean of the last half of the
            minibatch trace.
        escaped_at_step: ``(chains,)`` the step of the first such check (or draw), -1.
        min_loss_drop: ``(chains,)`` ``nbeta * min(L - L*)`` over the checks (or the
            minibatch trace): negative means the chain found lower loss.
        share_below_init: ``(chains,)`` share of full-batch checks (or minibatch draws)
            below ``L_n(w*)``: exactly 0 at a local minimum with full-batch checks.
        num_held_directions: directions held by the anisotropic localizer (0: none).
        sampler: the sampler's name (see :mod:`llc.samplers`; ``"nuts"`` for the exact
            full-batch reference).
        sampler_options: the sampler's own hyperparameters, defaults filled in.
        acceptance: ``(chains,)`` mean acceptance probability per chain: for the
            Langevin samplers the MALA acceptance of the SGLD steps at the checked draws
            (about 0.9 is healthy; near 0 the step size is far too large), for NUTS its
            mean acceptance statistic; NaN for the momentum samplers or without checks.
        rhat: rank-normalised split R-hat of the loss traces across the chains that did
            not diverge (blackjax; NaN with fewer than 2 chains or 4 draws).
        ess: bulk effective sample size of those traces, all chains together.
        flags: short names of what makes the estimate suspect (empty if nothing).
        evidence: for each flag, the numbers behind it and the remedy.
        wall_time: seconds for the whole call, compilation included.
        calibration: with ``step_size="auto"``, the :class:`llc.CalibrationResult` that
            chose the step size (its ``rule`` says how the burn-in then followed the
            chains); otherwise None.
        predicted_step_bias: ``(chains,)`` the calibration rule's first-order step-size
            bias (:func:`llc.calibration.predicted_bias_at`) at each chain's final
            position with its own steps, relative to ``llc_mean`` (NaN for a diverged
            chain); flagged ``step_size_bias`` when the mean exceeds 2.5% (or
            ``step_size="auto"``'s ``max_bias``). None for NUTS.
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    step_size: float
    localization: float
    num_chains: int
    num_draws: int
    num_burnin_steps: int
    num_steps_bw_draws: int
    batch_size: int | None
    control_variate: bool
    num_data: int
    num_params: int
    burnin_loss_trace: np.ndarray
    distance_trace: np.ndarray
    diverged: np.ndarray
    diverged_at_step: np.ndarray
    full_loss_trace: np.ndarray
    full_loss_steps: np.ndarray
    projection_trace: np.ndarray | None
    escaped: np.ndarray
    escaped_at_step: np.ndarray
    min_loss_drop: np.ndarray
    share_below_init: np.ndarray
    num_held_directions: int
    sampler: str
    sampler_options: dict
    acceptance: np.ndarray
    rhat: float
    ess: float
    flags: tuple[str, ...]
    evidence: dict
    wall_time: float
    calibration: object = None
    predicted_step_bias: np.ndarray | None = None

    @property
    def llc_stderr(self) -> float:
        """Standard error of ``llc_mean`` from the spread across independent chains.

        NaN when fewer than two chains finished without diverging.
        """
        return _standard_error(self.llc_std, int(np.sum(~self.diverged)))

    @property
    def llc_step_corrected(self) -> float | None:
        """``llc_mean`` less its predicted first-order step-size bias.

        :func:`less_step_bias` of ``llc_mean`` and ``predicted_step_bias``: the estimate
        with the discretisation and minibatch-noise bias of the quadratic model
        (:func:`llc.calibration.predicted_bias_at`, evaluated where each chain ended)
        removed; the second-order remainder is about the square of that bias. None
        when no bias was predicted (NUTS, or every chain diverged).

        Where the step bias dominates the error it closes most of it: at the four exact
        ~100K deep-linear-network targets run with ``step_size="auto"`` (README, "the
        step-size bias"), -2.9% became +0.0% (seed 7), and on held-out seeds -2.9%,
        -2.8% and -2.4% became -0.1%, -0.2% and +0.4%.
        Where the chains are still equilibrating in flat directions (an underestimate
        the upward step bias partly hides) it can widen the error: on held-out ~1K and
        ~10K networks the median |error| fell (1.8% -> 1.6%, 1.7% -> 1.1%) but the
        largest rose (3.3% -> 4.6%, 3.7% -> 4.5%). Report it next to ``llc_mean``, not
        instead of it, and trust neither when the run is flagged ``not_converged`` or
        ``not_stationary``.

        Examples:
            A quadratic, d = 4: the exact LLC of the localized posterior is
            ``2 nbeta / (nbeta + 1)``, and a large step biases the estimate upward.

            >>> import jax, jax.numpy as jnp
            >>> loss_fn = lambda w, b: 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(b)
            >>> result = estimate_llc(jax.random.key(0), loss_fn, jnp.zeros(4),
            ...                       jnp.zeros((1000, 1)), step_size=1.5e-3,
            ...                       batch_size=None, num_chains=16, num_draws=8000)
            >>> exact = 2 * result.nbeta / (result.nbeta + 1)
            >>> result.llc_mean / exact - 1 > 0.03  # the step's bias, about 5.6%
            True
            >>> abs(result.llc_step_corrected / exact - 1) < 0.02
            True
        """
        if self.predicted_step_bias is None:
            return None
        return less_step_bias(self.llc_mean, self.predicted_step_bias)

    def summary(self) -> str:
        """A short human-readable report."""
        finite = self.acceptance[np.isfinite(self.acceptance)]
        accept = float(np.mean(finite)) if finite.size else math.nan
        lines = [
            f"LLC = {self.llc_mean:.4g} +/- {self.llc_std:.3g} (std across "
            f"{self.num_chains - int(self.diverged.sum())} chains; stderr {self.llc_stderr:.3g})",
            f"  L_n(w*) = {self.init_loss:.6g}, nbeta = {self.nbeta:.6g}, step_size = "
            f"{self.step_size:.3g}, localization = {self.localization:.3g}, d = {self.num_params}",
            f"  {self.sampler}: {self.num_draws} draws after {self.num_burnin_steps} burn-in "
            f"steps, batch {self.batch_size or 'full'}, {self.wall_time:.2f} s",
            f"  R-hat {self.rhat:.3f}, bulk ESS {self.ess:.0f}, acceptance {accept:.3f}",
        ]
        lines += [f"  [{flag}] {self.evidence[flag]}" for flag in self.flags]
        return "\n".join(lines)


def less_step_bias(llc_mean: float, predicted_step_bias) -> float | None:
    """``llc_mean - mean(predicted_step_bias) * |llc_mean|``: the estimate less its bias.

    ``predicted_step_bias`` is per chain and relative to ``|llc_mean|`` (as
    :attr:`LLCResult.predicted_step_bias`); the bias is upward whatever the estimate's
    sign. NaN entries (diverged chains) are skipped; None when none is finite.

    Examples:
        >>> less_step_bias(100.0, [0.02, 0.04])
        97.0
    """
    bias = np.asarray(predicted_step_bias, np.float64)
    if not np.isfinite(bias).any():
        return None
    return llc_mean - float(np.nanmean(bias)) * abs(llc_mean)


def default_nbeta(num_data: int) -> float:
    """The default nbeta = n / log n, i.e. beta = 1 / log n with n the data-set size.

    Examples:
        >>> round(default_nbeta(10_000), 2)
        1085.74
    """
    num_data = check.check_count("num_data", num_data, minimum=2)
    return num_data / math.log(num_data)


def llc_from_losses(loss_trace, init_loss, nbeta) -> np.ndarray:
    """``nbeta * (mean over draws of loss_trace - init_loss)``, per chain, in float64.

    For users who run their own sampling loop. The subtraction comes before the mean
    and both happen in float64 on the host, so a large nbeta does not amplify rounding.

    Args:
        loss_trace: losses per draw, shape ``(draws,)`` or ``(chains, draws)``; draws
            after burn-in only.
        init_loss: the full-data loss ``L_n(w*)``.
        nbeta: n times the inverse temperature.

    Returns:
        The estimate per chain (a float64 array of shape ``loss_trace.shape[:-1]``).

    Examples:
        >>> llc_from_losses([[1.01, 1.03], [1.02, 1.02]], init_loss=1.0, nbeta=100.0)
        array([2., 2.])
    """
    trace = np.asarray(loss_trace, dtype=np.float64)
    return float(nbeta) * np.mean(trace - np.float64(init_loss), axis=-1)


def estimate_llc(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    step_size: float | str | None,
    localization: float = 1.0,
    nbeta: float | None = None,
    sampler: str = "sgld",
    sampler_options: dict | None = None,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin_steps: int | str = 1000,
    num_steps_bw_draws: int = 1,
    batch_size: int | None = None,
    control_variate: bool = True,
    progress_bar: bool | None = None,
    eval_batch_size: int | None = None,
    full_loss_every: int | None = None,
    escape_direction: ArrayTree | None = None,
    held_directions: tuple | None = None,
    acceptance_checks: int | None = None,
    num_devices: int | None = None,
    chunk_draws: int | None = None,
    max_burnin_steps: int | None = None,
) -> LLCResult:
    """Estimate the local learning coefficient of ``loss_fn`` at ``params``.

    Runs ``num_chains`` chains of localized SGLD (Lau convention),

        w <- w - step_size/2 * (nbeta * grad L_B(w) + localization * (w - w*))
               + sqrt(step_size) * N(0, I),

    all started at w* = ``params``, as one compiled program, and returns
    ``nbeta * (E[L_n(w)] - L_n(w*))`` averaged over the draws after burn-in.

    Args:
        rng_key: a JAX PRNG key; the same key gives the same result.
        loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss over a batch.
        params: w*, any pytree of floating-point arrays.
        data: a pytree of arrays sharing a leading axis n, e.g. ``(x, y)``.
        step_size: epsilon > 0 (noise variance per step, Lau convention; blackjax's
            step size is half of it). Stable only if
            ``step_size * (nbeta * mu_max + localization) < 4``. ``"auto"`` runs
            :func:`llc.calibrate` first (a short vectorised grid of step sizes around
            the curvature scale ``1 / (nbeta * mu_max + localization)``) and uses the
            step size it recommends; the calibration is kept in ``result.calibration``.
            With a fixed ``num_burnin_steps`` the burn-in then follows the chains: it
            runs in four segments, and after each the rule's predicted bias is
            re-evaluated where the chains are and the step shrunk to the rule's cap if
            it is exceeded (``result.step_size`` is the final one). The draws start once
            the step is inside the cap and the chains are steady (the last segment's
            mean not moved from the one before, up or down, and R-hat at most 1.05);
            until then, and for at most four segments more, the burn-in goes on
            (``result.num_burnin_steps`` is the burn-in run).
            None for ``sampler="nuts"``, which adapts its own.
        localization: gamma >= 0, strength of the Gaussian localizer at w*.
        nbeta: n times the inverse temperature; default ``n / log n``.
        sampler: ``"sgld"`` (default), ``"rmsprop_sgld"``, ``"sghmc"``, ``"sgnht"`` (see
            :mod:`llc.samplers`), or ``"nuts"``: full-batch NUTS with window adaptation
            (blackjax), exact up to Monte Carlo error, the gold standard for small models
            (``num_burnin_steps`` are its adaptation steps).
        sampler_options: the sampler's own hyperparameters, e.g. ``{"alpha": 0.99,
            "eps": 1e-8}`` for ``"rmsprop_sgld"``, ``{"friction": 0.1}`` for ``"sghmc"``,
            ``{"diffusion": 0.1}`` for ``"sgnht"``.
        num_chains: independent chains (own noise and own minibatch sequence each).
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
            direction contributes ``0.5 nbeta mu_i / (nbeta mu_i + gamma + c_i)``).
        acceptance_checks: how many draws per chain also compute the MALA acceptance
            of their step (two extra gradient evaluations each; default 50, 0 turns
            them off). Langevin samplers only.
        num_devices: shard the chains over this many local devices (a mesh with one
            "chains" axis; the data is replicated). Default: as many devices as are
            present and divide ``num_chains`` (1 on a single device: no sharding). The
            chains do not interact, so the result equals the single-device one for the
            same key.
        chunk_draws: run the draws this many at a time, each chunk one compiled call
            driven from Python (the chains are the same as in one call): for very long
            runs, it stops early once every chain has diverged, and Ctrl-C after the
            first chunk returns the draws done so far (flag ``interrupted``). Default:
            the whole run is one call.
        max_burnin_steps: the most burn-in steps ``num_burnin_steps="auto"`` may run
            (default ``128 W``); ignored otherwise.

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
    plan = make_plan(
        rng_key,
        loss_fn,
        params,
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
        progress_bar=progress_bar,
        eval_batch_size=eval_batch_size,
        full_loss_every=full_loss_every,
        escape_direction=escape_direction,
        held_directions=held_directions,
        acceptance_checks=acceptance_checks,
        num_devices=num_devices,
        chunk_draws=chunk_draws,
        max_burnin_steps=_auto_burnin_cap(num_burnin_steps, max_burnin_steps),
    )
    calibration = None
    max_bias = MAX_STEP_BIAS
    if plan.sampler != "nuts":  # each chain's steps and end point, for step_size_bias
        plan = plan._replace(config=plan.config._replace(record_scale=True))
    if plan.step_size == "auto":
        from llc.calibration import calibrate_plan  # calibrate builds on this module

        calibration = calibrate_plan(plan, short=True)
        max_bias = calibration.max_bias
        plan = plan._replace(
            step_size=calibration.recommended["step_size"],
            follow_bias=0.0 if plan.max_burnin_steps else max_bias,
        )
    out = execute(plan)
    if plan.max_burnin_steps or plan.follow_bias:  # the burn-in that was run
        config = plan.config._replace(num_burnin_steps=out.burnin_delta.shape[1])
        plan = plan._replace(config=config)
    if len(set(out.step_sizes)) > 1:  # the burn-in shrank the step where the chains went
        plan = plan._replace(step_size=float(out.step_sizes[-1]))
    if len(set(out.step_sizes)) > 1 or len(out.step_sizes) > _FOLLOW_SEGMENTS:
        calibration = calibration._replace(
            rule=calibration.rule
            + " The burn-in then followed the chains: step sizes "
            + ", ".join(f"{e:.3g}" for e in out.step_sizes)
            + f" in its {len(out.step_sizes)} segments (each shrunk to a predicted bias of "
            f"{max_bias:.1%} where the chains were; {plan.config.num_burnin_steps} steps)."
        )
    step_bias = end_step_bias(plan, out)  # None for NUTS, which records no steps
    return assemble(plan, out, t0, calibration=calibration, step_bias=step_bias, max_bias=max_bias)


def end_step_bias(plan, out) -> np.ndarray | None:
    """The rule's predicted step-size bias at each chain's final position.

    In units of ``nbeta (L - L*)`` per chain (NaN for a diverged chain), or None when the
    run did not record its steps (``record_scale``); :func:`assemble` turns it into the
    ``step_size_bias`` flag.
    """
    from llc.calibration import chain_bias  # calibration builds on this module

    if not out.scale.size or not jax.tree.leaves(out.final_position):
        return None
    return chain_bias(plan, out.final_position, out.scale, out.first_nonfinite_step < 0)


class Plan(NamedTuple):
    """A validated call of :func:`estimate_llc`: everything needed to run and report it."""

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
    config: _loop.RunConfig
    eval_rows: int
    init_loss: float
    direction: ArrayTree | None
    held: tuple | None
    show_progress: bool
    chunk_draws: int | None = None
    max_burnin_steps: int = 0  # > 0: num_burnin_steps="auto", config's is one window
    follow_bias: float = 0.0  # > 0: the burn-in shrinks the step to this predicted bias


def make_plan(
    rng_key,
    loss_fn,
    params,
    data,
    *,
    step_size,
    localization=1.0,
    nbeta=None,
    sampler="sgld",
    sampler_options=None,
    num_chains=4,
    num_draws=1000,
    num_burnin_steps=1000,
    num_steps_bw_draws=1,
    batch_size=None,
    control_variate=True,
    progress_bar=False,
    eval_batch_size=None,
    full_loss_every=None,
    escape_direction=None,
    held_directions=None,
    acceptance_checks=None,
    num_devices=None,
    chunk_draws=None,
    max_burnin_steps=None,
) -> Plan:
    """Validate the arguments of :func:`estimate_llc` and evaluate ``L_n(w*)``.

    Every check runs eagerly, before anything is compiled. The defaults are
    :func:`estimate_llc`'s (but no progress bar). ``num_burnin_steps="auto"`` is only
    accepted from :func:`estimate_llc` (which passes ``max_burnin_steps``, None meaning
    its default as 0).
    """
    rng_key = check.check_key(rng_key)
    check.check_callable(loss_fn)
    num_params = check.check_params(params)
    n = check.check_data(data)
    batch_size = check.check_batch_size(batch_size, n)
    if not isinstance(sampler, str) or sampler not in (*samplers.SAMPLERS, "nuts"):
        msg = f"sampler must be one of {[*samplers.SAMPLERS, 'nuts']}; got {sampler!r}."
        raise ValueError(msg)
    if sampler == "nuts":
        if batch_size is not None:
            msg = (
                "sampler='nuts' is the exact full-batch reference; it takes batch_size=None "
                f"(got {batch_size})."
            )
            raise ValueError(msg)
        if step_size is not None:
            msg = "sampler='nuts' adapts its own step size; pass step_size=None."
            raise ValueError(msg)
        if sampler_options:
            msg = "sampler='nuts' takes no sampler_options."
            raise ValueError(msg)
        if escape_direction is not None or held_directions is not None:
            msg = "sampler='nuts' supports neither escape_direction nor held_directions."
            raise ValueError(msg)
        options = {}
    else:
        options = samplers.resolve_options(sampler, sampler_options)
        if isinstance(step_size, str):
            if step_size != "auto":
                msg = f"step_size must be a positive number or 'auto'; got {step_size!r}."
                raise ValueError(msg)
        else:
            step_size = check.check_real(
                "step_size",
                step_size,
                allow_zero=False,
                hint=" Typical values are 1e-7 .. 1e-3 (smaller for larger nbeta); or 'auto'.",
            )
    localization = check.check_real("localization", localization, allow_zero=True)
    if nbeta is None:
        if n < 2:
            msg = "nbeta=None means n / log n, which needs n >= 2 samples; pass nbeta."
            raise ValueError(msg)
        nbeta = default_nbeta(n)
    nbeta = check.check_real("nbeta", nbeta, allow_zero=False)
    num_chains = check.check_count("num_chains", num_chains, minimum=1)
    num_draws = check.check_count("num_draws", num_draws, minimum=1)
    num_steps_bw_draws = check.check_count("num_steps_bw_draws", num_steps_bw_draws, minimum=1)
    window, max_burnin = num_draws * num_steps_bw_draws, 0
    if isinstance(num_burnin_steps, str):
        if num_burnin_steps != "auto" or max_burnin_steps is None:
            msg = (
                f"num_burnin_steps must be a count >= 0 or 'auto' (estimate_llc only); got "
                f"{num_burnin_steps!r}."
            )
            raise ValueError(msg)
        if sampler == "nuts":
            msg = "num_burnin_steps='auto' is for the SGMCMC samplers; NUTS adapts in warmup."
            raise ValueError(msg)
        if num_chains < 2:
            msg = "num_burnin_steps='auto' compares chains: it needs num_chains >= 2."
            raise ValueError(msg)
        max_burnin = max_burnin_steps or _AUTO_BURNIN_WINDOWS * window
        num_burnin_steps = window  # the first window; more follow in execute()
    num_burnin_steps = check.check_count("num_burnin_steps", num_burnin_steps, minimum=0)
    eval_rows = max(batch_size or 0, _DEFAULT_EVAL_ROWS)
    if eval_batch_size is not None:
        eval_rows = check.check_count("eval_batch_size", eval_batch_size, minimum=1)
    if full_loss_every is None:
        every_draws = max(1, num_draws // 10)
    else:
        every = check.check_count("full_loss_every", full_loss_every, minimum=0)
        every_draws = max(1, round(every / num_steps_bw_draws)) if every else 0
    if batch_size is None:
        every_draws = 0  # the recorded losses are already full-data
    if acceptance_checks is None:
        acceptance_every = max(1, num_draws // _DEFAULT_ACCEPTANCE_CHECKS)
    else:
        checks = check.check_count("acceptance_checks", acceptance_checks, minimum=0)
        acceptance_every = max(1, num_draws // checks) if checks else 0
    if sampler == "nuts" or samplers.SAMPLERS[sampler].proposal_scale is None:
        acceptance_every = 0
    if escape_direction is not None:
        check.check_like_params("escape_direction", escape_direction, params)
    held = None
    if held_directions is not None:
        held = _check_held(held_directions, params)
    probe = jax.tree.map(lambda x: x[: batch_size or n], data)
    check.check_loss_shape(loss_fn, params, probe)

    params = jax.tree.map(jax.numpy.asarray, params)
    data = jax.tree.map(jax.numpy.asarray, data)
    init_loss = _loop.full_data_loss(loss_fn, params, data, eval_rows)
    check.check_finite_loss(init_loss)
    dtype = jax.numpy.result_type(*jax.tree.leaves(params))
    direction = None
    if escape_direction is not None:
        direction = jax.tree.map(
            lambda v, p: jax.numpy.asarray(v, p.dtype), escape_direction, params
        )
    if held is not None:
        held = (held[0], jax.numpy.asarray(held[1], dtype))

    config = _loop.RunConfig(
        num_chains=num_chains,
        num_burnin_steps=num_burnin_steps,
        num_draws=num_draws,
        num_steps_bw_draws=num_steps_bw_draws,
        num_data=n,
        batch_size=batch_size,
        control_variate=bool(control_variate),
        progress_rate=0,
        full_loss_every_draws=every_draws,
        eval_chunk=min(eval_rows, n),
        track_direction=escape_direction is not None,
        sampler="sgld" if sampler == "nuts" else sampler,
        acceptance_every_draws=acceptance_every,
        blowup=_BLOWUP_PER_PARAM * num_params,
        mesh=_loop.chain_mesh(num_chains, _check_devices(num_devices, num_chains)),
    )
    return Plan(
        rng_key=rng_key,
        loss_fn=loss_fn,
        params=params,
        data=data,
        num_data=n,
        num_params=num_params,
        step_size=step_size,
        localization=localization,
        nbeta=nbeta,
        sampler=sampler,
        options=options,
        config=config,
        eval_rows=eval_rows,
        init_loss=init_loss,
        direction=direction,
        held=held,
        show_progress=_progress.enabled(progress_bar),
        chunk_draws=None
        if chunk_draws is None
        else check.check_count("chunk_draws", chunk_draws, minimum=1),
        max_burnin_steps=max_burnin,
    )


def execute(plan: Plan) -> _loop.RunOutput:
    """Run the plan's chains (one compiled program) and bring the traces to the host.

    With ``plan.chunk_draws`` the run is a sequence of compiled chunks, see
    :func:`_execute_chunks`; without, a single chunk.
    """
    config = plan.config
    run_id = 0
    if plan.show_progress and plan.sampler != "nuts":
        total = config.total_steps + max(0, plan.max_burnin_steps - config.num_burnin_steps)
        if plan.follow_bias and not plan.max_burnin_steps:  # the follow may extend it
            total += _follow_limits(config.num_burnin_steps)[1] - config.num_burnin_steps
        config = config._replace(progress_rate=_progress.rate(total))
        run_id = _progress.open_bar(total, plan.sampler.upper())
    dtype = jax.numpy.result_type(*jax.tree.leaves(plan.params))
    try:
        if plan.sampler == "nuts":
            hi = jax.numpy.asarray(plan.init_loss, dtype)
            lo = jax.numpy.asarray(plan.init_loss - float(hi), dtype)
            out = nuts.run_nuts(
                plan.rng_key,
                plan.params,
                plan.data,
                jax.numpy.asarray(plan.nbeta, dtype),
                jax.numpy.asarray(plan.localization, dtype),
                hi,
                lo,
                loss_fn=plan.loss_fn,
                num_chains=config.num_chains,
                num_warmup=config.num_burnin_steps,
                num_draws=config.num_draws,
            )
        else:
            hyper = _loop.make_hyper(
                plan.step_size,
                plan.nbeta,
                plan.localization,
                plan.init_loss,
                dtype,
                run_id,
                plan.options,
            )
            if plan.max_burnin_steps:
                return _execute_chunks(plan, hyper, *_auto_burnin(plan, hyper, config))
            if plan.follow_bias and config.num_burnin_steps >= _FOLLOW_SEGMENTS:
                hyper, history, *burnin = _follow_burnin(plan, hyper, config)
                return _execute_chunks(plan, hyper, *burnin)._replace(step_sizes=history)
            return _execute_chunks(plan, hyper, config)
        return jax.tree.map(np.asarray, out)
    finally:
        if run_id:
            _progress.close_bar(run_id)


def _run_chunk(plan: Plan, hyper, resume, config) -> _loop.RunOutput:
    """One compiled call of the plan's chains, resuming ``resume`` (None: from w*)."""
    return _loop.run_chains(
        plan.rng_key,
        plan.params,
        plan.data,
        hyper,
        plan.direction,
        plan.held,
        resume,
        loss_fn=plan.loss_fn,
        config=config,
    )


def _auto_burnin(plan: Plan, hyper, config):
    """``num_burnin_steps="auto"``: burn in window by window until the chains stop rising.

    Each window (``config.num_burnin_steps`` steps, the span of the draws) is one
    compiled call resuming the last one's carry, so the chains are those of one
    uninterrupted run. At ``T = 2W, 4W, ...`` (and at the cap) the mean over
    ``[T/2, T)`` is compared with that over ``[T/4, T/2)`` by :func:`_rise`; ``T``
    passes when the rise is bounded below tolerance (:func:`_settled`) and the chains
    agree over ``[T/2, T)`` (R-hat at most 1.05: a trend test alone passes a plateau
    that the chains leave at different times). A passing ``T`` is then confirmed by one
    more window ``[T, T + W)``, a dry run of the draws' ``not_stationary`` test
    (:func:`_confirmed`); the burn-in is then ``T + W``. A window that fails sends the
    doubling on to ``2T``. The cap (``plan.max_burnin_steps``) stops it in any case.

    Returns:
        ``(config, resume, burnin_delta)`` for :func:`_execute_chunks`: the config with
        the burn-in actually run, the carry to resume from, and the host burn-in trace.
    """
    window, cap = config.num_burnin_steps, plan.max_burnin_steps
    total = cap + config.num_draws * config.num_steps_bw_draws
    chunk = config._replace(num_draws=0, chunked=True, progress_total=total)
    resume, parts, steps, check_at, passed = None, [], 0, 2 * window, None
    while steps < cap:
        size = min(window, cap - steps)
        resume, part, alive = _burnin_segment(plan, hyper, resume, chunk, steps, size)
        steps += size
        parts.append(part)
        if not alive.any():
            break  # every chain diverged: the draws will say so
        if passed is not None:  # [passed, steps) is the confirming window
            if _confirmed(_joined(parts, alive, plan.nbeta), passed):
                break
            passed = None
        elif steps >= check_at or steps >= cap:
            verdict = _burnin_passes(_joined(parts, alive, plan.nbeta), window)
            if verdict is None:
                break
            passed = steps if verdict else None
            check_at *= 2
    burnin = np.concatenate(parts, axis=1) if parts else np.zeros((config.num_chains, 0))
    return config._replace(num_burnin_steps=steps), resume, burnin


def _burnin_segment(plan: Plan, hyper, resume, chunk, done: int, size: int):
    """``size`` more burn-in steps after ``done`` (one compiled call resuming ``resume``).

    Returns ``(resume, burnin_delta, alive)``: the carry to resume from, the segment's host
    trace and which chains have not diverged.
    """
    out = _run_chunk(plan, hyper, resume, chunk._replace(num_burnin_steps=size))
    states, first_bad = out.final_carry
    resume = (states, first_bad, jax.numpy.int32(done + size), jax.numpy.int32(0))
    return resume, np.asarray(out.burnin_delta), np.asarray(first_bad) < 0


def _follow_limits(num_burnin_steps: int) -> tuple[int, int]:
    """The followed burn-in's segment length and the most steps it may run."""
    size = -(-num_burnin_steps // _FOLLOW_SEGMENTS)
    return size, num_burnin_steps + _FOLLOW_MAX_EXTRA * size


def _follow_burnin(plan: Plan, hyper, config):
    """Burn in with a step size that follows the chains (``step_size="auto"``).

    The calibration judges its step where a short run's chains end; a long run can carry
    them into stiffer regions (on deep linear networks, along the flat directions). So the
    burn-in runs in ``_FOLLOW_SEGMENTS`` equal segments (each one compiled call resuming
    the last one's carry: the chains are those of one run), and after every segment the
    rule's predicted step-size bias is evaluated at each chain's position with its own
    per-coordinate steps (:func:`llc.calibration.chain_bias`). Where the chains' mean,
    relative to their mean ``nbeta (L - L*)`` over the segment's second half, exceeds
    ``plan.follow_bias``, the step shrinks by that ratio (the prediction is first order
    in the step).

    The draws start only where both hold: the step is inside the cap where the chains
    are, and the chains are steady (:func:`_steady`: the last segment's mean moved from
    the one before by no more than the draws' tolerance, up *or down*, and the chains
    agree over the two). Until then the burn-in goes on, a segment at a time, for at most
    ``_FOLLOW_MAX_EXTRA`` segments more; a step shrunk after the planned burn-in is always
    run for a segment before the draws. Chains can come down from above: an adaptive
    sampler (``"rmsprop_sgld"`` with ``adapt_steps`` set to the burn-in) lifts them while
    its preconditioner adapts, and they relax after it freezes.

    Returns:
        ``(hyper, step_sizes, config, resume, burnin_delta)``: the final hyperparameters,
        the step size of every segment, and :func:`_execute_chunks`'s arguments (the
        config with the burn-in actually run).
    """
    from llc.calibration import chain_bias  # calibration builds on this module

    total = config.num_burnin_steps
    size, limit = _follow_limits(total)
    chunk = config._replace(
        num_draws=0, chunked=True, progress_total=config.total_steps - total + limit
    )
    sampler = samplers.SAMPLERS[plan.sampler]
    resume, parts, steps, history = None, [], 0, []
    while steps < limit:
        this = min(size, total - steps) if steps < total else size
        history.append(float(hyper.step_size))
        resume, part, alive = _burnin_segment(plan, hyper, resume, chunk, steps, this)
        steps += this
        parts.append(part)
        if not alive.any():
            break  # every chain diverged: the draws will say so
        if steps >= total and steps + size > limit:
            break  # no room left to run a shrunk step, or to wait for the chains
        states = resume[0]
        scale = jax.vmap(lambda s, h=hyper: _loop._step_scale(sampler, s, h, plan.params))(states)
        level = abs(float(np.mean(plan.nbeta * part[alive, this // 2 :].astype(np.float64))))
        absolute = chain_bias(plan, states.position, scale, alive)
        bias = float(np.nanmean(absolute)) / max(level, 1e-12) if np.isfinite(absolute).any() else 0
        if bias > plan.follow_bias:
            hyper = hyper._replace(step_size=hyper.step_size * (plan.follow_bias / bias))
        elif steps >= total and _steady(parts, alive, plan.nbeta):
            break
    burnin = np.concatenate(parts, axis=1)
    return hyper, tuple(history), config._replace(num_burnin_steps=steps), resume, burnin


def _steady(parts, alive, nbeta) -> bool:
    """Whether the followed burn-in's chains have stopped moving, either way.

    ``parts`` are its segments' host traces. The last segment's mean of ``nbeta (L - L*)``
    must not have moved from the one before, up *or down*, by the draws' ``not_stationary``
    measure (:func:`_rising`: 3 standard errors and 2% of the level), and the chains must
    agree over the two (R-hat at most 1.05). True when it cannot be measured (fewer than
    two chains or segments, non-finite values), as :func:`_burnin_passes` does.
    """
    if len(parts) < 2:
        return True
    earlier = parts[-2][alive].astype(np.float64) * nbeta
    later = parts[-1][alive].astype(np.float64) * nbeta
    rise = _rise(earlier, later)
    if rise is None:
        return True
    level = float(np.mean(later))
    if _rising(rise, level) or _rising((-rise[0], rise[1]), level):
        return False
    return not _convergence(np.concatenate([earlier, later], axis=1))[0] > _RHAT_LIMIT


def _joined(parts, alive, nbeta) -> np.ndarray:
    """The burn-in windows so far as one ``(alive chains, steps)`` trace of nbeta (L - L*)."""
    return np.concatenate(parts, axis=1)[alive].astype(np.float64) * nbeta


def _burnin_passes(trace: np.ndarray, window: int) -> bool | None:
    """Whether a burn-in ``trace`` of ``T`` steps passes the doubling test at ``T``.

    The rise from ``[T/4, T/2)`` to ``[T/2, T)`` must be bounded below tolerance
    (:func:`_settled`, with the last ``window`` steps as the draws' precision) and the
    chains must agree over ``[T/2, T)`` (R-hat at most 1.05). None when the rise cannot
    be measured (fewer than two chains, windows under four steps, non-finite values).
    """
    steps = trace.shape[1]
    later = trace[:, steps // 2 :]
    rise = _rise(trace[:, steps // 4 : steps // 2], later)
    if rise is None:
        return None
    rhat = _convergence(later)[0]  # chains caught at different stages
    return _settled(rise, float(np.mean(later)), later[:, -window:].mean(axis=1)) and not (
        rhat > _RHAT_LIMIT
    )


def _confirmed(trace: np.ndarray, passed: int) -> bool:
    """Whether the window after a passing ``T = passed`` is not rising from ``[T/2, T)``.

    The draws' ``not_stationary`` test (:func:`_draws_rise`, :func:`_rising`) with
    ``trace[:, :passed]`` as the burn-in and ``trace[:, passed:]`` as the draws. Not the
    draws' R-hat: over one window it measures the draws' length against the chains'
    autocorrelation, which no longer burn-in changes.
    """
    trial = trace[:, passed:]
    return not _rising(_draws_rise(trace[:, :passed], trial)[0], float(np.mean(trial)))


def _execute_chunks(plan: Plan, hyper, config, resume=None, burnin=None) -> _loop.RunOutput:
    """Drive the run ``plan.chunk_draws`` draws at a time (default: all) from Python.

    Each chunk is one compiled call that resumes from the previous chunk's carry with
    global step numbers, so the chains are those of an uninterrupted run. Between chunks
    the traces move to the host; the run stops early once every chain has diverged, and a
    ``KeyboardInterrupt`` (Ctrl-C) after the first chunk keeps the draws done so far
    (``result.num_draws`` says how many; the flag ``interrupted`` says why). With
    ``resume`` (from :func:`_auto_burnin`) the burn-in is done already and ``burnin`` is
    its trace.
    """
    total, done, parts = config.num_draws, 0, []
    try:
        while done < total:
            size = min(plan.chunk_draws or total, total - done)
            chunk = config._replace(
                num_draws=size,
                num_burnin_steps=config.num_burnin_steps if done == 0 and resume is None else 0,
                chunked=True,
                progress_total=config.total_steps,
            )
            out = _run_chunk(plan, hyper, resume, chunk)
            states, first_bad = out.final_carry
            done += size
            next_step = config.num_burnin_steps + config.num_steps_bw_draws * done
            resume = (states, first_bad, jax.numpy.int32(next_step), jax.numpy.int32(done))
            parts.append(jax.tree.map(np.asarray, out._replace(final_carry=())))
            if np.all(parts[-1].first_nonfinite_step >= 0):
                break  # every chain diverged: nothing left to sample
    except KeyboardInterrupt:
        if not parts:
            raise

    def joined(name):
        return np.concatenate([getattr(p, name) for p in parts], axis=1)

    first = parts[0]
    sizes = np.array([p.delta.shape[1] for p in parts], np.float64)
    return first._replace(
        scale=sum(w * p.scale for w, p in zip(sizes, parts, strict=True)) / max(sizes.sum(), 1),
        scale_max=np.maximum.reduce([p.scale_max for p in parts]),
        final_position=parts[-1].final_position,
        burnin_delta=first.burnin_delta if burnin is None else burnin.astype(first.delta.dtype),
        delta=joined("delta"),
        distance=joined("distance"),
        first_nonfinite_step=parts[-1].first_nonfinite_step,
        full_delta=joined("full_delta"),
        projection=joined("projection"),
        acceptance=joined("acceptance"),
    )


def assemble(
    plan: Plan,
    out: _loop.RunOutput,
    t0: float,
    *,
    step_size=None,
    localization=None,
    nbeta=None,
    init_loss=None,
    warn: bool = True,
    calibration=None,
    step_bias=None,
    max_bias: float = MAX_STEP_BIAS,
) -> LLCResult:
    """Turn one run's host traces into an :class:`LLCResult` with its flags.

    ``step_size``, ``localization``, ``nbeta`` and ``init_loss`` override the plan's (a
    calibration grid or a trajectory shares one plan across settings or anchors).
    ``step_bias`` is the predicted step-size bias per chain at its final position
    (:func:`end_step_bias`, absolute), flagged ``step_size_bias`` above ``max_bias``.
    """
    step_size = plan.step_size if step_size is None else step_size
    localization = plan.localization if localization is None else localization
    nbeta = plan.nbeta if nbeta is None else nbeta
    init_loss = plan.init_loss if init_loss is None else init_loss
    config = plan.config
    num_draws, num_burnin_steps = out.delta.shape[1], config.num_burnin_steps
    num_steps_bw_draws, batch_size = config.num_steps_bw_draws, config.batch_size
    every_draws = config.full_loss_every_draws
    cv = config.control_variate and batch_size is not None
    delta = out.delta.astype(np.float64)
    loss_trace = init_loss + delta
    per_chain = llc_from_losses(loss_trace, init_loss, nbeta)
    diverged = out.first_nonfinite_step >= 0
    per_chain = np.where(diverged, np.nan, per_chain)
    alive = per_chain[~diverged]
    llc_mean = float(np.mean(alive)) if alive.size else math.nan
    llc_std = float(np.std(alive, ddof=1)) if alive.size > 1 else math.nan
    with warnings.catch_warnings():  # all-NaN rows: no checks, or a diverged chain
        warnings.simplefilter("ignore", RuntimeWarning)
        acceptance = (
            np.nanmean(out.acceptance.astype(np.float64), axis=1)
            if out.acceptance.size
            else np.full(config.num_chains, np.nan)
        )

    escape = _escapes(out, nbeta, num_burnin_steps, num_steps_bw_draws, diverged)
    rhat, ess = _convergence(delta[~diverged])
    rise, where = _draws_rise(
        out.burnin_delta[~diverged].astype(np.float64) * nbeta, delta[~diverged] * nbeta
    )
    flags, evidence = [], {}
    if rhat > _RHAT_LIMIT:
        flags.append("not_converged")
        evidence["not_converged"] = (
            f"R-hat of the loss traces is {rhat:.3f} > {_RHAT_LIMIT} (bulk ESS {ess:.0f} of "
            f"{delta[~diverged].size} draws): the chains disagree, so they have not reached the "
            "same distribution. Run longer (more burn-in), or check the step size."
        )
    if _rising(rise, llc_mean):
        flags.append("not_stationary")
        evidence["not_stationary"] = (
            f"the estimate was still rising: {where} the chains' mean of "
            f"nbeta * (L - L*) went up by {rise[0]:.4g} ({100 * rise[0] / abs(llc_mean):.1f}% of "
            f"llc_mean, {rise[0] / max(rise[1], 1e-300):.1f} standard errors across chains). "
            "The chains "
            "are still spreading from w* (typically along flat, degenerate directions), so "
            "llc_mean is a transient and most likely an underestimate, even when R-hat is "
            "fine (all chains can drift alike). Run longer: more burn-in steps, or a larger "
            "step size if the step-size bias allows (llc.calibrate)."
        )
    if escape["escaped"].any():
        flags.append("lower_loss_escape")
        bad = np.flatnonzero(escape["escaped"])
        source = "full-batch checks" if out.full_delta.size and every_draws else "minibatch trace"
        evidence["lower_loss_escape"] = (
            f"chains {bad.tolist()} reached loss below L_n(w*) (nbeta * (L - L*) down to "
            f"{', '.join(f'{v:.3g}' for v in escape['min_loss_drop'][bad])}; first at steps "
            f"{escape['escaped_at_step'][bad].tolist()}; share of {source} below L_n(w*): "
            f"{', '.join(f'{v:.2f}' for v in escape['share_below_init'][bad])}). At a local "
            "minimum this never happens: w* is a saddle or not a critical point, or the "
            "localizer does not hold the chains. Run llc.diagnose for the curvature, the "
            "smallest confining localization and the remedy."
        )
    if diverged.any():
        flags.append("diverged")
        evidence["diverged"] = _divergence_evidence(
            plan.rng_key,
            plan.loss_fn,
            plan.params,
            plan.data,
            plan.eval_rows,
            out.first_nonfinite_step,
            step_size=step_size,
            nbeta=nbeta,
            localization=localization,
        )
    if num_draws < config.num_draws and diverged.all():
        evidence["diverged"] += (
            f" Every chain had diverged, so the run stopped after {num_draws} of "
            f"{config.num_draws} draws."
        )
    elif num_draws < config.num_draws:
        flags.append("interrupted")
        evidence["interrupted"] = (
            f"the run was interrupted after {num_draws} of {config.num_draws} draws "
            "(chunk_draws); the estimate uses the draws completed."
        )
    negative = np.flatnonzero(np.nan_to_num(per_chain, nan=0.0) < 0)
    if negative.size:
        flags.append("negative_estimate")
        evidence["negative_estimate"] = (
            f"llc_mean = {llc_mean:.4g}; chains {negative.tolist()} have negative "
            f"estimates ({', '.join(f'{v:.3g}' for v in per_chain[negative])}). A negative "
            "LLC means the chains found loss below L_n(w*): w* is not a local minimum "
            "(a saddle, or not a critical point), or the localizer does not confine them. "
            "Check the gradient and the Hessian's smallest eigenvalue at w*, raise "
            "localization, or refine w* to a nearby minimum."
        )
    num_params = plan.num_params
    stderr = np.nan_to_num(_standard_error(llc_std, alive.size))  # 0 with one chain
    if alive.size and llc_mean - num_params / 2 > 2 * stderr:
        flags.append("above_half_dimension")
        evidence["above_half_dimension"] = (
            f"llc_mean = {llc_mean:.4g} exceeds d/2 = {num_params / 2:g} by "
            f"{llc_mean - num_params / 2:.3g} (more than 2 standard errors, "
            f"{stderr:.3g}); no local minimum has an LLC above d/2. The step size is "
            "probably too large (discretisation bias) or the chains are not localized; "
            "lower step_size or raise localization."
        )
    if step_bias is not None:
        step_bias = step_bias / max(abs(llc_mean), 1e-12)  # relative to the estimate
    if step_bias is not None and np.isfinite(step_bias).any():
        end = float(np.nanmean(step_bias))
        if end > max_bias:
            flags.append("step_size_bias")
            at_calibration = ""
            if calibration is not None:
                g = int(np.argmin(np.abs(calibration.localizations - localization)))
                chosen = calibration.recommended["step_size"]
                s = int(np.argmin(np.abs(calibration.step_sizes - chosen)))
                at_calibration = (
                    f" (the calibration predicted {calibration.predicted_bias[g, s]:.1%} where "
                    "its short run ended)"
                )
            evidence["step_size_bias"] = (
                f"the predicted first-order step-size bias where the chains ended is "
                f"{end:.1%} of the estimate (per chain: "
                f"{', '.join(f'{b:.1%}' for b in step_bias)}), above {max_bias:.1%}"
                f"{at_calibration}, so llc_mean is biased upward by about that much "
                f"(llc_step_corrected = {less_step_bias(llc_mean, step_bias):.4g} removes "
                "it to first order). On deep linear networks of ~100K parameters the excess "
                "over the exact value was about this prediction; on a ~1K one a run at half "
                "the step measured 2-6 times it. Halve step_size and double the steps, or "
                "compare a run at half the step."
            )
    if flags and warn:
        warnings.warn(
            "LLC estimate flagged: " + " | ".join(f"[{f}] {evidence[f]}" for f in flags),
            RuntimeWarning,
            stacklevel=3,
        )

    return LLCResult(
        llc_mean=llc_mean,
        llc_std=llc_std,
        llc_per_chain=per_chain,
        loss_trace=loss_trace,
        init_loss=init_loss,
        nbeta=nbeta,
        step_size=math.nan if step_size is None else float(step_size),
        localization=localization,
        num_chains=config.num_chains,
        num_draws=num_draws,
        num_burnin_steps=num_burnin_steps,
        num_steps_bw_draws=num_steps_bw_draws,
        batch_size=batch_size,
        control_variate=cv,
        num_data=plan.num_data,
        num_params=num_params,
        burnin_loss_trace=init_loss + out.burnin_delta.astype(np.float64),
        distance_trace=out.distance.astype(np.float64),
        diverged=diverged,
        diverged_at_step=out.first_nonfinite_step.astype(np.int64),
        full_loss_trace=escape["full_loss_trace"] + init_loss,
        full_loss_steps=escape["full_loss_steps"],
        projection_trace=out.projection.astype(np.float64) if config.track_direction else None,
        escaped=escape["escaped"],
        escaped_at_step=escape["escaped_at_step"],
        min_loss_drop=escape["min_loss_drop"],
        share_below_init=escape["share_below_init"],
        num_held_directions=0 if plan.held is None else int(plan.held[1].shape[0]),
        sampler=plan.sampler,
        sampler_options=dict(plan.options),
        acceptance=acceptance,
        rhat=rhat,
        ess=ess,
        flags=tuple(flags),
        evidence=evidence,
        wall_time=time.perf_counter() - t0,
        calibration=calibration,
        predicted_step_bias=step_bias,
    )


def _check_devices(num_devices, num_chains: int) -> int | None:
    """None, or a device count in 1..(local devices) that divides ``num_chains``."""
    if num_devices is None:
        return None
    available = jax.local_device_count()
    num_devices = check.check_count("num_devices", num_devices, minimum=1)
    if num_devices > available:
        msg = f"num_devices = {num_devices}, but only {available} local devices are present."
        raise ValueError(msg)
    if num_chains % num_devices:
        msg = (
            f"num_devices = {num_devices} must divide num_chains = {num_chains} (each device "
            "runs the same number of chains); change either."
        )
        raise ValueError(msg)
    return num_devices


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
    if not np.all(np.isfinite(strengths)) or np.any(strengths < 0):
        msg = f"held_directions strengths must be finite and >= 0; got {strengths.tolist()}."
        raise ValueError(msg)
    for i, v in enumerate(directions):
        check.check_like_params(f"held_directions direction {i}", v, params)
    stacked = jax.tree.map(
        lambda *xs: jax.numpy.stack([jax.numpy.asarray(x) for x in xs]), *directions
    )
    flat = np.concatenate(
        [np.asarray(x, np.float64).reshape(len(directions), -1) for x in jax.tree.leaves(stacked)],
        axis=1,
    )
    if not np.allclose(flat @ flat.T, np.eye(len(directions)), atol=1e-3):
        msg = "held_directions directions must be orthonormal (e.g. Hessian eigenvectors)."
        raise ValueError(msg)
    return stacked, strengths


def _auto_burnin_cap(num_burnin_steps, max_burnin_steps) -> int | None:
    """make_plan's ``max_burnin_steps``: None unless "auto" (then 0 means the default)."""
    if not (isinstance(num_burnin_steps, str) and num_burnin_steps == "auto"):
        return None
    if max_burnin_steps is None:
        return 0
    return check.check_count("max_burnin_steps", max_burnin_steps, minimum=1)


def _standard_error(std: float, chains: int) -> float:
    """Standard error of a mean over ``chains`` independent chains (NaN below two)."""
    return std / math.sqrt(chains) if chains > 1 else math.nan


def _convergence(trace: np.ndarray) -> tuple[float, float]:
    """Rank-normalised split R-hat and bulk ESS of ``(chains, draws)`` (blackjax)."""
    if trace.shape[0] < 2 or trace.shape[1] < 4 or not np.all(np.isfinite(trace)):
        return math.nan, math.nan
    x = jax.numpy.asarray(trace, jax.numpy.float32)
    return float(blackjax_diagnostics.rhat(x)), float(blackjax_diagnostics.ess_bulk(x))


def _rise(earlier: np.ndarray, later: np.ndarray):
    """How much the chains' mean of ``nbeta (L - L*)`` rose from one window to a later one.

    ``earlier`` and ``later`` are ``(chains, steps)`` traces (lengths may differ).
    Returns ``(rise, stderr)``: the mean over chains of each chain's rise and its
    standard error across chains; None with fewer than two chains, windows shorter than
    four steps, or non-finite values.
    """
    chains = later.shape[0]
    if chains < 2 or min(earlier.shape[1], later.shape[1]) < 4:
        return None
    diff = later.mean(axis=1) - earlier.mean(axis=1)
    if not np.all(np.isfinite(diff)):
        return None
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(chains))


def _draws_rise(burnin: np.ndarray, draws: np.ndarray):
    """:func:`_rise` from the second half of the burn-in to the draws, and its wording.

    If the burn-in is shorter than 8 steps: from the first to the second half of the
    draws.
    """
    steps = burnin.shape[1]
    if steps >= 8:
        where = f"from the last {steps - steps // 2} burn-in steps to the draws"
        return _rise(burnin[:, steps // 2 :], draws), where
    half = draws.shape[1] // 2
    return _rise(draws[:, :half], draws[:, half:]), "from the first to the second half of the draws"


def _settled(rise, level: float, last: np.ndarray) -> bool:
    """Whether a burn-in has stopped rising: its rise is bounded below the tolerance.

    ``rise`` from :func:`_rise`, ``level`` the mean of the later window, ``last`` the
    chains' means over the last ``W`` steps (the draws' span). The upper bound
    ``rise + 2 stderr`` must be below ``max(2% of the level, 2 stderr of last)``: the
    trend left is then within two standard errors of what the draws will estimate, and
    a comparison too noisy to tell (short windows early on) does not pass for a flat one.
    """
    precision = float(np.std(last, ddof=1) / np.sqrt(last.size))
    return rise[0] + 2 * rise[1] <= max(_RISE_REL * abs(level), 2 * precision)


def _rising(rise, level: float) -> bool:
    """Whether :func:`_rise`'s result is a real rise: 3 stderr and 2% of ``level``."""
    return (
        rise is not None
        and level != 0
        and rise[0] > _RISE_T * rise[1]
        and rise[0] > _RISE_REL * abs(level)
    )


def _escapes(out, nbeta, burnin, steps_bw_draws, diverged) -> dict:
    """Per-chain lower-loss statistics from the full-batch checks (or the minibatch trace)."""
    checked = np.flatnonzero(np.isfinite(out.full_delta).all(axis=0)) if out.full_delta.size else []
    steps = burnin + steps_bw_draws * (np.asarray(checked, np.int64) + 1) - 1
    if len(checked):
        drops = nbeta * out.full_delta[:, checked].astype(np.float64)
        below = drops < -1.0
        first = np.where(below.any(axis=1), steps[np.argmax(below, axis=1)], -1)
        escaped = below.any(axis=1)
    else:
        drops = nbeta * out.delta.astype(np.float64)
        half = drops[:, drops.shape[1] // 2 :]
        with warnings.catch_warnings():  # a diverged chain's trace is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            escaped = np.nanmean(half, axis=1) < -1.0
        draw_steps = burnin + steps_bw_draws * np.arange(1, drops.shape[1] + 1) - 1
        first = np.where(escaped, draw_steps[np.argmax(drops < -1.0, axis=1)], -1)
    escaped = escaped & ~diverged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "full_loss_trace": (drops / nbeta) if len(checked) else np.zeros((len(diverged), 0)),
            "full_loss_steps": steps if len(checked) else np.zeros(0, np.int64),
            "escaped": escaped,
            "escaped_at_step": np.where(escaped, first, -1).astype(np.int64),
            "min_loss_drop": np.nanmin(drops, axis=1),
            "share_below_init": np.mean(drops < -1e-2, axis=1),
        }


def _divergence_evidence(
    rng_key, loss_fn, params, data, eval_rows, first_bad, *, step_size, nbeta, localization
) -> str:
    """Which chains diverged and when, and the step-size bound from the curvature at w*."""
    bad = np.flatnonzero(first_bad >= 0)
    rows = min(eval_rows, jax.tree.leaves(data)[0].shape[0])
    head = jax.tree.map(lambda x: x[:rows], data)
    mu = float(largest_eigenvalue_magnitude(jax.random.fold_in(rng_key, 7), loss_fn, params, head))
    precision = nbeta * mu + localization
    product = step_size * precision
    text = (
        f"chains {bad.tolist()} of {len(first_bad)} blew up (non-finite loss, or nbeta * "
        f"(L - L*) > {_BLOWUP_PER_PARAM:g} d) at steps "
        f"{first_bad[bad].tolist()} and are left out of llc_mean. At w* the largest Hessian "
        f"eigenvalue magnitude is {mu:.4g} (power iteration on {rows} samples), so "
        f"step_size * (nbeta * mu_max + localization) = {product:.3g}"
    )
    if product >= 4:
        return text + (
            " >= 4: the step size is too large for the curvature and SGLD is unstable. "
            f"Use step_size < {4 / precision:.3g}; below {0.2 / precision:.3g} the "
            "discretisation bias stays at a few percent."
        )
    return text + (
        " < 4, stable at w* itself: the chains moved into steeper regions or minibatch "
        f"gradient noise kicked them out. Lower step_size (e.g. "
        f"{min(0.2 / precision, step_size / 10):.3g}) or "
        "raise localization or batch_size."
    )
