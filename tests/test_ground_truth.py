"""Exact learning coefficients (slt-reference.md section 2) and the problem builders."""

import itertools
import json
import pathlib
from fractions import Fraction as F

import numpy as np
import pytest

from llc import ground_truth as gt


def test_dln_equals_rrr_for_every_small_case():
    # A 3-width DLN [M, H, N] is reduced-rank regression: lambda and m must agree exactly.
    count = 0
    for M, H, N in itertools.product(range(1, 9), repeat=3):
        for r in range(min(M, H, N) + 1):
            assert gt.dln_learning_coefficient([M, H, N], r) == gt.rrr_learning_coefficient(
                M, H, N, r
            ), (M, H, N, r)
            count += 1
    assert count == sum(min(t) + 1 for t in itertools.product(range(1, 9), repeat=3))


@pytest.mark.parametrize(("m", "n"), [(1, 1), (3, 7), (10, 4), (20, 20)])
def test_single_layer_is_regular_for_every_rank(m, n):
    for r in range(min(m, n) + 1):
        assert gt.dln_learning_coefficient([m, n], r) == (F(m * n, 2), 1)


@pytest.mark.parametrize(
    ("widths", "r", "lam", "m"),
    [
        ([2, 1, 2], 0, F(1), 2),
        ([1, 2, 1], 0, F(1, 2), 1),
        ([2, 2, 2], 0, F(3, 2), 1),
        ([2, 2, 2, 2], 0, F(3, 2), 3),
        ([3, 3, 4], 0, F(4), 1),
        ([3, 3, 2, 2], 0, F(2), 3),
        ([5, 3, 5], 0, F(13, 2), 2),
        ([5, 4, 5], 0, F(8), 1),
        ([5, 10, 5], 0, F(25, 2), 1),
        ([10, 10, 10], 0, F(75, 2), 1),
        ([10, 10, 10], 5, F(47), 2),
        ([5, 5, 5, 5, 5], 0, F(8), 4),
        ([5, 5, 5, 5, 5], 2, F(11), 4),
        ([10, 20, 20, 10], 0, F(50), 1),
        ([20, 40, 40, 20], 0, F(200), 1),
        ([10] * 5, 0, F(63, 2), 5),
        ([10] * 5, 5, F(91, 2), 4),
    ],
)
def test_dln_reference_table(widths, r, lam, m):
    assert gt.dln_learning_coefficient(widths, r) == (lam, m)


def test_dln_peer_benchmark_value():
    assert gt.dln_learning_coefficient([10, 10, 10, 10], 5)[0] == 46


@pytest.mark.parametrize(
    ("layers", "lam"),
    [
        (1, 5000),
        (2, 3750),
        (3, F(6667, 2)),
        (4, 3125),
        (5, 3000),
        (10, 2750),
        (20, 2625),
        (50, 2550),
        (100, 2525),
    ],
)
def test_dln_depth_behaviour_width_100(layers, lam):
    assert gt.dln_learning_coefficient([100] * (layers + 1), 0)[0] == lam


def _brute_force_subset_lambda(widths, r):
    """Exhaustive search over all subsets for Aoyagi's conditions (a)-(c)."""
    deltas = [h - r for h in widths]
    idx = range(len(deltas))
    found = []
    for size in range(2, len(deltas) + 1):
        for sub in itertools.combinations(idx, size):
            out = [k for k in idx if k not in sub]
            ell, s = size - 1, sum(deltas[i] for i in sub)
            top = max(deltas[i] for i in sub)
            ok_a = not out or top < min(deltas[k] for k in out)
            ok_b = s >= ell * top
            ok_c = not out or s < ell * min(deltas[k] for k in out)
            if ok_a and ok_b and ok_c:
                found.append(sorted(deltas[i] for i in sub))
    return found


def test_prefix_search_matches_exhaustive_search():
    rng = np.random.default_rng(0)
    for _ in range(400):
        widths = [int(h) for h in rng.integers(1, 12, rng.integers(3, 7))]
        r = int(rng.integers(0, min(widths) + 1))
        found = _brute_force_subset_lambda(widths, r)
        assert len(found) == 1, (widths, r, found)
        deltas = [h - r for h in widths]
        chosen = sorted(deltas[i] for i in gt.aoyagi_subset(deltas))
        assert chosen == found[0]


def test_rrr_cases_and_devinterp_values():
    assert gt.rrr_learning_coefficient(5, 3, 5, 0) == (F(13, 2), 2)
    assert gt.rrr_learning_coefficient(5, 4, 5, 0) == (F(8), 1)
    for M, H, N in [(4, 3, 8), (8, 3, 4), (3, 8, 4)]:
        assert gt.rrr_learning_coefficient(M, H, N, 0)[0] == 6
    assert gt.rrr_learning_coefficient(1, 1, 5, 1) == (F(5, 2), 1)  # case 2: M + H < N + r


def test_normal_crossing_values():
    nc = gt.normal_crossing_learning_coefficient
    assert nc([0, 1]) == (F(1, 2), 1)
    assert nc([1, 1]) == (F(1, 2), 2)
    assert nc([2, 2]) == (F(1, 4), 2)
    assert nc([1, 3]) == (F(1, 6), 1)
    assert nc([3, 1], h=[1, 1]) == (F(1, 3), 1)
    assert nc([2, 1], h=[2, 2]) == (F(3, 4), 1)
    assert nc([4, 1], h=[6, 3]) == (F(7, 8), 1)
    assert nc([1, 1], h=[1, 1]) == (F(1), 2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: gt.dln_learning_coefficient([3, 0, 2], 0), ValueError, "each width"),
        (lambda: gt.dln_learning_coefficient([3], 0), ValueError, "at least input"),
        (lambda: gt.dln_learning_coefficient([3, 4, 2], 3), ValueError, "0..2"),
        (lambda: gt.dln_learning_coefficient([3, 4, 2], -1), ValueError, "rank"),
        (lambda: gt.dln_learning_coefficient([3.5, 2], 0), TypeError, "integer"),
        (lambda: gt.rrr_learning_coefficient(3, 2, 4, 3), ValueError, "0..2"),
        (lambda: gt.normal_crossing_learning_coefficient([0, 0]), ValueError, "positive"),
        (lambda: gt.normal_crossing_learning_coefficient([1, 1], h=[0]), ValueError, "one entry"),
        (lambda: gt.make_dln_bucket_problem("5K", 0), ValueError, "bucket"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_product_rank_survives_deep_ill_conditioned_products():
    rng = np.random.default_rng(1)
    layers = [rng.standard_normal((30, 30)) for _ in range(12)]
    s = np.linalg.svd(np.linalg.multi_dot(layers), compute_uv=False)
    assert s[-1] / s[0] < 1e-8  # a naive matrix_rank on the product would be fooled
    assert gt.product_rank(layers) == 30
    u, sv, vt = np.linalg.svd(layers[5])
    sv[7:] = 0.0
    layers[5] = (u * sv) @ vt
    assert gt.product_rank(layers) == 7


def test_dln_problem_is_realisable_with_known_rank():
    p = gt.make_dln_problem([6, 5, 4, 3], seed=2, num_data=500, prop_rank_reduce=1.0)
    assert float(p.loss_fn(p.params, p.data)) < 1e-10
    prod = np.linalg.multi_dot([np.asarray(w, np.float64) for w in p.params])
    assert p.rank == np.linalg.matrix_rank(prod, tol=1e-4 * np.linalg.norm(prod, 2))
    assert 1 <= p.rank <= 3
    assert (p.true_lambda, p.multiplicity) == gt.dln_learning_coefficient([6, 5, 4, 3], p.rank)
    assert p.num_params == 6 * 5 + 5 * 4 + 4 * 3
    x = np.asarray(p.data[0])
    assert x.min() >= -10 and x.max() <= 10 and x.shape == (500, 6)


def test_bucket_problems_follow_the_bucket_ranges_and_seed():
    spec = gt.DLN_BUCKETS["10K"]
    for seed in range(5):
        p = gt.make_dln_bucket_problem("10K", seed, num_data=10)
        assert spec.matrices[0] <= len(p.widths) - 1 <= spec.matrices[1]
        assert all(spec.widths[0] <= h <= spec.widths[1] for h in p.widths)
    a, b = (gt.make_dln_bucket_problem("1K", 4, num_data=10) for _ in range(2))
    assert a.widths == b.widths and a.rank == b.rank


def test_minimal_point_recipe_is_the_one_measured_on_held_out_seeds():
    # dln_recipe(point="minimal") documents the setting whose held-out accuracy the README
    # reports; the benchmark rows record the settings they ran with, so the two must agree
    # (and the recipe is the published one, four times as long, on RMSProp-SGLD).
    results = pathlib.Path(__file__).parents[1] / "benchmarks" / "results" / "accuracy"
    for bucket in ("1K", "10K"):
        recipe = gt.dln_recipe(bucket, point="minimal")
        for part in ("", "_rest"):
            name = f"accuracy_minimal_rmsprop_sgld_autostep_x4_{bucket}_steady_heldout{part}"
            runs = json.loads((results / f"{name}.json").read_text())["runs"]
            assert runs and all(run["recipe"] == recipe for run in runs), name
        published = gt.dln_recipe(bucket)
        assert recipe["num_draws"] == 4 * published["num_draws"]
        assert recipe["num_burnin_steps"] == 4 * published["num_burnin_steps"]
        assert recipe["sampler_options"] == {"adapt_steps": recipe["num_burnin_steps"]}
    with pytest.raises(ValueError, match="point"):
        gt.dln_recipe("1K", point="saddle")


def test_rrr_and_normal_crossing_problems():
    p = gt.make_rrr_problem(5, 3, 4, 2, num_data=200)
    assert p.rank == 2 and float(p.loss_fn(p.params, p.data)) < 1e-10
    assert p.true_lambda == gt.rrr_learning_coefficient(5, 3, 4, 2)[0]
    q = gt.make_normal_crossing_problem([1, 2], num_data=1000)
    w = np.array([0.7, -1.3], np.float32)
    assert float(q.loss_fn(w, q.data)) == pytest.approx(0.7**2 * 1.3**4, rel=1e-5)


def _jacobian_rank(mats):
    """Dense oracle: rank of d(W1 ... WL) from the Jacobian, in float64."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    with jax.enable_x64(True):
        params = tuple(jnp.asarray(m, jnp.float64) for m in mats)
        flat, unravel = ravel_pytree(params)

        def prod(f):
            out = unravel(f)[0]
            for w in unravel(f)[1:]:
                out = out @ w
            return out.ravel()

        s = np.linalg.svd(np.asarray(jax.jacfwd(prod)(flat)), compute_uv=False)
    return int(np.sum(s > 1e-9 * s[0]))


def _exact_rank_matrix(rng, shape, rank):
    """A float64 matrix of exactly the given rank (product of thin factors)."""
    return rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))


@pytest.mark.slow
def test_hessian_rank_staircase_matches_the_jacobian():
    rng = np.random.default_rng(3)
    for _ in range(15):
        widths = [int(h) for h in rng.integers(1, 7, rng.integers(3, 6))]
        mats = []
        for a, b in itertools.pairwise(widths):
            r = int(rng.integers(0, min(a, b) + 1))
            mats.append(_exact_rank_matrix(rng, (a, b), r))
        assert gt.dln_hessian_rank(mats) == _jacobian_rank(mats), widths


def test_gauss_newton_hessian_rank_of_a_realisable_dln():
    # The full loss Hessian (not just the Jacobian) at a realisable teacher.
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    p = gt.make_dln_problem([4, 3, 5, 3], seed=5, num_data=400, prop_rank_reduce=1.0)
    with jax.enable_x64(True):
        params = tuple(jnp.asarray(w, jnp.float64) for w in p.params)
        data = tuple(jnp.asarray(x, jnp.float64) for x in p.data)
        flat, unravel = ravel_pytree(params)
        hess = jax.hessian(lambda f: p.loss_fn(unravel(f), data))(flat)
        eig = np.linalg.eigvalsh(np.asarray(hess))
    assert np.min(eig) > -1e-6 * np.max(eig)  # a minimum: no negative curvature
    assert int(np.sum(eig > 1e-6 * np.max(eig))) == gt.dln_hessian_rank(p.params)


def test_local_llc_at_a_submersion_point_and_bounds():
    # Full-rank square layers with a rank-1 middle factor still make a submersion when
    # the first and last layers are invertible: the local LLC is then H_in * H_out / 2,
    # larger than Aoyagi's global value for rank 1.
    rng = np.random.default_rng(0)
    mats = [
        rng.standard_normal((6, 6)),
        _exact_rank_matrix(rng, (6, 4), 1),
        rng.standard_normal((4, 4)),
    ]
    assert gt.dln_hessian_rank(mats) == 24
    assert gt.dln_local_learning_coefficient(mats) == 12
    assert gt.dln_learning_coefficient([6, 6, 4, 4], 1)[0] < 12
    # Every layer of rank exactly r: not a Morse-Bott point, no closed form claimed.
    low = [
        _exact_rank_matrix(rng, (6, 6), 1),
        _exact_rank_matrix(rng, (6, 4), 1),
        _exact_rank_matrix(rng, (4, 4), 1),
    ]
    assert gt.dln_local_learning_coefficient(low) is None


def test_dln_problem_carries_local_bounds():
    p = gt.make_dln_bucket_problem("1K", 1, num_data=10)
    assert p.lambda_lower_bound == max(p.true_lambda, F(gt.dln_hessian_rank(p.params), 2))
    assert p.local_lambda is None or p.local_lambda == p.lambda_lower_bound


def test_minimal_point_keeps_the_function_with_every_layer_at_the_product_rank():
    rng = np.random.default_rng(11)
    for _ in range(12):
        widths = [int(h) for h in rng.integers(1, 8, rng.integers(3, 6))]
        mats = [
            _exact_rank_matrix(rng, (a, b), int(rng.integers(0, min(a, b) + 1)))
            for a, b in itertools.pairwise(widths)
        ]
        r = gt.product_rank(mats)
        low = gt.dln_minimal_point(mats)
        assert [m.shape for m in low] == [m.shape for m in mats]
        np.testing.assert_allclose(
            np.linalg.multi_dot(low), np.linalg.multi_dot(mats), atol=1e-9, rtol=1e-9
        )
        assert [gt.product_rank([m]) for m in low] == [r] * len(low), widths
        # Hessian rank = dim of the rank-r matrices: the first term of Aoyagi's formula.
        first_term = r * (widths[0] + widths[-1]) - r * r
        assert gt.dln_hessian_rank(low) == _jacobian_rank(low) == first_term, widths
        assert F(first_term, 2) <= gt.dln_learning_coefficient(widths, r)[0]
        again = gt.dln_minimal_point(low)  # already minimal: unchanged
        for a, b in zip(again, low, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-9)


def test_minimal_point_problem_targets_aoyagis_lambda():
    teacher = gt.make_dln_bucket_problem("1K", 2, num_data=300)
    low = gt.make_dln_bucket_problem("1K", 2, num_data=300, point="minimal")
    assert teacher.lambda_lower_bound > teacher.true_lambda  # the teacher's LLC exceeds it
    assert low.widths == teacher.widths and low.rank == teacher.rank
    assert low.local_lambda == low.lambda_lower_bound == low.true_lambda == teacher.true_lambda
    np.testing.assert_array_equal(low.data[0], teacher.data[0])
    np.testing.assert_allclose(low.data[1], teacher.data[1], rtol=1e-4, atol=1e-4)
    assert float(low.loss_fn(low.params, low.data)) < 1e-8
    with pytest.raises(ValueError, match="point must be 'teacher' or 'minimal'"):
        gt.make_dln_problem([3, 2], point="saddle")
