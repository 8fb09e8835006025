"""The result types: :class:`LLCResult` and :class:`CalibrationResult`, saved and loaded.

``result.save(path)`` writes one ``.npz`` file (the arrays, and the rest as JSON: no
pickle, nested results and evidence included); :func:`load_result` reads it back.
"""

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from llc import _serial
from llc.flags import Evidence
from llc.step_bias import CurvatureModel, less_step_bias
from llc.trace_stats import standard_error

__all__ = ["CalibrationResult", "LLCResult", "Observable", "load_result"]


class Observable(NamedTuple):
    """An observable recorded at every draw (``estimate_llc(..., observables=...)``).

    Attributes:
        init_loss: its value at w*: ``L_q(w*)`` for a data set's mean loss, or the
            per-sample losses ``l_i(w*)`` (shape ``(m, ...)``).
        delta: ``(chains, draws)`` of ``L_q(w_t) - L_q(w*)``, or ``(chains, draws, m, ...)``
            of ``l_i(w_t) - l_i(w*)`` (differences keep float32's precision).
        llc: ``nbeta (E[L_q] - L_q(w*))`` over the chains that did not diverge, with
            ``L_q`` the mean over the samples (NaN if every chain diverged).
        llc_per_chain: ``(chains,)`` the same per chain (NaN for a diverged chain).
        per_sample: whether ``delta`` holds per-sample losses.
    """

    init_loss: float | np.ndarray
    delta: np.ndarray
    llc: float
    llc_per_chain: np.ndarray
    per_sample: bool

    @property
    def loss_trace(self) -> np.ndarray:
        """``L_q(w_t)`` (or ``l_i(w_t)``) per chain and draw, in float64."""
        return np.asarray(self.init_loss, np.float64) + self.delta.astype(np.float64)


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
        evidence: for each flag, its :class:`llc.Evidence`: a one-line message with
            the decisive numbers, the values behind it, and the explanation with the
            remedy (``str(evidence)``).
        wall_time: seconds for the whole call, compilation included.
        calibration: with ``step_size="auto"``, the :class:`llc.CalibrationResult` that
            chose the step size (its ``rule`` says how the burn-in then followed the
            chains); otherwise None.
        predicted_step_bias: ``(chains,)`` the calibration rule's first-order step-size
            bias (:func:`llc.step_bias.chain_bias`) at each chain's final
            position with its own steps, relative to ``llc_mean`` (NaN for a diverged
            chain); flagged ``step_size_bias`` when the mean exceeds 2.5% (or
            ``step_size="auto"``'s ``max_bias``). None for NUTS.
        num_devices: how many devices the chains were sharded over.
        burnin: how the burn-in ran: ``"fixed"``, ``"auto"`` (``num_burnin_steps="auto"``)
            or ``"follow"`` (``step_size="auto"``: the step followed the chains).
        observables: name -> :class:`Observable`, for each data set passed as
            ``observables`` or ``per_sample_observables`` (None without).
        mesh_shape: ``{axis: size}`` of the device mesh the run was laid over, e.g.
            ``{"chains": 2, "model": 2}`` (``{}``: one device, no mesh).
        virial_ratio: ``(chains,)`` each chain's mean of ``(w - w*) . grad U(w)`` over its
            draws divided by the number of weights that move, ``U`` the localized
            posterior's potential (NaN for a diverged chain, or one whose gradient
            overflowed). At equilibrium its
            expectation is exactly 1 whatever the loss (integration by parts); below 1
            the chains have not spread out to the posterior, above 1 they run hot.
            Flagged ``not_equilibrated`` when the mean is off 1 by more than 10% and 3
            standard errors. None where no trace was recorded.
        spread_steps: the first steps of the burn-in that spread the chains at a larger
            step, and settled them at the chosen one (``step_size="auto"`` with SGLD,
            :func:`llc.spread.spread`); 0 if none.
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
    num_devices: int = 1
    burnin: str = "fixed"
    observables: dict | None = None
    mesh_shape: dict | None = None
    virial_ratio: np.ndarray | None = None
    spread_steps: int = 0

    @property
    def llc_stderr(self) -> float:
        """Standard error of ``llc_mean`` from the spread across independent chains.

        NaN when fewer than two chains finished without diverging: with one chain the
        spread, and so the standard error, is undefined.
        """
        return standard_error(self.llc_std, int(np.sum(~self.diverged)))

    @property
    def llc_step_corrected(self) -> float | None:
        """``llc_mean`` less its predicted first-order step-size bias.

        :func:`less_step_bias` of ``llc_mean`` and ``predicted_step_bias``: the estimate
        with the discretisation and minibatch-noise bias of the quadratic model
        (:func:`llc.step_bias.chain_bias`, evaluated where each chain ended)
        removed; the second-order remainder is about the square of that bias. None
        when no bias was predicted (NUTS, or every chain diverged).

        Where the step bias dominates the error it closes most of it; where the chains
        are still equilibrating in flat directions (an underestimate the upward step bias
        partly hides) it can widen the error (docs: "Samplers and calibration"). Report it
        next to ``llc_mean``, not instead of it, and trust neither when the run is flagged
        ``not_converged`` or ``not_stationary``.

        Examples:
            A quadratic, d = 4: the exact LLC of the localized posterior is
            ``2 nbeta / (nbeta + 1)``, and a large step biases the estimate upward.

            >>> import jax, jax.numpy as jnp
            >>> loss_fn = lambda w, b: 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(b)
            >>> import llc
            >>> result = llc.estimate_llc(jax.random.key(0), loss_fn, jnp.zeros(4),
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
        alive = self.num_chains - int(self.diverged.sum())
        spread = (
            f"+/- {self.llc_std:.3g} (std across {alive} chains; stderr {self.llc_stderr:.3g})"
            if alive > 1
            else f"({alive} chain: the spread, and so the standard error, is undefined)"
        )
        lines = [
            f"LLC = {self.llc_mean:.4g} {spread}",
            f"  L_n(w*) = {self.init_loss:.6g}, nbeta = {self.nbeta:.6g}, step_size = "
            f"{self.step_size:.3g}, localization = {self.localization:.3g}, d = {self.num_params}",
            f"  {self.sampler}: {self.num_draws} draws after {self.num_burnin_steps} burn-in "
            f"steps, batch {self.batch_size or 'full'}, {self.wall_time:.2f} s",
            f"  R-hat {self.rhat:.3f}, bulk ESS {self.ess:.0f}, acceptance {accept:.3f}"
            + _virial_text(self.virial_ratio),
        ]
        lines += [f"  [{flag}] {self.evidence[flag]}" for flag in self.flags]
        return "\n".join(lines)

    def to_arviz(self):
        """The traces as ArviZ data: ``posterior`` (chains x draws), ``sample_stats``.

        ``posterior`` holds ``loss`` (the loss trace) and ``llc`` (``nbeta (L - L_n(w*))``
        per draw, whose mean is the estimate), over the chains that did not diverge;
        ``sample_stats`` the distance from w*. ArviZ's trace, rank and autocorrelation
        plots and ``arviz.summary`` then apply. Needs the optional ``arviz`` package
        (``pip install arviz``, or the ``arviz`` extra).

        Examples:
            >>> import jax, jax.numpy as jnp, llc
            >>> loss_fn = lambda w, b: 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(b)
            >>> r = llc.estimate_llc(jax.random.key(0), loss_fn, jnp.zeros(2),
            ...                      jnp.zeros((100, 1)), step_size=1e-3, num_draws=100)
            >>> data = r.to_arviz()  # doctest: +SKIP
            >>> data.posterior["llc"].shape  # doctest: +SKIP
            (4, 100)
        """
        try:
            import arviz  # noqa: PLC0415 (optional dependency)
        except ImportError:
            msg = "to_arviz needs arviz: pip install arviz (or the llc[arviz] extra)."
            raise ImportError(msg) from None
        alive = ~np.asarray(self.diverged)
        return arviz.from_dict(
            posterior={
                "loss": self.loss_trace[alive],
                "llc": self.nbeta * (self.loss_trace[alive] - self.init_loss),
            },
            sample_stats={"distance": self.distance_trace[alive]},
            attrs={"sampler": self.sampler, "num_params": self.num_params},
        )

    def save(self, path) -> Path:
        """Write the result to ``path`` (one ``.npz`` file; ``.npz`` is added if missing).

        Everything round-trips through :func:`llc.load_result`: arrays, flags, the
        evidence, and the calibration with its grid of results. No pickle is used.

        Examples:
            >>> import jax, jax.numpy as jnp, tempfile, llc
            >>> loss_fn = lambda w, b: 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(b)
            >>> r = llc.estimate_llc(jax.random.key(0), loss_fn, jnp.zeros(2),
            ...                      jnp.zeros((100, 1)), step_size=1e-3, num_draws=100)
            >>> path = r.save(tempfile.mkdtemp() + "/run")
            >>> back = llc.load_result(path)
            >>> bool(back.llc_mean == r.llc_mean and (back.loss_trace == r.loss_trace).all())
            True
        """
        return _serial.save(self, path)


class CalibrationResult(NamedTuple):
    """What :func:`calibrate` returns; the grid arrays are ``(localizations, step_sizes)``.

    Attributes:
        step_sizes: ``(S,)`` the step sizes tried, ascending.
        localizations: ``(G,)`` the localizations tried, ascending.
        llc_mean: estimate per setting.
        llc_std: standard deviation across chains per setting.
        acceptance: mean MALA acceptance per setting (NaN for momentum samplers).
        rhat: R-hat of the loss traces per setting.
        escape_share: share of chains that escaped to lower loss per setting.
        num_diverged: diverged chains per setting.
        predicted_bias: the rule's predicted step-size bias, relative to the estimate.
        stiffness: ``max_i s_i (nbeta H_ii + gamma)`` (4 is the stability limit).
        healthy: whether the setting passes the rule's checks.
        reasons: for each setting, why it is not healthy ("" if it is).
        results: ``results[g][s]``, the full :class:`llc.LLCResult` of each setting.
        recommended: ``{"step_size": ..., "localization": ...}`` chosen by the rule.
        rule: the rule, in words, with the numbers that decided it.
        max_bias: the predicted-bias limit the rule used.
        min_acceptance: the MALA acceptance floor the rule used.
        curvature: the :class:`CurvatureModel` at w*.
        wall_time: seconds for the whole calibration.
    """

    step_sizes: np.ndarray
    localizations: np.ndarray
    llc_mean: np.ndarray
    llc_std: np.ndarray
    acceptance: np.ndarray
    rhat: np.ndarray
    escape_share: np.ndarray
    num_diverged: np.ndarray
    predicted_bias: np.ndarray
    stiffness: np.ndarray
    healthy: np.ndarray
    reasons: np.ndarray
    results: list
    recommended: dict
    rule: str
    max_bias: float
    min_acceptance: float
    curvature: CurvatureModel
    wall_time: float

    def transient(self) -> np.ndarray:
        """``(G, S)`` bool: settings whose run is flagged as not settled.

        Flagged ``not_converged``, ``not_stationary``, ``still_spreading`` or
        ``not_equilibrated``: their
        ``llc_mean`` is a transient of a short run, fit to compare settings, not an
        estimate to report.
        """
        return np.array(
            [[bool(_TRANSIENT & set(r.flags)) for r in row] for row in self.results], bool
        ).reshape(self.llc_mean.shape)

    def table(self) -> str:
        """The grid as a fixed-width text table, the recommended row marked ``*``.

        A value followed by ``~`` comes from a run flagged as not settled
        (:meth:`transient`); a footnote says so.
        """
        transient = self.transient()
        rows = [
            f"{'gamma':>9} {'step_size':>10} {'llc':>10} {'std':>9} {'bias':>7} {'stiff':>6} "
            f"{'accept':>6} {'rhat':>6} {'esc':>4} {'div':>3}  verdict"
        ]
        best = (self.recommended["localization"], self.recommended["step_size"])
        for g, gamma in enumerate(self.localizations):
            for s, eps in enumerate(self.step_sizes):
                mark = "*" if (gamma, eps) == best else " "
                verdict = "healthy" if self.healthy[g, s] else self.reasons[g, s]
                value = f"{self.llc_mean[g, s]:.4g}" + ("~" if transient[g, s] else " ")
                rows.append(
                    f"{gamma:9.3g} {eps:10.3g} {value:>10} "
                    f"{self.llc_std[g, s]:9.3g} {self.predicted_bias[g, s]:7.2%} "
                    f"{self.stiffness[g, s]:6.3g} {self.acceptance[g, s]:6.3f} "
                    f"{self.rhat[g, s]:6.3f} {self.escape_share[g, s]:4.2f} "
                    f"{int(self.num_diverged[g, s]):3d} {mark}{verdict}"
                )
        if transient.any():
            rows.append(
                "~ the run is flagged not_converged, not_stationary, still_spreading or "
                "not_equilibrated: a transient of a short run, to compare settings, not an "
                "estimate"
            )
        return "\n".join(rows)


def _virial_text(ratio) -> str:
    """``, E[(w - w*) . grad U] / d 0.72`` over the live chains, or "" without a ratio."""
    finite = np.asarray([] if ratio is None else ratio, np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return ""
    return f", E[(w - w*) . grad U] / d {float(finite.mean()):.3f} (1 at equilibrium)"


_TRANSIENT = frozenset({"not_converged", "not_equilibrated", "not_stationary", "still_spreading"})

_TYPES = {
    t.__name__: t for t in (LLCResult, CalibrationResult, CurvatureModel, Evidence, Observable)
}


def load_result(path) -> LLCResult:
    """Read a result written by :meth:`LLCResult.save` (or a saved calibration)."""
    return _serial.load(path, _TYPES)
