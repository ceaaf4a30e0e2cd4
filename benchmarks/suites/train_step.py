"""Training steps of the GAN (the shipped cascade's 64x64 base GAN), the 256x256 lung U-Net and the CXR encoder.

jaxcxr: the trainers' own compiled call (`train.gan.train_step_program`,
`train.segmentation.train_step_program`, `train.cxr_encoder.train_step_program`:
`steps_per_call` steps in one call, the state donated), on random uint8 data of the
recipe's resolution; throughput in steps/s. The encoder's recipe is `cxr_encoder_cpu`
with VICReg (`cxr_encoder_tiny` with `--quick`). Twins: `twins` GAN and U-Net train steps
and `twins_encoder.TorchEncoderTrainStep` (same models, losses, R1 schedule, augmentation,
optimiser and batch), one Python-loop step at a time, as a PyTorch trainer runs.

FLOPs: one step is costed as its own function (a scan body is counted once).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from benchmarks import measure, torch_peer
from jaxcxr.models import make_condition
from jaxcxr.train import cxr_encoder, gan, segmentation

SUITE = "train_step"


def _time(bench, name, trainer, data, config):
  """Times `trainer.train_step_program` (a fresh copy of the donated state every run); FLOPs of one step."""
  with bench.guard(SUITE, name, "jaxcxr", dtype=config_dtype(config, name), batch=config.batch_size):
    _measure(bench, name, trainer, data, config)


def _measure(bench, name, trainer, data, config):
  program = trainer.train_step_program(config, data)
  timing, _ = measure.time_compiled(program.fn, program.fresh_args, repeats=bench.repeats)
  flops = measure.function_flops(lambda s, d: trainer.train_step(s, d, config), *program.args)
  steps_per_call = config.steps_per_call
  steps_per_s = steps_per_call / timing.median_s
  images = data["images"] if isinstance(data, dict) else data
  bench.emit(measure.record(bench.ctx, suite=SUITE, name=name, peer="jaxcxr", dtype=config_dtype(config, name),
                            batch=config.batch_size, timing=timing, items=steps_per_call, unit="steps/s",
                            steps_per_call=steps_per_call, resolution=images.shape[1],
                            **measure.roofline(flops, steps_per_s, bench.peak)))


def config_dtype(config, name: str) -> str:
  if name == "gan":
    return config.compute_dtype
  return config.unet.dtype if name == "unet" else config.encoder.dtype


def gan_data(config, rng: np.random.Generator) -> dict:
  """Random training arrays for the GAN step: 4 batches of uint8 images and their conditions."""
  r, n = config.generator.resolution, 4 * config.batch_size
  return {"images": jnp.asarray(rng.integers(0, 256, (n, r, r), dtype=np.uint8)),
          "cond": jnp.asarray(make_condition(rng.choice(["M", "F"], n), rng.integers(18, 80, n),
                                             rng.integers(0, 2, n), conditions=config.generator.conditions))}


def unet_data(config, rng: np.random.Generator) -> dict:
  """Random training arrays for the U-Net step: 4 batches of uint8 images, each with two lung-like boxes."""
  r, n = config.unet.resolution, 4 * config.batch_size
  masks = np.zeros((n, r, r), np.uint8)                     # two lung-like boxes
  masks[:, r // 4: 3 * r // 4, r // 8: 3 * r // 8] = 1
  masks[:, r // 4: 3 * r // 4, 5 * r // 8: 7 * r // 8] = 2
  return {"images": jnp.asarray(rng.integers(0, 256, (n, r, r), dtype=np.uint8)), "masks": jnp.asarray(masks)}


def encoder_data(config, rng: np.random.Generator) -> jnp.ndarray:
  """Random training images for the encoder step: 4 batches of uint8 images at the encoder's resolution."""
  r = config.encoder.resolution
  return jnp.asarray(rng.integers(0, 256, (4 * config.batch_size, r, r), dtype=np.uint8))


def _gan(bench, m, rng) -> None:
  config = m.gan_train
  data = gan_data(config, rng)
  _time(bench, "gan", gan, data, config)
  torch_peer.gan_train_step(bench, m, config, data, SUITE)


def _unet(bench, m, rng) -> None:
  config = m.unet_train
  data = unet_data(config, rng)
  _time(bench, "unet", segmentation, data, config)
  torch_peer.unet_train_step(bench, m, config, data, SUITE)


def _encoder(bench, m, rng) -> None:
  config = m.encoder_train
  images = encoder_data(config, rng)
  _time(bench, "encoder", cxr_encoder, images, config)
  torch_peer.encoder_train_step(bench, config, images, SUITE)


def run(bench) -> None:
  m = bench.models()
  rng = np.random.default_rng(0)
  if bench.quick:  # compiling the GAN step (two G and D passes, R1, augmentation) alone takes ~30 s
    bench.emit(measure.skipped(bench.ctx, suite=SUITE, name="gan", peer="jaxcxr",
                               reason="its compile alone exceeds the --quick budget; run without --quick"))
  elif not bench.out_of_time():
    _gan(bench, m, rng)
  if not bench.out_of_time():
    _unet(bench, m, rng)
  if bench.quick:  # its compile (views, VICReg, AdamW) took 17 s on one loaded core; tests/test_twins.py checks its twin
    bench.emit(measure.skipped(bench.ctx, suite=SUITE, name="encoder", peer="jaxcxr",
                               reason="its compile alone exceeds the --quick budget; run without --quick"))
  elif not bench.out_of_time():
    _encoder(bench, m, rng)
