"""Saddle-point diagnostics on cases with known answers: what llc flags, and at what cost.

Cases: quadratic minimum and saddles (slt-reference.md 4.1, exact), the quartic toy
saddle of section 4.2 over its localization sweep, and deep linear networks at the
teacher (a minimum), at the origin (a saddle) and at a random initialisation (not a
critical point). For each: the diagnosis (smallest and largest Hessian eigenvalue,
nbeta * |mu_min| against gamma, flags, verdict), the LLC estimate with its flags, and
the time. The step size of every run comes from the diagnosed curvature:
step = 0.1 / (nbeta * mu_max + gamma).

Outputs: a table, ``results/saddle/saddle.json`` and ``results/saddle/saddle_traces.png``
(loss traces of confined and escaping chains). The cost of a diagnosis is reported in
Hessian-vector products and in SGLD steps.

Usage: ``python benchmarks/saddle.py``; ``--quick``: one case of each kind (quadratic,
quartic toy at two localizations, DLN), 2 chains x 400 steps.
"""

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _common import parse_args, write

import llc
from llc import ground_truth

N_QUAD = 10_000
FULL = {"num_chains": 4, "num_draws": 2000, "num_burnin_steps": 2000}
QUICK = {"num_chains": 2, "num_draws": 200, "num_burnin_steps": 200}
QUICK_CASES = (
    "quadratic saddle, unconfined",
    "quartic toy (4.2), gamma 1000",
    "quartic toy (4.2), gamma 10",
    "DLN origin (saddle)",
)


def quadratic(mu):
    mu = jnp.asarray(mu, jnp.float32)
    return lambda w, b: 0.5 * jnp.sum(mu * w**2)


def quartic_toy(w, b):
    mu = jnp.array([1.0, 2.0, 0.5, 0.0, -1.0])
    return 0.5 * jnp.sum(mu * w**2) + 0.25 * jnp.sum(w**4)


def cases():
    dummy = jnp.zeros((N_QUAD, 1))
    yield "quadratic minimum", quadratic(np.ones(10)), jnp.zeros(10), dummy, 1.0, None, {}
    yield (
        "quadratic saddle, confined",
        quadratic(np.r_[np.ones(9), -5e-4]),
        jnp.zeros(10),
        dummy,
        1.0,
        None,
        {},
    )
    yield (
        "quadratic saddle, unconfined",
        quadratic(np.r_[np.ones(9), -2e-3]),
        jnp.zeros(10),
        dummy,
        1.0,
        None,
        {},
    )
    toy_data = jnp.zeros((1000, 1))
    for gamma in (5000.0, 1000.0, 300.0, 160.0, 100.0, 10.0):
        yield (
            f"quartic toy (4.2), gamma {gamma:g}",
            quartic_toy,
            jnp.zeros(5),
            toy_data,
            gamma,
            None,
            {},
        )
    dln = ground_truth.make_dln_problem([5, 4, 3], seed=0, num_data=10_000, prop_rank_reduce=0.0)
    yield "DLN teacher (minimum)", dln.loss_fn, dln.params, dln.data, 1.0, 500, {}
    origin = tuple(jnp.zeros_like(w) for w in dln.params)
    yield "DLN origin (saddle)", dln.loss_fn, origin, dln.data, 1.0, 500, {}
    init = tuple(
        0.3 * jax.random.normal(jax.random.key(i), w.shape) for i, w in enumerate(dln.params)
    )
    yield "DLN random init (not critical)", dln.loss_fn, init, dln.data, 1.0, 500, {}


def run_case(name, loss_fn, params, data, gamma, batch, extra, run=FULL):
    n = jax.tree.leaves(data)[0].shape[0]
    nbeta = llc.default_nbeta(n)
    t0 = time.perf_counter()
    rep = llc.diagnose(
        jax.random.key(0), loss_fn, params, data, nbeta=nbeta, localization=gamma, num_matvecs=40
    )
    t_diag = time.perf_counter() - t0
    mu = rep.spectrum
    step = 0.1 / (nbeta * max(abs(mu.max_eigenvalue), abs(mu.min_eigenvalue)) + gamma)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = llc.estimate_llc(
            jax.random.key(1),
            loss_fn,
            params,
            data,
            step_size=step,
            localization=gamma,
            nbeta=nbeta,
            batch_size=batch,
            progress_bar=False,
            **run,
            **extra,
        )
    t_est = time.perf_counter() - t0
    both = llc.diagnose(
        jax.random.key(0),
        loss_fn,
        params,
        data,
        nbeta=nbeta,
        localization=gamma,
        num_matvecs=40,
        result=res,
    )
    drops = nbeta * (res.loss_trace - res.init_loss)
    return {
        "case": name,
        "d": res.num_params,
        "mu_min": mu.min_eigenvalue,
        "mu_max": mu.max_eigenvalue,
        "nbeta_abs_mu_min": nbeta * abs(min(mu.min_eigenvalue, 0.0)),
        "localization": gamma,
        "lambda_quadratic": rep.lambda_quadratic,
        "llc_mean": res.llc_mean,
        "llc_std": res.llc_std,
        "share_below_init": float(np.mean(drops < 0)),
        "flags": list(both.flags),
        "verdict": both.verdict,
        "step_size": step,
        "diagnosis_time_s": t_diag,
        "estimate_time_s": t_est,
        "diagnosis_hvps": rep.num_matvecs,
        "diagnosis_cost_in_sgld_steps": rep.num_matvecs * 2.0 * n / (batch or n),
        "trace": drops.mean(axis=0)[:: max(1, drops.shape[1] // 200)].tolist(),
    }


def plot(rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        if r["case"].startswith("quartic toy"):
            style = "-" if "unconfined" not in " ".join(r["flags"]) else "--"
            ax.plot(
                r["trace"],
                style,
                label=f"γ = {r['localization']:g}: {', '.join(r['flags']) or 'no flags'}",
            )
    ax.axhline(0, color="k", lw=0.8)
    ax.set(
        xlabel="draw (subsampled)",
        ylabel="nβ (L − L(w*)), mean over chains",
        title="Quartic toy saddle: confined (solid) vs escaping (dashed) chains",
        yscale="symlog",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "saddle_traces.png", dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args, out = parse_args(
        parser, "saddle", quick=f"the cases {', '.join(QUICK_CASES)}; 2 chains x 400 steps"
    )
    run = QUICK if args.quick else FULL
    rows = []
    print(
        f"{'case':36} {'mu_min':>10} {'nb|mu_min|':>10} {'gamma':>7} {'lam_quad':>9} "
        f"{'lambda_hat':>16} {'below':>6} {'time':>6}  flags"
    )
    for case in cases():
        if args.quick and case[0] not in QUICK_CASES:
            continue
        r = run_case(*case, run=run)
        rows.append(r)
        est = f"{r['llc_mean']:.3g} ± {r['llc_std']:.2g}"
        print(
            f"{r['case']:36} {r['mu_min']:>10.3g} {r['nbeta_abs_mu_min']:>10.3g} "
            f"{r['localization']:>7g} {r['lambda_quadratic']:>9.3g} {est:>16} "
            f"{r['share_below_init']:>6.2f} {r['estimate_time_s']:>5.1f}s  "
            f"{', '.join(r['flags']) or '-'}",
            flush=True,
        )
    print("\nverdicts:")
    for r in rows:
        print(f"  {r['case']}: {r['verdict']}")
    hvps = [r["diagnosis_hvps"] for r in rows]
    steps = [r["diagnosis_cost_in_sgld_steps"] for r in rows]
    print(
        f"\ncost of a diagnosis: {min(hvps)}-{max(hvps)} Hessian-vector products = "
        f"{min(steps):.0f}-{max(steps):.0f} SGLD steps of the same run; against the "
        f"{run['num_burnin_steps'] + run['num_draws']} steps per chain of each estimate"
    )
    path = write(out, "saddle", {"cases": rows, **({"quick": True} if args.quick else {})})
    plot(rows, out)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
