"""The shared settings: one place for defaults, refusals and the checks that need no data."""

import inspect

import jax
import jax.numpy as jnp
import pytest

import llc
from llc.settings import Settings


def test_defaults_and_resolved_sampler_options():
    s = Settings.build("estimate_llc", step_size=1e-4, sampler="rmsprop_sgld")
    assert s.num_chains == 4 and s.num_draws == 1000 and s.num_burnin_steps == 1000
    assert s.sampler_options == llc.samplers.resolve_options("rmsprop_sgld", None)
    s = Settings.build("calibrate", defaults={"num_draws": 200}, num_chains=2, step_size=1.0)
    assert s.num_draws == 200 and s.num_chains == 2


def test_unknown_and_refused_keywords_are_type_errors_and_the_step_defaults_to_auto():
    with pytest.raises(TypeError, match="'num_chain'"):
        Settings.build("estimate_llc", step_size=1e-4, num_chain=2)
    assert Settings.build("estimate_llc").step_size == "auto"  # the default
    assert Settings.build("estimate_llc", sampler="nuts").step_size is None  # NUTS adapts
    with pytest.raises(TypeError, match="'escape_direction'"):
        Settings.build("f", refuse=("escape_direction",), step_size=1.0, escape_direction=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"step_size": -1.0}, ValueError, "step_size"),
        ({"step_size": "fast"}, ValueError, "'auto'"),
        ({"step_size": 1e-4, "num_chains": 0}, ValueError, "num_chains"),
        ({"step_size": 1e-4, "num_draws": 2.5}, TypeError, "num_draws"),
        ({"step_size": 1e-4, "num_burnin_steps": "auto", "num_chains": 1}, ValueError, "2"),
        ({"step_size": 1e-4, "sampler": "hmc"}, ValueError, "sampler"),
        ({"step_size": 1e-4, "sampler": "nuts"}, ValueError, "step_size=None"),
        ({"step_size": None, "sampler": "nuts", "batch_size": 10}, ValueError, "full-batch"),
        ({"step_size": None, "sampler": "nuts", "weight_mask": True}, ValueError, "weight_mask"),
        ({"step_size": 1e-4, "sampler_options": {"beta": 1}}, ValueError, "sampler_options"),
        ({"step_size": 1e-4, "num_chains": 3, "num_devices": 2}, ValueError, "num_devices"),
    ],
)
def test_bad_values_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        Settings.build("estimate_llc", **kwargs)


def test_every_entry_point_shares_the_settings_and_refuses_an_unknown_keyword():
    loss_fn = lambda w, b: jnp.sum(w**2) + 0.0 * jnp.sum(b)  # noqa: E731
    args = (jax.random.key(0), loss_fn, jnp.zeros(2), jnp.zeros((10, 1)))
    for fn, kw in [
        (llc.estimate_llc, {"step_size": 1e-4}),
        (llc.calibrate, {}),
        (llc.estimate_llc_multitemp, {"step_size": 1e-4}),
    ]:
        with pytest.raises(TypeError, match="'num_chain'"):
            fn(*args, num_chain=2, **kw)
    with pytest.raises(TypeError, match="'step_size'"):
        llc.calibrate(*args, step_size=1e-4)
    with pytest.raises(TypeError, match="'num_chain'"):
        llc.estimate_llc_trajectory(
            args[0], loss_fn, jnp.zeros((2, 2)), args[3], step_size=1e-4, num_chain=2
        )
    # the signatures spell the shared keywords out, with each entry point's defaults
    assert inspect.signature(llc.estimate_llc).parameters["num_draws"].default == 1000
    assert inspect.signature(llc.calibrate).parameters["num_draws"].default == 200
    assert "step_size" not in inspect.signature(llc.calibrate).parameters
    assert "escape_direction" not in inspect.signature(llc.estimate_llc_trajectory).parameters
