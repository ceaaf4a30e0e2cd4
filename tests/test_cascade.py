"""The cascade generator: checkerboard-free up-sampling, the learned upsampler, its trainer, the assembly."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, config, data, imaging
from jaxcxr.anomaly import LatentSearchConfig, fanogan_scores, search_latents
from jaxcxr.models import Discriminator, Generator, Upsampler, load_generator, make_cascade, sample_images
from jaxcxr.models.fanogan import Encoder
from jaxcxr.models.layers import upsample2
from jaxcxr.train import upsampler as upsampler_train

from conftest import jit_call

TINY_UP = config.UpsamplerConfig(scale=2, input_channels=4, input_blocks=1, stage_channels=(4,))


def _tiny_generator(upsampling: str, resolution: int = 32, seed: int = 0) -> Generator:
  cfg = config.GeneratorConfig(resolution=resolution, base_channels=4, max_channels=8, norm_groups=2,
                               cond_embed_dim=8, upsampling=upsampling)
  return Generator(cfg, rngs=nnx.Rngs(seed))


def _randomize(model: nnx.Module, seed: int, scale: float = 0.3) -> nnx.Module:
  """Every parameter replaced by N(0, scale^2) noise (a 'trained' model with no structure); NumPy draws, so no
  per-shape XLA compile."""
  graphdef, state = nnx.split(model)
  leaves, treedef = jax.tree.flatten(state)
  rng = np.random.default_rng(seed)
  leaves = [jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype) if jnp.issubdtype(x.dtype, jnp.floating)
            else x for x in leaves]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def test_upsample2_is_bilinear(getkey):
  x = jax.random.normal(getkey(), (2, 8, 6, 3))
  np.testing.assert_allclose(upsample2(x), jax.image.resize(x, (2, 16, 12, 3), "linear"), atol=1e-6)


@pytest.mark.parametrize("seed", [1, 2])
def test_resize_upsampling_makes_no_checkerboard_subpixel_does(getkey, seed):
  """With arbitrary weights, sub-pixel blocks draw a 2x2 pattern; bilinear-then-conv blocks almost none."""
  z = jax.random.normal(getkey(), (8, 128))
  cond = jnp.zeros((8, 3))
  strength = {}
  for upsampling in ("subpixel", "resize"):
    g = _randomize(_tiny_generator(upsampling, resolution=64), seed, scale=0.1)
    images = jit_call(g, z, cond)
    strength[upsampling] = float(np.mean(imaging.checkerboard_strength(images[..., 0])))
  assert strength["subpixel"] > 0.6, strength
  assert strength["resize"] < 0.25, strength


def test_checkerboard_strength_detects_a_pattern(nih_path):
  x = data.to_unit(data.load(nih_path).images[:4])
  pattern = 0.05 * (np.indices((256, 256)).sum(axis=0) % 2)[None]
  assert float(np.max(imaging.checkerboard_strength(x))) < 0.05
  assert float(np.min(imaging.checkerboard_strength(x + pattern))) > 0.2


def test_upsampler_starts_as_bilinear_and_keeps_range(getkey):
  up = Upsampler(TINY_UP, rngs=nnx.Rngs(0))
  x = jax.random.uniform(getkey(), (2, 8, 8, 1), minval=-1.0, maxval=1.0)
  np.testing.assert_allclose(jit_call(up, x, getkey()), jax.image.resize(x, (2, 16, 16, 1), "linear"), atol=1e-6)
  y = jit_call(_randomize(up, 0, scale=1.0), x, getkey())
  assert y.shape == (2, 16, 16, 1) and float(jnp.abs(y).max()) <= 1.0
  with pytest.raises(ValueError, match=r"\(B, h, w, 1\)"):
    up(jnp.zeros((2, 8, 8)), getkey())


def test_cascade_is_its_base_then_the_upsampler_batch_independent(getkey):
  base = _tiny_generator("resize")
  up = _randomize(Upsampler(TINY_UP, rngs=nnx.Rngs(1)), 1)
  cascade = make_cascade(base, up)
  assert cascade.config.resolution == 64 and cascade.config.base_resolution == 32
  assert cascade.config.base == base.config
  z = jax.random.normal(getkey(), (4, 128))
  cond = jnp.zeros((4, 3))
  np.testing.assert_array_equal(jit_call(cascade, z, cond, method="base_image"), jit_call(base, z, cond))
  full = jit_call(cascade, z, cond)
  assert full.shape == (4, 64, 64, 1)
  np.testing.assert_allclose(jit_call(cascade, z[1:3], cond[1:3]), full[1:3], atol=1e-5)   # noise follows z
  assert float(jnp.abs(jit_call(cascade, z[::-1], cond)[::-1] - full).max()) < 1e-5
  assert float(jnp.abs(full[0] - full[1]).max()) > 0                               # different latents, images
  # Sampling runs the whole cascade in one jitted call and gives the output resolution.
  images = sample_images(cascade, getkey(), 3, "38_44f")
  assert images.shape == (3, 64, 64) and images.dtype == np.uint8


def test_cascade_round_trips_through_a_checkpoint(tmp_path, getkey):
  cascade = make_cascade(_tiny_generator("resize"), _randomize(Upsampler(TINY_UP, rngs=nnx.Rngs(1)), 2))
  checkpoints.save_model(tmp_path / "g", cascade, cascade.config)
  loaded = load_generator(tmp_path / "g")
  assert loaded.config == cascade.config
  z, cond = jax.random.normal(getkey(), (2, 128)), jnp.zeros((2, 3))
  np.testing.assert_array_equal(jit_call(loaded, z, cond), jit_call(cascade, z, cond))
  assert config.from_dict(config.GeneratorConfig, config.to_dict(cascade.config)) == cascade.config


def test_cascade_config_validation():
  base = config.GeneratorConfig(resolution=64)
  assert base.with_upsampler(config.UpsamplerConfig()).resolution == 256
  with pytest.raises(ValueError, match="already has an upsampler"):
    base.with_upsampler(config.UpsamplerConfig()).with_upsampler(config.UpsamplerConfig())
  with pytest.raises(ValueError, match="leaves a 8x8 base"):
    config.GeneratorConfig(resolution=32, upsampler=config.UpsamplerConfig(scale=4))
  with pytest.raises(ValueError, match="stage_channels"):
    config.UpsamplerConfig(scale=4, stage_channels=(8,))
  with pytest.raises(ValueError, match="upsampling"):
    config.GeneratorConfig(upsampling="transposed")


def test_discriminator_pools_larger_images_and_anogan_runs_on_a_cascade(getkey):
  cascade = make_cascade(_tiny_generator("resize"), Upsampler(TINY_UP, rngs=nnx.Rngs(1)))
  base_gan = _tiny_generator("resize")                       # the same weights as the cascade's base
  disc = Discriminator(config.DiscriminatorConfig(resolution=32, base_channels=4, max_channels=8),
                       rngs=nnx.Rngs(2))
  disc = nnx.view(disc, use_running_average=True)
  x = jax.random.uniform(getkey(), (2, 64, 64, 1), minval=-1.0, maxval=1.0)
  pooled = x.reshape(2, 32, 2, 32, 2, 1).mean(axis=(2, 4))
  np.testing.assert_allclose(jit_call(disc, x, method="features"), jit_call(disc, pooled, method="features"),
                             atol=1e-5)
  with pytest.raises(ValueError, match="power-of-2 multiple"):
    disc.features(jnp.zeros((2, 48, 48, 1)))
  images = np.asarray(sample_images(cascade, getkey(), 2, "58_64m"))
  cond = np.zeros((2, 3), np.float32)
  search = LatentSearchConfig(steps=3, restarts=1)
  result = search_latents(cascade, disc, images, cond, getkey(), search)
  assert result.residual.shape[:3] == (2, 64, 64) and np.all(np.isfinite(np.asarray(result.score)))
  # Known answer: the score and residual are the loss of the whole cascade's image at z*, recomputed here.
  x = data.to_signed(images)[..., None]
  g = jit_call(cascade, result.z, cond)
  residual = jnp.abs(x - g)
  feature_score = jnp.abs(jit_call(disc, x, method="features") - jit_call(disc, g, method="features")).mean(
      axis=(1, 2, 3))
  np.testing.assert_allclose(result.residual, residual, atol=1e-4)
  np.testing.assert_allclose(result.residual_score, residual.mean(axis=(1, 2, 3)), rtol=1e-4)
  np.testing.assert_allclose(result.feature_score, feature_score, rtol=1e-4)
  w = search.feature_weight
  np.testing.assert_allclose(result.score, (1 - w) * result.residual_score + w * result.feature_score, rtol=1e-5)
  # The base-image search compares 32x32 queries with the base GAN's images, D unchanged: known answer, the
  # search of the base GAN alone from the same starts.
  key = getkey()
  small = data.resize_uint8(images, 32)
  base = search_latents(cascade, disc, small, cond, key, LatentSearchConfig(steps=3, restarts=1, base_image=True))
  assert base.residual.shape[:3] == (2, 32, 32) and np.all(np.isfinite(np.asarray(base.score)))
  alone = search_latents(base_gan, disc, small, cond, key, search)
  for name in ("z", "score", "residual", "loss_trace"):
    np.testing.assert_allclose(getattr(base, name), getattr(alone, name), rtol=1e-4, atol=1e-5, err_msg=name)
  with pytest.raises(ValueError, match="32, 32"):
    search_latents(cascade, disc, images, np.zeros((2, 3), np.float32), getkey(),
                   LatentSearchConfig(steps=3, base_image=True))


def test_fanogan_at_a_cascades_base_resolution(getkey):
  cascade = make_cascade(_tiny_generator("resize"), Upsampler(TINY_UP, rngs=nnx.Rngs(1)))
  disc = nnx.view(Discriminator(config.DiscriminatorConfig(resolution=32, base_channels=4, max_channels=8),
                                rngs=nnx.Rngs(2)), use_running_average=True)
  images = np.asarray(sample_images(cascade, getkey(), 3, "58_64m"))
  cond = np.zeros((3, 3), np.float32)

  @nnx.jit
  def izi_f(enc, gen, d, x):
    """Known answer: the paper's izi_f score, from the models; a base-resolution encoder uses the base image."""
    z = enc(x)
    rec = gen.base_image(z, cond) if enc.config.resolution == gen.config.base_resolution else gen(z, cond)
    return z, rec, jnp.square(x - rec).mean(axis=(1, 2, 3)) + jnp.square(d.features(x) - d.features(rec)).mean(
        axis=(1, 2, 3))

  for resolution in (32, 64):            # the base image's and the output's
    enc = Encoder(config.EncoderConfig(resolution=resolution, base_channels=4, max_channels=8, norm_groups=2),
                  rngs=nnx.Rngs(3))
    out = fanogan_scores(enc, cascade, disc, images, cond, batch_size=2, progress=False)
    assert out.residual.shape == (3, resolution, resolution) and np.all(np.isfinite(out.score))
    z, rec, score = izi_f(enc, cascade, disc, data.to_signed(data.resize_uint8(images, resolution))[..., None])
    np.testing.assert_allclose(out.z, z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.score, score, rtol=1e-4)
    np.testing.assert_allclose(out.reconstruction, rec[..., 0], atol=2e-3)                  # float16
  enc = Encoder(config.EncoderConfig(resolution=128, base_channels=4, max_channels=8, norm_groups=2),
                rngs=nnx.Rngs(3))
  with pytest.raises(ValueError, match="does not match"):
    fanogan_scores(enc, cascade, disc, images, cond, progress=False)


def test_upsampler_training_learns_and_resumes_exactly(tmp_path, nih_path):
  ds = data.load(nih_path)
  cfg = dataclasses.replace(config.upsampler_tiny(), steps=4, steps_per_call=2, checkpoint_every=2)
  whole = upsampler_train.train_upsampler(ds.subset(range(16)), cfg, tmp_path / "a", progress=False,
                                          validation=ds.subset(range(16, 20)))
  assert np.isfinite(whole["validation_l1"]) and whole["steps"] == 4
  half = upsampler_train.train_upsampler(ds.subset(range(16)), dataclasses.replace(cfg, steps=2), tmp_path / "b",
                                         progress=False)
  assert half["steps"] == 2
  resumed = upsampler_train.train_upsampler(ds.subset(range(16)), cfg, tmp_path / "b", resume=True, progress=False)
  assert resumed["start_step"] == 2
  a = upsampler_train.load_upsampler(whole["upsampler"])
  b = upsampler_train.load_upsampler(resumed["upsampler"])
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
    np.testing.assert_array_equal(x, y)
  # The output layer starts at zero; after training the stage is no longer plain bilinear.
  assert float(jnp.abs(a.out.kernel[...]).max()) > 0


def test_upsampler_training_rejects_bad_data(tmp_path, nih_path):
  ds = data.load(nih_path)
  with pytest.raises(data.DataError, match="no images"):
    upsampler_train.train_upsampler(ds.subset(np.zeros(0, int)), config.upsampler_tiny(), tmp_path, progress=False)


def test_upsampler_training_on_generated_inputs_resumes_exactly(tmp_path, nih_path):
  ds = data.load(nih_path).subset(range(16))
  base = _tiny_generator("resize", resolution=128)   # the tiny 2x stage finishes 128 -> 256
  cfg = dataclasses.replace(config.upsampler_tiny(), generated_fraction=0.5, steps=4, steps_per_call=2,
                            checkpoint_every=2, sample_every=2)
  whole = upsampler_train.train_upsampler(ds, cfg, tmp_path / "a", progress=False, base=base)
  logged = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(r["consistency"]) for r in logged) and logged[-1]["step"] == 4
  assert (tmp_path / "a" / "samples" / "generated_000004.png").is_file()
  upsampler_train.train_upsampler(ds, dataclasses.replace(cfg, steps=2), tmp_path / "b", progress=False, base=base)
  resumed = upsampler_train.train_upsampler(ds, cfg, tmp_path / "b", resume=True, progress=False, base=base)
  assert resumed["start_step"] == 2
  a = upsampler_train.load_upsampler(whole["upsampler"])
  b = upsampler_train.load_upsampler(resumed["upsampler"])
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
    np.testing.assert_array_equal(x, y)
  # A cascade's blocks are the same base (its upsampler is left out): the run resumes with it.
  cascade = make_cascade(base, Upsampler(TINY_UP, rngs=nnx.Rngs(5)))
  more = upsampler_train.train_upsampler(ds, dataclasses.replace(cfg, steps=6), tmp_path / "b", resume=True,
                                         progress=False, base=cascade)
  assert more["start_step"] == 4 and more["steps"] == 6
  # Another base GAN is another run: resuming with it is refused.
  with pytest.raises(checkpoints.CheckpointMismatchError, match="other inputs"):
    upsampler_train.train_upsampler(ds, dataclasses.replace(cfg, steps=8), tmp_path / "b", resume=True,
                                    progress=False, base=_tiny_generator("resize", resolution=128, seed=1))


def test_upsampler_generated_inputs_need_a_base_of_the_right_size(tmp_path, nih_path):
  ds = data.load(nih_path).subset(range(4))
  cfg = dataclasses.replace(config.upsampler_tiny(), generated_fraction=0.5)
  with pytest.raises(ValueError, match="needs the base GAN"):
    upsampler_train.train_upsampler(ds, cfg, tmp_path / "a", progress=False)
  with pytest.raises(ValueError, match="needs 128"):
    upsampler_train.train_upsampler(ds, cfg, tmp_path / "b", progress=False, base=_tiny_generator("resize"))
  with pytest.raises(ValueError, match="generated_fraction"):
    dataclasses.replace(cfg, generated_fraction=1.0)


def test_upsampler_warm_start_takes_the_given_weights(getkey):
  cfg = config.upsampler_tiny()
  trained = _randomize(Upsampler(cfg.upsampler, rngs=nnx.Rngs(3)), 3)
  state = upsampler_train.warm_start(upsampler_train.init_train_state(cfg), trained)
  expected = nnx.to_pure_dict(nnx.state(trained, nnx.Param))
  for part in ("g", "g_ema"):
    for x, y in zip(jax.tree.leaves(state[part]), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(x, y)
  other = Upsampler(dataclasses.replace(cfg.upsampler, input_channels=8), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="does not match"):
    upsampler_train.warm_start(upsampler_train.init_train_state(cfg), other)


def test_noiseless_upsampler_is_deterministic_and_noise_stage_needs_noise(getkey):
  x = jax.random.uniform(getkey(), (2, 8, 8, 1), minval=-1.0, maxval=1.0)
  quiet = _randomize(Upsampler(dataclasses.replace(TINY_UP, noise=False), rngs=nnx.Rngs(0)), 4)
  np.testing.assert_array_equal(jit_call(quiet, x, getkey()), jit_call(quiet, x, [None]))
  noisy = _randomize(Upsampler(TINY_UP, rngs=nnx.Rngs(0)), 5)
  assert float(jnp.abs(jit_call(noisy, x, getkey()) - jit_call(noisy, x, getkey())).max()) > 0
  with pytest.raises(ValueError, match="noise inputs"):
    jit_call(noisy, x, [None])
