"""Plots: each takes a result and returns a figure that shows what it claims to."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import llc

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def saddle_result():
    # A saddle: w0^2 - 0.05 w1^2 with a weak localizer, so chains escape along w1.
    def loss_fn(w, batch):
        return w[0] ** 2 - 0.05 * w[1] ** 2 + 0.01 * w[1] ** 4

    with pytest.warns(RuntimeWarning):
        return llc.estimate_llc(
            jax.random.key(0),
            loss_fn,
            jnp.zeros(2),
            jnp.zeros((1000, 1)),
            step_size=1e-3,
            localization=0.1,
            nbeta=100.0,
            num_chains=3,
            num_draws=300,
            num_burnin_steps=100,
        )


def test_loss_traces_mark_escapes_and_the_reference(saddle_result):
    r = saddle_result
    assert r.escaped.any()
    fig = llc.plot.loss_traces(r)
    ax = fig.axes[0]
    red = [line for line in ax.lines if line.get_color() == "tab:red"]
    assert len(red) == 2 * int(r.escaped.sum())  # burn-in and draws of each escaped chain
    assert any(np.allclose(line.get_ydata(), 0.0) for line in ax.lines)  # L_n(w*)
    matplotlib.pyplot.close(fig)


def test_llc_per_chain_and_spectrum(saddle_result):
    fig = llc.plot.llc_per_chain(saddle_result)
    offsets = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 1], saddle_result.llc_per_chain)
    matplotlib.pyplot.close(fig)

    def loss_fn(w, batch):
        return 0.5 * jnp.sum(jnp.array([2.0, 1.0, -0.5]) * w**2)

    diagnosis = llc.diagnose(
        jax.random.key(1), loss_fn, jnp.zeros(3), jnp.zeros((10, 1)), nbeta=10.0, localization=1.0
    )
    fig = llc.plot.hessian_spectrum(diagnosis)
    title = fig.axes[0].get_title()
    assert "nβ|λ_min| = 5 vs γ = 1" in title  # 10 * 0.5 = 5 > 1: not confined
    matplotlib.pyplot.close(fig)


@pytest.mark.slow
def test_calibration_and_trajectory_figures():
    x = jax.random.normal(jax.random.key(0), (500, 2))
    y = x @ jnp.array([1.0, -1.0]) + jax.random.normal(jax.random.key(1), (500,))
    w = jnp.linalg.lstsq(x, y)[0]

    def loss_fn(p, b):
        return 0.5 * jnp.mean((b[0] @ p - b[1]) ** 2)

    cal = llc.calibrate(jax.random.key(2), loss_fn, w, (x, y), batch_size=50, num_draws=50)
    fig = llc.plot.calibration(cal)
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    matplotlib.pyplot.close(fig)
    traj = llc.estimate_llc_trajectory(
        jax.random.key(3),
        loss_fn,
        jnp.stack([w, w + 0.01]),
        (x, y),
        step_size=1e-4,
        batch_size=50,
        num_draws=100,
        num_burnin_steps=50,
    )
    fig = llc.plot.trajectory(traj, steps=[100, 200])
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), [100, 200])
    matplotlib.pyplot.close(fig)
