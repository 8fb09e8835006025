"""Saving and loading results, and the evidence type (no long sampling)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import flags


def _compare(a, b):
    """Field-by-field equality of two results (arrays exactly, NaN equal to NaN)."""
    for name in a._fields:
        x, y = getattr(a, name), getattr(b, name)
        if name == "wall_time":
            assert x == y
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        elif isinstance(x, float) and np.isnan(x):
            assert np.isnan(y)
        elif name in ("calibration",) and x is not None:
            for field in ("step_sizes", "llc_mean", "predicted_bias", "healthy", "reasons"):
                np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
            assert x.recommended == y.recommended and x.rule == y.rule
            assert x.curvature.mu_max == y.curvature.mu_max
            _compare(x.results[0][0], y.results[0][0])
        else:
            assert x == y, name


def test_a_calibrated_flagged_result_round_trips(tmp_path):
    loss_fn = lambda w, b: 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(b)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = llc.estimate_llc(
            jax.random.key(0),
            loss_fn,
            jnp.zeros(3),
            jnp.zeros((200, 1)),
            step_size="auto",
            num_chains=2,
            num_draws=200,
            num_burnin_steps=40,
        )
        bad = llc.estimate_llc(
            jax.random.key(0),
            loss_fn,
            jnp.zeros(3),
            jnp.zeros((200, 1)),
            step_size=3.0,
            num_chains=2,
            num_draws=50,
            num_burnin_steps=0,
        )
    assert r.calibration is not None and r.burnin == "follow" and bad.flags
    for result in (r, bad):
        path = result.save(tmp_path / f"run{id(result)}")
        assert path.suffix == ".npz"
        back = llc.load_result(path)
        _compare(result, back)
        assert set(back.evidence) == set(result.evidence)
        for flag, e in result.evidence.items():
            assert isinstance(back.evidence[flag], llc.Evidence)
            assert str(back.evidence[flag]) == str(e)
    # nothing in the archive needs pickle
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[k].dtype != object for k in archive.files)


def test_evidence_is_one_line_with_the_text_searchable():
    e = flags.negative_estimate(-3.0, np.array([-5.0, -1.0, 2.0]))
    assert e.flag == "negative_estimate" and e.values["chains"] == [0, 1]
    assert "\n" not in e.line() and len(e.line()) <= flags.MAX_LINE
    assert "llc.diagnose" in e and "saddle" in str(e)
    long = flags.Evidence("x", "y" * 500, {})
    assert len(long.line()) == flags.MAX_LINE


def test_warning_prints_one_short_line_per_flag():
    found = [
        flags.not_converged(1.3, 20.0, 400),
        flags.negative_estimate(-1.0, np.array([-1.0])),
    ]
    with pytest.warns(RuntimeWarning) as record:
        flags.warn(found)
    lines = str(record[0].message).splitlines()
    assert len(lines) == 3 and all(len(line) <= flags.MAX_LINE for line in lines)
    assert lines[1].startswith("[not_converged]") and lines[2].startswith("[negative_estimate]")


def test_to_arviz_holds_the_alive_chains_traces():
    az = pytest.importorskip("arviz")
    loss_fn = lambda w, b: 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(b)  # noqa: E731
    r = llc.estimate_llc(
        jax.random.key(0),
        loss_fn,
        jnp.zeros(2),
        jnp.zeros((100, 1)),
        step_size=1e-3,
        num_chains=3,
        num_draws=50,
        num_burnin_steps=10,
    )
    r = r._replace(diverged=np.array([False, True, False]))
    data = r.to_arviz()
    assert data.posterior["llc"].shape == (2, 50)
    np.testing.assert_allclose(
        data.posterior["llc"].values.mean(axis=1),
        r.nbeta * (r.loss_trace[[0, 2]] - r.init_loss).mean(axis=1),
    )
    assert "r_hat" in az.summary(data, var_names=["llc"]).columns
