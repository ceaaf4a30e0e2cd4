"""Which sampler runs (`jaxcxr.prefilter.choice.resolve_sampler`) and the default limits of a run (`jaxcxr.sampling`).

conftest's tiny models, scorer and fitted latent pre-filter; the cascade cases are in
tests/test_prefilter_cascade.py beside their fitted cascade pre-filter.
"""

import dataclasses
import math

import jax
import numpy as np
import pytest

import jaxcxr
from jaxcxr import checkpoints, prefilter, sampling
from jaxcxr.models.generator import latents, sample_images
from jaxcxr.prefilter import choice

GROUP = "38_44f"  # conftest.SAMPLING_GROUP


@pytest.mark.parametrize("k, expected", [(0, 1000), (1, 1000), (5, 1000), (6, 1200), (7, 1400), (50, 10_000)])
def test_default_max_generated_is_max_1000_200k(k, expected):
  assert sampling.default_max_generated(k) == expected


@pytest.mark.parametrize("args, expected", [((1000, 8), 125), ((1001, 8), 126), ((8, 4), 2), ((0, 4), 1),
                                            ((1, 32), 1)])
def test_default_max_rounds_covers_the_generated_limit(args, expected):
  assert sampling.default_max_rounds(*args) == expected


@pytest.mark.parametrize("function, args", [("default_max_generated", (-1,)), ("default_max_generated", (2.5,)),
                                            ("default_max_rounds", (-1, 4)), ("default_max_rounds", (8, 0))])
def test_default_limits_refuse_bad_numbers(function, args):
  with pytest.raises(ValueError, match=function):
    getattr(sampling, function)(*args)


def test_nothing_asked_for_is_post_filtering_alone(scorer, tiny):
  sampler = jaxcxr.resolve_sampler(scorer, tiny[2], GROUP, accept_size=4)
  assert (sampler.kind, sampler.prefilter, sampler.threshold, sampler.summary()) == ("none", None, None, None)
  key = jax.random.key(21)
  found = sampler.sample(key, 3)
  plain = sampling.sample_valid(scorer, tiny[2], key, 3, GROUP, batch_size=4)
  np.testing.assert_array_equal(found["index"], plain["index"])
  np.testing.assert_array_equal(found["images"], plain["images"])
  with pytest.raises(ValueError, match="no pre-filter"):
    sampler.judge(key, 4)


def test_a_given_latent_prefilter_samples_as_sample_valid_latent(scorer, tiny, fitted):
  sampler = choice.resolve_sampler(scorer, tiny[2], GROUP, prefilter=fitted, pool_size=16, accept_size=4)
  assert (sampler.kind, sampler.source, sampler.strategy, sampler.threshold) == ("latent", "given", "youden",
                                                                                 fitted.threshold)
  assert sampler.summary() == fitted.summary() and sampler.summary()["input"] == "z"
  key = jax.random.key(22)
  found = sampler.sample(key, 3)
  direct = prefilter.sample_valid_latent(scorer, tiny[2], fitted, key, 3, GROUP, pool_size=16, accept_size=4)
  np.testing.assert_array_equal(found["index"], direct["index"])
  assert found["n_latents_drawn"] == direct["n_latents_drawn"]
  # The pre-filter's verdict on latents 0..n-1: its logit of each z, beside every latent's image.
  judged = sampler.judge(key, 6, batch_size=4)
  z = latents(key, 0, 6, 128)
  np.testing.assert_allclose(judged["score"], fitted.logits(z), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(judged["accepted"], fitted.accept(z))
  np.testing.assert_array_equal(judged["images"], sample_images(tiny[2], key, 6, GROUP, batch_size=4))
  np.testing.assert_array_equal(judged["index"], np.arange(6))


def test_limits_default_to_the_named_defaults_and_stop_a_filter_that_accepts_nothing(scorer, tiny, fitted):
  never = dataclasses.replace(fitted, threshold=math.inf)
  sampler = choice.resolve_sampler(scorer, tiny[2], GROUP, prefilter=never, pool_size=8, accept_size=4)
  found = sampler.sample(jax.random.key(23), 2, max_generated=8)
  # No latent is accepted, so nothing is generated: the rounds stop at default_max_rounds(8, 4) = 2.
  assert (found["n_valid"], found["n_generated"], found["n_rounds"]) == (0, 0, 2)


def test_a_saved_prefilter_and_a_shipped_one_are_found(scorer, tiny, fitted, tmp_path, monkeypatch):
  generator = tiny[2]
  g_dir = checkpoints.save_model(tmp_path / "model" / "generator", generator, generator.config)
  g_id = checkpoints.model_id(g_dir)
  own = dataclasses.replace(fitted, generator_id=g_id)
  saved = own.save(tmp_path / "pf")
  sampler = choice.resolve_sampler(scorer, generator, GROUP, prefilter=saved, generator_dir=g_dir)
  assert (sampler.kind, sampler.source, sampler.threshold) == ("latent", str(saved), pytest.approx(own.threshold))
  # A pre-filter set under prefilters_*/LEVEL/GROUP of the checkpoints root, found by the generator's model id.
  shipped = prefilter.save_prefilter_set(tmp_path / "root" / "prefilters_tiny" / "standard" / GROUP,
                                         [dataclasses.replace(own, strategy=s) for s in ("youden", "tpr@0.95")])
  monkeypatch.setenv("JAXCXR_CHECKPOINTS", str(tmp_path / "root"))
  lines = []
  sampler = choice.resolve_sampler(scorer, generator, GROUP, strategy="tpr@0.95", generator_dir=g_dir,
                                   log=lines.append)
  assert (sampler.kind, sampler.source, sampler.strategy) == ("latent", str(shipped), "tpr@0.95")
  assert lines == [f"loading shipped pre-filter {shipped} (tpr@0.95)"]
  with pytest.raises(ValueError, match="no shipped cascade pre-filter"):
    choice.resolve_sampler(scorer, generator, GROUP, strategy="youden", generator_dir=g_dir, prefilter_input="base")
  with pytest.raises(ValueError, match="no shipped pre-filter of 18_24m"):
    choice.resolve_sampler(scorer, generator, "18_24m", strategy="youden", generator_dir=g_dir)
  # A pre-filter of another generator's latents, or of another group, is refused.
  with pytest.raises(ValueError, match="rebuild the latent dataset"):
    choice.resolve_sampler(scorer, generator, GROUP, prefilter=dataclasses.replace(own, generator_id="f" * 16),
                           generator_dir=g_dir)
  with pytest.raises(ValueError, match="a pre-filter of group 38_44f, not 18_24m"):
    choice.resolve_sampler(scorer, generator, "18_24m", prefilter=saved)


@pytest.mark.parametrize("kwargs, message", [
    (dict(strategy="best"), "unknown threshold strategy"),
    (dict(strategy="youden", prefilter_input="latent"), "prefilter_input"),
    (dict(strategy="youden", label=1), "label 0"),
    (dict(latents={"z": np.zeros((2, 128))}), "needs a strategy"),
    (dict(strategy="youden", latents={"z": np.zeros((2, 128))}, prefilter="somewhere"), "not both"),
], ids=lambda v: str(v)[:30])
def test_contradictory_requests_are_refused(scorer, tiny, kwargs, message):
  with pytest.raises(ValueError, match=message):
    choice.resolve_sampler(scorer, tiny[2], GROUP, **kwargs)
