"""The PyTorch twins of the benchmark suite (`benchmarks/twins.py`) reproduce jaxcxr's outputs.

Every twin gets its weights from a tiny random jaxcxr model (every parameter drawn at
random, so zero-initialised layers such as FiLM and the upsampler's output are exercised)
and is compared with it on the same inputs: max |twin - jaxcxr| <= 1e-4 times the output's scale
(`_assert_close`; each difference is recorded as the junit property `max_abs_diff <name>`).
The train steps are compared on jaxcxr's own random draws: losses, gradients (read from
Adam's first moment) and the spectral-norm vectors. One test runs the shipped checkpoints.
"""

import dataclasses
import functools
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

# CI (.ci/run) installs the CPU torch build and sets JAXCXR_EXPECT_TORCH=1: there a missing torch fails the
# collection of this file instead of skipping every twin.
if os.environ.get("JAXCXR_EXPECT_TORCH") == "1":
  import torch  # noqa: E402  pylint: disable=g-import-not-at-top
else:
  torch = pytest.importorskip("torch", reason="torch not installed (pip install 'torch==2.13.0+cpu')")

# `benchmarks` is a package of the source checkout, not of the installed jaxcxr.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import twins, twins_encoder  # noqa: E402  (after the torch skip)
from jaxcxr import anomaly, checkpoints, config as config_lib, data, scoring  # noqa: E402
from jaxcxr.explain import grad_cam_pure  # noqa: E402
from jaxcxr.models import Discriminator, Generator, Upsampler, load_generator  # noqa: E402
from jaxcxr.models.classifier import Classifier  # noqa: E402
from jaxcxr.models.cxr_encoder import CXREncoder  # noqa: E402
from jaxcxr.models.condition import group_condition_batch  # noqa: E402
from jaxcxr.models.fanogan import Encoder  # noqa: E402
from jaxcxr.models.ensemble import ClassifierEnsemble  # noqa: E402
from jaxcxr.models.healthygan import Translator  # noqa: E402
from jaxcxr.models.unet import UNet, label_map  # noqa: E402
from jaxcxr.train import cxr_encoder, gan, segmentation  # noqa: E402
from jaxcxr.train.loop import KEY_IMPL  # noqa: E402

pytestmark = pytest.mark.torch

NORMAL = ("sex", "age")


def _random(factory, seed: int):
  """A model of `factory`'s structure with random parameters drawn by numpy (zero-initialised layers included).

  Kernels N(0, 1 / fan_in), norm scales 1 + N(0, 0.2^2), other vectors N(0, 0.2^2), spectral-norm
  vectors random unit vectors. No jax draws: eager initialisation compiles every
  initialiser of every shape, seconds per model on a CPU.
  """
  graphdef, state = nnx.split(nnx.eval_shape(factory))
  rng = np.random.default_rng(seed)

  def draw(path, x):
    name = path[-1].key
    v = rng.standard_normal(x.shape)
    if name == "u":
      v = v / np.linalg.norm(v)
    elif v.ndim >= 2:
      v = v / np.sqrt(np.prod(x.shape[:-1]))
    else:
      v = (1.0 if name == "scale" else 0.0) + 0.2 * v
    return jnp.asarray(v, x.dtype)

  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(state)))
  return nnx.merge(graphdef, state)


def _fresh_train_state(init_train_state, config, models: dict) -> dict:
  """A trainer's initial state without running its initialisers: zeros of its structure, `models` put in."""
  abstract = jax.eval_shape(lambda: init_train_state(config, seed=0))
  return {**jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract), **models}


def _pure(model, kind=nnx.Param) -> dict:
  return nnx.to_pure_dict(nnx.state(model, kind))


def _jit(model, method: str = "__call__"):
  """`getattr(model, method)` as one jitted function of its arguments (eager jax compiles op by op)."""
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, *args: getattr(nnx.merge(graphdef, s), method)(*args))
  return lambda *args: fn(state, *args)


def _normal(seed: int, shape, low: float | None = None) -> np.ndarray:
  """float32 N(0, 1) draws, or U[low, 1) with `low`."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape) if low is None else rng.uniform(low, 1.0, shape)
  return x.astype(np.float32)


def _t(x) -> "torch.Tensor":
  """A torch copy of an array (jax's host arrays are read-only)."""
  return torch.from_numpy(np.array(x))


def _nchw(x) -> "torch.Tensor":
  return _t(np.moveaxis(np.asarray(x, np.float32), -1, 1))


def _np(t) -> np.ndarray:
  return t.detach().float().cpu().numpy()


def _assert_close(got, want, record, name: str, rel: float = 1e-4) -> None:
  """max |got - want| <= rel * max(1, max |want|); records the difference under `name`."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  diff = float(np.max(np.abs(got - want))) if got.size else 0.0
  record(f"max_abs_diff {name}", f"{diff:.3g}")
  assert diff <= rel * max(1.0, float(np.max(np.abs(want)))), f"{name}: max abs diff {diff:.3g}"


@pytest.fixture
def record(record_property):
  """`record_property` (the junit properties), under a name that fits the assertion lines."""
  return record_property


def _cond(b: int, conditions=config_lib.KNOWN_CONDITIONS) -> np.ndarray:
  """Random condition rows (sex 0/1, normalised age, label 0/1) of the named columns, float32 (b, C)."""
  rng = np.random.default_rng(b)
  columns = {"sex": rng.integers(0, 2, b), "age": rng.normal(size=b), "label": rng.integers(0, 2, b)}
  return np.stack([columns[c] for c in conditions], axis=-1).astype(np.float32)


def _generator(upsampling: str = "resize", cascade: bool = True, conditions=config_lib.KNOWN_CONDITIONS,
               dtype: str = "float32", seed: int = 0) -> Generator:
  """A 32x32 generator (a 64x64 cascade of it with `cascade`)."""
  cfg = dataclasses.replace(config_lib.gan_tiny(32, conditions=conditions).generator, upsampling=upsampling,
                            dtype=dtype)
  if cascade:
    cfg = cfg.with_upsampler(config_lib.UpsamplerConfig(scale=2, input_channels=4, input_blocks=1,
                                                        stage_channels=(4,), noise=False))
  return _random(lambda: Generator(cfg, rngs=nnx.Rngs(0)), seed)


def _discriminator(conditions=config_lib.KNOWN_CONDITIONS, seed: int = 1) -> Discriminator:
  """A 32x32 discriminator in inference mode."""
  cfg = config_lib.gan_tiny(32, conditions=conditions).discriminator
  return nnx.view(_random(lambda: Discriminator(cfg, rngs=nnx.Rngs(0)), seed), use_running_average=True)


def _classifier(input_mode: str, seed: int = 2) -> Classifier:
  cfg = config_lib.ClassifierConfig(resolution=48, input_mode=input_mode, stages=(1, 1), channels=(4, 8),
                                    stem_kernel=3, stem_stride=2, stem_pool=input_mode == "full", norm_groups=2)
  return _random(lambda: Classifier(cfg, rngs=nnx.Rngs(0)), seed)


def _unet(channels=(4, 8), seed: int = 3) -> UNet:
  cfg = config_lib.UNetConfig(resolution=32, channels=channels, norm_groups=2)
  return _random(lambda: UNet(cfg, rngs=nnx.Rngs(0)), seed)


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize("upsampling,cascade", [("subpixel", False), ("resize", True)])
def test_generator(upsampling, cascade, record):
  g = _generator(upsampling, cascade)
  z, cond = _normal(1, (3, 128)), _cond(3)
  with torch.no_grad():
    got = twins.TorchGenerator.from_nnx(g)(_t(z), _t(cond))
  _assert_close(_np(got), _nchw(_jit(g)(z, cond)), record, f"generator_{upsampling}{'_cascade' if cascade else ''}")
  assert np.std(_np(got)) > 0.05   # not saturated


def test_generator_bfloat16(record):
  g = _generator(dtype="bfloat16")
  z, cond = _normal(2, (2, 128)), _cond(2)
  with torch.no_grad():
    got = _np(twins.TorchGenerator.from_nnx(g)(_t(z), _t(cond)))
  # bfloat16 keeps 8 bits: the two implementations round differently, so only a loose agreement.
  _assert_close(got, _nchw(_jit(g)(z, cond)), record, "generator_bfloat16", rel=0.1)


def test_upsampler_with_noise_is_refused():
  cfg = config_lib.UpsamplerConfig(scale=2, input_channels=4, input_blocks=1, stage_channels=(4,), noise=True)
  with pytest.raises(NotImplementedError, match="noise"):
    twins.TorchUpsampler.from_nnx(nnx.eval_shape(lambda: Upsampler(cfg, rngs=nnx.Rngs(0))))


def test_discriminator(record):
  d = _discriminator()
  x, cond = _normal(3, (3, 64, 64, 1), -1.0), _cond(3)
  twin = twins.TorchDiscriminator.from_nnx(d)
  u_before = [_np(u) for u in twin.buffers()]
  with torch.no_grad():
    features = twin.features(_nchw(x))
    logits = twin(_nchw(x[:, ::2, ::2]), _t(cond))
  _assert_close(_np(features), _nchw(_jit(d, "features")(x)), record, "discriminator_features_pooled")
  _assert_close(_np(logits), _jit(d)(x[:, ::2, ::2], cond), record, "discriminator_logits")
  assert all(np.array_equal(a, _np(u)) for a, u in zip(u_before, twin.buffers())), "inference must not write u"


def test_unet_and_label_map(record):
  unet = _unet((4, 8, 16))
  x = _normal(4, (2, 48, 48), 0.0)
  twin = twins.TorchUNet.from_nnx(unet)
  with torch.no_grad():
    logits = twin(_nchw(x[:, :32, :32, None]))
    labels = _np(twins.label_map(twin, _t(x), (64, 64)))   # 48 -> 32 antialiased, logits 32 -> 64
  _assert_close(_np(logits), _nchw(_jit(unet)(x[:, :32, :32, None])), record, "unet_logits")
  want = np.asarray(jax.jit(label_map, static_argnums=2)(unet, x, (64, 64)))
  agree = float(np.mean(labels == want))
  record("label_map_agreement", agree)
  assert agree >= 0.999   # an argmax may flip where two logits tie to float rounding
  assert len(np.unique(want)) > 1


@pytest.mark.parametrize("kind", ["full", "halves", "ensemble"])
def test_classifier_and_grad_cam(kind, record):
  if kind == "ensemble":
    member = config_lib.ClassifierConfig(resolution=48, stages=(1, 1), channels=(4, 8), stem_kernel=3, norm_groups=2)
    cfg = config_lib.ClassifierEnsembleConfig(member=member, members=2, pixel_size=12)
    model = _random(lambda: ClassifierEnsemble(cfg, rngs=nnx.Rngs(0)), 4)
  else:
    model = _classifier(kind)
  x = _normal(5, (3, 48, 48, 1), 0.0)
  twin = twins.classifier_twin(model)
  with torch.no_grad():
    heatmap, raw_max, logits = twins.grad_cam(twin, _nchw(x))
  want = [np.asarray(a) for a in jax.jit(grad_cam_pure)(model, x)]
  _assert_close(_np(logits), want[2], record, f"classifier_{kind}_logits")
  _assert_close(_np(raw_max), want[1], record, f"grad_cam_{kind}_maxheat")
  _assert_close(_np(heatmap), want[0], record, f"grad_cam_{kind}_heatmap")
  assert want[1].max() > 0   # the maps are not all zero


# ----------------------------------------------------------------------------- scoring


def test_generate_and_score(record):
  generator = _generator(seed=5)                                        # 64x64 cascade
  unet, classifier = _unet(), _classifier("halves")                     # 32 and 48: inputs resized
  atlas = _normal(6, (2, 8, 8), 0.0)
  config = scoring.ScoringConfig(mask_size=64, dilation=3, atlas_size=8, batch_size=4)
  probe = scoring.Scorer(unet, classifier, scoring.Calibration(atlas, *[np.float32(0.0)] * 6), config)
  out = probe.generate_and_score(generator, jax.random.key(7), 4, "38_44f")
  # Thresholds between the middle two images' measures: about half of the images pass each score.
  m = out.result.measures
  mid = lambda name: np.float32(np.mean(np.sort(m[name])[1:3]))
  calibration = scoring.Calibration(atlas, mid("shape"), mid("symmetry"), np.float32(-0.5), np.float32(0.5),
                                    mid("abnormal_logit"), mid("maxheat"))
  scorer = scoring.Scorer(unet, classifier, calibration, config)
  want = scorer.generate_and_score(generator, jax.random.key(7), 4, "38_44f")
  cond = group_condition_batch("38_44f", 4, conditions=generator.config.conditions)
  with torch.no_grad():
    got = twins.TorchGenerateAndScore.from_nnx(scorer, generator)(_t(want.z), _t(cond))
  assert np.abs(_np(got["images"]) - want.images).max() <= 1
  for name in scoring.SCORE_NAMES:
    _assert_close(_np(got["scores"][name]), want.result.scores[name], record, name)
  _assert_close(_np(got["features"]), want.result.features, record, "symmetry_features")
  np.testing.assert_array_equal(_np(got["valid"]).astype(bool), want.result.valid)
  assert all(0 < (want.result.scores[n] > 0).sum() < 4 for n in ("score_shape", "score_abnormal"))


# ----------------------------------------------------------------------------- f-AnoGAN and HealthyGAN


def test_fanogan_scores(record):
  generator = _generator(conditions=NORMAL)                             # encoder at the cascade's base side
  discriminator = _discriminator(NORMAL)
  encoder = _random(lambda: Encoder(config_lib.fanogan_tiny(32).encoder, rngs=nnx.Rngs(0)), 7)
  images = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
  cond = _cond(3, NORMAL)
  want = anomaly.fanogan_scores(encoder, generator, discriminator, images, cond, progress=False)
  with torch.no_grad():
    got = twins.fanogan_scores(twins.TorchEncoder.from_nnx(encoder), twins.TorchGenerator.from_nnx(generator),
                               twins.TorchDiscriminator.from_nnx(discriminator), _t(images), _t(cond))
  for name in ("score", "image_loss", "feature_loss", "z"):
    _assert_close(_np(got[name]), getattr(want, name), record, f"fanogan_{name}")
  _assert_close(_np(got["residual"]), want.residual, record, "fanogan_residual", rel=2e-3)   # float16


def test_healthygan_scores(record):
  cfg = dataclasses.replace(config_lib.healthygan_tiny(32).translator, num_down=2)
  translator = _random(lambda: Translator(cfg, rngs=nnx.Rngs(0)), 8)
  images = np.random.default_rng(1).integers(0, 256, (3, 32, 32), dtype=np.uint8)
  want = anomaly.healthygan_scores(translator, images, progress=False)
  with torch.no_grad():
    got = twins.healthygan_scores(twins.TorchTranslator.from_nnx(translator), _t(images))
  _assert_close(_np(got["score"]), want.score, record, "healthygan_score")
  _assert_close(_np(got["mask"]), want.mask, record, "healthygan_mask", rel=2e-3)            # float16


# ----------------------------------------------------------------------------- AnoGAN


# The benchmark's two settings: a single-stage GAN searched at its output (the tiny models), a
# cascade searched at its base image (the shipped gan_256_normal).
@pytest.mark.parametrize("base_image", [False, True])
def test_anogan_search(base_image, record):
  generator = _generator("resize" if base_image else "subpixel", cascade=base_image, conditions=NORMAL)
  discriminator = _discriminator(NORMAL)
  config = anomaly.LatentSearchConfig(steps=4, restarts=2, base_image=base_image)
  r = anomaly.search_resolution(generator, config)
  images = np.random.default_rng(2).integers(0, 256, (2, r, r), dtype=np.uint8)
  cond = _cond(2, NORMAL)
  key = jax.random.key(8)
  want = anomaly.search_latents(generator, discriminator, images, cond, key, config)
  z0 = _t(anomaly.initial_latents(key, 2, 128, restarts=2))
  g, d = twins.TorchGenerator.from_nnx(generator), twins.TorchDiscriminator.from_nnx(discriminator)
  args = (g, d.features, _nchw(data.to_signed(images)[..., None]), _t(cond), config.steps, config.learning_rate,
          config.feature_weight, config.restarts)
  got = twins.anogan_search(*args, z0=z0, base_image=base_image)
  tag = "base" if base_image else "full"
  _assert_close(_np(got["loss_trace"]), want.loss_trace, record, f"anogan_{tag}_loss_trace")
  _assert_close(_np(got["restart_scores"]), want.restart_scores, record, f"anogan_{tag}_restart_scores")
  _assert_close(_np(got["z"]), want.z, record, f"anogan_{tag}_z")
  _assert_close(_np(got["residual"]), _nchw(want.residual), record, f"anogan_{tag}_residual")
  _assert_close(_np(got["feature_score"]), want.feature_score, record, f"anogan_{tag}_feature_score")
  assert np.abs(_np(got["latents"]) - _np(z0)).mean() > 0.05, "the latents moved (4 steps of about lr = 0.05)"
  if not base_image:
    per_image = twins.anogan_search_per_image(*args, z0=z0)
    _assert_close(_np(per_image["latents"]), _np(got["latents"]), record, "anogan_per_image_vs_batched")


# ----------------------------------------------------------------------------- train steps


def _diff_augment_draws(key, b: int, size: int, config) -> dict:
  """The draws of `train.gan._maybe_augment(key, ...)` (traceable)."""
  k_aug, k_pick = jax.random.split(key)
  k_bri, k_con, k_ty, k_tx, k_cy, k_cx = jax.random.split(k_aug, 6)
  shift, cut = int(size * config.diffaug_translation + 0.5), int(size * config.diffaug_cutout + 0.5)
  return {"brightness": jax.random.uniform(k_bri, (b, 1, 1, 1)), "contrast": jax.random.uniform(k_con, (b, 1, 1, 1)),
          "ty": jax.random.randint(k_ty, (b, 1), -shift, shift + 1),
          "tx": jax.random.randint(k_tx, (b, 1), -shift, shift + 1),
          "cy": jax.random.randint(k_cy, (b, 1), 0, size + (1 - cut % 2)),
          "cx": jax.random.randint(k_cx, (b, 1), 0, size + (1 - cut % 2)),
          "pick": jax.random.uniform(k_pick, (b, 1, 1, 1))}


def _torch_tree(tree):
  return jax.tree.map(_t, tree)


def _as_twin(twin_cls, graphdef, tree, *rest):
  """A pytree of the model's parameter structure (e.g. gradients) in the twin's layout and order."""
  return twin_cls(nnx.merge(graphdef, tree, *rest), torch.float32)


def _flat(tensors) -> np.ndarray:
  return np.concatenate([_np(t).ravel() for t in tensors])


@functools.partial(jax.jit, static_argnums=3)
def _gan_step_draws(key_data, images, cond, config):
  """jaxcxr's random inputs of GAN train step 0, in `train.gan.train_step`'s order (one compile, not one per op)."""

  key = jax.random.fold_in(jax.random.wrap_key_data(key_data, impl=KEY_IMPL), 0)
  k_real, k_z, k_aug_real, k_aug_fake, k_gcond, k_gz, k_gaug = jax.random.split(key, 7)
  b, n, size = config.batch_size, images.shape[0], images.shape[-1]
  idx, gidx = jax.random.randint(k_real, (b,), 0, n), jax.random.randint(k_gcond, (b,), 0, n)
  latent = config.generator.latent_dim
  return {"reals": images[idx].astype(jnp.float32) / 127.5 - 1.0, "cond": cond[idx],
          "z": jax.random.normal(k_z, (b, latent)), "gcond": cond[gidx],
          "gz": jax.random.normal(k_gz, (b, latent)), "aug_real": _diff_augment_draws(k_aug_real, b, size, config),
          "aug_fake": _diff_augment_draws(k_aug_fake, b, size, config),
          "aug_g": _diff_augment_draws(k_gaug, b, size, config)}


@pytest.mark.slow
def test_gan_train_step(record):
  # ada_target=None augments every image (p = 1), so the step's DiffAugment is exercised; R1 runs at step 0.
  generator = _generator(cascade=False, seed=9)
  config = dataclasses.replace(config_lib.gan_tiny(32), generator=generator.config, ada_target=None, batch_size=3)
  discriminator = _random(lambda: Discriminator(config.discriminator, rngs=nnx.Rngs(0)), 10)
  state = _fresh_train_state(gan.init_train_state, config, {
      "g": _pure(generator), "g_ema": _pure(generator), "d": _pure(discriminator),
      "d_stats": _pure(discriminator, nnx.BatchStat), "ada_p": np.float32(1.0)})
  images = np.random.default_rng(3).integers(0, 256, (6, 32, 32), dtype=np.uint8)
  cond = _cond(6)
  new_state, metrics = jax.jit(gan.train_step, static_argnums=2)(state, {"images": images, "cond": cond}, config)

  step = twins.TorchGanTrainStep.from_nnx(generator, discriminator, config)
  batch = _torch_tree(_gan_step_draws(state["key"], images, cond, config))
  got = step(batch)
  for name in ("d_loss", "g_loss", "r1", "d_real", "d_fake"):
    _assert_close(_np(got[name]), metrics[name], record, f"gan_step_{name}")
  assert float(metrics["r1"]) > 0
  # b1 = 0: Adam's first moment after one step is the gradient itself.
  g_def, d_def = nnx.graphdef(generator), nnx.graphdef(discriminator)
  d_grads = _as_twin(twins.TorchDiscriminator, d_def, new_state["d_opt"][0].mu, new_state["d_stats"])
  g_grads = _as_twin(twins.TorchGenerator, g_def, new_state["g_opt"][0].mu)
  _assert_close(_flat(p.grad for p in step.d.parameters()), _flat(d_grads.parameters()), record, "gan_step_d_grads")
  _assert_close(_flat(p.grad for p in step.g.parameters()), _flat(g_grads.parameters()), record, "gan_step_g_grads")
  _assert_close(_flat(step.d.buffers()), _flat(d_grads.buffers()), record, "gan_step_spectral_u")
  g_ema = _as_twin(twins.TorchGenerator, g_def, new_state["g_ema"])
  _assert_close(_flat(step.g_ema.parameters()), _flat(g_ema.parameters()), record, "gan_step_g_ema")


@functools.partial(jax.jit, static_argnums=3)
def _unet_step_batch(key_data, images, masks, config):
  """jaxcxr's batch of U-Net train step 0 (`train.segmentation.train_step`), augmented, with its draws."""
  key = jax.random.fold_in(jax.random.wrap_key_data(key_data), 0)
  k_idx, k_aug = jax.random.split(key)
  idx = jax.random.choice(k_idx, images.shape[0], (config.batch_size,), replace=False)
  x, y = (images[idx].astype(jnp.float32) / 255.0)[..., None], masks[idx]
  augmented = data.augment(k_aug, x, config.augment, masks=y)

  def draws(k):                                   # data._augment_one's draws
    k_rot, k_shift, k_scale, k_flip, k_blur, k_con, k_bri = jax.random.split(k, 7)
    signed = lambda kk, shape=(): jax.random.uniform(kk, shape, minval=-1.0, maxval=1.0)
    return {"rotation": signed(k_rot), "shift": signed(k_shift, (2,)), "scale": signed(k_scale),
            "flip": jax.random.uniform(k_flip), "blur": jax.random.uniform(k_blur), "contrast": signed(k_con),
            "brightness": signed(k_bri)}

  return x, y, augmented, jax.vmap(draws)(jax.random.split(k_aug, config.batch_size))


@pytest.mark.slow
@pytest.mark.xla_optimised   # -O0 miscompiles it (tests/conftest.py)
def test_unet_train_step(record):
  config = config_lib.unet_tiny(32)
  # The shipped presets' clip (unet_tiny has none, tests/conftest.py says why): checked here at -O2.
  config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, channels=(4, 8)), grad_clip=1.0,
                               augment=dataclasses.replace(config.augment, hflip_prob=0.5))
  unet = _random(lambda: UNet(config.unet, rngs=nnx.Rngs(0)), 11)
  state = _fresh_train_state(segmentation.init_train_state, config, {"params": _pure(unet)})
  images = np.random.default_rng(4).integers(0, 256, (4, 32, 32), dtype=np.uint8)
  masks = np.zeros((4, 32, 32), np.uint8)
  masks[:, 6:26, 4:14], masks[:, 6:26, 18:28] = 1, 2
  new_state, metrics = jax.jit(segmentation.train_step, static_argnums=2)(state, {"images": images, "masks": masks},
                                                                          config)
  x, y, (want_x, want_y), draws = _unet_step_batch(state["key"], images, masks, config)
  got_x, got_y = twins.augment(_nchw(x), _torch_tree(draws), config.augment, masks=_t(y))
  _assert_close(_np(got_x), _nchw(want_x), record, "augment_images")
  agree = float(np.mean(_np(got_y) == np.asarray(want_y)))
  record("augment_mask_agreement", agree)
  assert agree >= 0.999

  step = twins.TorchUNetTrainStep.from_nnx(unet, config)
  got = step(_nchw(want_x), _t(want_y))
  for name in ("loss", "ce", "dice_loss"):
    _assert_close(_np(got[name]), metrics[name], record, f"unet_step_{name}")
  # Adam's first moment after one step is (1 - b1) * the clipped gradient.
  unet_def = nnx.graphdef(unet)
  grads = _as_twin(twins.TorchUNet, unet_def, jax.tree.map(lambda m: m / 0.1, new_state["opt"][1][0].mu))
  _assert_close(_flat(p.grad for p in step.unet.parameters()), _flat(grads.parameters()), record, "unet_step_grads")
  params = _as_twin(twins.TorchUNet, unet_def, new_state["params"])
  _assert_close(_flat(step.unet.parameters()), _flat(params.parameters()), record, "unet_step_params")


@functools.partial(jax.jit, static_argnums=3)
def _encoder_step_views(key_data, step, images, config):
  """jaxcxr's batch, view draws and views of encoder train step `step`, in `train.cxr_encoder.train_step`'s order."""
  key = jax.random.fold_in(jax.random.wrap_key_data(key_data, impl=KEY_IMPL), step)
  k_idx, k_a, k_b = jax.random.split(key, 3)
  b, r = config.batch_size, images.shape[-1]
  batch = images[jax.random.permutation(k_idx, images.shape[0])[:b]]
  draws = [cxr_encoder.draw_views(k, b, r, config.augment) for k in (k_a, k_b)]
  return batch, draws, jnp.concatenate([cxr_encoder.apply_views(batch, d, config.augment) for d in draws])


@pytest.mark.slow
@pytest.mark.xla_optimised   # -O0 miscompiles it (tests/conftest.py)
def test_encoder_train_step(record):
  # A learning rate and weight decay large enough that the second update (the first has learning rate 0, the warm-up's
  # start) and the decay of the kernels only show well above float32 rounding; a clip below the gradient's norm.
  config = dataclasses.replace(cxr_encoder.cxr_encoder_tiny("vicreg"), learning_rate=1e-2, warmup_steps=2,
                               weight_decay=0.5, grad_clip=0.5)
  encoder = _random(lambda: CXREncoder(config.encoder, rngs=nnx.Rngs(0)), 12)
  projector = _random(lambda: cxr_encoder.Projector(config.encoder.embedding_dim, config.projector,
                                                    rngs=nnx.Rngs(0)), 13)
  state = _fresh_train_state(cxr_encoder.init_train_state, config,
                             {"params": {"encoder": _pure(encoder), "projector": _pure(projector)}})
  images = np.random.default_rng(5).integers(0, 256, (6, 32, 32), dtype=np.uint8)
  step_fn = jax.jit(cxr_encoder.train_step, static_argnums=2)
  twin = twins_encoder.TorchEncoderTrainStep.from_nnx(encoder, projector, config)
  enc_def, proj_def = nnx.graphdef(encoder), nnx.graphdef(projector)
  as_twins = lambda tree: [*_as_twin(twins_encoder.TorchCXREncoder, enc_def, tree["encoder"]).parameters(),
                           *_as_twin(twins_encoder.TorchProjector, proj_def, tree["projector"]).parameters()]
  blurred, grads = [], []
  for t in range(2):
    batch, draws, want_views = _encoder_step_views(state["key"], t, images, config)
    got_views = torch.cat([twins_encoder.views(_t(batch), _torch_tree(d), config.augment) for d in draws])
    _assert_close(_np(got_views), _nchw(want_views), record, f"encoder_step{t}_views")
    blurred += [bool(b) for d in draws for b in np.asarray(d["blur"])]
    state, metrics = step_fn(state, images, config)
    got = twin(_nchw(want_views))
    for name in ("loss", "invariance", "variance", "covariance", "embedding_std"):
      _assert_close(_np(got[name]), metrics[name], record, f"encoder_step{t}_{name}")
    grads.append(_flat(p.grad for p in twin.parameters()))
    if t == 0:
      # Adam's first moment after one step is (1 - b1) * the clipped gradient (scaled to its largest entry).
      want = _flat(as_twins(jax.tree.map(lambda m: m / 0.1, state["opt"][1][0].mu)))
      record("encoder_step0_clipped_grad_norm", float(np.linalg.norm(grads[0])))
      assert np.linalg.norm(grads[0]) == pytest.approx(config.grad_clip, rel=1e-4), "the clip was active"
      scale = np.abs(want).max()
      _assert_close(grads[0] / scale, want / scale, record, "encoder_step0_grads")
  assert any(blurred) and not all(blurred), "views with and without the blur"
  # The parameters after the two updates, but for the entries whose gradient is rounding noise at both steps: VICReg is
  # invariant to a common shift of the projections, so the gradient of the projector's output bias, and of the
  # LayerNorm bias of a unit active for every view, is zero in exact arithmetic, and Adam's update of such an entry is a
  # ratio of rounding errors (up to the learning rate, in either library). Nothing else may be that small but not zero
  # (the units that no view activates have exactly zero gradients in both).
  names = np.concatenate([[f"encoder.{n}"] * p.numel() for n, p in twin.encoder.named_parameters()]
                         + [[f"projector.{n}"] * p.numel() for n, p in twin.projector.named_parameters()])
  largest = np.maximum(np.abs(grads[0]), np.abs(grads[1]))
  noise = (largest > 0) & (largest < 1e-5 * largest.max())
  record("encoder_step1_noise_gradient_entries", int(noise.sum()))
  assert set(names[noise]) <= {"projector.out.bias", "projector.norms.0.bias"}
  assert noise[names == "projector.out.bias"].all()
  got, want = _flat(twin.parameters()), _flat(as_twins(state["params"]))
  _assert_close(got[~noise], want[~noise], record, "encoder_step1_params")
  moved = np.abs(want - _flat(as_twins({"encoder": _pure(encoder), "projector": _pure(projector)})))[~noise]
  record("encoder_step1_max_update", float(moved.max()))
  assert moved.max() > 1e-3


# ----------------------------------------------------------------------------- shipped checkpoints


@pytest.mark.slow
def test_shipped_generate_and_score(record):
  generator_dir = checkpoints.checkpoints_root() / "gan_256" / "generator"
  try:
    scoring_dir = scoring.shipped_scoring()
  except checkpoints.CheckpointError:
    scoring_dir = None
  if scoring_dir is None or not generator_dir.exists():
    if os.environ.get("JAXCXR_EXPECT_TORCH") == "1":
      pytest.fail("JAXCXR_EXPECT_TORCH=1 (CI) but the shipped checkpoints (scoring_256, gan_256) are not found")
    pytest.skip("shipped checkpoints (scoring_256, gan_256) not found")
  scorer = scoring.load_scorer(scoring_dir, batch_size=2)
  generator = load_generator(generator_dir)
  want = scorer.generate_and_score(generator, jax.random.key(0), 2, "58_64f")
  cond = group_condition_batch("58_64f", 2, conditions=generator.config.conditions)
  with torch.no_grad():
    got = twins.TorchGenerateAndScore.from_nnx(scorer, generator)(_t(want.z), _t(cond))
  assert np.abs(_np(got["images"]) - want.images).max() <= 1
  for name in scoring.SCORE_NAMES:
    _assert_close(_np(got["scores"][name]), want.result.scores[name], record, f"shipped_{name}", rel=1e-3)
  np.testing.assert_array_equal(_np(got["valid"]).astype(bool), want.result.valid)
