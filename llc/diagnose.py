"""Is w* a point where the LLC means something? Curvature, lower loss, and the remedy.

The LLC is defined at a local minimum. In the quadratic picture (slt-reference.md 4.1)
the localized tempered posterior has precision ``p_i = nbeta mu_i + gamma`` along each
Hessian eigendirection: it exists only if every ``p_i > 0`` (confinement,
``gamma > nbeta |mu_min|``), and then

    E[lambda_hat] = sum_i [ 0.5 nbeta mu_i / p_i - (nbeta g_i)^2 (gamma + 0.5 nbeta mu_i) / p_i^2 ]

with ``g`` the gradient at w*. :func:`diagnose` decides each question at the resolution
that matters for the estimate (``nbeta |mu|`` against ``gamma``, see
:mod:`llc.saddle_probe`), proves negative curvature with a Rayleigh quotient, says what
confined negative curvature costs the estimate, looks for lower loss beyond second
order with short localized chains, and checks its remedy before offering it.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llc import _quadratic_model as quadratic
from llc import _validation as check
from llc._diagnosis_text import confined_explanation, evidence_for, verdict_and_remedy
from llc._remedy import found, verified_localization
from llc._run_probe import covers, lower_loss_of_run
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.curvature import Certificate, resolve_smallest
from llc.hessian import HessianSpectrum, checked_point
from llc.result import LLCResult
from llc.saddle_probe import LowerLoss, NullSearch, probe_lower_loss, search_null_directions
from llc.settings import default_nbeta

__all__ = ["MATERIAL", "Diagnosis", "diagnose"]

MATERIAL = quadratic.MATERIAL
"""Confined negative curvature is flagged when it moves the estimate by more than this
share of the rest (its quadratic-model contribution, ``0.5 nbeta mu / p`` summed)."""


class Diagnosis(NamedTuple):
    """What :func:`diagnose` returns.

    Attributes:
        flags: short names of the problems found (empty: no test found a problem).
        evidence: for each flag, its :class:`llc.Evidence` (the numbers behind it).
        verdict: one line for the user, saying what was tested.
        remedy: what to do, with numbers ("" when nothing is needed).
        estimate_kwargs: keyword arguments for :func:`llc.estimate_llc` that apply the
            remedy (``{}`` when none is needed or none was verified).
        spectrum: the Hessian probe (the last, longest Lanczos run). Where the
            ``hvp_rows`` subset proved an unconfined saddle (:mod:`llc.curvature`) it is
            the subset's, with the smallest values refined on all the data.
        certificate: a :class:`llc.curvature.Certificate` proving negative curvature,
            or None.
        decided: False when the Lanczos budget ran out before the smallest eigenvalue
            was resolved (flag ``undecided``).
        lower_loss: the short chains' :class:`llc.saddle_probe.LowerLoss`, or None when
            they did not run.
        null_search: the line search along near-null Hessian directions
            (:class:`llc.saddle_probe.NullSearch`), or None when it did not run.
        grad_norm: ``||grad L_n(w*)||``.
        gradient_bias: predicted shift of E[lambda_hat] from the gradient (<= 0), or NaN
            when the posterior is not confined.
        lambda_quadratic: the quadratic-model E[lambda_hat] without the gradient term,
            ``0.5 tr(nbeta H (nbeta H + gamma)^-1)`` (NaN when not confined).
        negative_contribution: the part of ``lambda_quadratic`` from the negative
            eigenvalues (<= 0; NaN when not confined).
        negative_contribution_stderr: its standard error across the density probes.
        min_localization: the smallest localization that confines every direction
            (``nbeta * |mu_min|``, 0 if there is no negative curvature; a lower bound,
            since ``mu_min`` is a Ritz value, above the smallest eigenvalue).
        negative_directions: estimated number of eigenvalues below ``-tolerance``.
        tolerance: the resolution: eigenvalues with ``|mu| <= tolerance`` count as zero
            (``0.1 gamma / nbeta``: they move the estimate by less than 0.05 each).
        nbeta: the nbeta assumed.
        localization: the localization assumed.
        hvp_rows: the rows ``spectrum`` was computed on (n: all the data).
        num_matvecs: Hessian-vector products spent (on the subset and on all the data).
        cost_in_sgld_steps: the whole diagnosis in minibatch SGLD steps (a full-data
            Hessian-vector product ~ 2 n / batch steps, one on ``r`` rows ``2 r / batch``),
            the short chains included.
        cost_parts: that cost by part: ``lanczos``, ``gradient`` (the gradient term's
            quadrature), ``null_search``, ``lower_loss_probe`` (0 where the ``result``'s
            chains were the probe) and ``remedy_checks`` (verifying ``estimate_kwargs``).
    """

    flags: tuple
    evidence: dict
    verdict: str
    remedy: str
    estimate_kwargs: dict
    spectrum: HessianSpectrum
    certificate: Certificate | None
    decided: bool
    lower_loss: LowerLoss | None
    null_search: NullSearch | None
    grad_norm: float
    gradient_bias: float
    lambda_quadratic: float
    negative_contribution: float
    negative_contribution_stderr: float
    min_localization: float
    negative_directions: int
    tolerance: float
    nbeta: float
    localization: float
    hvp_rows: int
    num_matvecs: int
    cost_in_sgld_steps: float
    cost_parts: dict


def diagnose(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    nbeta: float | None = None,
    localization: float = 1.0,
    result: LLCResult | None = None,
    step_size: float | None = None,
    batch_size: int | None = None,
    k: int = 5,
    num_matvecs: int = 40,
    max_matvecs: int = 320,
    num_probes: int = 2,
    probe_steps: int = 1000,
    verify_steps: int = 1000,
    hvp_rows: int | None = 512,
    eval_batch_size: int = 8192,
) -> Diagnosis:
    """Check that the LLC at ``params`` is meaningful, and say why not and what to do.

    1. Curvature: Lanczos, lengthened until the smallest eigenvalue is decided at the
       resolution ``0.1 gamma / nbeta``; a negative Rayleigh quotient is reported as a
       certificate whatever its residual; confined negative curvature is flagged only
       when its contribution to the estimate is material (more than 5% of the rest).
    2. Beyond second order: when no negative curvature is found, a line search along the
       near-null directions and, unless it found lower loss already, a few short
       localized chains (``probe_steps`` steps at the sampler's scale) look for lower
       full-data loss; what they find is flagged ``higher_order_saddle``.
    3. The remedy: a localization that confines the chains, verified by the same short
       chains before it is offered, as ``estimate_kwargs``.

    Args:
        rng_key: a JAX PRNG key.
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        params: w*.
        data: the data (the full-data loss L_n is probed).
        nbeta: as for :func:`llc.estimate_llc` (default n / log n, or the result's).
        localization: gamma (default 1, or the result's).
        result: an :class:`llc.LLCResult` at the same point: its flags are merged in, and
            its step size and batch size are the short chains'.
        step_size: the short chains' step (default: the result's, else
            ``0.5 / (nbeta mu_max + gamma)``, an eighth of the stability bound: a
            smaller step does not travel far enough in ``probe_steps`` to find the
            lower loss of a balanced rank-k point of a deep linear network).
        batch_size: the short chains' minibatch (default: the result's, all n for a
            full-batch result, else ``min(n, 1024)``).
        k: extreme eigenvalues to compute.
        num_matvecs: Lanczos steps of the first run (doubled until decided).
        max_matvecs: the longest Lanczos run; beyond it the verdict is ``undecided``.
        num_probes: Lanczos probes for the density (the first also gives the extremes).
        probe_steps: steps of each short chain (0: no lower-loss probe, no remedy; 200
            steps missed the lower loss of a balanced rank-2 point of a 3-layer linear
            network that 1,000 found).
        verify_steps: steps of each chain that checks a remedy's localization before it
            is offered (a 200-step check passed localizations that a 2,000-step run
            escaped).
        hvp_rows: rows of the random subset the curvature and the null-direction search
            are first probed on, each on its own draw (None: all the data). The subset's
            Lanczos answer is kept only where a full-data Rayleigh quotient proves an
            unconfined saddle (:mod:`llc.curvature`); anything else, a minimum above all,
            reruns on all the data. A drop found by the line search on the subset counts
            only when the full data confirm it.
        eval_batch_size: rows per full-data evaluation chunk.

    Returns:
        A :class:`Diagnosis`.

    Raises:
        TypeError, ValueError: on bad input (non-finite loss or gradient at ``params``
            included), with :func:`llc.estimate_llc`'s messages.

    Examples:
        A saddle whose negative direction the localizer cannot hold:

        >>> import jax, jax.numpy as jnp
        >>> mu = jnp.array([1.0, 1.0, -0.01])
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(mu * w**2)
        >>> report = diagnose(jax.random.key(0), loss_fn, jnp.zeros(3), jnp.zeros((1000, 1)))
        >>> report.flags
        ('negative_curvature', 'unconfined')
        >>> round(report.min_localization, 3), report.estimate_kwargs["localization"] > 1.448
        (1.448, True)
    """
    params, n, d, chunk, init_loss, g_norm = checked_point(
        rng_key, loss_fn, params, data, eval_batch_size
    )
    data = jax.tree.map(jnp.asarray, data)
    if result is not None:
        nbeta = result.nbeta if nbeta is None else nbeta
        localization = result.localization
        step_size = result.step_size if step_size is None else step_size
        batch_size = (result.batch_size or n) if batch_size is None else batch_size
    nbeta = check.check_real(
        "nbeta", default_nbeta(n) if nbeta is None else nbeta, allow_zero=False
    )
    gamma = check.check_real("localization", localization, allow_zero=True)
    m = min(check.check_count("num_matvecs", num_matvecs, minimum=2), d)
    top = max(check.check_count("max_matvecs", max_matvecs, minimum=2), m)
    probe_steps = check.check_count("probe_steps", probe_steps, minimum=0)
    verify_steps = check.check_count("verify_steps", verify_steps, minimum=1)
    spec_key, grad_key, chain_key = jax.random.split(rng_key, 3)
    rows = None if hvp_rows is None else check.check_count("hvp_rows", hvp_rows, minimum=1)
    curv = resolve_smallest(
        spec_key,
        loss_fn,
        params,
        data,
        nbeta=nbeta,
        localization=gamma,
        k=check.check_count("k", k, minimum=1),
        num_matvecs=m,
        max_matvecs=top,
        num_probes=check.check_count("num_probes", num_probes, minimum=1),
        chunk=chunk,
        hvp_rows=rows,
    )
    spec, tol, decided, cert = curv.spectrum, curv.resolution, curv.decided, curv.certificate
    spent = curv.num_matvecs
    m_grad = quadratic.gradient_matvecs(spec, cert, g_norm, nbeta, gamma, min(m, d))
    _, g_nodes, g_weights = jax.tree.map(
        np.asarray, quadratic.gradient_quadrature(grad_key, loss_fn, params, data, m_grad, chunk)
    )
    spent += m_grad

    gradient = (g_norm, g_nodes, g_weights)
    f = quadratic.curvature_facts(spec, cert, tol, gradient, nbeta, gamma, curv.rows < n)
    min_gamma, confined = f["min_gamma"], f["confined"]
    negative, material, large_gradient = f["negative"], f["material"], f["large_gradient"]
    batch = batch_size if batch_size is not None else min(n, 1024)
    eps = step_size
    if eps is None:
        eps = 0.5 / (nbeta * max(spec.max_eigenvalue, 0.0) + max(gamma, 1e-12))

    def chains(key, gamma_try, steps=probe_steps):
        # the step shrinks with a stronger localizer (stability: eps (nbeta mu + gamma) < 4)
        return probe_lower_loss(
            key,
            loss_fn,
            params,
            data,
            init_loss=init_loss,
            nbeta=nbeta,
            localization=gamma_try,
            step_size=min(eps, 0.5 / (nbeta * max(spec.max_eigenvalue, 0.0) + gamma_try)),
            num_steps=steps,
            batch_size=batch,
            chunk=chunk,
        )

    probe_eps = min(eps, 0.5 / (nbeta * max(spec.max_eigenvalue, 0.0) + gamma))
    run_covers = covers(result, nbeta, gamma, probe_steps, probe_eps, d)
    lower = null = None
    if decided and not material and not large_gradient:
        null = search_null_directions(
            jax.random.fold_in(chain_key, 2),
            loss_fn,
            params,
            data,
            spec,
            init_loss=init_loss,
            nbeta=nbeta,
            localization=gamma,
            tolerance=tol,
            chunk=chunk,
            rows=rows,
        )
        if run_covers:  # the run's chains went at least as far as the probe's would
            lower = lower_loss_of_run(result)
        elif probe_steps and not null.found:  # lower loss found already needs no chains
            lower = chains(chain_key, gamma)
    higher_order = (lower is not None and lower.found) or (null is not None and null.found)
    escaped = result is not None and "lower_loss_escape" in result.flags
    if escaped and not (negative and not confined) and not large_gradient and not higher_order:
        # the run's own chains are the longest probe: their escape is lower loss nearby
        spent_probe = lower.cost_in_sgld_steps if lower is not None else 0.0
        lower = lower_loss_of_run(result)._replace(found=True, cost_in_sgld_steps=spent_probe)
        higher_order = True

    kwargs, tried = {}, []
    if probe_steps and not large_gradient and ((negative and not confined) or higher_order):
        kwargs, tried = verified_localization(
            jax.random.fold_in(chain_key, 1),
            lambda key, value: chains(key, value, verify_steps),
            gamma,
            min_gamma,
            found(lower, null),
        )

    facts = {
        **f,
        "mu_max": spec.max_eigenvalue,
        "tolerance": tol,
        "cert": cert,
        "nbeta": nbeta,
        "gamma": gamma,
        "g_norm": g_norm,
        "lower": lower,
        "null": null,
        "found": found(lower, null),
        "spec": spec,
        "spent": spent,
        "max_matvecs": top,
        "kwargs": kwargs,
        "tried": tried,
        "d": d,
    }
    flags = [
        flag
        for flag, on in (
            ("negative_curvature", material),
            ("unconfined", negative and not confined),
            ("undecided", not decided),
            ("higher_order_saddle", higher_order),
            ("large_gradient", large_gradient),
        )
        if on
    ]
    evidence = {f: evidence_for(f, facts) for f in flags}
    if result is not None:
        for flag in result.flags:
            if flag not in evidence:
                flags.append(flag)
                evidence[flag] = result.evidence[flag]
        predicted = f["lam_quad"] + f["grad_bias"]
        explained = confined_explanation(result, confined and negative, predicted)
        if explained is not None:
            flags.append("confined_saddle")
            evidence["confined_saddle"] = explained
    verdict, remedy = verdict_and_remedy(flags, facts, probe_steps > 0)

    per_matvec = 2.0 * n / batch  # a full-data HVP in minibatch steps
    parts = {
        "lanczos": curv.full_matvecs * per_matvec,
        "gradient": m_grad * per_matvec,
        "null_search": (null.full_losses * per_matvec / 4) if null else 0.0,  # ~1/4 HVP
        "lower_loss_probe": lower.cost_in_sgld_steps if lower else 0.0,
        "remedy_checks": float(sum(t["cost"] for t in tried)),
    }
    return Diagnosis(
        flags=tuple(flags),
        evidence=evidence,
        verdict=verdict,
        remedy=remedy,
        estimate_kwargs=kwargs,
        spectrum=spec,
        certificate=cert,
        decided=decided,
        lower_loss=lower,
        null_search=null,
        grad_norm=g_norm,
        gradient_bias=f["grad_bias"],
        lambda_quadratic=f["lam_quad"],
        negative_contribution=f["neg_part"],
        negative_contribution_stderr=f["neg_se"],
        min_localization=min_gamma,
        negative_directions=f["count"],
        tolerance=tol,
        nbeta=nbeta,
        localization=gamma,
        hvp_rows=curv.rows,
        num_matvecs=spent,
        cost_in_sgld_steps=sum(parts.values()),
        cost_parts=parts,
    )
