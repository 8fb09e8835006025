"""The calibration's step-size-bias prediction, evaluated where the chains ended.

``step_size="auto"`` predicts the first-order step-size bias at the end of a short
calibration run (``llc.calibration``'s module docstring has the formula). A long run can
carry its chains into stiffer regions than the calibration saw, and there the chosen
step can be too large. This script reruns exactly the call that
``accuracy.py --point minimal --sampler rmsprop_sgld --step-size auto`` makes for one
problem (same key, same calibration), keeps each chain's final position and its mean
per-coordinate step, and evaluates the same prediction there: the absolute bias
``s . (nbeta diag(H) + nbeta^2 c) / 8`` per chain, relative to that chain's estimate,
and the largest ``s_i nbeta H_ii`` (the rule's stiffness without the localizer).

It computes the prediction with ``llc.step_bias.chain_prediction``, the function the
rule itself uses, so the two cannot drift apart.

Usage (from ``benchmarks/``)::

    python end_bias.py --bucket 1K --seed 302 --steps-factor 1 16
    python end_bias.py --quick      # ~1K seed 7, 2 chains, 400 steps

Outputs: a table on stdout and ``results/end_bias/end_bias_<bucket>_seed<seed>.json``.
"""

import argparse
import time
import warnings

import jax
import numpy as np
from _common import parse_args, plan_for, write
from accuracy import recipe_for

from llc import ground_truth
from llc.calibration import calibrate_plan
from llc.execute import execute
from llc.report import assemble
from llc.step_bias import chain_prediction


def _chosen(calibration, name: str) -> float:
    """The grid value of ``name`` at the setting the rule recommended."""
    rec = calibration.recommended
    g = int(np.argmin(np.abs(calibration.localizations - rec["localization"])))
    s = int(np.argmin(np.abs(calibration.step_sizes - rec["step_size"])))
    return float(getattr(calibration, name)[g, s])


def run(bucket: str, seed: int, factor: int, chains: int, quick: bool = False) -> dict:
    args = argparse.Namespace(
        steps_factor=factor,
        burnin="recipe",
        step_size="auto",
        sampler="rmsprop_sgld",
        quick=quick,
    )
    problem = ground_truth.make_dln_bucket_problem(bucket, seed, point="minimal")
    recipe = recipe_for(bucket, args)
    start = time.perf_counter()

    def plan_at(step_size):  # the plan estimate_llc makes (a fixed burn-in: no follow)
        return plan_for(
            jax.random.key(seed),
            problem.loss_fn,
            problem.params,
            problem.data,
            num_chains=chains,
            **{**recipe, "step_size": step_size},
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        calibration = calibrate_plan(plan_at("auto"), short=True)
        plan = plan_at(calibration.recommended["step_size"])  # records each chain's steps
        out = execute(plan)
        result = assemble(plan, out, start, calibration=calibration, warn=False)
    alive = out.first_nonfinite_step < 0
    absolute, curv = chain_prediction(plan, out.final_position, out.scale, alive)
    bias = (absolute / np.abs(result.llc_per_chain)).tolist()
    stiffness = np.nanmax(np.asarray(out.scale_max) * curv, axis=1).tolist()
    return {
        "bucket": bucket,
        "seed": seed,
        "steps_factor": factor,
        "true_lambda": float(problem.true_lambda),
        "llc_mean": result.llc_mean,
        "llc_per_chain": result.llc_per_chain.tolist(),
        "step_size": float(plan.step_size),
        "calibration_predicted_bias": _chosen(calibration, "predicted_bias"),
        "end_predicted_bias": bias,
        "end_stiffness": stiffness,
        "end_distance": out.distance[:, -1].tolist(),
        "flags": list(result.flags),
        "time_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bucket", default="1K", choices=sorted(ground_truth.DLN_BUCKETS))
    parser.add_argument("--seed", type=int, default=None, help="required without --quick")
    parser.add_argument("--steps-factor", type=int, nargs="+", default=[1])
    parser.add_argument("--chains", type=int, default=4)
    args, out = parse_args(
        parser,
        "end_bias",
        quick="~1K seed 7 (d = 594), factor 1, 2 chains, 300 burn-in steps and 100 draws",
    )
    if args.quick:
        args.bucket, args.seed, args.steps_factor, args.chains = "1K", 7, [1], 2
    elif args.seed is None:
        parser.error("--seed is required (or --quick)")
    print(
        f"{'factor':>6} {'lambda':>7} {'lambda_hat':>10} {'bias at calibration':>19} "
        f"{'bias at the end (per chain)':>30} {'stiffness':>9} {'distance':>8}"
    )
    rows = []
    for factor in args.steps_factor:
        r = run(args.bucket, args.seed, factor, args.chains, args.quick)
        rows.append(r)
        ends = " ".join(f"{b:.1%}" for b in r["end_predicted_bias"])
        print(
            f"{factor:>6} {r['true_lambda']:>7.1f} {r['llc_mean']:>10.1f} "
            f"{r['calibration_predicted_bias']:>19.1%} {ends:>30} "
            f"{max(r['end_stiffness']):>9.2f} {np.mean(r['end_distance']):>8.1f}",
            flush=True,
        )
    payload = {"runs": rows, "quick": True} if args.quick else {"runs": rows}
    path = write(out, f"end_bias_{args.bucket}_seed{args.seed}", payload)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
