"""The classifier that is a linear probe on the CXR encoder: fit, fold, save, load, explain, command line."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import run_cli
from jaxcxr import checkpoints, data, evaluation_sets, explain
from jaxcxr.baselines import grouped_logreg
from jaxcxr.config import CXREncoderConfig, EncoderClassifierConfig
from jaxcxr.models.classifier import load_classifier, predict_logits, predict_proba
from jaxcxr.models.cxr_encoder import CXREncoder
from jaxcxr.models.encoder_classifier import EncoderClassifier, pooled_features
from jaxcxr.train.classifier import ClassifierTrainConfig, task_split
from jaxcxr.train.encoder_classifier import fit_encoder_classifier

TINY = CXREncoderConfig(resolution=32, patch=4, channels=(8, 16), blocks=(1, 1), norm_groups=4)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
  """A random tiny encoder, saved as `jaxcxr train encoder` saves one (its last block made non-trivial)."""
  encoder = CXREncoder(TINY, rngs=nnx.Rngs(3))
  kernel = encoder.stages[1].blocks[0].conv2.kernel     # zero-initialised: give the block something to do
  kernel[...] = 0.1 * jax.random.normal(jax.random.key(4), kernel.shape)
  return checkpoints.save_model(tmp_path_factory.mktemp("encoder") / "encoder", encoder, TINY)


@pytest.fixture(scope="module")
def fitted(encoder_dir, nih_path, tmp_path_factory):
  ds = evaluation_sets.classifier_images(data.load(nih_path), "abnormal")
  out = tmp_path_factory.mktemp("probe")
  return ds, fit_encoder_classifier(encoder_dir, ds, "abnormal", out, pooled_stages=("stage1", "stage2")), out


def test_config_takes_distinct_stages_of_the_encoder_in_order():
  assert EncoderClassifierConfig(encoder=TINY, pooled_stages=("stage1", "stage2")).features == 2 * (8 + 16)
  for stages in ((), ("stage3",), ("stage2", "stage1"), ("stage1", "stage1")):
    with pytest.raises(ValueError, match="pooled_stages"):
      EncoderClassifierConfig(encoder=TINY, pooled_stages=stages)


def test_the_logit_is_the_fitted_probes_decision_function(fitted, encoder_dir):
  ds, summary, _ = fitted
  model = load_classifier(summary["classifier"])
  assert isinstance(model, EncoderClassifier)
  # The encoder's weights are the pretrained ones, unchanged.
  saved, _, _ = checkpoints.load_model(encoder_dir, lambda c: CXREncoder(c, rngs=nnx.Rngs(0)), CXREncoderConfig)
  for a, b in zip(jax.tree.leaves(nnx.state(saved)), jax.tree.leaves(nnx.state(model.encoder))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The same grouped logistic regression on the same training features, scored by sklearn, gives the module's logits.
  indices, y, _ = task_split(ds, ClassifierTrainConfig(task="abnormal"))
  train, test = indices["train"], indices["test"]
  search = grouped_logreg(pooled_features(model, ds.images[train]), y[train], ds.patient_id[train], "check")
  assert search.best_params_["logisticregression__C"] == pytest.approx(summary["C"])
  expected = search.decision_function(pooled_features(model, ds.images[test]))
  np.testing.assert_allclose(predict_logits(model, ds.images[test]), expected, rtol=1e-4, atol=1e-4)
  assert np.ptp(expected) > 0
  # The validation report is the saved model's on the validation patients; the test patients are left alone.
  meta = checkpoints.read_metadata(summary["classifier"])
  assert meta["task"] == "abnormal" and meta["test"] is None and meta["split"]["test"] == test.tolist()
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  val = indices["val"]
  assert meta["val"]["roc_auc"] == pytest.approx(roc_auc_score(y[val], predict_proba(model, ds.images[val])))


def test_head_of_features_is_the_call_and_grad_cam_weighs_the_first_pooled_stage(fitted):
  ds, summary, _ = fitted
  model = load_classifier(summary["classifier"])
  x = jnp.asarray(ds.images[:3, ::8, ::8, None], jnp.float32) / 255.0
  feature_map = model.features(x)
  assert feature_map.shape == (3, 8, 8, 8)
  np.testing.assert_allclose(model.head(feature_map), model(x), rtol=1e-6)
  cam = explain.grad_cam(model, ds.images[:3], batch_size=4)
  assert cam.heatmap.shape == (3, 32, 32) and np.isfinite(cam.heatmap).all() and (cam.raw_max >= 0).all()
  assert cam.heatmap.max() == pytest.approx(1.0)
  with pytest.raises(ValueError, match="EncoderClassifier: expected images"):
    model(jnp.zeros((1, 16, 16, 1)))


def test_cli_fits_refuses_to_overwrite_and_names_a_wrong_checkpoint(capsys, encoder_dir, nih_path, tmp_path):
  args = ["train", "encoder-classifier", "--encoder", str(encoder_dir), "--task", "sex", "--data", str(nih_path),
          "--out", str(tmp_path)]
  code, out, _ = run_cli(capsys, *args)
  assert code == 0 and "sex probe" in out
  assert checkpoints.read_metadata(tmp_path / "classifier")["positive_class"] == "female"
  code, _, err = run_cli(capsys, *args)
  assert code != 0 and "exists; pass --overwrite" in err
  code, _, err = run_cli(capsys, *args[:3], str(tmp_path / "classifier"), *args[4:], "--overwrite")
  assert code != 0 and "EncoderClassifierConfig" in err and "CXREncoderConfig" in err


def test_fine_tuning_starts_from_the_whole_probe_and_saves_an_encoder_classifier(fitted, tmp_path):
  from jaxcxr.train import classifier as trainer  # pylint: disable=g-import-not-at-top

  ds, summary, _ = fitted
  probe_config = load_classifier(summary["classifier"]).config
  config = ClassifierTrainConfig(model=probe_config, task="abnormal", batch_size=4, steps=4, steps_per_call=2,
                                 scan_unroll=2, learning_rate=1e-2, warmup_steps=0, eval_every=2,
                                 checkpoint_every=2, eval_batch_size=4, freeze_stages=1)
  with pytest.raises(ValueError, match="starts from a saved encoder classifier"):
    trainer.train_classifier(ds, config, tmp_path / "none", progress=False)
  config = dataclasses.replace(config, pretrained=summary["classifier"])
  # Step 0 is the probe, head included.
  start = trainer.init_train_state(config)["params"]
  saved = nnx.to_pure_dict(nnx.state(load_classifier(summary["classifier"]), nnx.Param))
  for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  result = trainer.train_classifier(ds, config, tmp_path / "run", progress=False, report_test=False)
  tuned = load_classifier(result["classifier"])
  assert isinstance(tuned, EncoderClassifier) and result["steps"] == 4
  assert np.isfinite(predict_logits(tuned, ds.images[:4])).all()
  # freeze_stages=1 keeps the encoder's stem and first stage; the second stage and the head move.
  state = jax.device_put(trainer.init_train_state(config))
  train = ds.subset(task_split(ds, config)[0]["train"])
  moved, _ = trainer.make_train_step(config)(state, jax.device_put(trainer.prepare_data(train, config)))
  before, after = jax.tree.map(np.asarray, saved), jax.tree.map(np.asarray, moved["params"])
  np.testing.assert_array_equal(after["encoder"]["stem"]["kernel"], before["encoder"]["stem"]["kernel"])
  np.testing.assert_array_equal(after["encoder"]["stages"][0]["blocks"][0]["conv1"]["kernel"],
                                before["encoder"]["stages"][0]["blocks"][0]["conv1"]["kernel"])
  second = lambda params: params["encoder"]["stages"][1]["merge"]["kernel"]
  assert not np.array_equal(second(after), second(before))
  assert not np.array_equal(after["weight"], before["weight"])
