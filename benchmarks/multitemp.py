"""Does the multi-temperature estimator close the finite-n gap? Exact values, then sampling.

At finite n the exact expectation of the single-temperature estimate sits below lambda
(slt-reference 3.3: 0.391 for lambda = 1/2 at n = 1e4). The multi-temperature estimator
(``llc.estimate_llc_multitemp``: n E_beta[L_n - L*] regressed on 1/beta over
beta* (1 +- 1/sqrt(2 log n)), Lau et al.'s ``extrapolated_multiitemp_lambdahat``) removes a
term linear in beta. This script measures whether that is the term that matters.

Part 1 is exact (no sampling): for the normal crossings K = w1^(2 k1) w2^2 with a Gaussian
localizer the expectation E_beta[n beta K] reduces to a 1-d integral (w2 is Gaussian given
w1), evaluated on a fine grid; the script checks it against the reference value 0.3912
first. Part 2 samples: ``estimate_llc_multitemp`` on the same potential at n = 1e4 against
the exact multi-temperature value of part 1, and on a small deep linear network at a
Morse-Bott teacher against its exact local LLC.

Outputs: a table and ``results/multitemp/multitemp.json``. Usage:
``python benchmarks/multitemp.py``; ``--quick``: part 1 at n = 1e3 and 1e4 only, part 2 with
2 chains and a few hundred steps.
"""

import argparse
import math
import time
import warnings

import jax
import numpy as np
from _common import parse_args, write

import llc
from llc import ground_truth

GAMMA = 1.0


def exact_single(k1: int, nbeta: float, gamma: float = GAMMA) -> float:
    """E[nbeta K] for K = w1^(2 k1) w2^2 under exp(-nbeta K - gamma/2 |w|^2), exactly."""
    pos = np.geomspace(1e-9, 14.0, 400_001)
    w = np.concatenate([-pos[::-1], pos])
    a = nbeta * w ** (2 * k1) + gamma / 2
    weight = np.exp(-gamma * w**2 / 2) * np.sqrt(np.pi / a)
    mean = nbeta * w ** (2 * k1) / (2 * a)  # E[nbeta K | w1] with w2 Gaussian
    return float(np.trapezoid(weight * mean, w) / np.trapezoid(weight, w))


def exact_multitemp(k1: int, n: int) -> tuple[float, float, np.ndarray]:
    nbetas = llc.temperature.default_nbetas(n)
    per = np.array([exact_single(k1, nb) for nb in nbetas])
    inv_beta = n / nbetas
    slope = float(np.polyfit(inv_beta, per * inv_beta, 1)[0])
    return exact_single(k1, n / math.log(n)), slope, per


def part1(quick: bool = False) -> list[dict]:
    assert abs(exact_single(1, 1e4 / math.log(1e4)) - 0.3912) < 1e-4  # the reference value
    rows = []
    for k1, lam in ((1, 0.5), (2, 0.25)):
        for n in (10**3, 10**4) if quick else (10**3, 10**4, 10**5, 10**6):
            single, multi, per = exact_multitemp(k1, n)
            rows.append(
                {
                    "potential": f"w1^{2 * k1} w2^2",
                    "true_lambda": lam,
                    "n": n,
                    "single_temperature": single,
                    "multi_temperature": multi,
                    "per_temperature": per.tolist(),
                    "single_gap": (lam - single) / lam,
                    "multi_gap": (lam - multi) / lam,
                }
            )
    return rows


def part2(quick: bool = False) -> list[dict]:
    """The sampled checks; ``quick``: 2 chains and a few hundred steps (the code path only)."""
    if quick:
        crossing = {"num_chains": 2, "num_draws": 200, "num_burnin_steps": 200}
        dln_run = {"num_chains": 2, "num_draws": 100, "num_burnin_steps": 300}
    else:
        crossing = {"num_chains": 16, "num_draws": 10_000, "num_burnin_steps": 20_000}
        dln_run = {"num_chains": 8, "num_draws": 3000, "num_burnin_steps": 30_000}
    rows = []
    n = 10_000
    problem = ground_truth.make_normal_crossing_problem([1, 1], num_data=n)
    _, exact_multi, _ = exact_multitemp(1, n)
    start = time.perf_counter()
    r = llc.estimate_llc_multitemp(
        jax.random.key(0),
        problem.loss_fn,
        problem.params,
        problem.data,
        step_size=5e-5,
        localization=GAMMA,
        num_steps_bw_draws=10,
        **crossing,
    )
    rows.append(
        {
            "problem": "normal crossing w1^2 w2^2, n = 1e4",
            "target": "exact multi-temperature value (part 1)",
            "exact": exact_multi,
            "true_lambda": 0.5,
            "multi_temperature": r.llc,
            "multi_temperature_stderr": r.llc_stderr,
            "single_temperature_at_beta_star": float(r.llc_per_temperature[2]),
            "time_s": time.perf_counter() - start,
        }
    )
    dln = ground_truth.make_dln_problem([6, 8, 5, 7], seed=0, num_data=100_000, prop_rank_reduce=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = llc.estimate_llc_multitemp(
            jax.random.key(1),
            dln.loss_fn,
            dln.params,
            dln.data,
            step_size=5e-7,
            localization=GAMMA,
            batch_size=500,
            **dln_run,
        )
    single = r.results[2]
    rows.append(
        {
            "problem": f"{dln.name} (Morse-Bott teacher)",
            "target": "exact local LLC",
            "exact": float(dln.local_lambda),
            "true_lambda": float(dln.local_lambda),
            "multi_temperature": r.llc,
            "multi_temperature_stderr": r.llc_stderr,
            "single_temperature_at_beta_star": single.llc_mean,
            "single_temperature_stderr": single.llc_stderr,
            "time_s": time.perf_counter() - start,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args, out = parse_args(
        parser, "multitemp", quick="part 1 at n = 1e3 and 1e4, part 2 with 2 chains, 400 steps"
    )
    exact = part1(args.quick)
    print("Part 1, exact: finite-n gap (lambda - E[estimate]) / lambda, gamma = 1")
    print(
        f"{'potential':>12} {'lambda':>6} {'n':>8} {'single':>8} {'multi':>8} "
        f"{'gap1':>7} {'gapM':>7}"
    )
    for r in exact:
        print(
            f"{r['potential']:>12} {r['true_lambda']:6.3f} {r['n']:8d} "
            f"{r['single_temperature']:8.4f} {r['multi_temperature']:8.4f} "
            f"{r['single_gap']:+7.1%} {r['multi_gap']:+7.1%}"
        )
    sampled = part2(args.quick)
    print("Part 2, sampled")
    for r in sampled:
        print(
            f"  {r['problem']}: multi-temperature {r['multi_temperature']:.4g} ± "
            f"{r['multi_temperature_stderr']:.2g} (exact {r['exact']:.4g}, {r['target']}); "
            f"single temperature {r['single_temperature_at_beta_star']:.4g}; {r['time_s']:.0f}s"
        )
    payload = {"gamma": GAMMA, "exact": exact, "sampled": sampled}
    path = write(out, "multitemp", {**payload, "quick": args.quick} if args.quick else payload)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
