"""Chains x data x model on a device mesh: the single-device numbers on every mesh shape."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

import llc
from llc import ground_truth as gt

SCRIPT = textwrap.dedent(
    """
    import itertools, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    import llc
    from llc import ground_truth as gt

    assert jax.local_device_count() == 8
    p = gt.make_dln_problem([8, 16, 16, 8], seed=0, num_data=2000)
    kw = dict(step_size=2e-6, batch_size=64, num_chains=8, num_draws=200, num_burnin_steps=50)
    single = llc.estimate_llc(jax.random.key(0), p.loss_fn, p.params, p.data, num_devices=1, **kw)
    specs = (P(None, "model"), P("model", None), P("model", None))
    for shape in [{"chains": 8}, {"chains": 2, "data": 2, "model": 2}, {"chains": 4, "data": 2},
                  {"data": 4, "model": 2}, {"model": 8}, {"data": 8}]:
        devices = np.array(jax.devices()).reshape(*shape.values())
        mesh = Mesh(devices, tuple(shape))
        extra = {"param_specs": specs} if "model" in shape else {}
        r = llc.estimate_llc(jax.random.key(0), p.loss_fn, p.params, p.data, mesh=mesh,
                             **extra, **kw)
        assert r.mesh_shape == shape and r.num_devices == 8, (r.mesh_shape, r.num_devices)
        # the same chains: only the order of float32 reductions differs
        np.testing.assert_allclose(r.loss_trace, single.loss_trace, rtol=2e-5, atol=0)
        assert abs(r.llc_mean - single.llc_mean) <= 1e-3 * abs(single.llc_mean), shape
        print(shape, "max rel diff", np.max(np.abs(r.loss_trace / single.loss_trace - 1)))
    # the run really was laid out: the chains' states split over chains and model
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("chains", "data", "model"))
    settings = llc.settings.Settings.build("estimate_llc", mesh=mesh, param_specs=specs,
                                           progress_bar=False, **kw)
    plan = llc.plan.make_plan(jax.random.key(0), p.loss_fn, p.params, p.data, settings)
    hyper = llc.loop.make_hyper(2e-6, plan.nbeta, 1.0, plan.init_loss, jnp.float32)
    out = llc.loop.run_chains(plan.rng_key, plan.params, plan.data, hyper,
                              loss_fn=p.loss_fn, config=plan.config)
    position = out.final_position[1]  # (chains, 16, 16): chains over "chains", rows over "model"
    assert position.sharding.spec[:2] == ("chains", "model"), position.sharding.spec
    print("ok")
    """
)


@pytest.mark.slow
def test_every_mesh_shape_gives_the_single_device_numbers_in_an_8_device_subprocess():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
    print(out.stdout)


def _mesh(*names):
    return Mesh(np.array(jax.devices()[:1]).reshape((1,) * len(names)), names)


def test_mesh_and_param_specs_are_checked_before_compiling():
    p = gt.make_dln_problem([4, 6, 4], seed=0, num_data=100)
    call = lambda **kw: llc.estimate_llc(  # noqa: E731
        jax.random.key(0), p.loss_fn, p.params, p.data, step_size=1e-5, **kw
    )
    with pytest.raises(ValueError, match="named from"):
        call(mesh=_mesh("batch"))
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        call(mesh="chains")
    with pytest.raises(ValueError, match="not both"):
        call(mesh=_mesh("chains"), num_devices=1)
    with pytest.raises(ValueError, match="pass mesh too"):
        call(param_specs=(PartitionSpec(), PartitionSpec()))
    with pytest.raises(ValueError, match="structure of params"):
        call(mesh=_mesh("model"), param_specs=(PartitionSpec(),))
    with pytest.raises(ValueError, match="only split a dimension over 'model'"):
        call(mesh=_mesh("model"), param_specs=(PartitionSpec("data"), PartitionSpec()))
    r = call(
        mesh=_mesh("chains", "data", "model"),
        batch_size=10,
        num_draws=20,
        num_chains=2,
        num_burnin_steps=0,
    )
    assert r.mesh_shape == {"chains": 1, "data": 1, "model": 1}


def test_default_param_specs_shard_only_large_matrices():
    mesh = _mesh("model")
    specs = llc.mesh.default_param_specs({"w": np.zeros((300, 400)), "b": np.zeros(400)}, mesh)
    assert specs == {"w": PartitionSpec(None, "model"), "b": PartitionSpec()}


WORKER = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    import numpy as np
    from jax.sharding import Mesh
    import llc
    from llc import ground_truth as gt

    assert jax.process_count() == 2 and jax.device_count() == 4
    p = gt.make_dln_problem([4, 5, 3], seed=0, num_data=2000)
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("chains", "data"))
    r = llc.estimate_llc(jax.random.key(0), p.loss_fn, p.params, p.data, mesh=mesh,
                         step_size=1e-5, batch_size=100, num_chains=4, num_draws=100,
                         num_burnin_steps=20, progress_bar=False)
    np.save(sys.argv[3], r.loss_trace)
    """
)


@pytest.mark.slow
def test_two_processes_on_a_global_mesh_equal_one_process(tmp_path):
    # Each process is a "host" with 2 CPU devices; the global mesh spans both, and every
    # process gets the whole result (the same as a single-process run with the same key).
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), str(port), str(tmp_path / f"trace{i}.npy")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    p = gt.make_dln_problem([4, 5, 3], seed=0, num_data=2000)
    single = llc.estimate_llc(
        jax.random.key(0),
        p.loss_fn,
        p.params,
        p.data,
        num_devices=1,
        step_size=1e-5,
        batch_size=100,
        num_chains=4,
        num_draws=100,
        num_burnin_steps=20,
    )
    for i in range(2):
        np.testing.assert_allclose(
            np.load(tmp_path / f"trace{i}.npy"), single.loss_trace, rtol=2e-5
        )
