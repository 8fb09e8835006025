"""Samplers compared: error against exact learning coefficients, time, and an exact reference.

Part 1 (deep linear networks, the set-up of ``accuracy.py``): for each bucket and seed,
the LLC at the teacher with the Furman & Lau recipe (hand-picked step size) and with
``step_size="auto"`` for every stochastic-gradient sampler. Same chains, burn-in, draws,
batch and localization everywhere; only the sampler and the step size change. Errors are
(lambda - lambda_hat) / lambda against Aoyagi's lambda, and against the exact local LLC
where the teacher is a Morse-Bott point; runs whose LLC at the teacher provably exceeds
lambda are marked (see accuracy.py).

Part 2 (gold standard): a small deep linear network where full-batch NUTS is affordable.
NUTS samples the localized tempered posterior exactly (up to Monte Carlo error); every
stochastic-gradient sampler, full batch, must agree with it within the combined standard
error plus its own step-size bias. This separates sampler error from the finite-n gap.

Outputs: a table on stdout, ``results/samplers/samplers.json`` and
``results/samplers/samplers.png`` (the stem is ``--name``, the folder ``--out``). The JSON
is rewritten after every run with ``"complete": false`` until the sweep ends, so an
interrupted sweep keeps the runs it finished; ``--resume`` then runs only what is missing.
JAX's compilation caches are cleared after every run: a long sweep that kept every
compiled program died of an LLVM "Cannot allocate memory" after 44 runs.

Usage:
    python benchmarks/samplers.py --quick          # ~1K seed 7, one config, a short NUTS check
    python benchmarks/samplers.py --seeds 8        # 1K and 10K, 8 seeds each
    python benchmarks/samplers.py --seeds 8 --resume   # finish an interrupted sweep
"""

import argparse
import time
import warnings

import jax
import numpy as np
from _common import estimate_on, parse_args, previous_runs, write
from accuracy import QUICK_STEPS

import llc
from llc import ground_truth

CONFIGS = {
    "sgld, hand-picked (F&L)": {"sampler": "sgld"},
    "sgld, auto": {"sampler": "sgld", "step_size": "auto"},
    "rmsprop_sgld, auto": {"sampler": "rmsprop_sgld", "step_size": "auto", "frozen": True},
    "sghmc, auto": {"sampler": "sghmc", "step_size": "auto"},
    "sgnht, auto": {"sampler": "sgnht", "step_size": "auto"},
}
QUICK_CONFIG = "rmsprop_sgld, auto"  # --quick: the config with the most moving parts


def run_dln(bucket: str, seed: int, name: str, chains: int, quick: bool = False) -> dict:
    problem = ground_truth.make_dln_bucket_problem(bucket, seed)
    settings = {**ground_truth.dln_recipe(bucket), **CONFIGS[name]}
    if quick:  # exercises the code path, measures nothing
        settings.update(QUICK_STEPS)
    if settings.pop("frozen", False):  # adapt the preconditioner during burn-in only
        settings["sampler_options"] = {"adapt_steps": settings["num_burnin_steps"]}
    r, seconds = estimate_on(problem, seed, chains, settings)
    lam = float(problem.true_lambda)
    local = None if problem.local_lambda is None else float(problem.local_lambda)
    finite = r.acceptance[np.isfinite(r.acceptance)]
    return {
        "bucket": bucket,
        "seed": seed,
        "config": name,
        "d": problem.num_params,
        "true_lambda": lam,
        "local_lower_bound": float(problem.lambda_lower_bound),
        "local_lambda": local,
        "marked": float(problem.lambda_lower_bound) > lam,
        "llc_mean": r.llc_mean,
        "llc_stderr": r.llc_stderr,
        "relative_error": (lam - r.llc_mean) / lam,
        "local_relative_error": None if local is None else (local - r.llc_mean) / local,
        "step_size": r.step_size,
        "acceptance": float(np.mean(finite)) if finite.size else None,
        "rhat": r.rhat,
        "flags": list(r.flags),
        "diverged_chains": int(r.diverged.sum()),
        "time_s": seconds,
    }


def gold_standard(chains: int, quick: bool = False) -> list[dict]:
    """Full-batch NUTS against every stochastic-gradient sampler on one small target.

    ``quick``: NUTS (20 warm-up steps, 20 draws) and SGLD (1,000 burn-in steps, 100
    draws) only: the code path, not a comparison.
    """
    problem = ground_truth.make_dln_problem([4, 3, 5], seed=0, num_data=2_000)
    common = {
        "localization": 10.0,
        "num_chains": chains,
        "progress_bar": False,
    }
    nuts_steps, burnin, draws = (20, 1000, 100) if quick else (1000, 20_000, 2000)
    rows = []
    runs = {
        "nuts": {
            "sampler": "nuts",
            "step_size": None,
            "num_burnin_steps": nuts_steps,
            "num_draws": nuts_steps if quick else draws,
        }
    }
    for name in ("sgld",) if quick else ("sgld", "rmsprop_sgld", "sghmc", "sgnht"):
        runs[name] = {
            "sampler": name,
            "step_size": "auto",
            "num_burnin_steps": burnin,
            "num_steps_bw_draws": 5,
            "num_draws": draws,
        }
    if "rmsprop_sgld" in runs:
        runs["rmsprop_sgld"]["sampler_options"] = {"adapt_steps": burnin}
    for name, settings in runs.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = llc.estimate_llc(
                jax.random.key(0),
                problem.loss_fn,
                problem.params,
                problem.data,
                **common,
                **settings,
            )
        bias = None
        if r.calibration is not None:
            cal = r.calibration
            s = list(cal.step_sizes).index(r.step_size)
            bias = float(cal.predicted_bias[0, s])
        rows.append(
            {
                "sampler": name,
                "d": problem.num_params,
                "n": problem.data[0].shape[0],
                "llc_mean": r.llc_mean,
                "llc_stderr": r.llc_stderr,
                "step_size": r.step_size,
                "predicted_bias": bias,
                "rhat": r.rhat,
                "flags": list(r.flags),
                "time_s": time.perf_counter() - start,
            }
        )
    ref = rows[0]
    for row in rows:
        se = float(np.hypot(row["llc_stderr"], ref["llc_stderr"]))
        row["z_vs_nuts"] = (row["llc_mean"] - ref["llc_mean"]) / se if se > 0 else 0.0
    return rows


def summarise(rows: list[dict]) -> dict:
    out = {}
    for bucket in sorted({r["bucket"] for r in rows}):
        out[bucket] = {}
        for name in CONFIGS:
            sel = [r for r in rows if r["bucket"] == bucket and r["config"] == name]
            if not sel:
                continue
            rel = np.abs([r["relative_error"] for r in sel])
            sound = np.abs([r["relative_error"] for r in sel if not r["marked"]])
            local = np.abs(
                [r["local_relative_error"] for r in sel if r["local_relative_error"] is not None]
            )
            out[bucket][name] = {
                "runs": len(sel),
                "median_abs_relative_error": float(np.median(rel)),
                "max_abs_relative_error": float(np.max(rel)),
                "unmarked_runs": int(sound.size),
                "median_abs_relative_error_unmarked": float(np.median(sound))
                if sound.size
                else None,
                "max_abs_relative_error_unmarked": float(np.max(sound)) if sound.size else None,
                "median_abs_error_vs_exact_local": float(np.median(local)) if local.size else None,
                "diverged_chains": int(sum(r["diverged_chains"] for r in sel)),
                "not_converged_runs": int(sum("not_converged" in r["flags"] for r in sel)),
                "mean_time_s": float(np.mean([r["time_s"] for r in sel])),
            }
    return out


def plot(rows: list[dict], summary: dict, out, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = sorted({r["bucket"] for r in rows})
    names = list(CONFIGS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for i, bucket in enumerate(buckets):
        for j, config in enumerate(names):
            x = j + (i - (len(buckets) - 1) / 2) * 0.3
            for marked in (False, True):  # hollow: the LLC at the teacher provably exceeds λ
                sel = [
                    r
                    for r in rows
                    if r["bucket"] == bucket and r["config"] == config and r["marked"] == marked
                ]
                label = f"~{bucket}" + (" (marked: LLC > λ)" if marked else "")
                ax.scatter(
                    [x] * len(sel),
                    [r["relative_error"] for r in sel],
                    marker="o" if i == 0 else "s",
                    facecolors="none" if marked else f"C{i}",
                    edgecolors=f"C{i}",
                    label=label if j == 0 else None,
                    alpha=0.7,
                )
    for lim in (-0.05, 0.05):
        ax.axhline(lim, color="k", ls=":", lw=1)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names], fontsize=8)
    ax.set(ylabel="relative error (λ − λ̂)/λ", title="DLN teachers: error per run")
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    ax = axes[1]
    width = 0.8 / len(buckets)
    for i, bucket in enumerate(buckets):
        times = [summary[bucket].get(n, {}).get("mean_time_s", 0) for n in names]
        ax.bar(np.arange(len(names)) + i * width, times, width, label=f"~{bucket}")
    ax.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names], fontsize=8)
    ax.set(ylabel="seconds per run (mean, incl. calibration)", title="time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
    plt.close("all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buckets", nargs="+", default=["1K", "10K"])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--seed-list", type=int, nargs="+", default=None)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--skip-gold", action="store_true", help="skip the NUTS comparison")
    parser.add_argument("--name", default="samplers", help="stem of the output files")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs (and gold standard) already in <out>/<name>.json, run the rest",
    )
    args, out = parse_args(
        parser,
        "samplers",
        quick=f"~1K seed 7 (d = 594), 2 chains, 300 burn-in steps and 100 draws, config "
        f"{QUICK_CONFIG!r}; the NUTS check against SGLD only, with a few steps",
    )
    buckets, seeds = args.buckets, args.seed_list or list(range(args.seeds))
    if args.quick:
        buckets, seeds, args.chains, args.configs = ["1K"], [7], 2, [QUICK_CONFIG]

    settings = {"chains": args.chains}
    if args.quick:  # a quick run's file must not pass for (or resume) a measured one
        settings["quick"] = True
    previous = previous_runs(out, args.name, settings) if args.resume else {}
    rows, gold = previous.get("runs", []), previous.get("gold_standard", [])
    if previous:
        print(f"resuming {args.name}.json: {len(rows)} runs kept", flush=True)
    done = {(r["bucket"], r["seed"], r["config"]) for r in rows}
    if not gold and not args.skip_gold:
        gold = gold_standard(args.chains, args.quick)
    if gold:
        print(f"gold standard: DLN {gold[0]['d']} params, n = {gold[0]['n']}, full batch")
        for g in gold:
            print(
                f"  {g['sampler']:>13}: {g['llc_mean']:8.3f} ± {g['llc_stderr']:.3f}  "
                f"z vs NUTS {g['z_vs_nuts']:+.2f}  step {g['step_size']:.3g}  "
                f"{g['time_s']:.0f}s  {g['flags']}",
                flush=True,
            )
    print(
        f"{'bucket':>6} {'seed':>4} {'config':>24} {'lambda':>8} {'local':>8} "
        f"{'lambda_hat':>16} {'rel.err':>8} {'vs.local':>8} {'step':>9} {'rhat':>5} {'time':>6}"
    )
    for bucket in buckets:
        for seed in seeds:
            for name in args.configs:
                if (bucket, seed, name) in done:
                    continue
                r = run_dln(bucket, seed, name, args.chains, args.quick)
                jax.clear_caches()  # every run compiles anew; keeping them all exhausts LLVM
                rows.append(r)
                # written after every run, so that an interrupted sweep keeps what it measured
                partial = {"summary": summarise(rows), "runs": rows, "gold_standard": gold}
                write(out, args.name, {**partial, **settings, "complete": False})
                local = "-" if r["local_lambda"] is None else f"{r['local_lambda']:.1f}"
                vs = (
                    "-"
                    if r["local_relative_error"] is None
                    else f"{r['local_relative_error']:+.3f}"
                )
                mark = " *" if r["marked"] else ""
                print(
                    f"{bucket:>6} {seed:>4} {name:>24} {r['true_lambda']:8.1f} {local:>8} "
                    f"{r['llc_mean']:9.1f} ± {r['llc_stderr']:4.1f} {r['relative_error']:+8.3f} "
                    f"{vs:>8} {r['step_size']:9.2e} {r['rhat']:5.2f} {r['time_s']:5.0f}s{mark}",
                    flush=True,
                )
    summary = summarise(rows)
    for bucket, per in summary.items():
        print(f"~{bucket}:")
        for name, s in per.items():
            unmarked = s["median_abs_relative_error_unmarked"]
            print(
                f"  {name:>24}: |rel.err| median {s['median_abs_relative_error']:.3f} max "
                f"{s['max_abs_relative_error']:.3f}; unmarked runs ({s['unmarked_runs']}) median "
                f"{unmarked if unmarked is None else round(unmarked, 3)}; diverged "
                f"{s['diverged_chains']}; not converged {s['not_converged_runs']}; "
                f"{s['mean_time_s']:.0f}s/run"
            )
    path = write(
        out,
        args.name,
        {"summary": summary, "runs": rows, "gold_standard": gold, **settings, "complete": True},
    )
    if rows:
        plot(rows, summary, out, args.name)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
