"""The sampler's error without minibatch noise: full-batch chains on the loss's moment form.

``exact_target.py`` writes the accuracy benchmark's DLN loss in its exact moment form,
``L_n(w) = tr((P(w) - P*)^T S (P(w) - P*)) / H_out``, on which a full-data gradient is a
few small matrix products. This script runs the benchmark's samplers full batch on that
form at the benchmark's n, nbeta and gamma = 1, at a given step size (a number, or
``auto``: ``llc.calibrate``'s rule, with the burn-in following the chains) and
``--steps-factor`` times the recipe's 9,000 burn-in steps and 1,000 draws. At ~1K a run
takes under a minute on 2 cores, so the error against ``exact_target.py``'s NUTS targets
can be split into its parts: the step-size dependence (rerun at half the step for twice
the steps), the minibatch noise (compare with ``accuracy.py``), the run length.

``--nuts-from-ends`` then restarts full-batch NUTS (blackjax, window adaptation) from
the chains' final positions: if NUTS from there returns to its target from w*, the
chains' excess is the sampler's and not a region NUTS from w* failed to reach.

``--continue-at F [F ...]`` measures the step's part of the error from where the chains
are: after the run's burn-in (at a fixed step; RMSProp-SGLD's preconditioner adapts in
it and is then frozen), the same chains go on at ``F`` times the step for
``3 * draws / F`` steps (the same Langevin time for every F), the last third as draws.
Independent runs at a smaller step are no clean test for RMSProp-SGLD: its
preconditioner adapts to where their chains went, and its largest steps can grow.

Usage (from ``benchmarks/``)::

    python full_batch.py --seeds 302 0 4 --step-size auto --steps-factor 4
    python full_batch.py --seeds 302 --step-size 5e-7 --steps-factor 4
    python full_batch.py --seeds 302 --sampler rmsprop_sgld --step-size 9.946e-9 --nuts-from-ends
    python full_batch.py --seeds 302 --sampler rmsprop_sgld --step-size 1e-8 --continue-at 1 .5 .25
    python full_batch.py --quick   # ~1K seed 7, 2 chains, 400 steps at 5e-7, every option

Outputs: a table on stdout and ``results/full_batch/<name>.json`` (default ``full_batch``).
"""

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _common import parse_args, plan_for, problem_row, write
from accuracy import QUICK_STEPS
from exact_target import checked_moment_form

from llc import estimate_llc, ground_truth, loop, nuts
from llc.burnin import segment
from llc.execute import execute, execute_chunks

QUICK_STEP = 5e-7  # --quick: a fixed step, so that every option runs


def nuts_from(problem, loss_fn, nbeta, localization, starts, warmup: int, draws: int, seed: int):
    """Full-batch NUTS (``llc.nuts.run_nuts``) started at ``starts`` (a leading chain axis)."""
    anchor = tuple(jnp.asarray(w) for w in problem.params)
    base = jnp.asarray(float(loss_fn(anchor, None)), jnp.float32)
    out = nuts.run_nuts(
        jax.random.key(seed + 7),
        anchor,
        problem.data,
        jnp.float32(nbeta),
        jnp.float32(localization),
        base,
        jnp.float32(0.0),
        loss_fn=loss_fn,
        num_chains=jax.tree.leaves(starts)[0].shape[0],
        num_warmup=warmup,
        num_draws=draws,
        starts=starts,
    )
    lam = nbeta * np.asarray(out.delta, np.float64)
    return {
        "nuts_llc_mean": float(lam.mean()),
        "nuts_llc_per_chain": lam.mean(axis=1).tolist(),
        "nuts_halves": [float(lam[:, : draws // 2].mean()), float(lam[:, draws // 2 :].mean())],
        "nuts_final_distance": np.asarray(out.distance)[:, -1].tolist(),
    }


def fixed_step_plan(problem, loss_fn, settings: dict, step: float, seed: int):
    """The run's :class:`llc.plan.Plan` at a fixed step (it records the end points)."""
    return plan_for(
        jax.random.key(seed), loss_fn, problem.params, problem.data, step_size=step, **settings
    )


def continued(problem, loss_fn, settings: dict, step: float, factors, seed: int) -> dict:
    """The run's burn-in at ``step``, then the same chains at ``F * step`` for each F.

    Each continuation is ``2 * draws / F`` more burn-in steps and ``draws / F`` draws
    (``draws``: the run's), one uninterrupted chain from the burn-in's end state (its
    preconditioner frozen). Returns ``{"continued": [{factor, llc_mean, windows,
    final_distance}, ...]}`` with ``windows`` the mean ``nbeta (L - L*)`` over six equal
    spans of the continuation.
    """

    def plan_with(draws):
        return fixed_step_plan(problem, loss_fn, {**settings, "num_draws": draws}, step, seed)

    def burnin_chunk(plan):
        config = plan.config
        return config._replace(num_draws=0, chunked=True, progress_total=config.total_steps)

    burnin = settings["num_burnin_steps"]
    base = plan_with(settings["num_draws"])
    dtype = jnp.result_type(*jax.tree.leaves(base.params))

    def hyper_at(step_size):
        return loop.make_hyper(
            step_size, base.nbeta, base.localization, base.init_loss, dtype, 0, base.options
        )

    start, first, _, _ = segment(base, hyper_at(step), None, burnin_chunk(base), 0, burnin)
    rows = []
    for factor in factors:
        plan = plan_with(round(settings["num_draws"] / factor))
        more = round(2 * settings["num_draws"] / factor)
        slower = hyper_at(step * factor)
        resume, second, _, _ = segment(plan, slower, start, burnin_chunk(plan), burnin, more)
        out = execute_chunks(
            plan,
            slower,
            plan.config._replace(num_burnin_steps=burnin + more),
            resume,
            np.concatenate([first, second], axis=1),
        )
        trace = plan.nbeta * np.concatenate([second, out.delta], axis=1).astype(np.float64)
        span = trace.shape[1] // 6
        rows.append(
            {
                "factor": factor,
                "step_size": step * factor,
                "llc_mean": float(plan.nbeta * np.asarray(out.delta, np.float64).mean()),
                "windows": trace[:, : 6 * span].reshape(len(trace), 6, span).mean((0, 2)).tolist(),
                "final_distance": np.asarray(out.distance)[:, -1].tolist(),
            }
        )
    return {"continued": rows}


def run_one(seed: int, args: argparse.Namespace) -> dict:
    problem = ground_truth.make_dln_bucket_problem(args.bucket, seed, point=args.point)
    loss_fn, _ = checked_moment_form(problem, seed)
    recipe = ground_truth.dln_recipe(args.bucket)
    if args.quick:  # exercises the code path, measures nothing
        recipe.update(QUICK_STEPS)
    burnin = recipe["num_burnin_steps"] * args.steps_factor
    options = {"adapt_steps": burnin} if args.sampler == "rmsprop_sgld" else None
    step = args.step_size if args.step_size == "auto" else float(args.step_size)
    settings = {
        "localization": recipe["localization"],
        "sampler": args.sampler,
        "sampler_options": options,
        "num_chains": args.chains,
        "num_draws": recipe["num_draws"] * args.steps_factor,
        "num_burnin_steps": burnin,
    }
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = estimate_llc(
            jax.random.key(seed),
            loss_fn,
            problem.params,
            problem.data,
            step_size=step,
            progress_bar=False,
            **settings,
        )
    row = {
        **problem_row(args.bucket, seed, args.point, problem),
        "sampler": args.sampler,
        "steps_factor": args.steps_factor,
        "step_size": result.step_size,
        "calibration_step_size": None
        if result.calibration is None
        else result.calibration.recommended["step_size"],
        "llc_mean": result.llc_mean,
        "llc_stderr": result.llc_stderr,
        "llc_per_chain": result.llc_per_chain.tolist(),
        "predicted_step_bias": result.predicted_step_bias.tolist(),
        "final_distance": result.distance_trace[:, -1].tolist(),
        "flags": list(result.flags),
        "time_s": time.perf_counter() - start,
    }
    if args.nuts_from_ends:  # the same chains again (a fixed step), for their end points
        plan = fixed_step_plan(problem, loss_fn, settings, step, seed)
        out = execute(plan)
        row.update(
            nuts_from(
                problem,
                loss_fn,
                plan.nbeta,
                plan.localization,
                out.final_position,
                args.warmup,
                args.draws,
                seed,
            )
        )
    if args.continue_at:
        row.update(continued(problem, loss_fn, settings, step, args.continue_at, seed))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bucket", default="1K", choices=sorted(ground_truth.DLN_BUCKETS))
    parser.add_argument("--seeds", type=int, nargs="+", help="required without --quick")
    parser.add_argument("--point", choices=["teacher", "minimal"], default="minimal")
    parser.add_argument("--sampler", choices=["sgld", "rmsprop_sgld"], default="sgld")
    parser.add_argument("--step-size", default="auto", help="a number, or 'auto'")
    parser.add_argument("--steps-factor", type=int, default=4)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--nuts-from-ends", action="store_true")
    parser.add_argument("--warmup", type=int, default=500, help="NUTS adaptation steps")
    parser.add_argument("--draws", type=int, default=500, help="NUTS draws")
    parser.add_argument(
        "--continue-at",
        type=float,
        nargs="+",
        default=None,
        help="step factors F: continue the burnt-in chains at F times the step",
    )
    parser.add_argument("--name", default="full_batch")
    args, out = parse_args(
        parser,
        "full_batch",
        quick=f"~1K seed 7 (d = 594), 2 chains, {sum(QUICK_STEPS.values())} steps at step "
        f"{QUICK_STEP:g} (unless --step-size is a number), --nuts-from-ends with 20 warmup "
        "steps and 20 draws, --continue-at 1 0.5",
    )
    if args.quick:
        args.seeds, args.chains, args.steps_factor = [7], 2, 1
        args.step_size = str(QUICK_STEP) if args.step_size == "auto" else args.step_size
        args.nuts_from_ends, args.warmup, args.draws = True, 20, 20
        args.continue_at = args.continue_at or [1.0, 0.5]
    elif not args.seeds:
        parser.error("--seeds is required (or --quick)")
    for flag, given in (
        ("--nuts-from-ends", args.nuts_from_ends),
        ("--continue-at", args.continue_at),
    ):
        if given and args.step_size == "auto":
            parser.error(f"{flag} reruns the chains at a fixed step: give --step-size a number")
    rows = []
    print(f"{'seed':>5} {'lambda':>7} {'step':>9} {'lambda_hat':>14} {'end bias':>8}  flags")
    for seed in args.seeds:
        r = run_one(seed, args)
        rows.append(r)
        extra = f"  NUTS from the ends {r['nuts_llc_mean']:.1f}" if "nuts_llc_mean" in r else ""
        for c in r.get("continued", []):
            windows = " ".join(f"{x:.1f}" for x in c["windows"])
            extra += f"\n      continued at {c['factor']:g} x step: {c['llc_mean']:.1f} ({windows})"
        print(
            f"{seed:>5} {r['true_lambda']:>7.1f} {r['step_size']:>9.3g} "
            f"{r['llc_mean']:>7.1f} ± {r['llc_stderr']:<4.1f} "
            f"{np.nanmean(r['predicted_step_bias']):>8.1%}  {r['flags']}{extra}",
            flush=True,
        )
    path = write(out, args.name, {"args": {**vars(args), "out": str(out)}, "runs": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
