"""The default call on exact degenerate minima (issue 29): accurate, or flagged, and at what cost?

The suite: fifteen targets whose learning coefficient is known exactly, none tuned on.
1. Deep linear networks (no bias) at minimal points (``ground_truth.dln_minimal_point``) of
   varied depth, widths and rank, relabelled: the targets are the network's own outputs
   (``llc.relabel``, noise-free, loss 0.5 |f_w(x) - f_w*(x)|^2), n = 10,000 Gaussian
   inputs. Each layer of a random N(0, 1/fan_in) network is cut to rank r, then the
   factorisation is made minimal; the LLC there is Aoyagi's lambda
   (``ground_truth.dln_learning_coefficient``), the n -> infinity limit. The reference is
   the finite-n target itself, E[nbeta (L_n - L*)] under the localized tempered posterior,
   by full-batch NUTS (8 chains) on the loss's exact moment form, reported with its
   standard error beside Aoyagi's lambda (``--quick``: Aoyagi's lambda).
2. Normal crossings K = w1^(2 k1) w2^(2 k2) at w* = 0
   (``ground_truth.make_normal_crossing_problem``, n = 10,000). lambda converges to its
   asymptotic value only logarithmically in n, so the reference is the exact finite-n
   expectation E[nbeta K] of the localized tempered posterior at the default nbeta = n / log n
   and gamma = 1 (slt-reference 3.3), computed here by quadrature and checked against the
   reference table.
3. A regular quadratic: linear regression with d = 20 at its least-squares solution
   (``ground_truth.make_regular_problem``), lambda = d/2; the reference is the exact
   finite-n value 1/2 sum_i nbeta mu_i / (nbeta mu_i + gamma) (slt-reference 3.1, within
   0.1% of d/2).
4. Relabelled saddles (``PLATEAUS``): the middle of the rank-k plateau of a DLN trained
   from small initialisation by gradient descent (a saddle of its training loss,
   ``_suite.plateau_point``), relabelled as in 1.; the LLC there is Aoyagi's
   lambda(widths, k), the reference NUTS as in 1.
Target i of ``TARGETS`` is built with seed i (``np.random.default_rng(i)`` for the weights,
``jax.random.key(i)`` for the DLN inputs, ``seed=i`` for the others), the plateaus and the
networks with the seeds they list (the digits MLP 12, the plateaus 13-15, the transformer
16); every sampling run uses ``jax.random.key(1)``.
Beside them, outside the goal's summary (``network_summary`` in the JSON), real networks
(``NETWORKS``, ``_networks.py``), batch 64: a tanh MLP 64-24-24-10 trained on all of
scikit-learn's digits, whose reference is full-batch NUTS from its trained point; and a
one-block causal transformer (1,224 parameters) trained to copy, relabelled (KL), whose
reference is long fixed-step SGLD runs at two steps that agree.

Settings, each run on every target in one run of the script:
(a) the default call: ``estimate_llc(key, loss_fn, params, data, step_size="auto",
    batch_size=500, num_chains=4, num_draws=2000)`` (default sampler, burn-in and the rest);
(b) the same with ``num_burnin_steps="auto"``;
(c) a fixed-step run at the step (a) ended with (``result.step_size``), in Furman & Lau's
    proportions: 10x the draws in all, the draws the last 10% (burn-in 18,000, 2,000 draws).
Recorded per run: the reference, the estimate +- stderr, the relative error, the flags, the
wall time (compilation and, for (a) and (b), the calibration included), the steps per chain
(burn-in + draws; the calibration's grid separately) and the cost ratios (a)/(c), (b)/(c)
of wall time. Summaries per setting: median and worst |error|, the unflagged-error count
(runs off by more than 10% with no flag at all), escape flags, and whether the goal of
issue 29 (every case within 8%, median <= 3%, cost <= 2x (c)) is met.

Usage: ``python benchmarks/defaults.py`` (``--skip-auto-burnin-above D``: no setting (b)
for targets with more than D parameters; ``--only NAME ...``: a subset; ``--chains C``: C
chains in every setting instead of 4, ``--draws D``: D draws instead of 2,000 (and 10 D
steps for (c)), each with ``--out`` for another folder; ``--seed-offset K``:
target i built with seed i + K, held-out instances; ``--sampling-key K``: every sampling
run with ``jax.random.key(K)``, other chains on the same targets).
``--quick``: two small targets, 200 draws. Outputs: a table,
``results/defaults/defaults.json`` (rewritten after every target) and ``defaults.png``
(error and cost per target and setting); the references are kept in
``results/defaults/nuts_references.json`` (NUTS) and ``long_runs.json`` (the transformer's)
and reused while their settings match.
"""

import argparse
import time
import warnings
from fractions import Fraction

import _suite
import jax
import numpy as np
from _common import parse_args, write
from _networks import digits_mlp_target, transformer_target
from _suite import NUM_DATA

import llc
from llc._run_probe import chain_steps

CHAINS, BATCH, DRAWS, QUICK_DRAWS = 4, 500, 2000, 200
FL_FACTOR = 10  # Furman & Lau: total steps = 10 x draws, the draws the last 10%
SAMPLING_KEY = 1
TOLERANCE, MEDIAN_GOAL, COST_GOAL, UNFLAGGED = 0.08, 0.03, 2.0, 0.10
ESCAPE_FLAGS = ("lower_loss_escape", "negative_estimate")

# (name, kind, spec): the suite; target i is built with seed i.
TARGETS = [
    ("DLN 5-4-4-5 r1", "dln", ((5, 4, 4, 5), 1)),
    ("DLN 6-5-5-6 r2", "dln", ((6, 5, 5, 6), 2)),
    ("DLN 8-6-6-8 r3", "dln", ((8, 6, 6, 8), 3)),
    ("DLN 5-5-5-5-5 r2", "dln", ((5, 5, 5, 5, 5), 2)),
    ("DLN 3-4-3 r1", "dln", ((3, 4, 3), 1)),
    ("DLN 4-6-4 r2", "dln", ((4, 6, 4), 2)),
    ("DLN 10-8-8-10 r4", "dln", ((10, 8, 8, 10), 4)),
    ("crossing w1^2 w2^2", "crossing", (1, 1)),
    ("crossing w1^2 w2^4", "crossing", (1, 2)),
    ("crossing w1^4 w2^4", "crossing", (2, 2)),
    ("crossing w1^2 w2^6", "crossing", (1, 3)),
    ("regular d=20", "regular", 20),
]
# Trained networks, reported beside the exact targets (not in the goal's summary): references
# by full-batch NUTS or long runs from their trained point (``_networks.py``).
# (name, kind, spec, seed): the seeds follow the twelve, in the order the rows were added
NETWORKS = [
    ("digits MLP 64-24-24-10", "mlp", (64, 24, 24, 10), 12),
    ("transformer copy", "transformer", None, 16),
]
NETWORK_KINDS = ("mlp", "transformer")
# Relabelled saddles (the saddles issue): points on the plateaus of DLNs trained from small
# initialisation, relabelled (name, kind, spec, seed)
PLATEAUS = [
    ("plateau DLN 6-4-4-6 r1", "plateau", ((6, 4, 4, 6), 1), 13),
    ("plateau DLN 6-4-4-6 r2", "plateau", ((6, 4, 4, 6), 2), 14),
    ("plateau DLN 5-4-3-5 r2", "plateau", ((5, 4, 3, 5), 2), 15),
]
QUICK_TARGETS = ("DLN 3-4-3 r1", "crossing w1^2 w2^2")


def build(kind: str, spec, seed: int, quick: bool) -> dict:
    """The target of kind ``kind`` (a suite row's) built with ``seed``."""
    if kind == "dln":
        return _suite.dln_target(*spec, seed, quick)
    if kind == "plateau":
        return _suite.plateau_target(*spec, seed, quick)
    if kind == "crossing":
        return _suite.crossing_target(spec, seed, 2001 if quick else 6001)
    if kind == "mlp":
        return digits_mlp_target(spec, seed, quick)
    if kind == "transformer":
        return transformer_target(seed, quick)
    if kind == "regular":
        return _suite.regular_target(spec, seed)
    raise ValueError(f"unknown target kind {kind!r}")


def fixed_settings(step_size: float, draws: int, chains: int = CHAINS) -> dict:
    """Setting (c): a fixed step, Furman & Lau's proportions (the draws the last 10%)."""
    return {
        "step_size": step_size,
        "num_burnin_steps": (FL_FACTOR - 1) * draws,
        "num_draws": draws,
        "num_chains": chains,
    }


def run(target: dict, settings: dict, key: int = SAMPLING_KEY) -> dict:
    """One ``estimate_llc`` call on ``target`` with ``jax.random.key(key)``, quietly."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = llc.estimate_llc(
            jax.random.key(key),
            target["loss_fn"],
            target["params"],
            target["data"],
            batch_size=target.get("batch_size", BATCH),
            progress_bar=False,
            **{"num_chains": CHAINS, **settings},
        )
    wall = time.perf_counter() - start
    ref = target["reference"]
    cal = r.calibration
    # every grid point ran its own chains: burn-in + draws each
    cal_steps = 0 if cal is None else sum(chain_steps(g) for row in cal.results for g in row)
    steps = chain_steps(r)
    return {
        "settings": {k: v for k, v in settings.items()},
        "llc_mean": float(r.llc_mean),
        "llc_stderr": float(r.llc_stderr),
        "rel_error": float(r.llc_mean / ref - 1),
        "flags": list(r.flags),
        "wall_s": wall,
        "step_size": float(r.step_size),
        "num_burnin_steps": int(r.num_burnin_steps),
        "spread_steps": int(r.spread_steps),
        "num_draws": int(r.num_draws),
        "steps_per_chain": int(steps),
        "calibration_steps_per_chain": int(cal_steps),
        "calibration_s": None if cal is None else float(cal.wall_time),
        "rhat": float(r.rhat),
    }


def summarise(rows: list[dict], setting: str) -> dict | None:
    """Median and worst |error|, flags, unflagged errors and costs of one setting."""
    done = [(row["name"], row["runs"][setting], row) for row in rows if setting in row["runs"]]
    if not done:
        return None
    errors = np.abs([r["rel_error"] for _, r, _ in done])
    unflagged = [name for name, r, _ in done if abs(r["rel_error"]) > UNFLAGGED and not r["flags"]]
    escapes = [name for name, r, _ in done if set(r["flags"]) & set(ESCAPE_FLAGS)]
    costs = [row["cost_ratio"][setting] for _, _, row in done if setting in row["cost_ratio"]]
    out = {
        "runs": len(done),
        "median_abs_error": float(np.median(errors)),
        "worst_abs_error": float(np.max(errors)),
        "worst": done[int(np.argmax(errors))][0],
        "within_8pct": int(np.sum(errors <= TOLERANCE)),
        "flagged": int(sum(bool(r["flags"]) for _, r, _ in done)),
        "unflagged_errors": len(unflagged),
        "unflagged_error_targets": unflagged,
        "escape_flags": escapes,
        "total_wall_s": float(sum(r["wall_s"] for _, r, _ in done)),
    }
    if costs:
        out["median_cost_ratio"] = float(np.median(costs))
        out["max_cost_ratio"] = float(np.max(costs))
    out["goal_met"] = bool(
        out["worst_abs_error"] <= TOLERANCE
        and out["median_abs_error"] <= MEDIAN_GOAL
        and not escapes
        and (not costs or out["max_cost_ratio"] <= COST_GOAL)
    )
    return out


def plot(payload: dict, out) -> None:
    """``defaults.png``: each target's relative error per setting, and the cost ratios.

    Error bars are two standard errors of the estimate (relative to the reference); a
    hollow marker is a flagged run; the band is the goal's 8%.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    y = np.arange(len(rows))
    fig, (ax0, ax1) = plt.subplots(
        1, 2, figsize=(10, 0.32 * len(rows) + 1.5), sharey=True, width_ratios=(2, 1)
    )
    ax0.axvspan(-100 * TOLERANCE, 100 * TOLERANCE, color="0.92")
    labelled = set()
    for i, (s, color) in enumerate((("a", "C0"), ("b", "C1"), ("c", "C2"))):
        for j, row in enumerate(rows):
            if s not in row["runs"]:
                continue
            r = row["runs"][s]
            err = 200 * r["llc_stderr"] / row["reference"]
            face = "none" if r["flags"] else color
            ax0.errorbar(
                100 * r["rel_error"], j + 0.2 * (i - 1), xerr=err, fmt="o", color=color,
                mfc=face, ms=5, label=None if s in labelled else f"({s})",
            )  # fmt: skip
            labelled.add(s)
            if s != "c":
                ax1.plot(row["cost_ratio"][s], j + 0.2 * (i - 1), "o", color=color)
    ax0.axvline(0, color="k", lw=0.8)
    ax0.set(yticks=y, yticklabels=[r["name"] for r in rows], xlabel="error (%)")
    worst = max(abs(r["rel_error"]) for row in rows for r in row["runs"].values())
    ax0.set_xlim(-max(60, 110 * worst), max(60, 110 * worst))  # every marker shown
    ax0.invert_yaxis()
    ax0.legend(title="hollow: flagged", fontsize=8)
    ax1.axvline(COST_GOAL, color="k", ls="--", lw=0.8)
    ax1.set(xlabel="wall time / (c)")
    fig.tight_layout()
    fig.savefig(out / "defaults.png", dpi=110)
    plt.close(fig)


def print_row(row: dict) -> None:
    for setting, r in row["runs"].items():
        cost = row["cost_ratio"].get(setting)
        print(
            f"{row['name']:<20} {row['d']:>4} {row['reference']:>8.4g}  ({setting}) "
            f"{r['llc_mean']:>8.4g} ± {r['llc_stderr']:<7.2g} {r['rel_error']:>+7.1%} "
            f"{r['step_size']:>9.3g} {r['steps_per_chain']:>7} {r['wall_s']:>6.1f}s "
            f"{'' if cost is None else f'{cost:.2f}x':>6}  {','.join(r['flags']) or '-'}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--skip-auto-burnin-above",
        type=int,
        default=None,
        metavar="D",
        help="run no setting (b) on targets with more than D parameters",
    )
    parser.add_argument("--only", nargs="+", default=None, help="run only these targets")
    parser.add_argument(
        "--chains", type=int, default=CHAINS, help=f"chains in every setting (default {CHAINS})"
    )
    parser.add_argument(
        "--draws",
        type=int,
        default=DRAWS,
        help=f"draws per chain in every setting, (c) 10x as many steps (default {DRAWS})",
    )
    parser.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="build target i with seed i + K (held-out instances of the same kinds)",
    )
    parser.add_argument(
        "--sampling-key",
        type=int,
        default=SAMPLING_KEY,
        help=f"the key of every sampling run (default {SAMPLING_KEY})",
    )
    args, out = parse_args(
        parser, "defaults", quick=f"{', '.join(QUICK_TARGETS)}; {QUICK_DRAWS} draws"
    )
    draws = QUICK_DRAWS if args.quick else args.draws
    names = QUICK_TARGETS if args.quick else args.only
    known = {t[0] for t in TARGETS + PLATEAUS + NETWORKS}
    if names is not None and set(names) - known:
        parser.error(
            f"--only: no target named {sorted(set(names) - known)}; the suite: {sorted(known)}"
        )
    offset = args.seed_offset
    every = [(i, *t) for i, t in enumerate(TARGETS)]
    every += [(seed, *t) for *t, seed in PLATEAUS + NETWORKS]
    suite = [(seed + offset, *t) for seed, *t in every if names is None or t[0] in names]
    default = {"step_size": "auto", "num_draws": draws, "num_chains": args.chains}
    payload = {
        "settings": {
            "a": {**default, "batch_size": BATCH},
            "b": {**default, "num_burnin_steps": "auto"},
            "c": {
                "step_size": "the step (a) ended with",
                "num_burnin_steps": (FL_FACTOR - 1) * draws,
                "num_draws": draws,
            },
        },
        "sampling_key": args.sampling_key,
        "num_data": NUM_DATA,
        "point_seeds": f"target i of TARGETS with seed i + {offset}; PLATEAUS and NETWORKS "
        f"with the seeds they list + {offset}",
        "skip_auto_burnin_above": args.skip_auto_burnin_above,
        "rows": [],
    }
    if args.quick:
        payload["quick"] = True
    print(
        f"{'target':<20} {'d':>4} {'ref':>8}  set  {'estimate':>8}   {'stderr':<7} {'error':>7} "
        f"{'step':>9} {'steps':>7} {'wall':>7} {'cost':>6}  flags"
    )
    start = time.perf_counter()
    for seed, name, kind, spec in suite:
        target = build(kind, spec, seed, args.quick)
        runs = {"a": run(target, default, args.sampling_key)}
        if args.skip_auto_burnin_above is None or target["d"] <= args.skip_auto_burnin_above:
            runs["b"] = run(target, {**default, "num_burnin_steps": "auto"}, args.sampling_key)
        fixed = fixed_settings(runs["a"]["step_size"], draws, args.chains)
        runs["c"] = run(target, fixed, args.sampling_key)
        row = {
            "name": name,
            "kind": kind,
            "spec": list(spec) if isinstance(spec, tuple) else spec,
            "seed": seed,
            "d": target["d"],
            "true_lambda": None if kind in NETWORK_KINDS else float(target["true_lambda"]),
            "true_lambda_exact": None
            if kind in NETWORK_KINDS
            else str(Fraction(target["true_lambda"])),
            "train_loss": target.get("train_loss"),
            "multiplicity": target["multiplicity"],
            "reference": target["reference"],
            "reference_stderr": target.get("reference_stderr", 0.0),
            "reference_nuts": target.get("reference_nuts"),
            "reference_long_runs": target.get("reference_long_runs"),
            "reference_kind": target["reference_kind"],
            "runs": runs,
            "cost_ratio": {s: runs[s]["wall_s"] / runs["c"]["wall_s"] for s in runs if s != "c"},
            "steps_ratio": {
                s: (runs[s]["steps_per_chain"] + runs[s]["calibration_steps_per_chain"])
                / runs["c"]["steps_per_chain"]
                for s in runs
                if s != "c"
            },
        }
        payload["rows"].append(row)
        print_row(row)
        exact = [r for r in payload["rows"] if r["kind"] not in NETWORK_KINDS]
        networks = [r for r in payload["rows"] if r["kind"] in NETWORK_KINDS]
        payload["summary"] = {s: summarise(exact, s) for s in ("a", "b", "c")}
        payload["network_summary"] = {s: summarise(networks, s) for s in ("a", "b", "c")}
        payload["total_wall_s"] = time.perf_counter() - start
        path = write(out, "defaults", payload)
    print()
    print(
        f"{'setting':<8} {'median|err|':>11} {'worst|err|':>11} {'<=8%':>6} {'flagged':>8} "
        f"{'unflagged>10%':>14} {'cost med/max':>13}  goal"
    )
    for s, sm in payload["summary"].items():  # the exact targets; networks are in the JSON
        if sm is None:
            continue
        cost = "1 (ref)"
        if "max_cost_ratio" in sm:
            cost = f"{sm['median_cost_ratio']:.2f}/{sm['max_cost_ratio']:.2f}"
        print(
            f"({s}){'':<5} {sm['median_abs_error']:>11.1%} {sm['worst_abs_error']:>11.1%} "
            f"{sm['within_8pct']:>3}/{sm['runs']:<2} {sm['flagged']:>8} "
            f"{sm['unflagged_errors']:>14} {cost:>13}  {'met' if sm['goal_met'] else 'not met'}"
        )
    plot(payload, path.parent)
    print(f"total {payload['total_wall_s']:.0f} s; written to {path}")


if __name__ == "__main__":
    main()
