"""Tests of the classifier model, its training step, losses, transfer, resume, evaluation and baseline."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr import config as config_lib
from jaxcxr import data
from jaxcxr.config import ClassifierConfig, ClassifierTrainConfig, classifier_128_cpu, classifier_256, classifier_tiny
from jaxcxr.models.classifier import Classifier, predict_proba, prepare_images
from jaxcxr.train import classifier as tc


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


def _tiny_model(input_mode="full", seed=0, **kw) -> Classifier:
  return Classifier(dataclasses.replace(classifier_tiny(input_mode=input_mode).model, **kw), rngs=nnx.Rngs(seed))


def _abstract_shapes(cfg: ClassifierConfig, batch: int = 2):
  model = nnx.eval_shape(lambda: Classifier(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((batch, cfg.resolution, cfg.resolution, 1), jnp.float32)
  features = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x), state, x)
  logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
  return features.shape, logits.shape


_SMALL = dict(stages=(1, 1), channels=(4, 8), stem_kernel=3, stem_stride=1, stem_pool=False, norm_groups=2)
_RESNET = dict(stages=(1, 1, 1, 1), channels=(4, 8, 8, 16), norm_groups=4)

# (config kwargs, expected feature map shape for batch 2). Halves: top round(0.2 R) rows cropped,
# each half R/2 wide through the backbone, the two maps side by side.
SHAPE_CASES = [
    (dict(resolution=16, input_mode="full", **_SMALL), (2, 8, 8, 8)),
    (dict(resolution=16, input_mode="halves", **_SMALL), (2, 7, 8, 8)),     # 13x8 halves -> 7x4 each
    (dict(resolution=32, input_mode="full", **_SMALL), (2, 16, 16, 8)),
    (dict(resolution=32, input_mode="halves", **_SMALL), (2, 13, 16, 8)),   # 26x16 -> 13x8 each
    (dict(resolution=64, input_mode="full", **_RESNET), (2, 2, 2, 16)),     # /32 with the ResNet stem
    (dict(resolution=128, input_mode="full", **_RESNET), (2, 4, 4, 16)),
    (dict(resolution=128, input_mode="halves", **_RESNET), (2, 4, 4, 16)),  # 102x64 -> 4x2 each
    (dict(resolution=256, input_mode="full", **_RESNET), (2, 8, 8, 16)),
    (dict(resolution=256, input_mode="halves", **_RESNET), (2, 7, 8, 16)),  # 205x128 -> 7x4 each
]


@pytest.mark.parametrize("kwargs,expected", SHAPE_CASES)
def test_shapes(kwargs, expected):
  features, logits = _abstract_shapes(ClassifierConfig(**kwargs))
  assert features == expected
  assert logits == (2,)


@pytest.mark.parametrize("preset,channels", [(classifier_128_cpu, 128), (classifier_256, 512)])
def test_preset_shapes(preset, channels):
  cfg = preset().model
  features, logits = _abstract_shapes(cfg, batch=1)
  assert features[-1] == channels and logits == (1,)


def test_config_validation_and_json_round_trip():
  cfg = classifier_tiny(imbalance="focal", augment=True)
  assert config_lib.from_dict(ClassifierTrainConfig, config_lib.to_dict(cfg)) == cfg
  with pytest.raises(ValueError, match="input_mode"):
    ClassifierConfig(input_mode="quarters")
  with pytest.raises(ValueError, match="freeze_stages"):
    dataclasses.replace(cfg, freeze_stages=2)
  with pytest.raises(ValueError, match="imbalance"):
    dataclasses.replace(cfg, imbalance="smote")


def _jitted(model, fn):
  """`fn(model, x)` jitted over the split model state (eager NNX calls compile every op separately)."""
  graphdef, state = nnx.split(model)
  jitted = jax.jit(lambda s, x: fn(nnx.merge(graphdef, s), x))
  return lambda x: jitted(state, x)


@pytest.mark.parametrize("input_mode", ["full", "halves"])
def test_call_is_head_of_features_and_batch_independent(input_mode, nih):
  model = _tiny_model(input_mode, zero_init_residual=False)
  x = jnp.asarray(prepare_images(nih.images[:4], 16))

  def check(m, x):
    return m(x), m.head(m.features(x)), m(x[:1]), m.features(x), m.features(x[:, :, ::-1])

  logits, composed, first, f, f_mirror = _jitted(model, check)(x)
  np.testing.assert_allclose(logits, composed, rtol=1e-6, atol=1e-6)
  assert logits.dtype == jnp.float32 and np.isfinite(logits).all()
  # Inference is per image (GroupNorm): image 0 alone equals image 0 in the batch.
  np.testing.assert_allclose(first, logits[:1], rtol=1e-5, atol=1e-5)
  if input_mode == "halves":
    # Mirroring the image swaps the halves, each seen mirrored: the feature map comes out mirrored.
    np.testing.assert_allclose(f_mirror, f[:, :, ::-1], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="expected images of shape"):
    jax.eval_shape(model, x[:, :8])


def test_bfloat16_compute(nih):
  x = jnp.asarray(prepare_images(nih.images[:4], 16))
  y32 = _jitted(_tiny_model(zero_init_residual=False), lambda m, x: m(x))(x)
  y16 = _jitted(_tiny_model(dtype="bfloat16", zero_init_residual=False), lambda m, x: m(x))(x)
  assert y16.dtype == jnp.float32 and np.isfinite(y16).all()
  np.testing.assert_allclose(y16, y32, atol=0.1 * float(jnp.abs(y32).max()) + 0.05)


def test_predict_proba_accepts_uint8_and_float(nih):
  model = _tiny_model()
  p_uint8 = predict_proba(model, nih.images[:5], batch_size=2)   # padded last batch
  p_float = predict_proba(model, prepare_images(nih.images[:5], 16), batch_size=8)
  assert p_uint8.shape == (5,) and ((p_uint8 > 0) & (p_uint8 < 1)).all()
  np.testing.assert_allclose(p_uint8, p_float, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- losses


def test_focal_gamma0_is_bce_and_alpha_is_weighted_bce():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(4.0 * rng.standard_normal(64), jnp.float32)
  y = jnp.asarray(rng.random(64) < 0.4, jnp.int32)

  @jax.jit
  def losses(logits, y):
    return {
        "bce": optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32)),
        "focal0": tc.focal_loss(logits, y, gamma=0.0),
        "focal0_alpha": tc.focal_loss(logits, y, gamma=0.0, alpha=0.3),
        "weighted": tc.weighted_bce(logits, y, jnp.array([0.7, 0.3])),
        "focal2": tc.focal_loss(logits, y, gamma=2.0),
        # The step's dispatch on `imbalance` picks these same functions.
        "cfg_none": tc.classification_loss(logits, y, classifier_tiny(), jnp.array([0.7, 0.3])),
        "cfg_weighted": tc.classification_loss(logits, y, classifier_tiny(imbalance="weighted_bce"),
                                               jnp.array([0.7, 0.3])),
    }

  out = jax.device_get(losses(logits, y))
  np.testing.assert_allclose(out["focal0"], out["bce"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["focal0_alpha"], out["weighted"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["cfg_none"], out["bce"], rtol=1e-6)
  np.testing.assert_allclose(out["cfg_weighted"], out["weighted"], rtol=1e-6)
  # gamma = 2 against the textbook formula (1 - p_t)^2 * BCE, in float64 numpy.
  z, t = np.asarray(logits, np.float64), np.asarray(y, np.float64)
  p = 1.0 / (1.0 + np.exp(-z))
  p_t = np.where(t == 1, p, 1.0 - p)
  np.testing.assert_allclose(out["focal2"], (1.0 - p_t) ** 2 * -np.log(p_t), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out["bce"], -np.log(p_t), rtol=1e-4, atol=1e-6)


def test_prepare_data_weights_and_oversampling(nih):
  imbalanced = nih.subset(np.concatenate([np.flatnonzero(nih.label == 0), np.flatnonzero(nih.label == 1)[:4]]))
  d = tc.prepare_data(imbalanced, classifier_tiny(imbalance="oversample"))
  y = d["label"]
  assert d["images"].shape == (16, 16, 16) and d["images"].dtype == np.uint8
  np.testing.assert_allclose(d["class_weights"], [16 / 24, 16 / 8])
  # Each class is drawn with probability 1/2 whatever its size.
  np.testing.assert_allclose([d["sample_p"][y == 0].sum(), d["sample_p"][y == 1].sum()], [0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(tc.prepare_data(imbalanced, classifier_tiny())["sample_p"], 1 / 16, rtol=1e-6)
  with pytest.raises(data.DataError, match="single class"):
    tc.prepare_data(nih.select(label=0), classifier_tiny())


# ----------------------------------------------------------------------------- steps


# Each imbalance option once, combined with the other step variants so that the file compiles
# four train steps only (XLA's CPU compile of a conv backward pass takes seconds):
#   none (full mode, the resume test reuses this compiled step), weighted_bce + halves mode,
#   focal + freeze_stages=1, oversample + augmentation.
STEP_CASES = {
    "none": classifier_tiny(),
    "weighted_bce": classifier_tiny(input_mode="halves", imbalance="weighted_bce"),
    "focal": dataclasses.replace(classifier_tiny(imbalance="focal"), freeze_stages=1, focal_alpha=0.4),
    "oversample": classifier_tiny(imbalance="oversample", augment=True),
}


@pytest.mark.parametrize("imbalance", list(STEP_CASES))
def test_train_step_each_imbalance_option(imbalance, nih):
  cfg = STEP_CASES[imbalance]
  assert cfg.imbalance == imbalance
  state = tc.init_train_state(cfg, seed=0)
  before = jax.device_get(state["params"])
  device_data = jax.device_put(tc.prepare_data(nih, cfg))
  opt_leaf = jax.tree.leaves(state["opt"])[-1]   # (params have host views now, which blocks their donation)
  state, metrics = tc.make_train_step(cfg)(state, device_data)
  assert opt_leaf.is_deleted()   # the train state is donated
  after, metrics = jax.device_get((state["params"], metrics))
  assert metrics["loss"].shape == (cfg.steps_per_call,)
  assert np.isfinite(metrics["loss"]).all() and (metrics["loss"] > 0).all()
  assert int(state["step"]) == cfg.steps_per_call
  assert not np.array_equal(before["linear"]["kernel"], after["linear"]["kernel"])
  if cfg.freeze_stages:
    # Stem and stage 1 (here the whole backbone) frozen exactly; the head trains.
    for name in ("stem_conv", "stem_norm", "stages"):
      jax.tree.map(np.testing.assert_array_equal, before[name], after[name])
  else:
    assert not np.array_equal(before["stem_conv"]["kernel"], after["stem_conv"]["kernel"])


def test_transfer_loads_backbone_and_replaces_head(tmp_path):
  source_cfg = classifier_tiny().model
  source = Classifier(source_cfg, rngs=nnx.Rngs(7))
  path = checkpoints.save_model(tmp_path / "pre", source, source_cfg, metadata={"task": "sex"})
  # A new classifier with a different head (halves mode: 2C inputs) at another resolution.
  cfg = dataclasses.replace(classifier_tiny(resolution=32, input_mode="halves"), pretrained=str(path),
                            freeze_stages=1)
  params = tc.init_train_state(cfg, seed=0)["params"]
  saved = nnx.to_pure_dict(nnx.state(source, nnx.Param))
  for name in ("stem_conv", "stem_norm", "stages"):
    jax.tree.map(np.testing.assert_array_equal, saved[name], params[name])
  assert params["linear"]["kernel"].shape == (8, 1) and saved["linear"]["kernel"].shape == (4, 1)
  wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, channels=(8,), norm_groups=2))
  with pytest.raises(checkpoints.CheckpointError, match="shape"):
    tc.init_train_state(wider, seed=0)


# ----------------------------------------------------------------------------- loop


def test_resume_equals_straight_run_and_metadata(nih, tmp_path):
  cfg = classifier_tiny()   # same compiled step as the "none" test above
  straight = tc.train_classifier(nih, cfg, tmp_path / "a", progress=False)
  partial = tc.train_classifier(nih, cfg, tmp_path / "b", progress=False, stop_at=2)
  assert partial["steps"] == 2 and partial["classifier"] is None
  with pytest.raises(FileExistsError):
    tc.train_classifier(nih, cfg, tmp_path / "b", progress=False)
  resumed = tc.train_classifier(nih, cfg, tmp_path / "b", progress=False, resume=True)
  assert resumed["start_step"] == 2 and resumed["steps"] == straight["steps"] == cfg.steps
  for key in ("best_step", "best_val_auc", "threshold", "test"):
    assert resumed[key] == straight[key]
  a, b = tc.load_classifier(straight["classifier"]), tc.load_classifier(resumed["classifier"])
  jax.tree.map(np.testing.assert_array_equal, nnx.state(a, nnx.Param), nnx.state(b, nnx.Param))

  meta = checkpoints.read_metadata(straight["classifier"])
  assert meta["task"] == "abnormal" and meta["steps"] == cfg.steps
  assert meta["split"]["seed"] == cfg.split_seed
  assert meta["data_sha256"] == data.file_sha256(nih.source)
  split = {k: set(meta["split"][k]) for k in ("train", "val", "test")}
  assert not (split["train"] & split["val"]) and not (split["train"] & split["test"])
  assert {"AP", "PA"} >= set(meta["test"]["roc_auc_by_view"])

  # evaluate_classifier (docs/cli.md keys) on the whole fixture, both tasks.
  for task in ("abnormal", "sex"):
    report = tc.evaluate_classifier(a, nih, task, batch_size=cfg.eval_batch_size, threshold=meta["threshold"])
    assert report["n"] == len(nih) and report["n_positive"] == 12
    assert 0.0 <= report["roc_auc"] <= 1.0 and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["roc_auc_by_view"]) == {"AP", "PA"}
    low, high = report["roc_auc_ci95"]
    assert 0.0 <= low <= report["roc_auc"] <= high <= 1.0

  # A sweep run leaves the test part alone.
  sweep = tc.train_classifier(nih, cfg, tmp_path / "c", progress=False, report_test=False)
  assert sweep["test"] is None and sweep["val"] is not None
  assert checkpoints.read_metadata(sweep["classifier"])["test"] is None


def test_sex_task_drops_unknown(nih):
  sex = nih.sex.copy()
  sex[:3] = "U"
  keep, y = tc.task_labels(dataclasses.replace(nih, sex=sex), "sex")
  assert keep.sum() == 21 and np.array_equal(y[keep], (sex[keep] == "F").astype(np.int32))


def test_pixel_logreg_baseline(nih):
  parts = data.split_by_patient(nih.patient_id, (0.67, 0.0, 0.33), stratify=nih.label, seed=0)
  report = tc.pixel_logreg_baseline(nih.subset(parts["train"]), nih.subset(parts["test"]), "abnormal")
  assert report["n_train"] + report["n_test"] == len(nih)
  assert 0.0 <= report["roc_auc"] <= 1.0 and 0.0 <= report["accuracy"] <= 1.0
  with pytest.raises(data.DataError, match="share"):
    tc.pixel_logreg_baseline(nih, nih.subset(parts["test"]), "abnormal")
