"""The quick-start demo: the LLC of a deep linear network, where the answer is known.

Run with ``python -m llc.demo`` (or ``make demo``). It makes the default call, the one
docs/defaults.md measures: the step size chosen by measurement (``step_size="auto"``),
the default sampler, burn-in, nbeta and localization.
"""

import time

import jax

import llc
from llc import ground_truth


def main() -> None:
    """Estimate the LLC of a deep linear network teacher and compare with its exact value."""
    # Full-rank teacher layers: the teacher is a Morse-Bott point, so the LLC *at* the
    # teacher is known exactly, and here it equals Aoyagi's global learning coefficient.
    problem = ground_truth.make_dln_problem(
        [10, 20, 15, 10], seed=0, num_data=100_000, prop_rank_reduce=0.0
    )
    n = problem.data[0].shape[0]
    print(f"{problem.name}: d = {problem.num_params} parameters, n = {n:,} samples")

    start = time.perf_counter()
    result = llc.estimate_llc(
        jax.random.key(0),
        problem.loss_fn,
        problem.params,
        problem.data,
        batch_size=500,
        num_chains=4,
        num_draws=2000,
    )
    wall = time.perf_counter() - start
    truth = float(problem.local_lambda)
    print(
        f"step_size {result.step_size:.2e} (chosen by measurement), "
        f"nbeta = n / log n = {result.nbeta:.0f}, localization {result.localization}"
    )
    print(f"estimated LLC : {result.llc_mean:.2f} +/- {result.llc_stderr:.2f} (standard error)")
    print(
        f"exact LLC     : {truth:.2f} (the LLC at this teacher; Aoyagi's lambda "
        f"{problem.true_lambda})"
    )
    print(f"relative error: {(result.llc_mean - truth) / truth:+.1%}")
    print(
        f"chains {result.num_chains}, draws {result.num_draws} per chain after "
        f"{result.num_burnin_steps} burn-in steps, wall time {wall:.1f} s (calibration and "
        "compilation included)"
    )
    for flag in result.flags:
        print(f"[{flag}] {result.evidence[flag]}")


if __name__ == "__main__":
    main()
