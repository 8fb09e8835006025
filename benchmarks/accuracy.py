"""Accuracy against exact learning coefficients: the Furman & Lau deep-linear-network set-up.

For each size bucket (~1K, ~10K, ~100K parameters; ~1M behind ``--include-1m``) and seed,
draws a random bias-free DLN teacher (depth and widths from the bucket, each layer
rank-reduced with probability 0.5, inputs Uniform[-10, 10], noise-free targets, MSE),
estimates the LLC at the teacher with the library's documented recipe
(:func:`llc.ground_truth.dln_recipe`, the Furman & Lau settings), and compares with
Aoyagi's exact lambda.

Relative error is (lambda - lambda_hat) / lambda, as in Furman & Lau: positive means
underestimate. Benchmark seeds are 0, 1, ...; the recipe was chosen on seeds >= 100.

Aoyagi's lambda is the *global* coefficient of the true-parameter set. The LLC at a
random teacher can be larger: every row also reports the proven lower bound
max(lambda, rank(H)/2) on the LLC at the teacher, and the exact local LLC where the
teacher is a Morse-Bott point (``llc.ground_truth.dln_local_learning_coefficient``), with
the relative error against that exact local value. Rows whose bound exceeds lambda are
marked with *: there no correct local estimator can be within the bar of lambda.

``--point minimal`` estimates instead at the minimal factorisation of the same teacher
function (every layer of rank r, ``llc.ground_truth.dln_minimal_point``), where the LLC is
Aoyagi's lambda exactly: the benchmark whose target is right for every seed. There most
of lambda can sit in degenerate directions, which SGLD equilibrates slowly;
``--steps-factor k`` runs k times the recipe's burn-in and draws to measure that part of
the error, and ``--burnin auto`` replaces the recipe's fixed burn-in by
``num_burnin_steps="auto"`` (burn in until the chains stop rising; capped here at 64
times the draws' span, half the library's default, to fit a CPU budget).
``--sampler rmsprop_sgld --step-size auto`` runs RMSProp-SGLD (preconditioner adapted in
the burn-in, then frozen) at ``llc.calibrate``'s step, everything else the recipe's; with
``--steps-factor 4`` that is ``dln_recipe(bucket, point="minimal")``, the library's recipe at
the minimal point.
``--step-halving`` reruns each problem at half the step for twice the steps (the same
Langevin time) and reports the step-size bias that the difference measures.

Outputs: a table on stdout, ``results/accuracy/accuracy.json``,
``results/accuracy/accuracy_scatter.png`` (lambda_hat vs lambda, log-log, with the
diagonal) and ``results/accuracy/accuracy_relerr.png`` (histogram of relative errors); the
stem is ``--name`` (default from the options), the folder ``--out``. The JSON is rewritten
after every run with ``"complete": false`` until the sweep ends; ``--resume`` keeps the runs
of an interrupted sweep (with the same settings) and runs the rest.

Usage:
    python benchmarks/accuracy.py --quick           # ~1K seed 7, 2 chains, 400 steps
    python benchmarks/accuracy.py --seeds 8         # 1K, 10K, 100K
    python benchmarks/accuracy.py --include-1m      # adds the ~1M bucket (hours on CPU)
    python benchmarks/accuracy.py --point minimal --buckets 1K 10K   # exact targets
    python benchmarks/accuracy.py --buckets 100K --name accuracy_100k --resume   # finish one
"""

import argparse

import jax
import numpy as np
from _common import estimate_on, parse_args, previous_runs, problem_row, write

from llc import ground_truth

PUBLISHED = {
    "median_relative_error": 0.18,
    "share_beyond_0.37": 0.25,
    "source": "Furman & Lau (arXiv 2308.12108 v2), read off the authors' figure; "
    "slt-reference.md section 5.1",
}
BUCKET_ORDER = list(ground_truth.DLN_BUCKETS)
AUTO_BURNIN_CAP = 64  # --burnin auto: at most this many draw spans of burn-in (CPU budget)
QUICK_STEPS = {"num_burnin_steps": 300, "num_draws": 100}  # --quick: the code path only


def recipe_for(bucket: str, args: argparse.Namespace) -> dict:
    """The recipe's ``estimate_llc`` settings with the command line's changes applied."""
    recipe = ground_truth.dln_recipe(bucket)
    recipe["num_draws"] *= args.steps_factor
    recipe["num_burnin_steps"] *= args.steps_factor
    if getattr(args, "quick", False):  # exercises the code path, measures nothing
        recipe.update(QUICK_STEPS)
    if args.burnin == "auto":  # until the chains stop rising (estimate_llc's doubling test)
        recipe["num_burnin_steps"] = "auto"
        recipe["max_burnin_steps"] = AUTO_BURNIN_CAP * recipe["num_draws"]
    if args.step_size == "auto":
        recipe["step_size"] = "auto"
    if args.sampler != "sgld":
        recipe["sampler"] = args.sampler
    if args.sampler == "rmsprop_sgld":  # preconditioner adapted in the burn-in, then frozen
        recipe["sampler_options"] = {"adapt_steps": recipe["num_burnin_steps"]}
    return recipe


def run_one(bucket: str, seed: int, args: argparse.Namespace) -> dict:
    problem = ground_truth.make_dln_bucket_problem(bucket, seed, point=args.point)
    local = problem.local_lambda
    row = problem_row(bucket, seed, args.point, problem)
    if args.max_params is not None and problem.num_params > args.max_params:
        row["skipped"] = f"d = {problem.num_params} > --max-params {args.max_params}"
        return row
    recipe = recipe_for(bucket, args)
    result, seconds = estimate_on(problem, seed, args.chains, recipe)
    lam, est = row["true_lambda"], result.llc_mean
    row.update(
        llc_mean=est,
        llc_std=result.llc_std,
        llc_stderr=result.llc_stderr,
        relative_error=(lam - est) / lam,
        local_relative_error=None if local is None else (float(local) - est) / float(local),
        bound_exceeds_lambda_by=(row["local_lower_bound"] - lam) / lam,
        time_s=seconds,
        diverged_chains=int(result.diverged.sum()),
        flags=list(result.flags),
        rhat=result.rhat,
        burnin_steps=result.num_burnin_steps,
        step_size=result.step_size,
        predicted_step_bias=None
        if result.predicted_step_bias is None
        else result.predicted_step_bias.tolist(),
        acceptance=float(np.nanmean(result.acceptance)),
        recipe=recipe,
    )
    corrected = result.llc_step_corrected
    if corrected is not None:  # llc_mean less the predicted first-order step bias
        row.update(
            llc_step_corrected=corrected,
            step_corrected_relative_error=(lam - corrected) / lam,
        )
    if result.calibration is not None:
        row["calibration_step_size"] = result.calibration.recommended["step_size"]
    if args.step_halving:
        row.update(half_step(problem, seed, args, recipe, result))
    return row


def half_step(problem, seed: int, args: argparse.Namespace, recipe: dict, result) -> dict:
    """The same chains at half the step for twice the steps: the step-size bias, measured.

    Equal Langevin time (step x steps) keeps the equilibration along the flat directions
    the same, so the difference is the step's: with a bias linear in the step (the
    discretisation and minibatch-noise terms at first order), the bias at the full step
    is ``2 (lambda_hat(eps) - lambda_hat(eps / 2))`` and the extrapolation to zero step
    is ``2 lambda_hat(eps / 2) - lambda_hat(eps)``. Both runs use the seed's key; the
    standard errors are computed as for independent runs.
    """
    halved = {k: v for k, v in recipe.items() if k != "max_burnin_steps"}
    halved["step_size"] = result.step_size / 2
    halved["num_burnin_steps"] = 2 * result.num_burnin_steps
    halved["num_draws"] = 2 * recipe["num_draws"]
    if args.sampler == "rmsprop_sgld":
        halved["sampler_options"] = {"adapt_steps": halved["num_burnin_steps"]}
    half, seconds = estimate_on(problem, seed, args.chains, halved)
    lam = float(problem.true_lambda)
    zero = 2 * half.llc_mean - result.llc_mean
    return {
        "half_step_llc_mean": half.llc_mean,
        "half_step_llc_stderr": half.llc_stderr,
        "half_step_flags": list(half.flags),
        "half_step_time_s": seconds,
        "step_bias": 2 * (result.llc_mean - half.llc_mean),
        "step_bias_stderr": 2 * float(np.hypot(result.llc_stderr, half.llc_stderr)),
        "zero_step_llc_mean": zero,
        "zero_step_llc_stderr": float(np.hypot(2 * half.llc_stderr, result.llc_stderr)),
        "zero_step_relative_error": (lam - zero) / lam,
    }


def summarise(rows: list[dict]) -> dict:
    out = {}
    for bucket in BUCKET_ORDER:
        done = [r for r in rows if r["bucket"] == bucket and "relative_error" in r]
        if not done:
            continue
        rel = np.array([r["relative_error"] for r in done])
        sound = [abs(r["relative_error"]) for r in done if r["bound_exceeds_lambda_by"] <= 0]
        local = [abs(r["local_relative_error"]) for r in done if r["local_lambda"] is not None]
        out[bucket] = {
            "runs": len(done),
            "median_abs_relative_error": float(np.median(np.abs(rel))),
            "max_abs_relative_error": float(np.max(np.abs(rel))),
            "median_relative_error": float(np.median(rel)),
            "diverged_chains": int(sum(r["diverged_chains"] for r in done)),
            "runs_where_llc_at_teacher_provably_exceeds_lambda": len(done) - len(sound),
            "median_abs_relative_error_other_runs": float(np.median(sound)) if sound else None,
            "max_abs_relative_error_other_runs": float(np.max(sound)) if sound else None,
            "runs_with_exact_local_llc": len(local),
            "median_abs_error_vs_exact_local_llc": float(np.median(local)) if local else None,
        }
        corrected = [
            abs(r["step_corrected_relative_error"]) for r in done if "llc_step_corrected" in r
        ]
        if corrected:  # result.llc_step_corrected, where a step bias was predicted
            out[bucket]["step_corrected"] = {
                "runs": len(corrected),
                "median_abs_relative_error": float(np.median(corrected)),
                "max_abs_relative_error": float(np.max(corrected)),
            }
    return out


def plot(rows: list[dict], out, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if "relative_error" in r]
    buckets = [b for b in BUCKET_ORDER if any(r["bucket"] == b for r in done)]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for b in buckets:
        sel = [r for r in done if r["bucket"] == b]
        ax.errorbar(
            [r["true_lambda"] for r in sel],
            [r["llc_mean"] for r in sel],
            yerr=[2 * r["llc_stderr"] for r in sel],
            fmt="o",
            label=f"~{b} params",
        )
        marked = [r for r in sel if r["bound_exceeds_lambda_by"] > 0]
        ax.scatter(
            [r["true_lambda"] for r in marked],
            [r["local_lower_bound"] for r in marked],
            marker="_",
            s=200,
            color="k",
        )
    lims = [min(r["true_lambda"] for r in done) / 1.5, max(r["true_lambda"] for r in done) * 1.5]
    ax.plot(lims, lims, "k--", lw=1, label="exact λ (Aoyagi)")
    ax.scatter([], [], marker="_", s=200, color="k", label="lower bound on the LLC at the teacher")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="Aoyagi's learning coefficient λ",
        ylabel="estimated λ̂ (± 2 s.e.)",
        title=f"LLC at the {done[0]['point']} point, deep linear networks",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{stem}_scatter.png", dpi=120)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.hist(
        [[r["relative_error"] for r in done if r["bucket"] == b] for b in buckets],
        bins=np.linspace(-0.5, 0.5, 21),
        label=[f"~{b}" for b in buckets],
        stacked=True,
    )
    ax.axvline(
        PUBLISHED["median_relative_error"], color="r", ls="--", label="Furman & Lau median (+0.18)"
    )
    ax.set(xlabel="relative error (λ − λ̂)/λ  (positive: underestimate)", ylabel="runs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{stem}_relerr.png", dpi=120)
    plt.close("all")


def print_row(r: dict) -> None:
    head = f"{r['bucket']:>6} {r['seed']:>4} {r['d']:>8} {r['rank']:>3} {r['true_lambda']:>8.1f} "
    head += f"{r['local_lower_bound']:>8.1f} "
    if "skipped" in r:
        print(head + f"  skipped: {r['skipped']}", flush=True)
        return
    local = "-" if r["local_lambda"] is None else f"{r['local_lambda']:.1f}"
    vs_local = "-" if r["local_relative_error"] is None else f"{r['local_relative_error']:+.3f}"
    est = f"{r['llc_mean']:.1f} ± {r['llc_std']:.1f}"
    mark = " *" if r["bound_exceeds_lambda_by"] > 0 else ""
    div = f"  diverged chains: {r['diverged_chains']}" if r["diverged_chains"] else ""
    div += f"  [{', '.join(r['flags'])}]" if r["flags"] else ""
    if "step_corrected_relative_error" in r:
        div += f"  step-corrected {r['step_corrected_relative_error']:+.3f}"
    print(
        head + f"{local:>8} {est:>17} {r['relative_error']:>+8.3f} {vs_local:>8} "
        f"{r['time_s']:>5.0f}s {r['burnin_steps']:>7} {r['widths']}{mark}{div}",
        flush=True,
    )


def print_half_step(r: dict) -> None:
    print(
        f"{'':>11} half step: {r['half_step_llc_mean']:.1f} ± {r['half_step_llc_stderr']:.1f} "
        f"(s.e.); step bias {r['step_bias']:+.1f} ± {r['step_bias_stderr']:.1f}; zero step "
        f"{r['zero_step_llc_mean']:.1f} ({r['zero_step_relative_error']:+.3f})  "
        f"{r['half_step_flags']}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buckets", nargs="+", default=["1K", "10K", "100K"])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per bucket (0..N-1)")
    parser.add_argument(
        "--seed-list",
        type=int,
        nargs="+",
        default=None,
        help="run exactly these seeds instead of 0..N-1",
    )
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--include-1m", action="store_true", help="add the ~1M bucket")
    parser.add_argument(
        "--max-params",
        type=int,
        default=None,
        help="skip (and report) problems with more parameters than this",
    )
    parser.add_argument(
        "--point",
        choices=["teacher", "minimal"],
        default="teacher",
        help="estimate at the teacher (Furman & Lau) or at its minimal factorisation",
    )
    parser.add_argument(
        "--steps-factor", type=int, default=1, help="multiply the recipe's burn-in and draws"
    )
    parser.add_argument(
        "--burnin",
        choices=["recipe", "auto"],
        default="recipe",
        help="the recipe's burn-in, or num_burnin_steps='auto' (until the chains stop rising)",
    )
    parser.add_argument(
        "--sampler",
        choices=["sgld", "rmsprop_sgld"],
        default="sgld",
        help="rmsprop_sgld adapts its preconditioner in the burn-in and then freezes it",
    )
    parser.add_argument(
        "--step-size",
        choices=["recipe", "auto"],
        default="recipe",
        help="the recipe's step size, or step_size='auto' (llc.calibrate's rule)",
    )
    parser.add_argument(
        "--step-halving",
        action="store_true",
        help="rerun each problem at half the step for twice the steps: the step-size bias",
    )
    parser.add_argument("--name", default=None, help="stem of the output files")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in <out>/<name>.json (same settings), run the rest",
    )
    args, out = parse_args(
        parser,
        "accuracy",
        quick="~1K seed 7 (d = 594), 2 chains, 300 burn-in steps and 100 draws",
    )
    if args.sampler == "rmsprop_sgld" and args.burnin == "auto":
        parser.error(
            "--sampler rmsprop_sgld freezes its preconditioner at the end of a known burn-in; "
            "use it with --burnin recipe (and --steps-factor for a longer one)."
        )
    if args.name is None:
        args.name = "accuracy" if args.point == "teacher" else f"accuracy_{args.point}"
        if args.steps_factor != 1:
            args.name += f"_x{args.steps_factor}"
        if args.burnin == "auto":
            args.name += "_autoburnin"
        if args.sampler != "sgld":
            args.name += f"_{args.sampler}"
        if args.step_size == "auto":
            args.name += "_autostep"
        if args.step_halving:
            args.name += "_halving"
    buckets, seeds = list(args.buckets), args.seeds
    if args.quick:
        buckets, seeds, args.seed_list, args.chains = ["1K"], 1, [7], 2
    if args.include_1m and "1M" not in buckets:
        buckets.append("1M")

    settings = {
        "chains": args.chains,
        "point": args.point,
        "steps_factor": args.steps_factor,
        "burnin": args.burnin,
        "sampler": args.sampler,
        "step_size": args.step_size,
        "step_halving": args.step_halving,
    }
    if args.quick:  # a quick run's file must not pass for (or resume) a measured one
        settings["quick"] = True
    rows = previous_runs(out, args.name, settings).get("runs", []) if args.resume else []
    rows = [r for r in rows if "skipped" not in r]  # rerun: --max-params may have changed
    done = {(r["bucket"], r["seed"]) for r in rows}
    print(
        f"{'bucket':>6} {'seed':>4} {'d':>8} {'r':>3} {'lambda':>8} {'bound':>8} {'local':>8} "
        f"{'lambda_hat':>17} {'rel.err':>8} {'vs.local':>8} {'time':>6} {'burn-in':>7} widths"
    )
    for row in rows:
        print_row(row)
    for bucket in buckets:
        for seed in args.seed_list or range(seeds):
            if (bucket, seed) in done:
                continue
            rows.append(run_one(bucket, seed, args))
            jax.clear_caches()  # every run compiles anew; keeping them all exhausts LLVM
            print_row(rows[-1])
            if "step_bias" in rows[-1]:
                print_half_step(rows[-1])
            # written after every run, so that an interrupted sweep keeps what it measured
            partial = {"summary": summarise(rows), "runs": rows, "published": PUBLISHED}
            write(out, args.name, {**partial, **settings, "complete": False})
    summary = summarise(rows)
    print("\n* the LLC at this teacher provably exceeds Aoyagi's lambda (bound > lambda)")
    for b, s in summary.items():
        print(
            f"~{b}: {s['runs']} runs; |rel.err| median {s['median_abs_relative_error']:.3f}, "
            f"max {s['max_abs_relative_error']:.3f}; median rel.err "
            f"{s['median_relative_error']:+.3f}; diverged chains {s['diverged_chains']}"
        )
        if s["median_abs_relative_error_other_runs"] is not None:
            print(
                f"      without the {s['runs_where_llc_at_teacher_provably_exceeds_lambda']} "
                f"*-runs: median {s['median_abs_relative_error_other_runs']:.3f}, max "
                f"{s['max_abs_relative_error_other_runs']:.3f}"
            )
        if s["median_abs_error_vs_exact_local_llc"] is not None:
            print(
                f"      against the exact local LLC ({s['runs_with_exact_local_llc']} runs): "
                f"median |rel.err| {s['median_abs_error_vs_exact_local_llc']:.3f}"
            )
        if "step_corrected" in s:
            c = s["step_corrected"]
            print(
                f"      llc_step_corrected ({c['runs']} runs): |rel.err| median "
                f"{c['median_abs_relative_error']:.3f}, max {c['max_abs_relative_error']:.3f}"
            )
    print(
        f"published (Furman & Lau, all sizes): median rel.err "
        f"+{PUBLISHED['median_relative_error']}, a quarter beyond +0.37 (from their figure)"
    )
    path = write(
        out,
        args.name,
        {"summary": summary, "runs": rows, "published": PUBLISHED, **settings, "complete": True},
    )
    if any("relative_error" in r for r in rows):
        plot(rows, out, args.name)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
