"""Tests of jaxcxr.batching.map_batches: padding, shapes, compile counts, empty inputs, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcxr.batching import map_batches


def test_results_equal_one_call_over_all_rows():
  x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
  out = map_batches(lambda a: {"sum": a["x"].sum(-1), "twice": 2 * a["x"]}, {"x": x}, 3)
  np.testing.assert_array_equal(out["sum"], x.sum(-1))
  np.testing.assert_array_equal(out["twice"], 2 * x)
  assert isinstance(out["sum"], np.ndarray)


def test_last_batch_is_padded_with_its_last_row_and_shapes_are_static():
  seen = []

  def fn(a):
    seen.append(np.asarray(a))
    return a * 10

  out = map_batches(fn, np.arange(5), 2)
  np.testing.assert_array_equal(out, np.arange(5) * 10)
  assert [s.tolist() for s in seen] == [[0, 1], [2, 3], [4, 4]]


def test_batch_capped_at_n_unless_fixed_shape():
  shapes = []
  map_batches(lambda a: shapes.append(a.shape) or a, np.zeros((3, 2)), 8)
  map_batches(lambda a: shapes.append(a.shape) or a, np.zeros((3, 2)), 8, fixed_shape=True)
  assert shapes == [(3, 2), (8, 2)]


def test_one_compilation_for_any_n_with_fixed_shape():
  traces = []

  @jax.jit
  def fn(a):
    traces.append(1)  # runs at trace time only
    return a + 1

  for n in (1, 3, 4, 9):
    np.testing.assert_array_equal(map_batches(fn, np.arange(n), 4, fixed_shape=True), np.arange(n) + 1)
  assert len(traces) == 1


def test_empty_input_gives_empty_outputs_of_the_right_shape():
  def fn(a):
    return {"mean": jnp.mean(a, axis=(1, 2)), "map": a[..., None].astype(jnp.float16)}

  out = map_batches(fn, np.zeros((0, 4, 5), np.float32), 16)
  assert out["mean"].shape == (0,) and out["mean"].dtype == np.float32
  assert out["map"].shape == (0, 4, 5, 1) and out["map"].dtype == np.float16
  assert isinstance(out["map"], np.ndarray)


def test_put_places_every_leaf():
  placed = []

  def put(leaf):
    placed.append(leaf.shape)
    return jnp.asarray(leaf)

  map_batches(lambda a: a["x"] + a["y"], {"x": np.zeros((4, 2)), "y": np.ones((4, 2))}, 2, put=put)
  assert placed == [(2, 2)] * 4


@pytest.mark.parametrize("arrays, batch_size", [
    ({"x": np.zeros((3, 2)), "y": np.zeros((4, 2))}, 2),   # ragged first dimensions
    (np.float32(1.0), 2),                                  # a scalar has no batch axis
    (np.zeros((3, 2)), 0),                                 # batch size
])
def test_bad_input_raises(arrays, batch_size):
  with pytest.raises(ValueError, match="map_batches"):
    map_batches(lambda a: a, arrays, batch_size)


def test_in_chunks_equals_one_call_for_independent_items():
  from jaxcxr.batching import in_chunks  # pylint: disable=g-import-not-at-top

  def fn(x, y):  # per item: its own norm, a matmul and a pytree output
    h = x @ jnp.ones((3, 2)) + y["b"][:, None]
    return {"h": h / jnp.linalg.norm(h, axis=1, keepdims=True), "s": h.sum(axis=1)}

  x = jnp.arange(36.0).reshape(12, 3)
  y = {"b": jnp.arange(12.0)}
  want = fn(x, y)
  for chunk in (None, 1, 5, 12, 100):   # 5 does not divide 12: chunks of 4
    got = jax.jit(lambda x, y, chunk=chunk: in_chunks(fn, x, y, chunk=chunk))(x, y)
    np.testing.assert_allclose(got["h"], want["h"], rtol=1e-6)
    np.testing.assert_allclose(got["s"], want["s"], rtol=1e-6)


def test_cpu_chunk_setting_is_checked():
  from jaxcxr import batching  # pylint: disable=g-import-not-at-top
  assert batching._cpu_chunk("none") is None and batching._cpu_chunk("4") == 4  # pylint: disable=protected-access
  for bad in ("0", "-1", "two", ""):
    with pytest.raises(ValueError, match="JAXCXR_CPU_CHUNK"):
      batching._cpu_chunk(bad)  # pylint: disable=protected-access


def test_in_chunks_until_computes_in_order_up_to_the_limit_or_the_target():
  from jaxcxr.batching import in_chunks_until  # pylint: disable=g-import-not-at-top

  fn = lambda x: {"y": 2.0 * x + 1.0, "hit": x % 3 == 0}   # items 0, 3, 6, 9 are hits
  count = lambda out, position: out["hit"].sum()
  run = jax.jit(lambda x, limit, target, chunk: in_chunks_until(fn, x, chunk=chunk, limit=limit, target=target,
                                                                count=count), static_argnames="chunk")
  x = jnp.arange(12.0)
  # (chunk, limit, target) -> items computed: whole chunks, stopping after the chunk of the target-th hit or
  # before the first chunk starting at or after the limit; 5 does not divide 12: chunks of 4.
  cases = {(2, 12, 2): 4, (2, 12, 4): 10, (2, 12, 9): 12, (2, 5, 9): 6, (5, 12, 2): 4, (5, 12, 3): 8, (1, 12, 1): 1,
           (2, 12, 0): 0, (2, 0, 3): 0, (None, 12, 1): 12, (None, 12, 0): 0, (None, 0, 5): 0}
  for (chunk, limit, target), want in cases.items():
    out, computed = run(x, limit, target, chunk)
    assert int(computed) == want, (chunk, limit, target)
    np.testing.assert_allclose(out["y"][:want], 2.0 * x[:want] + 1.0, err_msg=str((chunk, limit, target)))
    assert not np.asarray(out["y"][want:]).any() and not np.asarray(out["hit"][want:]).any()
  # Positions let the count ignore items past the limit: limit 5, chunks of 2 -> items 4 and 5 run, 5 not counted.
  past = jax.jit(lambda x: in_chunks_until(lambda v: {"hit": v >= 0}, x, chunk=2, limit=5, target=6,
                                           count=lambda out, position: (out["hit"] & (position < 5)).sum()))
  _, computed = past(x)
  assert int(computed) == 6


def test_default_chunk_takes_the_accelerator_branch_off_the_cpu(monkeypatch):
  """One CPU device: `CPU_CHUNK`; any other backend: None, whole batches (the GPU branch, run on the CPU).

  The several-devices branch (None too) runs in tests/test_scoring.py's sharded subprocess.
  """
  from jaxcxr import batching  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 1
  assert batching.default_chunk() == batching.CPU_CHUNK
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert batching.default_chunk() is None


def test_cpu_chunk_sets_the_chunk_for_a_block_and_traces_again():
  from jaxcxr import batching  # pylint: disable=g-import-not-at-top
  traced = []

  @jax.jit
  def double(x):
    traced.append(batching.default_chunk())          # runs at trace time only
    return batching.in_chunks(lambda a: 2 * a, x, chunk=batching.default_chunk())

  x = jnp.arange(8.0)
  before = batching.CPU_CHUNK
  double(x)
  with batching.cpu_chunk(None):
    assert batching.CPU_CHUNK is None and batching.default_chunk() is None
    np.testing.assert_array_equal(double(x), 2 * np.arange(8.0))
    with batching.cpu_chunk(4):
      assert batching.default_chunk() == 4
    assert batching.CPU_CHUNK is None
  assert batching.CPU_CHUNK == before
  double(x)
  assert traced == [before, None, before]
  for bad in (0, -1, 2.5, True, "2"):
    with pytest.raises(ValueError, match="cpu_chunk"):
      with batching.cpu_chunk(bad):
        pass
  assert batching.CPU_CHUNK == before
