"""Model adapters: the estimate for a flax or equinox model is that of the same plain network."""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import llc

SETTINGS = {
    "step_size": 1e-4,
    "batch_size": 64,
    "num_chains": 2,
    "num_draws": 200,
    "num_burnin_steps": 50,
    "nbeta": 100.0,
}


def mse(out, y):
    return jnp.mean(jnp.sum((out - y) ** 2, axis=-1))


def data():
    x = jax.random.normal(jax.random.key(0), (512, 3))
    y = jnp.stack([jnp.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    return x, y


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(3, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(self.bn(nnx.relu(self.l1(x)))))


def plain_bn_net(mean, var, eps):
    def loss_fn(p, batch):
        x, y = batch
        h = jax.nn.relu(x @ p["l1"]["kernel"] + p["l1"]["bias"])
        h = (h - mean) / jnp.sqrt(var + eps) * p["bn"]["scale"] + p["bn"]["bias"]
        return mse(h @ p["l2"]["kernel"] + p["l2"]["bias"], y)

    return loss_fn


def assert_same_estimate(a, b):
    np.testing.assert_allclose(a.loss_trace, b.loss_trace, rtol=1e-5, atol=1e-6)
    assert a.llc_mean == pytest.approx(b.llc_mean, rel=1e-4, abs=1e-4)


@pytest.mark.filterwarnings("ignore:LLC estimate flagged")  # an untrained net: not a minimum
@pytest.mark.slow
def test_nnx_model_equals_the_plain_network():
    # Batch statistics away from their initial values, and a dropout layer that would make
    # the loss random if the adapter did not switch the model to evaluation mode.
    model = NnxNet(nnx.Rngs(0))
    model.bn.mean.value = jnp.linspace(-0.5, 0.5, 8)
    model.bn.var.value = jnp.linspace(0.5, 2.0, 8)
    params, loss_fn = llc.from_nnx(model, mse)
    assert sorted(params) == ["bn", "l1", "l2"]
    assert "mean" not in params["bn"]  # batch statistics are not sampled
    plain = plain_bn_net(model.bn.mean.value, model.bn.var.value, model.bn.epsilon)
    x, y = data()
    assert loss_fn(params, (x, y)) == pytest.approx(float(plain(params, (x, y))), rel=1e-5)
    a = llc.estimate_llc(jax.random.key(1), loss_fn, params, (x, y), **SETTINGS)
    b = llc.estimate_llc(jax.random.key(1), plain, params, (x, y), **SETTINGS)
    assert_same_estimate(a, b)
    # the caller's model is left as it was (still in training mode)
    assert model.drop.deterministic is False


def test_nnx_predict_fn_is_the_plain_network_in_evaluation_mode():
    model = NnxNet(nnx.Rngs(0))
    model.bn.mean.value = jnp.linspace(-0.5, 0.5, 8)
    model.bn.var.value = jnp.linspace(0.5, 2.0, 8)
    params, predict_fn = llc.predict_from_nnx(model)
    assert sorted(params) == ["bn", "l1", "l2"]
    plain = plain_bn_net(model.bn.mean.value, model.bn.var.value, model.bn.epsilon)
    x, y = data()
    out = predict_fn(params, x)
    assert float(mse(out, y)) == pytest.approx(float(plain(params, (x, y))), rel=1e-5)
    assert jnp.array_equal(out, predict_fn(params, x))  # dropout off: deterministic
    # relabelled with it, w* is a global minimum: 0 there up to float32 rounding
    loss_fn, targets = llc.relabel(predict_fn, params, x)
    moved = jax.tree.map(lambda w: w + 0.1, params)
    assert float(loss_fn(params, targets)) <= 1e-6 * float(loss_fn(moved, targets))
    assert model.drop.deterministic is False  # the caller's model is left in training mode
    with pytest.raises(TypeError, match="nnx.Module"):
        llc.predict_from_nnx(lambda x: x)


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.relu(nn.Dense(8)(x))
        h = nn.BatchNorm(use_running_average=not train)(h)
        h = nn.Dropout(0.5, deterministic=not train)(h)
        return nn.Dense(2)(h)


@pytest.mark.filterwarnings("ignore:LLC estimate flagged")
def test_linen_model_equals_the_plain_network():
    model = LinenNet()
    x, y = data()
    variables = model.init(jax.random.key(0), x[:2], train=False)
    stats = {"BatchNorm_0": {"mean": jnp.linspace(-0.5, 0.5, 8), "var": jnp.linspace(0.5, 2.0, 8)}}
    variables = {"params": variables["params"], "batch_stats": stats}
    params, loss_fn = llc.from_linen(model.apply, variables, mse, train=False)
    assert sorted(params) == ["BatchNorm_0", "Dense_0", "Dense_1"]

    def plain(p, batch):
        xb, yb = batch
        h = jax.nn.relu(xb @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        bn = p["BatchNorm_0"]
        h = (h - stats["BatchNorm_0"]["mean"]) / jnp.sqrt(stats["BatchNorm_0"]["var"] + 1e-5)
        h = h * bn["scale"] + bn["bias"]
        return mse(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], yb)

    assert loss_fn(params, (x, y)) == pytest.approx(float(plain(params, (x, y))), rel=1e-5)
    a = llc.estimate_llc(jax.random.key(2), loss_fn, params, (x, y), **SETTINGS)
    b = llc.estimate_llc(jax.random.key(2), plain, params, (x, y), **SETTINGS)
    assert_same_estimate(a, b)


def test_adapter_errors_name_the_argument():
    with pytest.raises(TypeError, match="nnx.Module"):
        llc.from_nnx(lambda x: x, mse)
    with pytest.raises(TypeError, match="criterion"):
        llc.from_nnx(nnx.Linear(2, 1, rngs=nnx.Rngs(0)), "mse")
    with pytest.raises(ValueError, match="'params' collection"):
        llc.from_linen(nn.Dense(2).apply, {"batch_stats": {}}, mse)
    with pytest.raises(TypeError, match="apply_fn"):
        llc.from_linen(None, {"params": {}}, mse)


def eqx_net(eqx):
    class EqxNet(eqx.Module):
        l1: eqx.nn.Linear
        drop: eqx.nn.Dropout
        l2: eqx.nn.Linear
        perm: jax.Array  # an integer array: frozen
        power: int  # a Python int: frozen
        act: object  # a function: frozen

        def __call__(self, x):
            h = self.drop(self.act(self.l1(x))[self.perm] ** self.power)
            return self.l2(h)

    k1, k2 = jax.random.split(jax.random.key(0))
    return EqxNet(
        l1=eqx.nn.Linear(3, 8, key=k1),
        drop=eqx.nn.Dropout(0.5),
        l2=eqx.nn.Linear(8, 2, key=k2),
        perm=jnp.array([3, 1, 4, 0, 5, 7, 2, 6], jnp.int32),
        power=2,
        act=jnp.tanh,
    )


@pytest.mark.filterwarnings("ignore:LLC estimate flagged")
def test_equinox_model_equals_the_plain_network():
    eqx = pytest.importorskip("equinox")
    # A dropout layer in training mode (it would need a key and be random if the adapter
    # did not switch the model to inference mode), and frozen leaves of every kind.
    model = eqx_net(eqx)
    params, loss_fn = llc.from_equinox(model, mse)
    assert params.perm is None and params.power is None and params.act is None
    assert len(jax.tree.leaves(params)) == 4  # the two layers' weights and biases
    perm = model.perm

    def plain(p, batch):
        xb, yb = batch
        h = jnp.tanh(xb @ p.l1.weight.T + p.l1.bias)[:, perm] ** 2
        return mse(h @ p.l2.weight.T + p.l2.bias, yb)

    x, y = data()
    direct = mse(jax.vmap(eqx.nn.inference_mode(model))(x), y)
    assert loss_fn(params, (x, y)) == pytest.approx(float(direct), rel=1e-6)
    assert loss_fn(params, (x, y)) == pytest.approx(float(plain(params, (x, y))), rel=1e-5)
    a = llc.estimate_llc(jax.random.key(3), loss_fn, params, (x, y), **SETTINGS)
    b = llc.estimate_llc(jax.random.key(3), plain, params, (x, y), **SETTINGS)
    assert_same_estimate(a, b)
    # the caller's model is left as it was (still in training mode), its frozen fields too
    assert model.drop.inference is False
    assert model.power == 2 and model.act is jnp.tanh and model.perm.dtype == jnp.int32
    # a model that takes the whole batch
    batch_model = eqx.nn.Linear(3, 2, key=jax.random.key(1))
    params, loss_fn = llc.from_equinox(batched_linear(eqx, batch_model), mse, batched=True)
    assert loss_fn(params, (x, y)) == pytest.approx(float(mse(x @ batch_model.weight.T, y)))


def batched_linear(eqx, linear):
    class Batched(eqx.Module):
        linear: eqx.nn.Linear

        def __call__(self, xs):
            return xs @ self.linear.weight.T

    return Batched(linear)


def test_equinox_adapter_errors():
    eqx = pytest.importorskip("equinox")
    with pytest.raises(TypeError, match="eqx.Module"):
        llc.from_equinox(lambda x: x, mse)
    with pytest.raises(TypeError, match="criterion"):
        llc.from_equinox(eqx.nn.Linear(2, 1, key=jax.random.key(0)), "mse")
    with pytest.raises(ValueError, match="no floating-point array"):
        llc.from_equinox(eqx.nn.Lambda(jnp.tanh), mse)


def test_equinox_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "equinox", None)  # import equinox fails
    with pytest.raises(ImportError, match=r"pip install 'llc\[equinox\]'"):
        llc.from_equinox(object(), mse)
