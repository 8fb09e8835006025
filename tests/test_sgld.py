"""The SGLD kernel: structure, limits, and parity with blackjax."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from llc import sgld


def loss_fn(w, batch):
    return 0.5 * jnp.mean((batch["x"] @ w["a"] + w["b"] - batch["y"]) ** 2)


def setup():
    k1, k2 = jax.random.split(jax.random.key(0))
    batch = {"x": jax.random.normal(k1, (32, 3)), "y": jax.random.normal(k2, (32,))}
    w = {"a": jnp.array([0.3, -0.2, 0.1]), "b": jnp.array(0.5)}
    return w, batch


def test_kernel_preserves_structure_and_jits():
    w, batch = setup()
    kernel = jax.jit(sgld.build_kernel(), static_argnames=("loss_fn",))
    state, info = kernel(
        jax.random.key(1),
        sgld.init(w),
        loss_fn=loss_fn,
        batch=batch,
        step_size=1e-3,
        nbeta=10.0,
        localization=1.0,
        anchor=w,
    )
    assert jax.tree.structure(state.position) == jax.tree.structure(w)
    assert info.loss.shape == () and float(info.distance) == 0.0


def test_without_noise_term_it_is_gradient_descent_on_the_local_potential():
    # With the noise removed (tiny step limit), the drift is -eps/2 (nbeta grad + gamma dw).
    w, batch = setup()
    anchor = jax.tree.map(lambda x: x + 0.1, w)
    algo = sgld.sgld(loss_fn, anchor=anchor, step_size=1e-3, nbeta=10.0, localization=2.0)
    new, _ = algo.step(jax.random.key(2), algo.init(w), batch)
    g = jax.grad(loss_fn)(w, batch)
    noise = sgld._gaussian_like(jax.random.key(2), w)
    expected = jax.tree.map(
        lambda p, gi, a, n: p - 0.5e-3 * (10.0 * gi + 2.0 * (p - a)) + np.sqrt(1e-3) * n,
        w,
        g,
        anchor,
        noise,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), new.position, expected
    )


def test_same_chain_as_blackjax_sgld_with_half_the_step_size():
    # blackjax: w + h * grad log p + sqrt(2 h) xi with h = eps / 2 (slt-reference 1.4).
    w, batch = setup()
    eps, nbeta, gamma = 1e-3, 25.0, 3.0
    n = batch["x"].shape[0]

    def grad_estimator(position, minibatch):
        g = jax.grad(loss_fn)(position, minibatch)
        return jax.tree.map(lambda gi, p, a: -(nbeta * gi + gamma * (p - a)), g, position, w)

    bj_step = blackjax.sgld.build_kernel()
    ours = sgld.build_kernel()
    pos_bj, state = w, sgld.init(w)
    del n
    for t in range(20):
        key = jax.random.fold_in(jax.random.key(5), t)
        pos_bj = bj_step(key, pos_bj, grad_estimator, batch, sgld.to_blackjax_step_size(eps))
        state, _ = ours(
            key, state, loss_fn, batch, step_size=eps, nbeta=nbeta, localization=gamma, anchor=w
        )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.position, pos_bj
    )
