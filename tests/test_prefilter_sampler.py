"""Tests of latent-filtered sampling on device and the sample CLI with a pre-filter (`jaxcxr.prefilter.sampler`).

The tiny models, the scorer and the fitted pre-filter are conftest's fixtures: acceptance has nothing
to do with validity there, so these tests check the mechanics (which latents are generated, which
images come back, static shapes), not the filter's quality.
"""

import copy
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, cli, data, prefilter, scoring
from jaxcxr.config import LatentClassifierConfig
from jaxcxr.models.generator import latents
from jaxcxr.models.latent import LatentClassifier

GROUP = "38_44f"  # conftest.SAMPLING_GROUP: the sampling scorer's and `fitted`'s group

# ----------------------------------------------------------------------------- filtered sampling


def _brute_force(scorer, generator, pf, key, n_drawn):
  """Accepted and valid flags of latent indices 0 .. n_drawn-1, computed one stage at a time on the host."""
  z = np.asarray(latents(key, jnp.int32(0), n_drawn, 128))
  accepted = pf.accept(z) if pf is not None else np.ones(n_drawn, bool)
  valid = scorer.generate_and_score(generator, key, n_drawn, GROUP, keep_images=False).result.valid
  return accepted, valid


def test_sample_valid_returns_exactly_k_valid_accepted_images(scorer, tiny, fitted, getkey):
  key, k = getkey(), 5
  found = prefilter.sample_valid_latent(scorer, tiny[2], fitted, key, k, GROUP, pool_size=16, accept_size=4)
  assert found["n_valid"] == k and found["complete"]
  assert found["images"].shape == (k, 32, 32) and found["images"].dtype == np.uint8
  for name, values in found["scores"].items():
    assert values.shape == (k,) and (values > 0).all(), name
  # every returned latent is the scheme's latent of its index, and the pre-filter accepts it
  np.testing.assert_allclose(found["z"], np.asarray(jax.vmap(lambda i: latents(key, i, 1, 128)[0])(
      jnp.asarray(found["index"]))), rtol=1e-6)
  assert fitted.accept(found["z"]).all()
  # the images are the first k indices that are accepted and valid, and only accepted latents were generated
  accepted, valid = _brute_force(scorer, tiny[2], fitted, key, found["n_latents_drawn"])
  assert list(found["index"]) == list(np.flatnonzero(accepted & valid)[:k])
  assert found["n_generated"] == int(accepted.sum())
  assert found["n_valid_seen"] == int((accepted & valid).sum())
  assert found["acceptance_rate"] == pytest.approx(accepted.mean())
  assert found["valid_rate"] == pytest.approx(found["n_valid_seen"] / found["n_generated"])
  again = scorer.generate_and_score(tiny[2], key, 1, GROUP, start=int(found["index"][0]))
  np.testing.assert_array_equal(again.images[0], found["images"][0])


def test_same_images_whatever_the_pool_and_accept_sizes(scorer, tiny, fitted, getkey):
  key = getkey()
  a = prefilter.sample_valid_latent(scorer, tiny[2], fitted, key, 4, GROUP, pool_size=16, accept_size=4)
  b = prefilter.sample_valid_latent(scorer, tiny[2], fitted, key, 4, GROUP, pool_size=4, accept_size=2)
  assert list(a["index"]) == list(b["index"])
  np.testing.assert_allclose(a["scores"]["score_abnormal"], b["scores"]["score_abnormal"], atol=1e-5)


def test_rounds_and_calls_do_not_recompile(scorer, tiny, fitted, getkey):
  # A pool size used by no other test, so the first call below compiles exactly once.
  before = prefilter.TRACE_COUNTS["filter_generate_and_score"]
  first = prefilter.sample_valid_latent(scorer, tiny[2], fitted, getkey(), 6, GROUP, pool_size=12, accept_size=4)
  assert first["n_rounds"] >= 2
  other_group = dataclasses.replace(fitted, group="18_24m", threshold=fitted.threshold - 0.5)
  second = prefilter.sample_valid_latent(scorer, tiny[2], other_group, getkey(), 3, "18_24m", pool_size=12,
                                         accept_size=4)
  assert second["n_valid"] == 3
  assert prefilter.TRACE_COUNTS["filter_generate_and_score"] - before == 1


def test_baseline_and_accept_all_fallback_match_plain_post_filtering(scorer, tiny, getkey,
                                                                    synthetic_records):
  key = getkey()
  plain = prefilter.sample_valid_latent(scorer, tiny[2], None, key, 3, GROUP, accept_size=4)
  assert plain["acceptance_rate"] == 1.0 and plain["n_generated"] == plain["n_latents_drawn"]
  _, valid = _brute_force(scorer, tiny[2], None, key, plain["n_latents_drawn"])
  assert list(plain["index"]) == list(np.flatnonzero(valid)[:3])
  empty = synthetic_records(n=60, valid_rule=lambda z: np.zeros(z.shape[0], bool))
  fallback = prefilter.fit_prefilter(empty, GROUP, on_empty="accept_all")
  same = prefilter.sample_valid_latent(scorer, tiny[2], fallback, key, 3, GROUP, pool_size=16, accept_size=4)
  assert list(same["index"]) == list(plain["index"]) and same["acceptance_rate"] == 1.0


def test_sample_valid_bad_arguments(scorer, tiny, fitted, getkey):
  small = prefilter.Prefilter(LatentClassifier(LatentClassifierConfig(latent_dim=64), rngs=nnx.Rngs(0)), 0.0,
                              "youden", GROUP, "logreg")
  with pytest.raises(ValueError, match="latents of size 64"):
    prefilter.sample_valid_latent(scorer, tiny[2], small, getkey(), 1, GROUP)
  with pytest.raises(ValueError, match="fitted for group '38_44f'"):
    prefilter.sample_valid_latent(scorer, tiny[2], fitted, getkey(), 1, "18_24m")
  with pytest.raises(ValueError, match="accept_size <= pool_size"):
    prefilter.sample_valid_latent(scorer, tiny[2], fitted, getkey(), 1, GROUP, pool_size=2, accept_size=4)
  with pytest.raises(ValueError, match="nudging needs"):
    prefilter.sample_valid_latent(scorer, tiny[2], None, getkey(), 1, GROUP, nudge=prefilter.NudgeConfig())
  with pytest.raises(ValueError, match="k must be"):
    prefilter.sample_valid_latent(scorer, tiny[2], fitted, getkey(), -1, GROUP)
  with pytest.raises(data.DataError):
    prefilter.sample_valid_latent(scorer, tiny[2], dataclasses.replace(fitted, group="99_99x"), getkey(), 1, "99_99x")


def test_max_rounds_stops_a_filter_that_accepts_nothing(scorer, tiny, fitted, getkey):
  never = dataclasses.replace(fitted, threshold=1e9)
  found = prefilter.sample_valid_latent(scorer, tiny[2], never, getkey(), 2, GROUP, pool_size=16, accept_size=4,
                                 max_rounds=3)
  assert found["n_valid"] == 0 and not found["complete"] and found["n_generated"] == 0
  # Every latent drawn was judged; no slot was filled, so no image was computed.
  assert found["n_latents_drawn"] == found["n_judged"] == 48 and found["n_slots"] == 0
  assert found["images"].shape == (0, 32, 32)


def test_nudging_keeps_norms_and_raises_logits(scorer, tiny, fitted, getkey):
  key = getkey()
  nudge = prefilter.NudgeConfig(steps=2, step_size=1.0)
  found = prefilter.sample_valid_latent(scorer, tiny[2], fitted, key, 3, GROUP, pool_size=16, accept_size=4,
                                        nudge=nudge)
  assert found["n_valid"] == 3
  original = np.asarray(jax.vmap(lambda i: latents(key, i, 1, 128)[0])(jnp.asarray(found["index"])))
  np.testing.assert_allclose(np.linalg.norm(found["z"], axis=1), np.linalg.norm(original, axis=1), rtol=1e-5)
  assert (fitted.logits(found["z"]) > fitted.logits(original)).all()
  assert fitted.accept(found["z"]).all()
  plain = prefilter.sample_valid_latent(scorer, tiny[2], fitted, key, 3, GROUP, pool_size=16, accept_size=4)
  assert found["acceptance_rate"] >= plain["acceptance_rate"]
  with pytest.raises(ValueError, match="steps"):
    prefilter.NudgeConfig(steps=0)


# ----------------------------------------------------------------------------- CLI


def test_cli_build_fit_and_prefiltered_sample(scorer, tiny, tmp_path, capsys, monkeypatch):
  unet, classifier, generator = tiny
  for name, model in (("unet", unet), ("classifier", classifier), ("generator", generator)):
    checkpoints.save_model(tmp_path / name, model, model.config)
  provenance = {"unet": str(tmp_path / "unet"), "unet_id": checkpoints.model_id(tmp_path / "unet"),
                "classifier": str(tmp_path / "classifier"),
                "classifier_id": checkpoints.model_id(tmp_path / "classifier")}
  scoring.Scorer(unet, classifier, scorer.calibration, scorer.config, provenance=provenance).save(tmp_path / "scoring")
  common = ["--checkpoint", str(tmp_path / "generator"), "--scoring", str(tmp_path / "scoring"), "--json"]
  latents_path = tmp_path / "latents.npz"

  code = cli.main(["latents", "build", "--n-per-group", "24", "--groups", GROUP, "--out", str(latents_path),
                   *common])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  built = json.loads(captured.out)
  assert built["n"] == 24 and built["groups"][GROUP]["n"] == 24
  assert built["generator_id"] == checkpoints.model_id(tmp_path / "generator")

  code = cli.main(["latents", "fit", "--data", str(latents_path), "--group", GROUP, "--out", str(tmp_path / "pf"),
                   "--json"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  assert json.loads(captured.out)["strategy"] == "youden"

  for source in (["--prefilter", "youden", "--latents", str(latents_path)], ["--prefilter-dir", str(tmp_path / "pf")]):
    out = tmp_path / f"samples_{len(source)}"
    code = cli.main(["sample", "--group", GROUP, "--n", "2", "--out", str(out), *source, "--pool-size", "16",
                     *common])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["n_valid"] == 2 and len(result["files"]) == 2
    assert result["prefilter"]["group"] == GROUP and result["n_generated"] <= result["n_latents_drawn"]
    assert {"seconds", "valid_rate", "acceptance_rate", "compile_seconds"} <= set(result)

  # One classifier with every strategy's threshold (a pre-filter set), found as a shipped one by generator id.
  shipped = tmp_path / "root" / "prefilters_tiny" / "standard" / GROUP
  code = cli.main(["latents", "fit", "--data", str(latents_path), "--group", GROUP, "--strategy", "all", "--out",
                   str(shipped), "--json"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  strategies = json.loads(captured.out)["strategies"]
  assert set(strategies) == set(prefilter.STRATEGIES)
  single = prefilter.load_prefilter(tmp_path / "pf")
  youden = prefilter.load_prefilter(shipped, "youden")
  assert youden.threshold == pytest.approx(single.threshold) and youden.report["strictness"] == "standard"
  with pytest.raises(checkpoints.CheckpointError, match="name one"):
    prefilter.load_prefilter(shipped)
  with pytest.raises(checkpoints.CheckpointError, match="not tpr@0.95"):
    prefilter.load_prefilter(tmp_path / "pf", "tpr@0.95")
  monkeypatch.setenv("JAXCXR_CHECKPOINTS", str(tmp_path / "root"))
  code = cli.main(["sample", "--group", GROUP, "--n", "2", "--out", str(tmp_path / "shipped"), "--prefilter",
                   "tpr@0.95", "--pool-size", "16", *common])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  result = json.loads(captured.out)
  assert result["n_valid"] == 2 and result["prefilter"]["strategy"] == "tpr@0.95"
  assert "shipped pre-filter" in captured.err
  monkeypatch.delenv("JAXCXR_CHECKPOINTS")
  # A pre-filter learned at one level, or from other post-filter models, is refused.
  stricter = copy.copy(scorer)
  stricter.strictness = 0.3
  with pytest.raises(ValueError, match="learned validity at strictness 'standard'"):
    prefilter.check_prefilter_scorer(single, stricter)
  others = copy.copy(scorer)
  others.provenance = {"unet_id": "u9", "classifier_id": "c9"}
  with pytest.raises(ValueError, match="post-filter models"):
    prefilter.check_prefilter_scorer(single, others)
  prefilter.check_prefilter_scorer(single, scorer)   # its own post-filter passes

  # a pre-filter of another generator's latents is refused; so are contradictory options
  other = dict(prefilter.load_latent_dataset(latents_path), generator_id="0123456789abcdef")
  prefilter.save_latent_dataset(tmp_path / "other.npz", other)
  for argv, message in (
      (["--prefilter", "youden", "--latents", str(tmp_path / "other.npz")], "rebuild the latent dataset"),
      (["--prefilter", "youden"], "no shipped pre-filter"),
      (["--prefilter", "youden", "--latents", str(latents_path), "--unfiltered"], "cannot be combined"),
      (["--prefilter", "bogus", "--latents", str(latents_path)], "unknown threshold strategy"),
  ):
    code = cli.main(["sample", "--group", GROUP, "--n", "1", "--out", str(tmp_path / "refused"), *argv, *common])
    assert code == 2 and message in capsys.readouterr().err, argv
