"""Saddle diagnostics as a confusion table: llc.diagnose on points with known answers.

Each case is a point whose truth is derived by hand (closed-form Hessians, deep linear
networks whose critical points are known), labelled with one of the classes

* ``minimum``: a local minimum (flat directions allowed);
* ``unconfined``: a strict saddle that the localization does not hold
  (``nbeta |mu_min| >= gamma``);
* ``confined-material``: a strict saddle held by the localization whose negative
  directions move the estimate materially (more than 5% of the rest);
* ``confined-immaterial``: held, and the negative directions do not matter;
* ``higher-order``: gradient 0, no negative curvature at the resolution, lower loss
  nearby (the loss is cubic or quartic there);
* ``not-critical``: the gradient is not zero.

For each: the verdict of :func:`llc.diagnose` mapped to a class (its flags, see
:func:`predicted_class`) against the truth; the extreme Hessian eigenvalues against the
dense eigensolver in float64 (``llc.hessian.dense_hessian_eigenvalues``; for d = 2,000
the known diagonal; where diagnose kept the answer of its 512-row subset, ``mu_max`` is
the subset Hessian's and ``mu_min`` the full-data certificate's); the Hessian-vector
products spent; the cost of the diagnosis in
SGLD steps and its ratio to the default ``estimate_llc`` call on the same problem, run
there (:func:`default_run`: its calibration grid, burn-in with the spread, and draws, in
chain-steps at the case's batch; its curvature and noise probes at w*, and any grid or spread
attempt it discarded, are not counted, so the ratio is an upper bound), and the two wall
times: the default call and the standalone diagnosis cold (``jax.clear_caches()`` first:
every program compiled anew, as in a fresh process), the diagnosis of the call's result
right after it, as a user runs it;
and, at every saddle, whether following ``diagnosis.estimate_kwargs`` gives a finite,
non-negative estimate without a ``lower_loss_escape`` flag (a fixed run of 4 chains x
(1,000 + 1,000) steps at step 0.1 / (nbeta mu_max + gamma)), beside the quadratic
model's expectation at that localization from the exact spectrum ("quad": negative at a
confined saddle whose negative directions outweigh the rest, NaN where the localization
does not hold the exact Hessian, marked <nβ|μ|).

Outputs: a table with the totals (verdicts right, flags on minima, median cost ratio),
``results/saddle/saddle.json`` and ``results/saddle/saddle_traces.png`` (the remedy
runs' loss traces).

Usage: ``python benchmarks/saddle.py``; ``--quick``: three cases (a minimum, a strict
and a higher-order saddle), remedy runs of 2 chains x 400 steps (the default call still
runs in full on each).
"""

import argparse
import itertools
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _common import parse_args, write

import llc
from llc import ground_truth
from llc._run_probe import chain_steps
from llc.hessian import dense_hessian_eigenvalues

N = 10_000
DENSE_MAX_D = 500  # above this, the known diagonal is the reference
REMEDY = {"num_chains": 4, "num_draws": 1000, "num_burnin_steps": 1000}
REMEDY_QUICK = {"num_chains": 2, "num_draws": 200, "num_burnin_steps": 200}
QUICK_CASES = (
    "quadratic minimum, flat directions",
    "quartic toy saddle, gamma 1",
    "3-layer DLN origin",
)
CLASSES = (
    "minimum",
    "unconfined",
    "confined-material",
    "confined-immaterial",
    "higher-order",
    "not-critical",
    "undecided",
)
SADDLES = {"unconfined", "confined-material", "confined-immaterial", "higher-order"}


def quadratic(mu):
    """``0.5 sum mu_i w_i^2``: the Hessian at 0 is diag(mu), whatever the data."""
    mu = jnp.asarray(mu, jnp.float32)
    return lambda w, b: 0.5 * jnp.sum(mu * w**2)


def quartic_flat(w, b):
    """A minimum whose Hessian is zero along two directions (loss w^4 there)."""
    mu = jnp.array([1.0, 0.5, 2.0, 0.0, 0.0])
    return 0.5 * jnp.sum(mu * w**2) + jnp.sum(w[3:] ** 4)


def quartic_toy(w, b):
    """slt-reference.md 4.2: diag(1, 2, 0.5, 0, -1) plus w^4 / 4."""
    mu = jnp.array([1.0, 2.0, 0.5, 0.0, -1.0])
    return 0.5 * jnp.sum(mu * w**2) + 0.25 * jnp.sum(w**4)


def rank_one_point():
    """A rank-1 critical point of a 3-layer DLN (tests/test_saddles.py).

    Whitened inputs, a noise-free full-rank teacher; w* factorises its best rank-1
    approximation with every layer of rank 1: gradient 0, Hessian positive
    semi-definite, lower loss only by moving three layers together.
    """
    rng = np.random.default_rng(1)
    widths, n = (4, 3, 3, 4), 4000
    x = rng.standard_normal((n, 4))
    x = x @ np.linalg.inv(np.linalg.cholesky(x.T @ x / n)).T
    teacher = rng.standard_normal((4, 4))
    u, s, vt = np.linalg.svd(teacher)
    mats = [np.zeros((a, b)) for a, b in itertools.pairwise(widths)]
    c = s[0] ** (1 / 3)
    mats[0][:, 0], mats[1][0, 0], mats[2][0, :] = c * u[:, 0], c, c * vt[0]
    params = tuple(jnp.asarray(w, jnp.float32) for w in mats)
    data = (jnp.asarray(x, jnp.float32), jnp.asarray(x @ teacher, jnp.float32))

    def loss_fn(w, b):
        return jnp.mean(jnp.sum((b[0] @ w[0] @ w[1] @ w[2] - b[1]) ** 2, axis=1))

    return loss_fn, params, data


def case(name, truth, loss_fn, params, data, *, nbeta=None, gamma=1.0, batch=None, diag=None):
    """One row of the suite: ``diag`` is the known Hessian spectrum (else dense)."""
    n = jax.tree.leaves(data)[0].shape[0]
    return {
        "case": name,
        "truth": truth,
        "loss_fn": loss_fn,
        "params": params,
        "data": data,
        "nbeta": llc.default_nbeta(n) if nbeta is None else float(nbeta),
        "gamma": float(gamma),
        "batch": batch,
        "diag": None if diag is None else np.asarray(diag, np.float64),
    }


def cases():
    dummy = jnp.zeros((N, 1))
    mu = np.r_[np.ones(5), 0.5 * np.ones(3), np.zeros(4)]
    yield case(
        "quadratic minimum, flat directions",
        "minimum",
        quadratic(mu),
        jnp.zeros(12),
        dummy,
        diag=mu,
    )
    yield case(
        "quartic minimum, zero Hessian directions",
        "minimum",
        quartic_flat,
        jnp.zeros(5),
        dummy,
        diag=[1.0, 0.5, 2.0, 0.0, 0.0],
    )
    # d = 2000, bulk in [0, 1], one eigenvalue -1e-3: nbeta |mu_min| = 10 > gamma = 1
    mu = np.r_[np.linspace(0.0, 1.0, 1999), -1e-3]
    yield case(
        "tiny negative in a large bulk",
        "unconfined",
        quadratic(mu),
        jnp.zeros(2000),
        dummy,
        nbeta=1e4,
        diag=mu,
    )
    # a converged -5e-6 against mu_max = 1; nbeta = 1e6 makes nbeta |mu_min| = 5 > 1
    mu = np.r_[np.ones(20), 0.5 * np.ones(10), -5e-6]
    yield case(
        "tiny eigenvalue decisive by nbeta",
        "unconfined",
        quadratic(mu),
        jnp.zeros(31),
        dummy,
        nbeta=1e6,
        diag=mu,
    )
    # 200 eigenvalues -1e-5 beside 300 at 1, nbeta = 1e3: each nbeta |mu| = 0.01 < gamma;
    # together 0.5 * 200 * (-0.01 / 0.99) = -1.01 against +150
    mu = np.r_[np.ones(300), -1e-5 * np.ones(200)]
    yield case(
        "many tiny confined negatives",
        "confined-immaterial",
        quadratic(mu),
        jnp.zeros(500),
        dummy,
        nbeta=1e3,
        diag=mu,
    )
    # nbeta |mu_min| = 0.54 < gamma = 1: held, but -0.59 against +4.5 (13%)
    mu = np.r_[np.ones(9), -5e-4]
    yield case(
        "confined material saddle",
        "confined-material",
        quadratic(mu),
        jnp.zeros(10),
        dummy,
        diag=mu,
    )
    toy = jnp.zeros((1000, 1))
    toy_mu = [1.0, 2.0, 0.5, 0.0, -1.0]
    yield case(
        "quartic toy saddle, gamma 1", "unconfined", quartic_toy, jnp.zeros(5), toy, diag=toy_mu
    )
    # gamma = 1000 > nbeta = 144.8 holds it; the negative direction gives -0.085 of 0.12
    yield case(
        "quartic toy saddle, gamma 1000",
        "confined-material",
        quartic_toy,
        jnp.zeros(5),
        toy,
        gamma=1000.0,
        diag=toy_mu,
    )
    dln = ground_truth.make_dln_problem([5, 4, 3], seed=0, num_data=N, prop_rank_reduce=0.0)
    yield case("DLN teacher", "minimum", dln.loss_fn, dln.params, dln.data, batch=500)
    mini = ground_truth.make_dln_problem(
        [5, 4, 4, 3], seed=0, num_data=N, prop_rank_reduce=1.0, point="minimal"
    )
    yield case(
        f"3-layer DLN minimal point (rank {mini.rank})",
        "minimum",
        mini.loss_fn,
        mini.params,
        mini.data,
        batch=500,
    )
    origin = tuple(jnp.zeros_like(w) for w in dln.params)
    yield case("2-layer DLN origin", "unconfined", dln.loss_fn, origin, dln.data, batch=500)
    deep = ground_truth.make_dln_problem([4, 3, 3, 4], seed=0, num_data=2000, prop_rank_reduce=0.0)
    origin = tuple(jnp.zeros_like(w) for w in deep.params)
    yield case("3-layer DLN origin", "higher-order", deep.loss_fn, origin, deep.data, batch=500)
    loss_fn, params, data = rank_one_point()
    yield case(
        "3-layer DLN rank-1 critical point", "higher-order", loss_fn, params, data, batch=500
    )
    init = tuple(
        0.3 * jax.random.normal(jax.random.key(i), w.shape) for i, w in enumerate(dln.params)
    )
    yield case("DLN random init", "not-critical", dln.loss_fn, init, dln.data, batch=500)


def predicted_class(rep) -> str:
    """The class a diagnosis says, from its flags (the first that applies)."""
    flags = set(rep.flags)
    if "large_gradient" in flags:
        return "not-critical"
    if "undecided" in flags:
        return "undecided"
    if "unconfined" in flags:
        return "unconfined"
    if "higher_order_saddle" in flags:
        return "higher-order"
    if "negative_curvature" in flags:
        return "confined-material"
    # no flag: a minimum, unless negative curvature was found and called immaterial
    immaterial = rep.certificate is not None or "immaterial" in rep.verdict
    return "confined-immaterial" if immaterial else "minimum"


def reference_spectrum(c) -> tuple[np.ndarray, str]:
    """Every eigenvalue of the Hessian at w*, exactly, ascending, and where it came from."""
    if c["diag"] is not None:
        return np.sort(c["diag"]), "known diagonal"
    with jax.enable_x64(True):
        to64 = lambda t: jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64), t)  # noqa: E731
        ev = dense_hessian_eigenvalues(c["loss_fn"], to64(c["params"]), to64(c["data"]))
    return np.asarray(ev, np.float64), "dense float64"


def quadratic_expectation(eigs, nbeta, gamma) -> float:
    """E[lambda_hat] of the quadratic model, ``sum 0.5 x / (x + gamma)``, ``x = nbeta mu``.

    NaN when gamma does not confine every direction. At a confined saddle it can be
    negative: that is the saddle's expected estimate, not an escape.
    """
    x = nbeta * eigs
    if np.any(x + gamma <= 0):
        return math.nan
    return float(np.sum(0.5 * x / (x + gamma)))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def remedy_run(c, rep, mu_max, eigs, run):
    """A short ``estimate_llc`` run following ``rep.estimate_kwargs``."""
    kwargs = dict(rep.estimate_kwargs)
    gamma = kwargs.get("localization", c["gamma"])
    step = 0.1 / (c["nbeta"] * max(mu_max, 0.0) + gamma)
    t0 = time.perf_counter()
    res = quiet(
        llc.estimate_llc,
        jax.random.key(1),
        c["loss_fn"],
        c["params"],
        c["data"],
        step_size=step,
        nbeta=c["nbeta"],
        **{"localization": c["gamma"], **kwargs},
        batch_size=c["batch"],
        progress_bar=False,
        **run,
    )
    ok = bool(np.isfinite(res.llc_mean) and res.llc_mean >= 0)
    ok = ok and "lower_loss_escape" not in res.flags
    # the quadratic model's own test: does gamma exceed nbeta |mu_min| of the exact Hessian?
    threshold = c["nbeta"] * max(-eigs[0], 0.0)
    drops = c["nbeta"] * (np.asarray(res.loss_trace) - res.init_loss)
    return {
        "estimate_kwargs": kwargs,
        "step_size": step,
        "llc_mean": float(res.llc_mean),
        "llc_std": float(res.llc_std),
        "flags": list(res.flags),
        "ok": ok,
        "llc_stderr": float(res.llc_stderr),
        # "ok" but for the sign, which 2 standard errors cover (a confined estimate near 0)
        "non_negative_within_2_stderr": bool(
            np.isfinite(res.llc_mean)
            and res.llc_mean + 2 * res.llc_stderr >= 0
            and "lower_loss_escape" not in res.flags
        ),
        "exact_min_localization": threshold,
        "quadratic_expectation": quadratic_expectation(eigs, c["nbeta"], gamma),
        "confines_exact_hessian": bool(gamma > threshold) if threshold > 0 else None,
        "time_s": time.perf_counter() - t0,
        "trace": drops.mean(axis=0)[:: max(1, drops.shape[1] // 200)].tolist(),
    }


def default_run(c):
    """The default ``estimate_llc`` call on the case: its result and what it cost.

    The cost is the denominator of the diagnosis's cost ratios.
    Only the case's own nbeta, localization and batch are passed; everything else is
    estimate_llc's default (``step_size="auto"``, 4 chains, its burn-in and draws).
    ``chain_steps`` counts the calibration grid's runs and the chains' burn-in (the spread
    included) and draws; its curvature and noise probes at w* are left out.
    """
    jax.clear_caches()  # cold, as in a fresh process: cases share loss functions
    t0 = time.perf_counter()
    res = quiet(
        llc.estimate_llc,
        jax.random.key(3),
        c["loss_fn"],
        c["params"],
        c["data"],
        nbeta=c["nbeta"],
        localization=c["gamma"],
        batch_size=c["batch"],
        progress_bar=False,
    )
    wall = time.perf_counter() - t0
    grid = [r for row in res.calibration.results for r in row] if res.calibration else []
    return res, {
        "chain_steps": sum(r.num_chains * chain_steps(r) for r in [res, *grid]),
        "calibration_chain_steps": sum(r.num_chains * chain_steps(r) for r in grid),
        "burnin_steps": res.num_burnin_steps,
        "spread_steps": res.spread_steps,
        "num_draws": res.num_draws,
        "llc_mean": float(res.llc_mean),
        "flags": list(res.flags),
        "time_s": wall,
    }


def after_run(c, res, default):
    """``diagnose(result=res)`` after the default ``estimate_llc`` call ``res``.

    The workflow of a user who has a result: its chains are the lower-loss probe when they
    went as far as diagnose's own would (:func:`llc._run_probe.covers`). The verdict's cost
    is everything but the remedy checks.
    """
    args = (c["loss_fn"], c["params"], c["data"])
    t0 = time.perf_counter()  # right after the call: what it compiled is there, as for a user
    rep = quiet(llc.diagnose, jax.random.key(0), *args, result=res)
    t_diag = time.perf_counter() - t0
    pred = predicted_class(rep)
    verdict_cost = rep.cost_in_sgld_steps - rep.cost_parts["remedy_checks"]
    return {
        "predicted": pred,
        "right": pred == c["truth"],
        "flags": list(rep.flags),
        "run_flags": list(res.flags),
        "lower_loss_source": rep.lower_loss.source if rep.lower_loss else None,
        "cost_parts": dict(rep.cost_parts),
        "verdict_cost_ratio": verdict_cost / default["chain_steps"],
        "diagnosis_time_s": t_diag,
        "time_ratio": t_diag / default["time_s"],
    }


def run_case(c, run):
    n = jax.tree.leaves(c["data"])[0].shape[0]
    batch = c["batch"] or n
    default_result, default = default_run(c)
    after = after_run(c, default_result, default)
    jax.clear_caches()  # the standalone diagnosis cold
    t0 = time.perf_counter()
    rep = quiet(
        llc.diagnose,
        jax.random.key(0),
        c["loss_fn"],
        c["params"],
        c["data"],
        nbeta=c["nbeta"],
        localization=c["gamma"],
        batch_size=batch,
    )
    t_diag = time.perf_counter() - t0
    spec, cert = rep.spectrum, rep.certificate
    mu_min = spec.min_eigenvalue
    if cert:  # a subset's Ritz value bounds nothing: then the full-data certificate alone
        mu_min = cert.rayleigh_quotient if rep.hvp_rows < n else min(mu_min, cert.rayleigh_quotient)
    eigs, source = reference_spectrum(c)
    ref_min, ref_max = float(eigs[0]), float(eigs[-1])
    pred = predicted_class(rep)
    row = {
        "case": c["case"],
        "truth": c["truth"],
        "predicted": pred,
        "right": pred == c["truth"],
        "flags": list(rep.flags),
        "verdict": rep.verdict,
        "d": spec.num_params,
        "n": n,
        "batch_size": c["batch"],
        "nbeta": c["nbeta"],
        "localization": c["gamma"],
        "grad_norm": rep.grad_norm,
        "mu_min": mu_min,
        "mu_max": spec.max_eigenvalue,
        "hvp_rows": rep.hvp_rows,
        "certificate_rayleigh_quotient": cert.rayleigh_quotient if cert else None,
        "reference_mu_min": ref_min,
        "reference_mu_max": ref_max,
        "reference": source,
        "error_mu_min": abs(mu_min - ref_min),
        "error_mu_max": abs(spec.max_eigenvalue - ref_max),
        "resolution": rep.tolerance,
        "decided": rep.decided,
        "negative_contribution": rep.negative_contribution,
        "negative_contribution_stderr": rep.negative_contribution_stderr,
        "lower_loss_drop": rep.lower_loss.loss_drop if rep.lower_loss else None,
        "null_search_drop": (
            rep.null_search.loss_drop
            if rep.null_search is not None and rep.null_search.num_directions
            else None
        ),
        "hvps": rep.num_matvecs,
        "cost_in_sgld_steps": rep.cost_in_sgld_steps,
        "default_run": default,
        "cost_ratio": rep.cost_in_sgld_steps / default["chain_steps"],
        "cost_parts": dict(rep.cost_parts),
        # the verdict alone: everything but verifying the remedy's localization
        "verdict_cost_ratio": (rep.cost_in_sgld_steps - rep.cost_parts["remedy_checks"])
        / default["chain_steps"],
        "diagnosis_time_s": t_diag,
        "time_ratio": t_diag / default["time_s"],
        "estimate_kwargs": dict(rep.estimate_kwargs),
        "remedy": None,
    }
    if c["truth"] in SADDLES and "no localization up to" in rep.remedy:
        row["remedy"] = {"refused": True, "ok": False, "remedy_text": rep.remedy}
    elif c["truth"] in SADDLES:
        row["remedy"] = remedy_run(c, rep, max(spec.max_eigenvalue, ref_max), eigs, run)
    row["after_run"] = after
    return row


def plot(rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        rem = r["remedy"]
        if rem is None or rem.get("refused"):
            continue
        gamma = rem["estimate_kwargs"].get("localization", r["localization"])
        ax.plot(rem["trace"], "-" if rem["ok"] else "--", label=f"{r['case']} (γ = {gamma:.3g})")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(
        xlabel="draw (subsampled)",
        ylabel="nβ (L − L(w*)), mean over chains",
        title="Saddles sampled as diagnose's estimate_kwargs say (dashed: failed)",
        yscale="symlog",
    )
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "saddle_traces.png", dpi=120)
    plt.close(fig)


def fmt(x, spec=".3g"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args, out = parse_args(
        parser,
        "saddle",
        quick=f"the cases {', '.join(QUICK_CASES)}; remedy runs of 2 chains x 400 steps",
    )
    run = REMEDY_QUICK if args.quick else REMEDY
    rows = []
    print(
        f"{'case':42} {'truth':>19} {'predicted':>19} {'ok':>3} {'mu_min':>10} {'ref':>10} "
        f"{'mu_max':>9} {'ref':>9} {'HVPs':>5} {'steps':>7} {'ratio':>6} {'verdict':>7} "
        f"{'remedy':>42}"
    )
    t_start = time.perf_counter()
    for c in cases():
        if args.quick and c["case"] not in QUICK_CASES:
            continue
        r = run_case(c, run)
        rows.append(r)
        rem = r["remedy"]
        remedy = "-"
        if rem is not None and rem.get("refused"):
            remedy = "refused (no localization verified)"
        elif rem is not None:
            gamma = rem["estimate_kwargs"].get("localization", r["localization"])
            held = "" if rem["confines_exact_hessian"] is not False else "<nβ|μ|"
            remedy = (
                f"{'ok' if rem['ok'] else 'FAIL'} γ={gamma:.3g}{held} λ̂={rem['llc_mean']:.3g}"
                f" (quad {fmt(rem['quadratic_expectation'])})"
            )
        print(
            f"{r['case']:42} {r['truth']:>19} {r['predicted']:>19} "
            f"{'yes' if r['right'] else 'NO':>3} {r['mu_min']:>10.3g} "
            f"{r['reference_mu_min']:>10.3g} {r['mu_max']:>9.3g} {r['reference_mu_max']:>9.3g} "
            f"{r['hvps']:>5} {r['cost_in_sgld_steps']:>7.0f} {r['cost_ratio']:>6.1%} "
            f"{r['verdict_cost_ratio']:>7.1%} {remedy:>42}",
            flush=True,
        )
        a = r["after_run"]
        print(
            f"{'  after a run: diagnose(result=r)':42} {'':>19} {a['predicted']:>19} "
            f"{'yes' if a['right'] else 'NO':>3} probe: {a['lower_loss_source'] or '-':>5}, "
            f"verdict {a['verdict_cost_ratio']:.1%} of the default call "
            f"({r['default_run']['chain_steps']} chain-steps, {r['default_run']['time_s']:.1f} s; "
            f"wall {a['time_ratio']:.1%})",
            flush=True,
        )
    print("\nflags and verdicts:")
    for r in rows:
        print(f"  {r['case']}: [{', '.join(r['flags']) or 'no flags'}] {r['verdict']}")
    right = sum(r["right"] for r in rows)
    minima = [r for r in rows if r["truth"] == "minimum"]
    flagged_minima = [r["case"] for r in minima if r["flags"]]
    ratios = [r["cost_ratio"] for r in rows]
    verdict_ratios = [r["verdict_cost_ratio"] for r in rows]
    parts = {k: float(np.median([r["cost_parts"][k] for r in rows])) for k in rows[0]["cost_parts"]}
    refused = [r["case"] for r in rows if r["remedy"] is not None and r["remedy"].get("refused")]
    remedies = [r for r in rows if r["remedy"] is not None and not r["remedy"].get("refused")]
    after = [r["after_run"] for r in rows]
    after_ratios = [a["verdict_cost_ratio"] for a in after]
    remedy_ok = sum(r["remedy"]["ok"] for r in remedies)
    within = sum(r["remedy"]["non_negative_within_2_stderr"] for r in remedies)
    short = [r["case"] for r in remedies if r["remedy"]["confines_exact_hessian"] is False]
    confusion = {
        t: {p: sum(r["truth"] == t and r["predicted"] == p for r in rows) for p in CLASSES}
        for t in CLASSES
        if any(r["truth"] == t for r in rows)
    }
    totals = {
        "cases": len(rows),
        "right": right,
        "wrong": len(rows) - right,
        "wrong_cases": [r["case"] for r in rows if not r["right"]],
        "minima": len(minima),
        "flags_on_minima": len(flagged_minima),
        "flagged_minima": flagged_minima,
        "median_cost_ratio": float(np.median(ratios)),
        "max_cost_ratio": float(np.max(ratios)),
        "cases_over_5_percent": sum(x > 0.05 for x in ratios),
        "median_verdict_cost_ratio": float(np.median(verdict_ratios)),
        "max_verdict_cost_ratio": float(np.max(verdict_ratios)),
        "verdicts_over_5_percent": sum(x > 0.05 for x in verdict_ratios),
        "median_cost_parts_in_sgld_steps": parts,
        "after_run_right": sum(a["right"] for a in after),
        "after_run_wrong_cases": [r["case"] for r in rows if not r["after_run"]["right"]],
        "after_run_median_verdict_cost_ratio": float(np.median(after_ratios)),
        "after_run_max_verdict_cost_ratio": float(np.max(after_ratios)),
        "after_run_verdicts_over_5_percent": sum(x > 0.05 for x in after_ratios),
        "after_run_median_time_ratio": float(np.median([a["time_ratio"] for a in after])),
        "median_time_ratio": float(np.median([r["time_ratio"] for r in rows])),
        "median_default_chain_steps": float(
            np.median([r["default_run"]["chain_steps"] for r in rows])
        ),
        "remedies_refused": refused,
        "remedies_ok": remedy_ok,
        "remedies_run": len(remedies),
        "remedies_ok_within_2_stderr": within,
        "remedies_below_exact_threshold": short,
        "error_mu_min_max": max(r["error_mu_min"] for r in rows),
        "error_mu_max_max": max(r["error_mu_max"] for r in rows),
        "time_s": time.perf_counter() - t_start,
    }
    print(
        f"\nverdicts right: {right} of {len(rows)}"
        + (f" (wrong: {', '.join(totals['wrong_cases'])})" if totals["wrong_cases"] else "")
        + f"\nflags on minima: {len(flagged_minima)} of {len(minima)} (goal 0)"
        + "\ncost of a diagnosis against the default estimate_llc call on the same problem "
        f"(its chain-steps, median {totals['median_default_chain_steps']:.0f}): median "
        f"{totals['median_cost_ratio']:.1%}, max "
        f"{totals['max_cost_ratio']:.1%}, {totals['cases_over_5_percent']} of {len(rows)} "
        "cases above 5% (goal <= 5%); the verdict alone (no remedy checks): median "
        f"{totals['median_verdict_cost_ratio']:.1%}, max {totals['max_verdict_cost_ratio']:.1%}; "
        "median parts in SGLD steps: "
        + ", ".join(f"{k} {v:.0f}" for k, v in parts.items())
        + f"\nafter a run (diagnose(result=r), the run's chains as the probe where they cover "
        f"it): verdicts right {totals['after_run_right']} of {len(rows)}, verdict cost median "
        f"{totals['after_run_median_verdict_cost_ratio']:.1%}, max "
        f"{totals['after_run_max_verdict_cost_ratio']:.1%} of the run, "
        f"{totals['after_run_verdicts_over_5_percent']} of {len(rows)} above 5%; wall time "
        f"median {totals['after_run_median_time_ratio']:.1%} of the default call's"
        + f"\nremedies (estimate_kwargs followed): {remedy_ok} of {len(remedies)} gave a finite, "
        f"non-negative estimate without lower_loss_escape ({within} non-negative within 2 "
        "standard errors)"
        + (f"; refused (none verified, said so): {', '.join(refused)}" if refused else "")
        + (
            f"; localization below the exact Hessian's nbeta |mu_min| (<nβ|μ|): {', '.join(short)}"
            if short
            else ""
        )
        + f"\nlargest error against the reference: mu_min {totals['error_mu_min_max']:.2g}, "
        f"mu_max {totals['error_mu_max_max']:.2g}"
    )
    print("\nconfusion (rows: truth, columns: predicted):")
    cols = [p for p in CLASSES if any(r["predicted"] == p for r in rows) or p in confusion]
    print(f"  {'':20}" + "".join(f"{p:>20}" for p in cols))
    for t, counts in confusion.items():
        print(f"  {t:20}" + "".join(f"{counts[p]:>20}" for p in cols))
    payload = {
        "totals": totals,
        "confusion": confusion,
        "remedy_run": run,
        "cases": rows,
        **({"quick": True} if args.quick else {}),
    }
    path = write(out, "saddle", payload)
    plot(rows, out)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
