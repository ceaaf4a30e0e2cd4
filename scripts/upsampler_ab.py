"""A/B of two upsamplers on one base: gan_256's 64x64 base finished by its shipped upsampler and by the
EMA stage of a `train upsampler` run at STEP, each against the validation normals (scripts/gan_curve.py's
protocol). Writes runs/upsampler_ab_STEP.json.

    JAXCXR_DATA=... python scripts/upsampler_ab.py STEP [RUN]   # RUN default runs/upsampler_v3_generated
"""
import json
import os
import sys

import jax
from flax import nnx
sys.path.insert(0, os.path.dirname(__file__))
import gan_curve
from jaxcxr import checkpoints, config as config_lib
from jaxcxr.models.generator import load_generator, make_cascade, Generator
from jaxcxr.models.upsampler import Upsampler
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.train import upsampler as up_train
archives = ("nih_cxr14_subset_256.npz", "nih_cxr14_extra_256.npz")
val, train = gan_curve._real_sets(",".join(os.path.join(os.environ["JAXCXR_DATA"], f) for f in archives))
shipped = load_generator("checkpoints/gan_256/generator")
base_params = {k: v for k, v in nnx.to_pure_dict(nnx.state(shipped)).items() if k != "upsampler"}
base = nnx.merge(abstract_graphdef(Generator, shipped.config.base), base_params)
cfg = config_lib.upsampler_x4_generated_cpu()
step = int(sys.argv[1])
run = sys.argv[2] if len(sys.argv) > 2 else "runs/upsampler_v3_generated"
mgr = checkpoints.TrainCheckpointer(f"{run}/checkpoints")
state = mgr.restore(jax.eval_shape(lambda: up_train.init_train_state(cfg)), step)
new_up = nnx.merge(abstract_graphdef(Upsampler, cfg.upsampler), state["g_ema"])
out = {}
for name, up in (("shipped_upsampler", shipped.upsampler), (f"generated_inputs_step_{step}", new_up)):
  out[name] = gan_curve.generator_figures(make_cascade(base, up), val, train)
  print(name, json.dumps(out[name]), flush=True)
json.dump(out, open(f"runs/upsampler_ab_{step}.json", "w"), indent=1)
