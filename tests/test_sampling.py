"""Tests of unfiltered sampling on device (`jaxcxr.sampling`), with conftest's tiny models and scorer."""

import jax
import numpy as np

from jaxcxr import batching, prefilter, sampling

GROUP = "38_44f"  # conftest.SAMPLING_GROUP: the sampling scorer's group


def test_unfiltered_sampling_is_the_baseline_and_the_first_valid_consecutive_latents(scorer, tiny, getkey,
                                                                                    synthetic_records):
  key, k, generator = getkey(), 3, tiny[2]
  traces = sampling.TRACE_COUNTS["generate_and_score_round"]
  sampling.warm_up_sampler(scorer, generator, key, GROUP, batch_size=4)
  found = sampling.sample_valid(scorer, generator, key, k, GROUP, batch_size=4)
  assert sampling.TRACE_COUNTS["generate_and_score_round"] - traces <= 1   # warm-up compiled, sampling reused it
  # The warm-up's call needs no image: it computes none.
  nothing = jax.device_get(sampling.UnfilteredRound(scorer, generator, key, GROUP, 0, 4)(0, 0))
  assert (nothing["computed"], nothing["consumed"], nothing["slot_used"].sum()) == (0, 0, 0)
  assert found["n_valid"] == k and found["complete"] and found["images"].shape == (k, 32, 32)
  # `prefilter.sample_valid_latent` without a pre-filter is this sampler: same keys, indices, images and counts.
  baseline = prefilter.sample_valid_latent(scorer, generator, None, key, k, GROUP, accept_size=4)
  assert set(baseline) == set(found)
  assert list(baseline["index"]) == list(found["index"])
  np.testing.assert_array_equal(baseline["images"], found["images"])
  for name in ("n_valid", "n_latents_drawn", "n_generated", "n_valid_seen", "n_rounds", "pool_size", "accept_size",
               "n_slots"):
    assert baseline[name] == found[name], name
  # ... and gives what the pre-filtered round gives with a pre-filter that accepts every latent.
  empty = synthetic_records(n=60, valid_rule=lambda z: np.zeros(z.shape[0], bool))
  accept_all = prefilter.fit_prefilter(empty, GROUP, on_empty="accept_all")
  filtered = prefilter.sample_valid_latent(scorer, generator, accept_all, key, k, GROUP, pool_size=4,
                                           accept_size=4)
  assert list(filtered["index"]) == list(found["index"])
  np.testing.assert_array_equal(filtered["images"], found["images"])
  # Every drawn latent was generated, and the images are the first k valid ones of consecutive latents. The last
  # round stopped after the chunk (2 latents on one CPU device) holding the k-th valid image.
  assert found["n_generated"] == found["n_latents_drawn"] == found["n_slots"]
  assert 4 * (found["n_rounds"] - 1) < found["n_generated"] <= 4 * found["n_rounds"]
  assert found["index"][-1] + 1 <= found["n_generated"] <= found["index"][-1] + batching.default_chunk()
  assert found["acceptance_rate"] == 1.0 and found["pool_size"] == found["accept_size"] == 4
  assert found["n_judged"] == 0 and 0 < found["round_seconds"] <= found["seconds"]
  plain = scorer.generate_and_score(generator, key, found["n_latents_drawn"], GROUP)
  assert list(found["index"]) == list(np.flatnonzero(plain.result.valid)[:k])
  assert found["n_valid_seen"] == int(plain.result.valid.sum())
  np.testing.assert_array_equal(found["images"], plain.images[found["index"]])
  np.testing.assert_allclose(found["z"], plain.z[found["index"]], rtol=1e-6)
  # The batch size changes the rounds, not the images.
  other = sampling.sample_valid(scorer, generator, key, k, GROUP, batch_size=2)
  assert list(other["index"]) == list(found["index"])
