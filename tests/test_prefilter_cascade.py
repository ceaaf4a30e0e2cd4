"""The cascade pre-filter: base-image score predictor, log P(valid), thresholds, and the cascade sampler."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import batching, checkpoints, config, sampling, scoring
from jaxcxr.models import Generator, Upsampler, group_condition_batch, make_cascade
from jaxcxr.models.score_predictor import ScorePredictor, load_score_predictor
from jaxcxr.prefilter import cascade
from jaxcxr.train import score_predictor as trainer

from conftest import SAMPLING_GROUP, jit_call


@nnx.jit
def _judge(predictor, base, calibration):
  """log P(valid) of unquantised base images, as the cascade's round computes it, in one compiled call."""
  return cascade.log_valid_probability(predictor, cascade._quantize(base), calibration)

TINY_PREDICTOR = config.ScorePredictorConfig(resolution=32, channels=(4, 8), norm_groups=2)


@pytest.fixture(scope="module")
def tiny_cascade():
  """A random 32 -> 64 cascade generator (the shared tiny scorer resizes to 32x32)."""
  base = Generator(dataclasses.replace(config.gan_tiny(32).generator, upsampling="resize"), rngs=nnx.Rngs(3))
  up = Upsampler(config.UpsamplerConfig(scale=2, input_channels=4, input_blocks=1, stage_channels=(4,)),
                 rngs=nnx.Rngs(4))
  return make_cascade(base, up)


@pytest.fixture(scope="module")
def measured(scorer, tiny_cascade):
  """600 latents of SAMPLING_GROUP generated and scored by the tiny cascade: records with measures, base images."""
  out = scorer.generate_and_score(tiny_cascade, jax.random.key(5), 600, SAMPLING_GROUP, keep_images=False)
  records = {"z": np.asarray(out.z), "group": np.full(600, SAMPLING_GROUP), "measures": out.result.measures,
             "generator_id": "tiny-cascade"}
  base = trainer.base_images(tiny_cascade, records["z"], records["group"])
  return records, base


def test_upsample_of_the_base_image_is_the_output(tiny_cascade):
  z = jax.random.normal(jax.random.key(0), (3, 128))
  cond = jnp.zeros((3, len(tiny_cascade.config.conditions)))
  base = jit_call(tiny_cascade, z, cond, method="base_image")
  np.testing.assert_allclose(jit_call(tiny_cascade, base, z, method="upsample"), jit_call(tiny_cascade, z, cond),
                             atol=1e-6)
  plain = Generator(config.gan_tiny(32).generator, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="not a cascade"):
    plain.upsample(jnp.zeros((1, 32, 32, 1)), z[:1])
  with pytest.raises(ValueError, match="not a cascade"):
    trainer.base_images(plain, np.zeros((2, 128)), ["18_24m"] * 2)


def test_base_images_match_the_generator_in_any_batch(tiny_cascade):
  z = np.random.default_rng(0).standard_normal((7, 128)).astype(np.float32)
  groups = np.array(["18_24m"] * 4 + ["58_64f"] * 3)
  a = trainer.base_images(tiny_cascade, z, groups, batch_size=3)
  b = trainer.base_images(tiny_cascade, z, groups, batch_size=8)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (7, 32, 32) and a.dtype == np.uint8


def test_score_predictor_shapes_and_errors():
  model = ScorePredictor(TINY_PREDICTOR, rngs=nnx.Rngs(0))
  assert model(jnp.zeros((2, 32, 32, 1))).shape == (2, 5)
  assert set(jit_call(model, jnp.zeros((2, 32, 32, 1)), method="measures")) == set(config.PREDICTED_MEASURES)
  with pytest.raises(ValueError, match="base images of shape"):
    model(jnp.zeros((2, 64, 64, 1)))
  with pytest.raises(ValueError, match="multiple"):
    config.ScorePredictorConfig(resolution=20, channels=(4, 8, 16), norm_groups=2)
  with pytest.raises(ValueError, match="measures"):
    config.ScorePredictorConfig(measures=("shape", "nope"))


def test_fit_score_predictor_learns_image_statistics():
  # Measures that are simple functions of the image (brightness, a left-right difference) must be learnt.
  rng = np.random.default_rng(1)
  n = 600
  images = rng.integers(0, 256, (n, 32, 32)).astype(np.uint8)
  bright = rng.uniform(-1, 1, n)
  images = np.clip(images * 0.3 + (bright[:, None, None] + 1) * 90, 0, 255).astype(np.uint8)
  unit = images / 255.0
  measures = {"shape": unit.mean(axis=(1, 2)), "symmetry": unit[:, :, :16].mean(axis=(1, 2)),
              "log_ratio": unit[:, :, :16].mean(axis=(1, 2)) - unit[:, :, 16:].mean(axis=(1, 2)),
              "abnormal_logit": 3 * unit.mean(axis=(1, 2)), "maxheat": unit.max(axis=(1, 2))}
  parts = trainer.split_indices(np.full(n, "18_24m"), seed=0)
  model, history = trainer.fit_score_predictor(images, measures, TINY_PREDICTOR, train=parts["train"],
                                               validation=parts["validation"], steps=400, eval_every=100,
                                               learning_rate=5e-3, progress=False)
  assert history["val_r2"]["shape"] > 0.9 and history["val_r2"]["abnormal_logit"] > 0.9, history["val_r2"]
  assert history["best_step"] in history["step"]
  pred = jit_call(model, jnp.asarray(images[parts["test"]], jnp.float32)[..., None] / 127.5 - 1.0,
                  method="measures")
  assert np.corrcoef(pred["shape"], measures["shape"][parts["test"]])[0, 1] > 0.95
  # The residual std is that of the validation errors, in measure units.
  assert 0 < float(model.residual_std[...][0]) < measures["shape"].std()
  with pytest.raises(ValueError, match="missing"):
    trainer.fit_score_predictor(images, {"shape": measures["shape"]}, TINY_PREDICTOR, train=parts["train"],
                                validation=parts["validation"], steps=100, eval_every=100)
  with pytest.raises(ValueError, match="multiple"):
    trainer.fit_score_predictor(images, measures, TINY_PREDICTOR, train=parts["train"],
                                validation=parts["validation"], steps=150, eval_every=100)


def test_split_indices_is_a_stratified_partition():
  groups = np.array(["18_24m"] * 50 + ["58_64f"] * 30)
  parts = trainer.split_indices(groups, seed=3)
  joined = np.sort(np.concatenate(list(parts.values())))
  np.testing.assert_array_equal(joined, np.arange(80))
  assert [int((groups[parts["train"]] == g).sum()) for g in ("18_24m", "58_64f")] == [30, 18]
  with pytest.raises(ValueError):
    trainer.split_indices(groups, (0.5, 0.5, 0.0))


def test_log_valid_probability_follows_the_predicted_scores(scorer):
  model = ScorePredictor(TINY_PREDICTOR, rngs=nnx.Rngs(0))
  # A predictor whose prediction is its bias: the measures are exactly the chosen values.
  c = scorer.calibration
  good = {"shape": c.shape_min + 1, "symmetry": c.symmetry_min + 1, "log_ratio": 0.0,
          "abnormal_logit": c.abnormal_logit_max - 1, "maxheat": min(c.maxheat_max - 1, 0.0)}
  bad = dict(good, abnormal_logit=c.abnormal_logit_max + 1)
  log_p = {}
  for name, values in (("good", good), ("bad", bad)):
    model.head.kernel[...] = jnp.zeros_like(model.head.kernel[...])
    model.head.bias[...] = jnp.zeros_like(model.head.bias[...])
    model.mean[...] = jnp.asarray([values[m] for m in TINY_PREDICTOR.measures], jnp.float32)
    model.residual_std[...] = jnp.full((5,), 0.01, jnp.float32)
    log_p[name] = float(nnx.jit(cascade.log_valid_probability)(model, jnp.zeros((1, 32, 32, 1)),
                                                      scorer.device_calibration)[0])
  assert log_p["good"] > -1e-3 and log_p["bad"] < -10


@pytest.fixture(scope="module")
def fitted_cascade(measured, scorer):
  records, base = measured
  return cascade.fit_cascade_prefilter(records, base, scorer, TINY_PREDICTOR, levels=(scorer.strictness_name,),
                                       steps=300, eval_every=100, progress=False)


def test_fit_cascade_prefilter_report_save_and_load(fitted_cascade, scorer, tmp_path):
  level = scorer.strictness_name
  report = fitted_cascade.report["levels"][level]
  assert set(report["strategies"]) == set(cascade.STRATEGIES)
  assert 0 <= report["roc_auc_test"] <= 1 and len(report["roc_auc_test_ci95"]) == 2
  assert fitted_cascade.generator_id == "tiny-cascade"
  path = fitted_cascade.save(tmp_path / "cascade")
  loaded = cascade.load_cascade_prefilter(path)
  assert loaded.thresholds == fitted_cascade.thresholds and loaded.generator_id == "tiny-cascade"
  z = jnp.zeros((2, 32, 32, 1))
  np.testing.assert_allclose(loaded.predictor.measures(z)["shape"], fitted_cascade.predictor.measures(z)["shape"])
  with pytest.raises(ValueError, match="levels"):
    loaded.threshold("nope", "youden")
  with pytest.raises(ValueError, match="strategy"):
    loaded.threshold(level, "best")
  # A plain model checkpoint is not a cascade pre-filter.
  checkpoints.save_model(tmp_path / "plain", loaded.predictor, TINY_PREDICTOR)
  with pytest.raises(checkpoints.CheckpointError, match="not a cascade pre-filter"):
    cascade.load_cascade_prefilter(tmp_path / "plain")
  assert load_score_predictor(tmp_path / "plain").config == TINY_PREDICTOR


def test_cascade_sampler_accepting_all_is_unfiltered_sampling(fitted_cascade, scorer, tiny_cascade):
  level = scorer.strictness_name
  open_filter = dataclasses.replace(fitted_cascade, thresholds={level: {"youden": -np.inf}})
  key = jax.random.key(11)
  got = cascade.sample_valid_cascade(scorer, tiny_cascade, open_filter, key, 6, SAMPLING_GROUP, pool_size=8,
                                     accept_size=4)
  ref = sampling.sample_valid(scorer, tiny_cascade, key, 6, SAMPLING_GROUP, batch_size=4)
  np.testing.assert_array_equal(got["index"], ref["index"])
  assert np.abs(got["images"].astype(int) - ref["images"].astype(int)).max() <= 1
  assert got["n_generated"] == ref["n_generated"]


def test_cascade_sampler_finishes_only_accepted_latents(fitted_cascade, scorer, tiny_cascade):
  level = scorer.strictness_name
  key = jax.random.key(12)
  threshold = fitted_cascade.threshold(level, "youden")
  out = cascade.sample_valid_cascade(scorer, tiny_cascade, fitted_cascade, key, 5, SAMPLING_GROUP, pool_size=16,
                                     accept_size=4)
  assert out["n_valid"] == 5 and all(np.all(v > 0) for v in out["scores"].values())
  # The returned indices are exactly the first 5 that are accepted by the base-image rule and valid.
  index = np.arange(out["n_latents_drawn"], dtype=np.int32)
  z = scoring.latents_at(key, jnp.asarray(index), 128)
  cond = jnp.asarray(group_condition_batch(SAMPLING_GROUP, index.size, 0, conditions=tiny_cascade.config.conditions))
  base = jit_call(tiny_cascade, z, cond, method="base_image")
  log_p = np.asarray(_judge(fitted_cascade.predictor, base, scorer.device_calibration))
  accepted = index[log_p >= threshold]
  assert out["n_generated"] == accepted.size
  assert set(out["index"].tolist()) <= set(accepted.tolist())
  upsampled = jit_call(tiny_cascade, base, z, method="upsample")
  full = scorer.score(np.asarray(jnp.round((upsampled[..., 0] + 1) * 127.5), np.uint8))
  valid_accepted = [i for i in accepted if full.valid[i]]
  np.testing.assert_array_equal(out["index"], valid_accepted[:5])
  # The last round stopped after the chunk (2 images on one CPU device) holding the 5th valid image, and every
  # drawn latent was judged (some twice: those a round judged past the accepted latents it wanted).
  chunk = batching.default_chunk() or 4
  assert out["n_generated"] <= int((accepted <= out["index"][-1]).sum()) + chunk - 1
  assert out["n_judged"] >= out["n_latents_drawn"] and out["n_slots"] <= out["n_generated"] + out["n_rounds"]
  # A smaller pool (the shape the accept-all test compiled) changes the rounds, not the images.
  smaller = cascade.sample_valid_cascade(scorer, tiny_cascade, fitted_cascade, key, 5, SAMPLING_GROUP, pool_size=8,
                                         accept_size=4)
  np.testing.assert_array_equal(smaller["index"], out["index"])
  assert smaller["n_generated"] == out["n_generated"]
  with pytest.raises(ValueError, match="not a cascade"):
    cascade.sample_valid_cascade(scorer, Generator(config.gan_tiny(64).generator, rngs=nnx.Rngs(0)),
                                 fitted_cascade, key, 1, SAMPLING_GROUP)


def test_cascade_round_judges_and_finishes_only_what_is_needed(fitted_cascade, scorer, tiny_cascade):
  level = scorer.strictness_name
  key = jax.random.key(13)
  threshold = fitted_cascade.threshold(level, "youden")
  caller = cascade._CascadeRound(scorer, tiny_cascade, fitted_cascade, key, SAMPLING_GROUP, 0, "youden", 16, 4)
  # What a warm-up calls: nothing needed, nothing judged or computed.
  nothing = jax.device_get(caller(0, 0))
  assert (nothing["judged"], nothing["computed"], nothing["consumed"], nothing["slot_used"].sum()) == (0, 0, 0, 0)
  # One accepted latent wanted: judging stops after the chunk (8 latents on one CPU device) holding the first
  # accepted one, which alone is finished; the next round starts after it.
  judge_chunk = cascade.JUDGE_CPU_CHUNK if batching.default_chunk() else 4
  index = jnp.arange(16, dtype=jnp.int32)
  z = scoring.latents_at(key, index, 128)
  cond = jnp.asarray(group_condition_batch(SAMPLING_GROUP, 16, 0, conditions=tiny_cascade.config.conditions))
  log_p = np.asarray(_judge(fitted_cascade.predictor, jit_call(tiny_cascade, z, cond, method="base_image"),
                            scorer.device_calibration))
  first = int(np.flatnonzero(log_p >= threshold)[0])
  one = jax.device_get(caller(0, 1, want=1))
  assert one["judged"] == min(16, (first // judge_chunk + 1) * judge_chunk)
  assert one["slot_used"].tolist() == [True, False, False, False] and one["index"][0] == first
  assert one["consumed"] == (first + 1 if (log_p[:one["judged"]] >= threshold).sum() > 1 else one["judged"])
  # The rounds of a run want ceil(need / validation precision) accepted latents, at most accept_size.
  precision = fitted_cascade.report["levels"][level]["strategies"]["youden"]["validation"]["precision"]
  assert [caller.want(n) for n in (0, 1, 100)] == [0, min(4, int(np.ceil(1 / precision))), 4]


def test_cli_cascade_needs_a_cascade_generator(tmp_path, synthetic_records, capsys):
  from jaxcxr import cli, prefilter  # pylint: disable=g-import-not-at-top

  plain = Generator(config.gan_tiny(32).generator, rngs=nnx.Rngs(0))
  checkpoints.save_model(tmp_path / "generator", plain, plain.config)
  prefilter.save_latent_dataset(tmp_path / "latents.npz", synthetic_records(n=20))
  code = cli.main(["latents", "cascade", "--data", str(tmp_path / "latents.npz"), "--checkpoint",
                   str(tmp_path / "generator"), "--out", str(tmp_path / "out")])
  assert code == 2 and "not a cascade generator" in capsys.readouterr().err
  code = cli.main(["latents", "cascade", "--data", str(tmp_path / "latents.npz"), "--out", str(tmp_path / "out"),
                   "--steps", "100"])
  assert code == 2 and "multiple of steps_per_call=250" in capsys.readouterr().err


def test_cli_sample_prefilter_input_base_needs_a_shipped_cascade_prefilter(tmp_path, capsys):
  from jaxcxr import cli  # pylint: disable=g-import-not-at-top

  plain = Generator(config.gan_tiny(32).generator, rngs=nnx.Rngs(0))
  checkpoints.save_model(tmp_path / "generator", plain, plain.config)
  code = cli.main(["sample", "--group", "18_24m", "--n", "1", "--out", str(tmp_path / "out"), "--checkpoint",
                   str(tmp_path / "generator"), "--prefilter", "youden", "--prefilter-input", "base"])
  assert code == 2 and "no shipped cascade pre-filter" in capsys.readouterr().err
  code = cli.main(["sample", "--group", "18_24m", "--n", "1", "--out", str(tmp_path / "out2"), "--checkpoint",
                   str(tmp_path / "generator"), "--prefilter", "youden", "--prefilter-input", "base",
                   "--prefilter-dir", str(tmp_path)])
  assert code == 2 and "latent (z) pre-filters" in capsys.readouterr().err


def test_judge_latents_cascade_is_a_round_without_selection(fitted_cascade, scorer, tiny_cascade):
  key = jax.random.key(13)
  out = cascade.judge_latents_cascade(scorer, tiny_cascade, fitted_cascade, key, 6, SAMPLING_GROUP, batch_size=4)
  index = np.arange(6, dtype=np.int32)
  z = scoring.latents_at(key, jnp.asarray(index), 128)
  cond = jnp.asarray(group_condition_batch(SAMPLING_GROUP, 6, 0, conditions=tiny_cascade.config.conditions))
  base = jit_call(tiny_cascade, z, cond, method="base_image")
  log_p = _judge(fitted_cascade.predictor, base, scorer.device_calibration)
  # The round ran batches of 4 and 2, this check one of 6: the base images agree to float rounding, which can move a
  # pixel across a uint8 level in `_quantize` (one such pixel moved one log_p by 1.6e-4 on the 2-core CI machine).
  np.testing.assert_allclose(out["log_p"], np.asarray(log_p), rtol=1e-5, atol=2e-3)
  upsampled = jit_call(tiny_cascade, base, z, method="upsample")
  images = np.asarray(jnp.round(jnp.clip((upsampled[..., 0] + 1) * 127.5, 0, 255)), np.uint8)
  assert np.abs(out["images"].astype(int) - images.astype(int)).max() <= 1
  np.testing.assert_array_equal(out["index"], index)
  with pytest.raises(ValueError, match="not a cascade"):
    cascade.judge_latents_cascade(scorer, Generator(config.gan_tiny(64).generator, rngs=nnx.Rngs(0)),
                                  fitted_cascade, key, 2, SAMPLING_GROUP)


def test_resolve_sampler_with_a_cascade_prefilter(fitted_cascade, scorer, tiny_cascade, tmp_path):
  from jaxcxr.prefilter import choice  # pylint: disable=g-import-not-at-top

  level = scorer.strictness_name
  sampler = choice.resolve_sampler(scorer, tiny_cascade, SAMPLING_GROUP, prefilter=fitted_cascade, pool_size=16,
                                   accept_size=4)
  assert (sampler.kind, sampler.strategy, sampler.source) == ("cascade", "youden", "given")
  assert sampler.threshold == fitted_cascade.threshold(level, "youden")
  assert sampler.summary() == {"input": "base", "checkpoint": None, "strategy": "youden",
                               "threshold": fitted_cascade.threshold(level, "youden"),
                               "test_roc_auc": fitted_cascade.report["levels"][level]["roc_auc_test"]}
  key = jax.random.key(14)
  found = sampler.sample(key, 3)
  direct = cascade.sample_valid_cascade(scorer, tiny_cascade, fitted_cascade, key, 3, SAMPLING_GROUP, pool_size=16,
                                        accept_size=4)
  np.testing.assert_array_equal(found["index"], direct["index"])
  judged = sampler.judge(key, 5, batch_size=4)
  np.testing.assert_array_equal(judged["accepted"], judged["score"] >= sampler.threshold)
  with pytest.raises(ValueError, match="judges base images"):
    choice.resolve_sampler(scorer, tiny_cascade, SAMPLING_GROUP, prefilter=fitted_cascade, prefilter_input="z")
  with pytest.raises(ValueError, match="strategy"):
    choice.resolve_sampler(scorer, tiny_cascade, SAMPLING_GROUP, strategy="best", prefilter=fitted_cascade)
  plain = Generator(config.gan_tiny(32).generator, rngs=nnx.Rngs(0))
  directory = checkpoints.save_model(tmp_path / "generator", plain, plain.config)
  with pytest.raises(ValueError, match="learned the base images of generator tiny-cascade"):
    choice.resolve_sampler(scorer, tiny_cascade, SAMPLING_GROUP, prefilter=fitted_cascade, generator_dir=directory)
