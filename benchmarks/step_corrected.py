"""``llc_mean`` against ``llc_step_corrected`` on stored deep-linear-network accuracy runs.

Reads result files of ``benchmarks/accuracy.py`` (``results/accuracy/<name>.json``, or
``--accuracy DIR``) and, for every run that recorded ``predicted_step_bias`` (the
first-order step-size bias where each chain ended, relative to the estimate), compares the
relative error of the estimate with that of the estimate less its predicted bias
(``llc.step_bias.less_step_bias``, what
``LLCResult.llc_step_corrected`` reports). Nothing is sampled: the runs are the ones
stored, so the comparison is free and the same command always gives the same table.

Relative error is (lambda - estimate) / lambda, against the exact local LLC where known
(minimal points, Morse-Bott teachers), else Aoyagi's lambda.

Outputs: a table on stdout and ``results/step_corrected/step_corrected.json``.

Usage:
    python benchmarks/step_corrected.py                   # the default groups below
    python benchmarks/step_corrected.py accuracy_100k_seed4 accuracy_minimal_100K_seed6
    python benchmarks/step_corrected.py --quick           # the first group only
"""

import argparse
import json
from pathlib import Path

import numpy as np
from _common import RESULTS, parse_args, write

from llc.step_bias import less_step_bias

# The library's recipes where their step bias is at stake, grouped as the README reports
# them: the ~1K and ~10K minimal-point recipe (dln_recipe(point="minimal")) on its
# held-out seeds 400-407, and every ~100K run.
GROUPS = {
    "1K minimal, auto x4, held-out seeds 400-407": [
        "accuracy_minimal_rmsprop_sgld_autostep_x4_1K_steady_heldout",
        "accuracy_minimal_rmsprop_sgld_autostep_x4_1K_steady_heldout_rest",
    ],
    "10K minimal, auto x4, held-out seeds 400-407": [
        "accuracy_minimal_rmsprop_sgld_autostep_x4_10K_steady_heldout",
        "accuracy_minimal_rmsprop_sgld_autostep_x4_10K_steady_heldout_rest",
    ],
    "100K minimal, auto x4": [
        "accuracy_minimal_rmsprop_sgld_autostep_x4_100K_seed7",
        "accuracy_minimal_rmsprop_sgld_autostep_x4_100K_heldout",
        "accuracy_minimal_rmsprop_sgld_autostep_x4_100K_heldout2",
    ],
    "100K minimal, hand-picked (Furman & Lau)": [
        "accuracy_minimal_100K_seed7",
        "accuracy_minimal_100K_seed6",
        "accuracy_minimal_100K_seed2",
        "accuracy_minimal_100K_heldout",
        "accuracy_minimal_100K_heldout2",
    ],
    "100K teacher (target: Aoyagi's lambda, not proven local)": [
        "accuracy_100k_seeds12",
        "accuracy_100k_seed4",
        "accuracy_rmsprop_sgld_autostep_100K_seed6",
        "accuracy_rmsprop_sgld_autostep_100K_seed7",
    ],
}


def compare(run: dict) -> dict | None:
    """Raw and step-corrected relative errors of one stored run (None without a bias)."""
    bias = run.get("predicted_step_bias")
    if bias is None or "llc_mean" not in run:
        return None
    corrected = less_step_bias(run["llc_mean"], bias)  # what llc_step_corrected reports
    if corrected is None:
        return None
    target = run["local_lambda"] if run["local_lambda"] is not None else run["true_lambda"]
    return {
        "bucket": run["bucket"],
        "seed": run["seed"],
        "point": run["point"],
        "target": target,
        "llc_mean": run["llc_mean"],
        "llc_stderr": run["llc_stderr"],
        "predicted_step_bias": float(np.nanmean(np.asarray(bias, np.float64))),
        "llc_step_corrected": corrected,
        "relative_error": (target - run["llc_mean"]) / target,
        "step_corrected_relative_error": (target - corrected) / target,
        "flags": run["flags"],
    }


def summary(rows: list[dict]) -> dict:
    raw = np.array([r["relative_error"] for r in rows])
    cor = np.array([r["step_corrected_relative_error"] for r in rows])
    return {
        "runs": len(rows),
        "median_abs_relative_error": float(np.median(np.abs(raw))),
        "max_abs_relative_error": float(np.max(np.abs(raw))),
        "mean_relative_error": float(np.mean(raw)),
        "step_corrected_median_abs_relative_error": float(np.median(np.abs(cor))),
        "step_corrected_max_abs_relative_error": float(np.max(np.abs(cor))),
        "step_corrected_mean_relative_error": float(np.mean(cor)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="result stems (default: the README's groups)")
    parser.add_argument(
        "--accuracy",
        type=Path,
        default=RESULTS / "accuracy",
        help="folder of accuracy.py's results (default: results/accuracy/)",
    )
    args, out = parse_args(parser, "step_corrected", quick="the first default group only")
    groups = {"given": args.names} if args.names else GROUPS
    if args.quick:
        groups = dict(list(groups.items())[:1])
    groups_out = {}
    for group, names in groups.items():
        rows, missing = [], []
        for name in names:
            path = args.accuracy / f"{name}.json"
            if not path.exists():
                missing.append(name)
                continue
            rows += [c for r in json.loads(path.read_text())["runs"] if (c := compare(r))]
        print(f"\n{group}" + (f"  (not found: {', '.join(missing)})" if missing else ""))
        for r in rows:
            print(
                f"  {r['bucket']:>4} seed {r['seed']:<4} {r['point']:<8} rel.err "
                f"{r['relative_error']:+7.2%} -> {r['step_corrected_relative_error']:+7.2%} "
                f"(predicted bias {r['predicted_step_bias']:.2%}, s.e. "
                f"{r['llc_stderr'] / r['target']:.2%})  {r['flags']}"
            )
        if rows:
            s = summary(rows)
            print(
                f"  |rel.err| median {s['median_abs_relative_error']:.2%} -> "
                f"{s['step_corrected_median_abs_relative_error']:.2%}, max "
                f"{s['max_abs_relative_error']:.2%} -> "
                f"{s['step_corrected_max_abs_relative_error']:.2%}; mean rel.err "
                f"{s['mean_relative_error']:+.2%} -> {s['step_corrected_mean_relative_error']:+.2%}"
            )
            groups_out[group] = {"files": names, "missing": missing, "summary": s, "runs": rows}
    print(f"\nwritten to {write(out, 'step_corrected', {'groups': groups_out})}")


if __name__ == "__main__":
    main()
