"""The exact targets of ``benchmarks/defaults.py``: each built with its reference value.

Deep linear networks at minimal points and on the plateaus of a training run (relabelled,
references by full-batch NUTS on the loss's exact moment form), normal crossings (exact
finite-n expectation by quadrature) and a regular quadratic (closed form). The NUTS
references are kept in ``results/defaults/nuts_references.json`` and reused while their
settings match (:func:`cached`). The trained networks are in ``_networks.py``.
"""

import functools
import hashlib
import itertools
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import llc
from llc import ground_truth

NUM_DATA = 10_000
NUTS_KEY, NUTS_CHAINS, NUTS_DRAWS = 5, 8, 1000  # the DLN references
DLN_NUTS = {"key": NUTS_KEY, "chains": NUTS_CHAINS, "warmup": 1000, "draws": NUTS_DRAWS}
# slt-reference 3.3: E[nbeta K] at n = 1e4, gamma = 1 (the quadrature below must agree)
CROSSING_REFERENCE = {(1, 1): 0.3912, (1, 2): 0.2254, (2, 2): 0.1658, (1, 3): 0.1512}


def _chain(params, x):
    return functools.reduce(lambda h, w: h @ w, params, x)


def dln_target(widths, rank, seed, quick=False):
    """A relabelled DLN at a minimal point of rank ``rank`` (the reference case.py)."""
    rng = np.random.default_rng(seed)
    layers = []
    for a, b in itertools.pairwise(widths):
        u, s, vt = np.linalg.svd(rng.standard_normal((a, b)) / np.sqrt(a), full_matrices=False)
        layers.append((u[:, :rank] * s[:rank]) @ vt[:rank])
    layers = ground_truth.dln_minimal_point(layers)
    realised = ground_truth.product_rank(layers)
    if realised != rank:
        raise RuntimeError(f"{widths}: product rank {realised}, not {rank}")
    key = f"{'-'.join(map(str, widths))} r{rank} seed {seed}"
    return relabelled_dln(layers, widths, rank, seed, key, quick)


def plateau_point(widths, rank, seed):
    """The middle of the rank-``rank`` plateau of a DLN trained from small initialisation.

    Teacher: singular values 3, 1.5, 0.75, ... (``min(widths)`` of them) between random
    orthonormal bases; gradient descent (step 0.1) on ``0.5 |P(w) - T|^2``, the loss of
    whitened inputs, from N(0, (2e-4)^2) weights. The loss falls in steps: it sits at
    ``0.5 sum_{j > k} s_j^2`` while the product has rank k (a saddle of the training loss,
    gradient ~0, where chains at w* escape), then drops as the next mode is learnt. The
    point returned is the middle checkpoint (one every 50 steps) of those within 1e-3 of
    the drop to come from the rank-``rank`` plateau value.
    """
    m = min(widths)
    if not 0 < rank < m:
        raise ValueError(f"{widths}: rank {rank} has no plateau (0 < rank < {m})")
    rng = np.random.default_rng(seed)
    q_in = np.linalg.qr(rng.standard_normal((widths[0], widths[0])))[0]
    q_out = np.linalg.qr(rng.standard_normal((widths[-1], widths[-1])))[0]
    sing = 3.0 * 0.5 ** np.arange(m)
    teacher = jnp.asarray((q_in[:, :m] * sing) @ q_out[:, :m].T, jnp.float32)
    init = [
        jnp.asarray(2e-4 * rng.standard_normal((a, b)), jnp.float32)
        for a, b in itertools.pairwise(widths)
    ]

    def loss(p):
        return 0.5 * jnp.sum((functools.reduce(jnp.matmul, p) - teacher) ** 2)

    def descend(p, _):
        step = lambda _, q: jax.tree.map(lambda a, g: a - 0.1 * g, q, jax.grad(loss)(q))  # noqa: E731
        p = jax.lax.fori_loop(0, 50, step, p)
        return p, (loss(p), p)

    losses, path = jax.jit(lambda p: jax.lax.scan(descend, p, None, 3000)[1])(init)
    plateau, drop = 0.5 * np.sum(sing[rank:] ** 2), 0.5 * sing[rank] ** 2
    on = np.flatnonzero(np.abs(np.asarray(losses) - plateau) < 1e-3 * drop)
    if not on.size:
        raise RuntimeError(f"{widths}: no checkpoint on the rank-{rank} plateau")
    return [np.asarray(w[on[on.size // 2]], np.float64) for w in path]


def plateau_target(widths, rank, seed, quick=False):
    """A relabelled saddle: :func:`plateau_point`, relabelled (the saddles issue's LLC).

    At the plateau the training loss has a saddle; relabelled, w* is a global minimum of
    the realizable problem whose targets are its own outputs, and the LLC there is
    Aoyagi's lambda(widths, rank) (every layer is of rank ``rank`` up to the
    initialisation's leftovers, ~1e-3; the product's next singular value is < 1e-6).
    """
    layers = plateau_point(widths, rank, seed)
    sing = np.linalg.svd(functools.reduce(np.matmul, layers), compute_uv=False)
    if sing[rank] > 1e-6 * sing[0]:  # the product is of rank ``rank`` to 1e-6
        raise RuntimeError(f"{widths}: singular values {sing} on the rank-{rank} plateau")
    # the point in the key: one trained elsewhere (another jax, another machine, another
    # checkpoint rule) gets its own reference
    digest = hashlib.sha1(np.concatenate([np.round(w, 5).ravel() for w in layers])).hexdigest()
    key = f"plateau {'-'.join(map(str, widths))} r{rank} seed {seed} point {digest[:12]}"
    return relabelled_dln(layers, widths, rank, seed, key, quick)


def relabelled_dln(layers, widths, rank, seed, key, quick):
    """The relabelled problem at ``layers``, its Aoyagi lambda and NUTS reference."""
    params = [jnp.asarray(w, jnp.float32) for w in layers]
    x = jax.random.normal(jax.random.key(seed), (NUM_DATA, widths[0]))
    loss_fn, data = llc.relabel(_chain, params, x)
    lam, mult = ground_truth.dln_learning_coefficient(widths, rank)
    target = {
        "loss_fn": loss_fn,
        "params": params,
        "data": data,
        "d": sum(a * b for a, b in itertools.pairwise(widths)),
        "true_lambda": lam,
        "multiplicity": mult,
    }
    if quick:
        return {**target, "reference": float(lam), "reference_kind": "Aoyagi's lambda"}
    nuts = cached(key, DLN_NUTS, lambda: nuts_reference(params, x, loss_fn, data, seed))
    return {
        **target,
        "reference": nuts["llc_mean"],
        "reference_stderr": nuts["llc_stderr"],
        "reference_nuts": nuts,
        "reference_kind": "NUTS on the exact localized tempered posterior (moment form)",
    }


def moment_loss(params, x):
    """The relabelled DLN loss from the inputs' second moment S: 0.5 tr(D^T S D).

    ``D = P(w) - P(w*)``, the product of the layers less its value at w*; equal to
    ``0.5 mean_i |f_w(x_i) - f_w*(x_i)|^2`` for every w, at the cost of a few small matrix
    products whatever n (full batch only: the batch argument is ignored).
    """
    x64 = np.asarray(x, np.float64)
    second = jnp.asarray(x64.T @ x64 / x64.shape[0], jnp.float32)
    anchor = _chain(params, jnp.eye(params[0].shape[0]))

    def loss_fn(w, batch):
        del batch
        diff = _chain(w, jnp.eye(w[0].shape[0])) - anchor
        return 0.5 * jnp.sum(diff * (second @ diff))

    return loss_fn


def cached(key: str, settings: dict, compute, name: str = "nuts_references") -> dict:
    """``compute()``, kept in ``results/defaults/<name>.json`` under ``key``.

    A stored result is reused only if it was computed with the same ``settings``.
    """
    path = Path(__file__).parent / "results" / "defaults" / f"{name}.json"
    store = json.loads(path.read_text()) if path.exists() else {}
    if key in store and store[key]["settings"] == settings:
        return store[key]
    store[key] = {**compute(), "settings": settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(store, indent=1))
    return store[key]


def nuts_reference(params, x, loss_fn, data, seed: int) -> dict:
    """The finite-n target E[nbeta (L_n - L*)] by full-batch NUTS on :func:`moment_loss`.

    Aoyagi's lambda is the n -> infinity limit; at n = 1e4 on these small networks the
    posterior expectation sits 0.2-10% below it (DLN 5-5-5-5-5 r2: 9.90 +- 0.05 against
    11). The moment form is first checked against the data loss (1e-4 relative, at three
    distances from w*). 8 chains, 1,000 adaptation steps, 1,000 draws.
    """
    moment = moment_loss(params, x)
    rng = np.random.default_rng(seed)
    for scale in (1e-3, 1e-2, 0.3):
        point = [w + scale * rng.standard_normal(w.shape).astype(np.float32) for w in params]
        exact, fast = float(loss_fn(point, data)), float(moment(point, None))
        if abs(fast - exact) > 1e-4 * abs(exact) + 1e-9:
            raise RuntimeError(f"moment form {fast} != data loss {exact} at scale {scale}")
    return nuts_run(moment, params, data, DLN_NUTS)


def nuts_run(loss_fn, params, data, settings: dict) -> dict:
    """Full-batch NUTS from ``params`` (``settings``: key, chains, warmup, draws), summarised."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = llc.estimate_llc(
            jax.random.key(settings["key"]),
            loss_fn,
            params,
            data,
            step_size=None,
            sampler="nuts",
            num_chains=settings["chains"],
            num_burnin_steps=settings["warmup"],
            num_draws=settings["draws"],
            progress_bar=False,
        )
    return run_summary(r, start)


def run_summary(result, start: float) -> dict:
    """What a reference keeps of its ``estimate_llc`` result (``start``: its start time)."""
    return {
        "llc_mean": float(result.llc_mean),
        "llc_stderr": float(result.llc_stderr),
        "llc_per_chain": [float(v) for v in result.llc_per_chain],
        "rhat": float(result.rhat),
        "flags": list(result.flags),
        "wall_s": time.perf_counter() - start,
    }


def exact_crossing(k, nbeta: float, gamma: float = 1.0, num: int = 6001) -> float:
    """E[nbeta K] for K = w1^(2 k1) w2^(2 k2) under exp(-nbeta K - gamma/2 |w|^2).

    Nested trapezoidal quadrature on a geometric grid over the positive quadrant (the
    integrand is even in each coordinate); agrees with slt-reference 3.3 to 4 digits.
    """
    k1, k2 = k
    w = np.concatenate([[0.0], np.geomspace(1e-9, 14.0, num)])
    z, m = np.empty_like(w), np.empty_like(w)
    for rows in np.array_split(np.arange(w.size), 30):
        s = w[rows, None]
        nbk = nbeta * s ** (2 * k1) * w[None, :] ** (2 * k2)
        f = np.exp(-nbk - gamma * (s**2 + w[None, :] ** 2) / 2)
        z[rows] = np.trapezoid(f, w, axis=1)
        m[rows] = np.trapezoid(nbk * f, w, axis=1)
    return float(np.trapezoid(m, w) / np.trapezoid(z, w))


def crossing_target(k, seed, quadrature_points):
    """K = prod_j w_j^(2 k_j) at w* = 0: ``make_normal_crossing_problem``'s data and loss."""
    problem = ground_truth.make_normal_crossing_problem(list(k), seed=seed, num_data=NUM_DATA)
    loss_fn = problem.loss_fn
    nbeta = llc.settings.default_nbeta(NUM_DATA)
    exact = exact_crossing(k, nbeta, num=quadrature_points)
    if abs(exact - CROSSING_REFERENCE[tuple(k)]) > 2e-4:
        raise RuntimeError(f"quadrature {exact:.4f} != reference {CROSSING_REFERENCE[k]}")
    return {
        "loss_fn": loss_fn,
        "params": problem.params,
        "data": problem.data,
        "d": problem.num_params,
        "true_lambda": problem.true_lambda,
        "multiplicity": problem.multiplicity,
        "reference": exact,
        "reference_kind": "exact finite-n E[nbeta K] (n = 1e4, gamma = 1; lambda is asymptotic)",
    }


def regular_target(d, seed):
    problem = ground_truth.make_regular_problem(d, seed=seed, num_data=NUM_DATA)
    x = np.asarray(problem.data[0], np.float64)
    mu = np.linalg.eigvalsh(x.T @ x / x.shape[0])
    nbeta = llc.settings.default_nbeta(NUM_DATA)
    exact = float(0.5 * np.sum(nbeta * mu / (nbeta * mu + 1.0)))
    return {
        "loss_fn": problem.loss_fn,
        "params": problem.params,
        "data": problem.data,
        "d": problem.num_params,
        "true_lambda": problem.true_lambda,
        "multiplicity": 1,
        "reference": exact,
        "reference_kind": "exact finite-n 1/2 sum nbeta mu / (nbeta mu + gamma) (d/2 = lambda)",
    }
