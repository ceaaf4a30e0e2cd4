"""Tests for the AnoGAN latent search (`jaxcxr.anomaly.anogan`) and the shared evaluation helpers.

Compiles dominate on a CPU (10-20 s per search shape on a busy 2-core machine),
so the tests share three: batch 8 fp32 (every config with the default window and
120 steps: the learning rate, tolerance and clipping are traced), one image with 3
restarts (its restart 0 is the image searched alone: the batch-independence and
restart checks share it), and batch 8 in bfloat16. The 4-device sharding check runs in a
subprocess (XLA_FLAGS must be set before jax is imported) started before the
first compile, so it compiles alongside the main process, and compares with the
batch-8 result of this process.

Weights are random (`random_models`): the search's properties do not depend on
training, and filling the abstract state from numpy skips the ~25 s that eager
NNX initialisation spends compiling every initialiser op on a CPU.
"""

# pylint: disable=protected-access  (the no-recompile checks read jax's compile-cache size)
import dataclasses
import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import anomaly, checkpoints, data
from jaxcxr.anomaly import anogan
from jaxcxr.config import CXREncoderConfig, gan_tiny
from jaxcxr.models import Discriminator, Generator, make_condition
from jaxcxr.models.cxr_encoder import CXREncoder
from jaxcxr.models.generator import latents

TINY = gan_tiny(32)
SEARCH = anomaly.LatentSearchConfig(steps=120, learning_rate=0.05)
N_GENERATED = 6          # queries 0..5 are G(z_true); 6, 7 are real radiographs
FIXTURE = pathlib.Path(__file__).parent / "data" / "nih_fixture.npz"


def _random_model(cls, config, seed: int):
  """`cls(config)` with numpy-random weights: kernels N(0, 1/fan_in) (FiLM ones x0.2, a mild
  modulation), norm scales 1, biases 0, spectral-norm vectors random unit vectors."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      gain = 0.2 if "film" in jax.tree_util.keystr(path) else 1.0
      return (rng.standard_normal(leaf.shape) * gain / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
    if name == "scale":
      return np.ones(leaf.shape, np.float32)
    if name == "u":
      u = rng.standard_normal(leaf.shape)
      return (u / np.linalg.norm(u)).astype(np.float32)
    return np.zeros(leaf.shape, np.float32)

  pure = jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def random_models(seed: int = 0):
  """The tiny G and D (inference mode), deterministic in `seed`."""
  generator = _random_model(Generator, TINY.generator, seed)
  discriminator = nnx.view(_random_model(Discriminator, TINY.discriminator, seed + 1), use_running_average=True)
  return generator, discriminator


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, z, cond):
  return nnx.merge(graphdef, state)(z, cond)


def generate(generator, z, cond):
  """G(z, cond), float32 (B, 32, 32, 1) in [-1, 1], through one jit (eager NNX compiles op by op)."""
  return _forward(*nnx.split(generator), jnp.asarray(z), jnp.asarray(cond))


def make_queries(generator):
  """uint8 (8, 32, 32) queries and float32 (8, 3) conditions: 6 images G(z_true, c), quantised to
  uint8 like any stored image, then 2 real radiographs (outside a random G's range)."""
  fixture = np.load(FIXTURE, allow_pickle=False)
  real = data.resize_uint8(fixture["images"][:2], 32)
  cond = make_condition(["M", "F", "M", "F", "M", "F", "M", "F"], [20, 40, 60, 22, 42, 62, 21, 22],
                        [0, 0, 0, 1, 1, 1, 0, 0])
  z_true = latents(jax.random.key(123), jnp.int32(0), N_GENERATED, TINY.generator.latent_dim)
  generated = data.to_uint8(generate(generator, z_true, cond[:N_GENERATED])[..., 0], signed=True)
  return np.concatenate([generated, real]), cond


def search_key():
  return jax.random.key(7)


RESTARTS = dataclasses.replace(SEARCH, restarts=3)


def search_one_image(models, image, cond, first_index):
  """One image with 3 restarts -> (result, z (3, D) and loss traces (steps, 3) of every restart)."""
  program = anogan.search_program(*models, image[None], cond[None], search_key(), RESTARTS, first_index=first_index)
  z_all, trace_all, result = program.fn(*program.args)
  return to_numpy(result), np.asarray(z_all[0]), np.asarray(trace_all[:, 0])


def to_numpy(result):
  return jax.tree.map(np.asarray, jax.device_get(result))


# An 8-device CPU search of the same problem (one image per device), written to an npz (run in a subprocess).
# Before it, without compiling anything: a batch the devices do not divide is placed unsharded by default, and
# refused with shard_batch=True.
SHARDED_SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import jax
jax.config.update("jax_numpy_rank_promotion", "raise")
import numpy as np
import test_anomaly as t
from jaxcxr import anomaly
from jaxcxr.anomaly import anogan
assert len(jax.devices()) == 8, jax.devices()
g, d = t.random_models()
images, cond = t.make_queries(g)
program = anogan.search_program(g, d, images[:3], cond[:3], t.search_key(), t.SEARCH)
assert all(len(a.sharding.device_set) == 1 for a in program.args[2:5]), [a.sharding for a in program.args[2:5]]
try:
  anogan.search_program(g, d, images[:3], cond[:3], t.search_key(), t.SEARCH, shard_batch=True)
  raise AssertionError("shard_batch=True took 3 images on 8 devices")
except ValueError as e:
  assert "divisible by the 8 devices" in str(e), e
result = anomaly.search_latents(g, d, images, cond, t.search_key(), t.SEARCH)
assert len(result.score.sharding.device_set) == 8, result.score.sharding
np.savez({out!r}, **t.to_numpy(result)._asdict())
"""


@pytest.fixture(scope="module")
def sharded_process(tmp_path_factory):
  out = tmp_path_factory.mktemp("sharded") / "result.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip())
  script = SHARDED_SCRIPT.format(tests=str(pathlib.Path(__file__).parent), out=str(out))
  process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  yield process, out
  if process.poll() is None:
    process.kill()
  process.communicate()                     # reap it and close its pipe


@pytest.fixture(scope="module")
def models():
  return random_models()


@pytest.fixture(scope="module")
def queries(models):
  return make_queries(models[0])


@pytest.fixture(scope="module")
def batch_result(sharded_process, models, queries):
  """The batch-8 search every other test compares with (starts the sharded run first)."""
  del sharded_process
  images, cond = queries
  return to_numpy(anomaly.search_latents(*models, images, cond, search_key(), SEARCH))


def _assert_same_problem(trace_a, z_a, trace_b, z_b):
  """Two loss traces (steps,) and final latents (D,) are the same search, to float tolerance.

  Float-level differences (XLA picks other convolution kernels for other batch sizes
  or shards) start at rounding level, so the first 10 steps must agree to 1e-5 (a
  real batch dependence, such as batch statistics or a shared start, differs from
  step 0 on). Later the L1 loss's kinks amplify them: a residual pixel that crosses
  zero flips the sign of its gradient, and Adam's normalisation turns that into a
  full-size step. Measured after 120 steps: most images bit-identical, some off by
  up to 8% of a loss of ~0.005 (5e-4 absolute) and 0.03 in z.
  """
  np.testing.assert_allclose(trace_a[:10], trace_b[:10], rtol=1e-5)
  np.testing.assert_allclose(trace_a, trace_b, rtol=0.03, atol=2e-3)
  np.testing.assert_allclose(z_a, z_b, atol=0.1)


# ----------------------------------------------------------------------------- search


def test_result_shapes_and_ranges(batch_result):
  r = batch_result
  assert r.z.shape == (8, TINY.generator.latent_dim) and r.z.dtype == np.float32
  assert r.score.shape == (8,) and r.loss_trace.shape == (SEARCH.steps, 8)
  assert r.residual.shape == (8, 32, 32, 1) and r.restart_scores.shape == (8, 1)
  assert (r.residual >= 0).all() and (r.residual <= 2).all()
  assert np.isfinite(r.score).all()
  np.testing.assert_array_equal(r.score, r.restart_scores[:, 0])
  np.testing.assert_array_equal(r.steps_run, SEARCH.steps)   # early stopping off: every step runs
  np.testing.assert_array_equal(r.scale, 1.0)                # no intensity affine: a = 1, b = 0 exactly
  np.testing.assert_array_equal(r.offset, 0.0)


def test_score_is_the_weighted_residual_and_feature_scores(batch_result):
  lam = SEARCH.feature_weight
  np.testing.assert_allclose(batch_result.score,
                             (1 - lam) * batch_result.residual_score + lam * batch_result.feature_score,
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(batch_result.residual_score, np.abs(batch_result.residual).mean(axis=(1, 2, 3)),
                             rtol=1e-4, atol=1e-6)


def test_generated_images_are_recovered_and_real_ones_score_higher(batch_result):
  # From random starts, the loss of a query that G itself made falls to a small fraction of
  # the random start's (not to zero: the query was quantised to uint8) ...
  r = batch_result
  generated = slice(0, N_GENERATED)
  assert (r.score[generated] < 0.3 * r.loss_trace[0, generated]).all(), (r.score, r.loss_trace[0])
  assert r.score[generated].max() < 0.08, r.score
  # ... while real radiographs, outside a random G's range, keep a higher anomaly score.
  assert r.score[N_GENERATED:].min() > 1.5 * r.score[generated].max(), r.score


def test_alone_equals_in_batch_and_restarts_never_worsen(models, queries, batch_result):
  images, cond = queries
  i = 5
  # Image i alone (its batch index as first_index: the same starts), 3 restarts.
  result, z_all, trace_all = search_one_image(models, images[i], cond[i], first_index=i)
  # Restart 0 is image i's single-restart search, the same as in the batch of 8.
  _assert_same_problem(trace_all[:, 0], z_all[0], batch_result.loss_trace[:, i], batch_result.z[i])
  np.testing.assert_allclose(result.restart_scores[0, 0], batch_result.score[i], rtol=0.03, atol=2e-3)
  # The best of three is their minimum, so never worse than the single-restart search ...
  best = int(np.argmin(result.restart_scores[0]))
  assert result.score[0] == result.restart_scores[0].min() <= result.restart_scores[0, 0]
  assert result.score[0] <= batch_result.score[i] * 1.03 + 2e-3
  # ... and z, trace and residual are the best restart's.
  np.testing.assert_array_equal(result.z[0], z_all[best])
  np.testing.assert_array_equal(result.loss_trace[:, 0], trace_all[:, best])
  reconstruction = np.asarray(generate(models[0], z_all[best:best + 1], cond[i:i + 1]))[0]
  residual = np.abs(images[i, :, :, None] / 127.5 - 1.0 - reconstruction)
  np.testing.assert_allclose(result.residual[0], residual, atol=1e-5)


def test_intensity_affine_explains_exposure_and_contrast(models, queries, batch_result):
  del batch_result                                          # compiled the batch-8 search (the flag is traced)
  images, cond = queries
  # The generated queries dimmed and flattened: x' = 0.7 x - 0.2 in signed space, stored as uint8.
  signed = images.astype(np.float32) / 127.5 - 1.0
  changed = images.copy()
  changed[:N_GENERATED] = data.to_uint8(0.7 * signed[:N_GENERATED] - 0.2, signed=True)
  plain = to_numpy(anomaly.search_latents(*models, changed, cond, search_key(), SEARCH))
  affine = to_numpy(anomaly.search_latents(*models, changed, cond, search_key(),
                                           dataclasses.replace(SEARCH, intensity_affine=True)))
  generated = slice(0, N_GENERATED)
  # The plain search pays for the exposure change; the affine search recovers it and scores low again.
  assert (affine.score[generated] < 0.5 * plain.score[generated]).all(), (affine.score, plain.score)
  np.testing.assert_allclose(affine.scale[generated], 0.7, atol=0.15)
  np.testing.assert_allclose(affine.offset[generated], -0.2, atol=0.15)
  # Its residual is |x - (a G(z*) + b)|.
  fake = np.asarray(generate(models[0], affine.z, cond))
  expected = np.abs(changed[..., None] / 127.5 - 1.0 - (affine.scale[:, None, None, None] * fake
                                                        + affine.offset[:, None, None, None]))
  np.testing.assert_allclose(affine.residual, expected, atol=1e-4)


def test_early_stopping_freezes_converged_problems(models, queries, batch_result):
  images, cond = queries
  tol, window = 3e-3, SEARCH.early_stop_window
  config = dataclasses.replace(SEARCH, early_stop_tol=tol)         # same window: no recompile
  result = to_numpy(anomaly.search_latents(*models, images, cond, search_key(), config))
  # Until a problem stops, its trajectory is the unstopped one, so its stopping step is the
  # first t >= window at which the unstopped trace improved by less than tol over the window.
  trace = batch_result.loss_trace
  for i in range(8):
    slow = [t for t in range(window, SEARCH.steps) if trace[t - window, i] - trace[t, i] < tol]
    assert result.steps_run[i] == (slow[0] if slow else SEARCH.steps), (i, result.steps_run, slow)
  # The real radiographs, which G cannot reproduce, plateau first: converged, stopped early.
  assert (result.steps_run[N_GENERATED:] < SEARCH.steps).all(), result.steps_run
  for i, k in enumerate(result.steps_run):
    np.testing.assert_allclose(result.loss_trace[:k, i], trace[:k, i], rtol=1e-6)
    if k < SEARCH.steps:
      # After the stop z is frozen: the loss stays what it was, and is the final score.
      np.testing.assert_array_equal(result.loss_trace[k:, i], result.loss_trace[k, i])
      np.testing.assert_allclose(result.score[i], result.loss_trace[k, i], rtol=1e-6)


def test_no_recompile_and_donated_starts(models, queries, batch_result):
  del batch_result                                          # compiled the batch-8 search
  images, cond = queries
  search = anogan.search_program(*models, images, cond, search_key(), SEARCH).fn
  compiled = search._cache_size()
  # Other images, key, learning rate, tolerance and clipping: all traced.
  config = dataclasses.replace(SEARCH, learning_rate=0.02, early_stop_tol=1e-4, clip_latent=0.5)
  program = anogan.search_program(*models, images[::-1], cond[::-1], jax.random.key(99), config)
  assert program.fn is search and program.donated == (4,)
  z0 = program.args[4]
  _, _, result = program.fn(*program.args)
  assert z0.is_deleted()                                    # the starts' buffer became the final latents
  assert np.abs(np.asarray(result.z)).max() <= 0.5
  assert search._cache_size() == compiled


def test_anogan_scores_over_a_dataset(models):
  # Ten 256x256 radiographs in batches of 8 (the second padded): resized to 32, one compile,
  # image i starts from the latents of index i whatever its batch.
  dataset = data.load(FIXTURE).subset(np.arange(10))
  small = data.resize_uint8(dataset.images, 32)
  cond = make_condition(dataset.sex, dataset.age, dataset.label)
  search = anogan.search_program(*models, small[:8], cond[:8], search_key(), SEARCH).fn
  compiled = search._cache_size()
  scores = anomaly.anogan_scores(*models, dataset, None, search_key(), SEARCH, batch_size=8, progress=False)
  assert search._cache_size() == compiled
  assert scores.score.shape == (10,) and scores.score.dtype == np.float32
  assert scores.residual.shape == (10, 32, 32) and scores.residual.dtype == np.float16
  assert scores.z.shape == (10, TINY.generator.latent_dim) and scores.steps_run.shape == (10,)
  # Image 9 (second batch, after the padding offset) alone: restart 0 is its search.
  alone, z_all, _ = search_one_image(models, small[9], cond[9], first_index=9)
  # Tolerances: see _assert_same_problem.
  np.testing.assert_allclose(scores.score[9], alone.restart_scores[0, 0], rtol=0.03, atol=2e-3)
  np.testing.assert_allclose(scores.z[9], z_all[0], atol=0.1)
  assert (scores.residual >= 0).all() and (scores.residual <= 2).all()


def test_search_program_is_the_search_and_lowers(models, queries, batch_result):
  images, cond = queries
  program = anogan.search_program(*models, images, cond, search_key(), SEARCH)
  # The arguments as search_latents places them, and its jitted function: the same result, bit for bit.
  _, _, result = program.fn(*program.fresh_args())
  jax.tree.map(np.testing.assert_array_equal, to_numpy(result), batch_result)
  assert not program.args[4].is_deleted()                  # fresh_args copied the donated starts
  assert "stablehlo.while" in program.fn.lower(*program.args).as_text()   # the steps: one scan


def test_step_program_is_one_step_of_the_search(models, queries):
  images, cond = queries
  program = anogan.step_program(*models, images, cond, SEARCH)
  loss, grad = program.fn(*program.args)
  assert grad.shape == (8, TINY.generator.latent_dim) and np.isfinite(np.asarray(grad)).all()
  # The search's first recorded loss is that of its starts: from z = 0, the step program's loss per image.
  search = anogan.search_program(*models, images, cond, search_key(), SEARCH)
  args = list(search.args)
  args[4] = jnp.zeros_like(args[4])
  _, _, result = search.fn(*args)
  np.testing.assert_allclose(float(loss), float(np.asarray(result.loss_trace[0]).sum()), rtol=1e-5)


@pytest.mark.skipif(not (checkpoints.checkpoints_root() / "gan_64_normal" / "generator").exists(),
                    reason="the shipped gan_64_normal is not in the checkpoints folder")
def test_load_anogan_loads_the_checked_pair(tmp_path):
  generator, discriminator = anomaly.load_anogan(checkpoints.checkpoints_root() / "gan_64_normal")
  assert isinstance(generator, Generator) and isinstance(discriminator, Discriminator)
  assert generator.config.base_resolution == discriminator.config.resolution == 64
  with pytest.raises(checkpoints.CheckpointError):
    anomaly.load_anogan(tmp_path)


def test_bfloat16_search(models, queries, batch_result):
  images, cond = queries
  result = to_numpy(anomaly.search_latents(*models, images, cond, search_key(),
                                           dataclasses.replace(SEARCH, dtype="bfloat16")))
  assert result.z.dtype == np.float32 and result.score.dtype == np.float32
  assert np.isfinite(result.score).all()
  np.testing.assert_allclose(result.score, batch_result.score, rtol=0.5, atol=0.01)
  assert result.score[N_GENERATED:].min() > result.score[:N_GENERATED].max()


def test_sharded_search_equals_single_device(sharded_process, batch_result):
  process, out = sharded_process
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output
  sharded = anomaly.LatentSearchResult(**np.load(out))
  for i in range(8):
    _assert_same_problem(sharded.loss_trace[:, i], sharded.z[i], batch_result.loss_trace[:, i], batch_result.z[i])
  np.testing.assert_allclose(sharded.score, batch_result.score, rtol=0.03, atol=2e-3)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise(models, queries):
  images, cond = queries
  key = search_key()
  cases = [
      (np.zeros((2, 64, 64), np.uint8), cond[:2], "shape"),                     # wrong resolution
      (np.zeros((0, 32, 32), np.uint8), cond[:0], "shape"),                     # empty batch
      (np.zeros((2, 32, 32), np.float32), cond[:2], r"\(B, 32, 32, 1\)"),       # float without channel
      (np.zeros((2, 32, 32, 1), np.int16), cond[:2], "dtype"),
      (np.full((2, 32, 32, 1), np.nan, np.float32), cond[:2], "non-finite"),
      (np.full((2, 32, 32, 1), 255.0, np.float32), cond[:2], r"\[-1, 1\]"),    # float in [0, 255]
      (images[:2], cond[:2, :2], "cond"),                                       # wrong cond width
      (images[:2], cond[:3], "cond"),                                           # wrong cond rows
      (images[:2], np.full((2, 3), np.inf, np.float32), "non-finite"),
  ]
  for x, c, match in cases:
    with pytest.raises(ValueError, match=match):
      anomaly.search_latents(*models, x, c, key, SEARCH)
  other = nnx.eval_shape(lambda: Discriminator(gan_tiny(64).discriminator, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="do not match"):
    anomaly.search_latents(models[0], other, images, cond, key, SEARCH)
  with pytest.raises(ValueError, match="cond is required"):
    anomaly.anogan_scores(*models, images, None, key, SEARCH)
  for bad in ({"steps": 0}, {"restarts": 0}, {"feature_weight": 1.5}, {"learning_rate": 0.0},
              {"early_stop_tol": -1.0}, {"clip_latent": 0.0}, {"dtype": "float16"}):
    with pytest.raises(ValueError, match="LatentSearchConfig"):
      anomaly.LatentSearchConfig(**bad)


def test_encoder_feature_term_is_unit_patch_features_of_the_resized_image(models, queries):
  """`EncoderFeatures` in D's place: f is the encoder stage at its own input side, each channel vector unit length."""
  encoder = _random_model(CXREncoder, CXREncoderConfig(resolution=64, patch=4, channels=(8, 16), blocks=(1, 1),
                                                       norm_groups=4), 7)
  f = anomaly.EncoderFeatures(encoder, "stage1")
  images, cond = queries
  x = jnp.asarray(data.to_signed(images[:2])[..., None])                   # 32x32 queries, a 64x64 encoder
  features = jax.jit(lambda m, v: m.features(v))                          # eager NNX compiles op by op
  fx = features(f, x)
  raw = jax.jit(lambda e, v: e.features(jax.image.resize(v, (2, 64, 64, 1), "bilinear"))["stage1"])(encoder, x)
  assert fx.shape == (2, 16, 16, 8)
  np.testing.assert_allclose(fx, raw / np.linalg.norm(raw, axis=-1, keepdims=True), rtol=1e-4, atol=1e-6)
  # The search takes it in D's place (no pairing check: it has no resolution or conditions): one step's loss from
  # z = 0 is the known L(0) with this f (the whole search with it runs in tests/test_cli_anomaly.py).
  config = dataclasses.replace(SEARCH, feature_weight=0.5)
  program = anogan.step_program(models[0], f, images[:2], cond[:2], config)
  loss, grad = program.fn(*program.args)
  fake = generate(models[0], np.zeros((2, TINY.generator.latent_dim), np.float32), cond[:2])
  expected = 0.5 * np.abs(x - fake).mean(axis=(1, 2, 3)) + 0.5 * np.abs(fx - features(f, fake)).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(float(loss), expected.sum(), rtol=1e-4)
  assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0
  with pytest.raises(ValueError, match="unknown stage 'stage3'; the encoder has stage1, stage2"):
    anomaly.EncoderFeatures(encoder, "stage3")


def test_lung_residual_scores_ignore_the_frame():
  masks = np.zeros((3, 64, 64), np.uint8)
  masks[:, 16:48, 8:28] = 1
  masks[:, 16:48, 36:56] = 2
  masks[2] = 0                                              # no lung found: the whole image counts
  residual = np.zeros((3, 32, 32), np.float32)
  residual[:, :4, :] = 1.0                                  # a bright frame at the top, outside the lungs
  residual[1, 12:20, 6:12] = 0.5                            # an opacity inside image 1's right lung
  scores = anomaly.lung_residual_scores(residual, masks)
  assert scores[0] == 0.0 and scores[1] > 0.0
  np.testing.assert_allclose(scores[1], (48 * 0.25) / (2 * 16 * 10), rtol=1e-6)
  np.testing.assert_allclose(scores[2], np.mean(residual[2] ** 2), rtol=1e-6)
  with pytest.raises(ValueError, match="expected residual"):
    anomaly.lung_residual_scores(residual, masks[:2])


def test_rank_average_counts_each_method_equally():
  a = np.array([0.1, 0.2, 0.3, 0.4])
  b = np.array([400.0, 300.0, 200.0, 100.0])         # another scale, opposite order
  np.testing.assert_allclose(anomaly.rank_average([a, b]), [0.5, 0.5, 0.5, 0.5])
  np.testing.assert_allclose(anomaly.rank_average([a, a * 1e3]), [0, 1 / 3, 2 / 3, 1])
  np.testing.assert_allclose(anomaly.rank_average([np.array([1.0, 1.0, 2.0])]), [0.25, 0.25, 1.0])   # ties share
  with pytest.raises(ValueError, match="one length"):
    anomaly.rank_average([a, a[:3]])
  with pytest.raises(ValueError, match="finite"):
    anomaly.rank_average([np.array([0.0, np.nan])])



def test_score_files_round_trip_and_ensemble(tmp_path):
  rng = np.random.default_rng(0)
  y = np.array([0, 0, 1, 1, 0, 1])
  test = data.CXRDataset(images=np.zeros((6, 8, 8), np.uint8), label=y.astype(np.int8), sex=np.full(6, "M"),
                         age=np.full(6, 60, np.int16), patient_id=np.asarray([f"p{i}" for i in range(6)]))
  files = []
  for name in ("a", "b"):
    scores = rng.normal(size=6) + y
    evaluation = {"scores": scores, "labels": y, "residual": np.zeros((6, 4, 4)), "component_scores": {"r": scores}}
    files.append(anomaly.save_score_file(tmp_path / f"{name}.npz", evaluation, test))
  saved = anomaly.read_score_file(files[0])
  assert set(saved) == {"scores", "labels", "patient_id", "residual", "component_r"}
  assert saved["residual"].dtype == np.float16
  result = anomaly.ensemble_score_files(files)
  expected = anomaly.rank_average([anomaly.read_score_file(f)["scores"] for f in files])
  assert result["test"]["roc_auc"] == anomaly.auc_with_interval(expected, y)["roc_auc"]
  assert set(result["test"]["members"]) == {str(f) for f in files} and "threshold_data" not in result
  with pytest.raises(ValueError, match="at least two"):
    anomaly.ensemble_score_files(files[:1])
  np.savez(tmp_path / "other.npz", scores=np.zeros(3), labels=np.array([0, 1, 1]))
  with pytest.raises(data.DataError, match="differ"):
    anomaly.ensemble_score_files([files[0], tmp_path / "other.npz"])
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  with pytest.raises(data.DataError, match="not a readable score file"):
    anomaly.read_score_file(tmp_path / "bad.npz")

def test_source_only_baseline_sees_what_separates_the_archives(nih_path, covid_path):
  nih, covid = data.load(nih_path).select(label=0), data.load(covid_path)
  both = data.concatenate([nih, covid])
  half = np.arange(len(both)) % 2 == 0
  result = anomaly.source_only_baseline(both.subset(half), both.subset(~half))
  assert result["n_train"] == int(half.sum()) and 0 <= result["roc_auc"] <= 1
  flat = dataclasses.replace(both, images=np.full_like(both.images, 128))   # no pixel difference: chance
  assert anomaly.source_only_baseline(flat.subset(half), flat.subset(~half))["roc_auc"] == pytest.approx(0.5)
  # Known answer: a band only one archive has (as the COVID-19 figures' borders) separates them perfectly.
  for marked_label in (1, 0):
    images = both.images.copy()
    images[:, :64] = np.where((both.label == marked_label)[:, None, None], 255, 0)     # the top quarter
    marked = dataclasses.replace(both, images=images)
    assert anomaly.source_only_baseline(marked.subset(half), marked.subset(~half))["roc_auc"] == 1.0
  with pytest.raises(data.DataError, match="both labels"):
    anomaly.source_only_baseline(nih, both)
