"""Chains sharded over several devices give the single-device numbers (host devices)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

import llc

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import llc
    from llc import loop, ground_truth as gt

    assert jax.local_device_count() == 4
    p = gt.make_dln_problem([4, 5, 3], seed=0, num_data=4000)
    kw = dict(step_size=1e-5, batch_size=200, num_chains=8, num_draws=300, num_burnin_steps=100)
    sharded = llc.estimate_llc(jax.random.key(0), p.loss_fn, p.params, p.data, **kw)
    single = llc.estimate_llc(jax.random.key(0), p.loss_fn, p.params, p.data, num_devices=1, **kw)
    diff = np.abs(sharded.loss_trace - single.loss_trace)
    print("max trace difference", diff.max(), "identical draws", np.mean(diff == 0))
    # the same chains: only the last float32 bit of a loss may differ (XLA may fuse the
    # per-device program differently), far below any statistical resolution
    np.testing.assert_allclose(sharded.loss_trace, single.loss_trace, rtol=1e-6, atol=0)
    assert abs(sharded.llc_mean - single.llc_mean) <= 1e-6 * abs(single.llc_mean)
    # the run really was spread: the chain axis of the compiled outputs spans 4 devices
    plan = llc.plan.make_plan(
        jax.random.key(0), p.loss_fn, p.params, p.data,
        llc.settings.Settings.build("estimate_llc", progress_bar=False, **kw))
    assert plan.config.mesh is not None and plan.config.mesh.devices.size == 4
    hyper = loop.make_hyper(1e-6, plan.nbeta, 1.0, plan.init_loss, jnp.float32)
    out = loop.run_chains(plan.rng_key, plan.params, plan.data, hyper,
                           loss_fn=p.loss_fn, config=plan.config)
    assert len(out.delta.sharding.device_set) == 4
    print("ok")
    """
)


@pytest.mark.slow
def test_sharded_chains_equal_single_device_in_a_4_device_subprocess():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
    print(out.stdout)


def test_num_devices_is_checked():
    loss_fn = lambda w, b: jnp.sum(w**2)  # noqa: E731
    call = {"step_size": 1e-3, "num_draws": 10, "num_chains": 3}
    with pytest.raises(ValueError, match="local devices"):
        llc.estimate_llc(
            jax.random.key(0), loss_fn, jnp.zeros(2), jnp.zeros((5, 1)), num_devices=64, **call
        )
    if jax.local_device_count() >= 2:
        with pytest.raises(ValueError, match="divide num_chains"):
            llc.estimate_llc(
                jax.random.key(0), loss_fn, jnp.zeros(2), jnp.zeros((5, 1)), num_devices=2, **call
            )
