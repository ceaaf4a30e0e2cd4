"""Tests of latent datasets: validation, npz round trip, building and rescoring (`jaxcxr.prefilter.dataset`)."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcxr import data, prefilter, scoring
from jaxcxr.data import GROUPS, DataError
from jaxcxr.models.generator import latents

# ----------------------------------------------------------------------------- latent datasets


def _records(n=12, seed=0):
  rng = np.random.default_rng(seed)
  scores = {k: rng.normal(size=n).astype(np.float32) for k in prefilter.SCORE_NAMES}
  return {"z": rng.normal(size=(n, 128)).astype(np.float32),
          "group": np.array(GROUPS * (n // 6)),
          "scores": scores,
          "features": rng.random((n, 6)).astype(np.float32),
          "valid": np.all([s > 0 for s in scores.values()], axis=0),
          "generator_id": "gan_64@1200"}


def test_latent_dataset_round_trip(tmp_path):
  records = _records()
  path = prefilter.save_latent_dataset(tmp_path / "sub" / "latents.npz", records)
  loaded = prefilter.load_latent_dataset(path)
  np.testing.assert_array_equal(loaded["z"], records["z"])
  np.testing.assert_array_equal(loaded["group"], records["group"])
  assert loaded["group"].dtype.kind == "U"
  for k in prefilter.SCORE_NAMES:
    np.testing.assert_array_equal(loaded["scores"][k], records["scores"][k])
  np.testing.assert_array_equal(loaded["features"], records["features"])
  np.testing.assert_array_equal(loaded["valid"], records["valid"])
  assert loaded["valid"].dtype == bool and loaded["generator_id"] == "gan_64@1200"
  assert [p.name for p in path.parent.iterdir()] == ["latents.npz"]   # no temporary left behind
  targets = prefilter.latent_targets(loaded)
  assert set(targets) == {"valid", *prefilter.SCORE_NAMES}


def test_latent_dataset_bad_files(tmp_path):
  bad_width = dict(_records(), z=np.zeros((12, 64), np.float32))
  with pytest.raises(DataError, match=r"z: expected shape \(N, 128\)"):
    prefilter.save_latent_dataset(tmp_path / "a.npz", bad_width)
  assert not (tmp_path / "a.npz").exists()
  with pytest.raises(DataError, match="unknown group"):
    prefilter.save_latent_dataset(tmp_path / "a.npz", dict(_records(), group=np.array(["x"] * 12)))
  with pytest.raises(DataError, match="missing"):
    prefilter.save_latent_dataset(tmp_path / "a.npz", {k: v for k, v in _records().items() if k != "valid"})

  records = _records()
  arrays = {"z": records["z"], "group": records["group"], **records["scores"], "features": records["features"],
            "generator_id": np.array("g")}
  np.savez(tmp_path / "no_valid.npz", **arrays)
  with pytest.raises(DataError, match=r"no_valid.npz: .*missing array\(s\) \['valid'\]"):
    prefilter.load_latent_dataset(tmp_path / "no_valid.npz")
  np.savez(tmp_path / "narrow.npz", **dict(arrays, valid=records["valid"], z=np.zeros((12, 64), np.float32)))
  with pytest.raises(DataError, match=r"narrow.npz: z: expected shape \(N, 128\)"):
    prefilter.load_latent_dataset(tmp_path / "narrow.npz")
  np.savez(tmp_path / "pickled.npz", **dict(arrays, valid=np.array([None] * 12, dtype=object)))
  with pytest.raises(DataError, match="pickled.npz"):
    prefilter.load_latent_dataset(tmp_path / "pickled.npz")
  np.save(tmp_path / "array.npy", records["z"])
  with pytest.raises(DataError, match="array.npy: expected an npz archive"):
    prefilter.load_latent_dataset(tmp_path / "array.npy")
  (tmp_path / "text.npz").write_text("not an archive")
  with pytest.raises(DataError, match="text.npz"):
    prefilter.load_latent_dataset(tmp_path / "text.npz")
  with pytest.raises(DataError, match="no such file"):
    prefilter.load_latent_dataset(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- building latent datasets


def test_build_latent_dataset_uses_fold_in_per_group(scorer, tiny, getkey, tmp_path):
  key = getkey()
  built = prefilter.build_latent_dataset(scorer, tiny[2], key, 3, generator_id="abc", groups=("18_24m", "58_64f"))
  assert built["z"].shape == (6, 128) and list(built["group"]) == ["18_24m"] * 3 + ["58_64f"] * 3
  expected = latents(jax.random.fold_in(key, data.GROUPS.index("58_64f")), jnp.int32(0), 3, 128)
  np.testing.assert_allclose(built["z"][3:], np.asarray(expected), rtol=1e-6)
  np.testing.assert_array_equal(built["valid"], np.all([built["scores"][k] > 0 for k in scoring.SCORE_NAMES], 0))
  summary = prefilter.latent_dataset_summary(built)
  assert summary["groups"]["58_64f"]["n"] == 3 and summary["generator_id"] == "abc"
  prefilter.save_latent_dataset(tmp_path / "l.npz", built)
  loaded = prefilter.load_latent_dataset(tmp_path / "l.npz")
  np.testing.assert_array_equal(loaded["z"], built["z"])
  # The raw measures travel with the records: validity at the build's strictness follows from them.
  assert set(loaded["measures"]) == set(prefilter.MEASURE_NAMES)
  np.testing.assert_array_equal(scorer.valid_at(loaded["measures"], scorer.strictness), built["valid"])
  # Rescoring from the measures: the build's own strictness reproduces the records; a stricter one keeps a subset.
  same = prefilter.records_at_strictness(loaded, scorer, scorer.strictness)
  np.testing.assert_array_equal(same["valid"], built["valid"])
  np.testing.assert_allclose(same["scores"]["score_shape"], built["scores"]["score_shape"], rtol=1e-6)
  ref = {k: loaded["measures"][k] for k in scoring.REFERENCE_MEASURES}   # a scorer with reference measures
  levels = scoring.Scorer(scorer.unet, scorer.classifier, scoring.thresholds_at(ref, scorer.calibration.atlas, 0.05),
                          scorer.config, reference=ref)
  lenient, stricter = (prefilter.records_at_strictness(loaded, levels, q) for q in (0.05, 0.5))
  assert not (stricter["valid"] & ~lenient["valid"]).any()
  for name in ("score_shape", "score_symmetry"):   # each score tightens
    assert (stricter["scores"][name] <= lenient["scores"][name]).all()
  # Datasets written without measures (before strictness levels) still load, but cannot be rescored.
  prefilter.save_latent_dataset(tmp_path / "old.npz", {k: v for k, v in built.items() if k != "measures"})
  old = prefilter.load_latent_dataset(tmp_path / "old.npz")
  assert "measures" not in old
  with pytest.raises(data.DataError, match="rebuild"):
    prefilter.records_at_strictness(old, scorer, "standard")
  # Measures of other post-filter models are refused.
  named = copy.copy(scorer)
  named.provenance = {"unet_id": "u1", "classifier_id": "c1"}
  with pytest.raises(data.DataError, match="other|not the scorer"):
    prefilter.records_at_strictness({**loaded, "scorer_id": "u0/c0"}, named, "standard")
