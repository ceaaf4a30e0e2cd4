"""Tests for `jaxcxr.models.layers.conv_path`: the public switch between the convolution's two gradient paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcxr.models import layers


def _inputs():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  k = 0.3 * jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
  return x, k


def _loss(x, k):
  return (layers.conv2d(x, k) ** 2).sum()


def _jaxpr(fn, *args) -> str:
  """The text of fn's jaxpr (nested jaxprs included): the primitives it traces to."""
  return str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("c_in,c_out,size", [(1, 4, 3), (3, 1, 3), (2, 3, 5)])
def test_paths_agree_on_first_and_second_derivatives(c_in, c_out, size):
  """The CPU path's own forward (one input channel), kernel gradient and input gradient, and R1's double backward."""
  x = jax.random.normal(jax.random.key(2), (2, 9, 7, c_in))
  k = 0.3 * jax.random.normal(jax.random.key(3), (size, size, c_in, c_out))
  r1 = lambda k, x: (jax.grad(lambda x: jnp.tanh(layers.conv2d(x, k)).sum())(x) ** 2).sum()
  results = {}
  for path in ("xla", "custom_vjp"):
    with layers.conv_path(path):
      results[path] = (jax.jit(layers.conv2d)(x, k), jax.jit(jax.grad(_loss, argnums=(0, 1)))(x, k),
                       jax.jit(jax.grad(r1))(k, x))
  for a, b in zip(jax.tree.leaves(results["xla"]), jax.tree.leaves(results["custom_vjp"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_paths_give_the_same_gradients_by_different_programs():
  x, k = _inputs()
  grads, jaxprs = {}, {}
  for path in ("xla", "custom_vjp"):
    with layers.conv_path(path):
      assert layers.conv_path_in_use() == path
      grads[path] = jax.jit(jax.grad(_loss, argnums=(0, 1)))(x, k)
      jaxprs[path] = _jaxpr(jax.grad(_loss, argnums=(0, 1)), x, k)
  assert "custom_vjp_call" in jaxprs["custom_vjp"] and "custom_vjp_call" not in jaxprs["xla"]
  for a, b in zip(grads["xla"], grads["custom_vjp"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_a_jitted_function_is_traced_again_inside_the_block():
  x, k = _inputs()
  paths = []

  @jax.jit
  def grad(x, k):
    paths.append(layers.conv_path_in_use())          # runs at trace time only
    return jax.grad(_loss, argnums=1)(x, k)

  default = layers.conv_path_in_use()
  other = "xla" if default == "custom_vjp" else "custom_vjp"
  grad(x, k)
  grad(x, k)
  with layers.conv_path(other):
    grad(x, k)
  grad(x, k)
  assert paths == [default, other, default]


def test_default_path_and_restoring():
  expected = "custom_vjp" if jax.default_backend() == "cpu" else "xla"
  assert layers.conv_path_in_use() == expected
  with layers.conv_path("xla"):
    with layers.conv_path("custom_vjp"):
      assert layers.conv_path_in_use() == "custom_vjp"
    assert layers.conv_path_in_use() == "xla"
    with layers.conv_path("auto"):
      assert layers.conv_path_in_use() == expected
  assert layers.conv_path_in_use() == expected
  with pytest.raises(RuntimeError, match="inside"):
    with layers.conv_path("xla"):
      raise RuntimeError("inside")
  assert layers.conv_path_in_use() == expected
  with pytest.raises(ValueError, match="conv_path: expected one of"):
    with layers.conv_path("cudnn"):
      pass
  assert layers.conv_path_in_use() == expected


def test_auto_is_xla_off_the_cpu(monkeypatch):
  """"auto" on any backend but a CPU: XLA's convolution and autodiff (the GPU branch, taken on the CPU)."""
  x, k = _inputs()
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert layers.conv_path_in_use() == "xla"
  assert "custom_vjp_call" not in _jaxpr(jax.grad(_loss, argnums=(0, 1)), x, k)
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert layers.conv_path_in_use() == "custom_vjp"
  assert "custom_vjp_call" in _jaxpr(jax.grad(_loss, argnums=(0, 1)), x, k)


def test_one_by_one_kernels_are_a_matmul_on_every_path():
  x = jnp.ones((1, 4, 4, 3))
  k = jnp.arange(6.0).reshape(1, 1, 3, 2)
  for path in ("xla", "custom_vjp"):
    with layers.conv_path(path):
      assert "conv_general_dilated" not in _jaxpr(layers.conv2d, x, k)
      np.testing.assert_allclose(np.asarray(layers.conv2d(x, k))[0, 0, 0], [6.0, 9.0])


def test_patches_is_im2col():
  x, k = _inputs()
  by_patches = (layers.patches(x, 3).reshape(-1, 27) @ k.reshape(27, 4)).reshape(2, 8, 8, 4)
  with layers.conv_path("xla"):
    np.testing.assert_allclose(np.asarray(by_patches), np.asarray(layers.conv2d(x, k)), rtol=1e-4, atol=1e-5)
