"""Helpers shared by the benchmark scripts: the command line, timing and writing results.

Every script takes ``--quick`` (a run of seconds that exercises the whole code path: tiny
problems, few chains and draws, one seed) and ``--out DIR`` (where its JSON and PNG
results go). The default output folder is ``results/<script>/``, where the committed full
results live; with ``--quick`` it is ``results/<script>/quick/`` (git-ignored), so a quick
run never overwrites them. :func:`parse_args` adds both options.
"""

import argparse
import itertools
import json
import os
import platform
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import llc
from llc import ground_truth
from llc.plan import Plan, make_plan
from llc.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(
    parser: argparse.ArgumentParser, script: str, quick: str
) -> tuple[argparse.Namespace, Path]:
    """Add ``--quick`` and ``--out`` to ``parser``, parse the command line, make the folder.

    Args:
        parser: the script's parser, with its own options.
        script: the script's name (``"speed"`` for ``speed.py``): the default folder is
            ``results/<script>/``, or ``results/<script>/quick/`` with ``--quick``.
        quick: what ``--quick`` runs (its help text).

    Returns:
        ``(args, out)``: the parsed arguments and the output folder (created; also
        ``args.out``).
    """
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a run of seconds that exercises the whole code path: {quick}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for the results (default: {RESULTS.name}/{script}/, or "
        f"{RESULTS.name}/{script}/quick/ with --quick)",
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS / script / "quick" if args.quick else RESULTS / script
    args.out.mkdir(parents=True, exist_ok=True)
    return args, args.out


def plan_for(rng_key, loss_fn, params, data, **settings) -> Plan:
    """The :class:`llc.plan.Plan` that ``llc.estimate_llc`` would run with ``settings``."""
    return make_plan(rng_key, loss_fn, params, data, Settings.build("estimate_llc", **settings))


def machine() -> dict:
    """What the numbers were measured on."""
    dev = jax.devices()[0]
    return {
        "platform": dev.platform,
        "device": getattr(dev, "device_kind", str(dev)),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``fn()`` (which must block until done) over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def estimate_on(problem: ground_truth.Problem, seed: int, chains: int, settings: dict):
    """``llc.estimate_llc`` on a ground-truth problem, keyed by its seed, quietly.

    Returns ``(result, seconds)``; the flags stay on the result (their warnings are
    silenced, the benchmark reports them).
    """
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = llc.estimate_llc(
            jax.random.key(seed),
            problem.loss_fn,
            problem.params,
            problem.data,
            num_chains=chains,
            progress_bar=False,
            **settings,
        )
    return result, time.perf_counter() - start


def problem_row(bucket: str, seed: int, point: str, problem: ground_truth.Problem) -> dict:
    """The description of a DLN bucket problem that every benchmark row starts with."""
    local = problem.local_lambda
    return {
        "bucket": bucket,
        "seed": seed,
        "point": point,
        "widths": list(problem.widths),
        "d": problem.num_params,
        "rank": problem.rank,
        "true_lambda": float(problem.true_lambda),
        "multiplicity": problem.multiplicity,
        "local_lower_bound": float(problem.lambda_lower_bound),
        "local_lambda": None if local is None else float(local),
    }


def write(out: Path, name: str, payload: dict) -> Path:
    """Write ``payload`` (plus the machine description) to ``<out>/<name>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def previous_runs(out: Path, name: str, settings: dict) -> dict:
    """What an interrupted sweep wrote to ``<out>/<name>.json``, for ``--resume``.

    Returns that payload, or ``{}`` when there is no such file. Exits with a message when
    the file was written with other ``settings``: a resumed sweep must not mix set-ups.
    """
    path = out / f"{name}.json"
    if not path.exists():
        return {}
    previous = json.loads(path.read_text())
    changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
    if changed:
        raise SystemExit(
            f"--resume: {path.name} was written with other settings (file, now): {changed}; "
            "pass another --name, or drop --resume to start afresh."
        )
    return previous


def peer_dln_problem(num_data: int = 10_000, seed: int = 0) -> ground_truth.Problem:
    """The devinterp comparison workload (peers.md section 9): true lambda = 46.

    DLN 10-10-10-10 without bias, teacher N(0, 1/fan_in) with the first layer reduced to
    rank 5, Gaussian inputs, targets with unit Gaussian noise, loss 0.5 * ||f(x) - y||^2
    (summed over outputs, averaged over samples).
    """
    rng = np.random.default_rng(seed)
    widths = (10, 10, 10, 10)
    layers = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in itertools.pairwise(widths)]
    u, s, vt = np.linalg.svd(layers[0])
    s[5:] = 0.0
    layers[0] = (u * s) @ vt
    x = rng.standard_normal((num_data, widths[0]))
    y = np.linalg.multi_dot([x, *layers]) + rng.standard_normal((num_data, widths[-1]))

    def loss_fn(params, batch):
        xb, yb = batch
        out = xb
        for w in params:
            out = out @ w
        return 0.5 * jnp.mean(jnp.sum((out - yb) ** 2, axis=-1))

    rank = ground_truth.product_rank(layers)
    lam, mult = ground_truth.dln_learning_coefficient(widths, rank)
    params = tuple(jnp.asarray(w, jnp.float32) for w in layers)
    data = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    d = sum(w.size for w in layers)
    return ground_truth.Problem(
        "peer DLN 10-10-10-10", params, loss_fn, data, lam, mult, d, rank, widths
    )
