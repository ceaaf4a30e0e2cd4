"""A non-editable install carries the default models (package `jaxcxr_models`, the folder `checkpoints/`).

`test_wheel_installs_and_runs_the_demo` builds the sdist and the wheel from this checkout
(`python -m build --no-isolation`: the test extra has `build` and setuptools, so nothing is
downloaded), installs the wheel into a fresh virtual environment outside the checkout
(jaxcxr's dependencies come from this environment's site-packages through a `.pth` path, which
does not run this environment's editable-install hooks), and runs `jaxcxr demo` there. The
other tests check, without building, that the package data lists the models that
`load_pretrained()`, the post-filter and f-AnoGAN need, and that the lookup falls back to the
installed package.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import pytest

import jaxcxr
from jaxcxr import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
HAS_DEFAULT_MODELS = all((REPO / "checkpoints" / name).is_dir() for name in checkpoints.INSTALLED_MODELS)
needs_models = pytest.mark.skipif(not HAS_DEFAULT_MODELS, reason="the shipped checkpoints are not in this checkout")


# ----------------------------------------------------------------------------- without building


def test_package_data_lists_exactly_the_installed_models():
  globs = PYPROJECT["tool"]["setuptools"]["package-data"][checkpoints.MODELS_PACKAGE]
  assert sorted(globs) == sorted(f"{name}/**" for name in checkpoints.INSTALLED_MODELS)


@needs_models
def test_installed_models_are_what_the_default_models_need():
  """Every folder `load_pretrained()` picks, the post-filter's U-Net and classifier and f-AnoGAN's GAN are installed."""
  root = REPO / "checkpoints"
  pre = jaxcxr.load_pretrained(root)
  assert pre.available == jaxcxr.pretrained.MODEL_NAMES
  needed = {folder.relative_to(root).parts[0] for folder in pre.folders.values()}
  provenance = json.loads((pre.scorer_dir / "calibration.json").read_text())["provenance"]
  needed |= {pathlib.PurePosixPath(provenance[role]).parts[0] for role in ("unet", "classifier")}
  encoder = checkpoints.read_metadata(pre.fanogan_dir)
  needed |= {d.name for d in checkpoints.shipped_normal_gans() if d.parent == root
             and checkpoints.model_id(d / "generator") == encoder["generator_id"]}
  assert len(needed) == len(checkpoints.INSTALLED_MODELS)
  assert needed == set(checkpoints.INSTALLED_MODELS)


def test_lookup_prefers_the_source_checkout_then_the_installed_package(tmp_path, monkeypatch):
  package = tmp_path / "site" / checkpoints.MODELS_PACKAGE
  package.mkdir(parents=True)
  (package / "__init__.py").write_text("")
  monkeypatch.delenv("JAXCXR_CHECKPOINTS", raising=False)
  monkeypatch.syspath_prepend(str(tmp_path / "site"))
  assert checkpoints.installed_models() == package.resolve()
  assert checkpoints.checkpoints_root() == REPO / "checkpoints"            # a checkout has every model
  monkeypatch.setattr(checkpoints, "source_checkpoints", lambda: tmp_path / "no_checkout" / "checkpoints")
  assert checkpoints.checkpoints_root() == package.resolve()
  with pytest.raises(checkpoints.CheckpointError, match="holds the default models only .*source checkout"):
    checkpoints.shipped_checkpoint("gan_64/generator")
  monkeypatch.setenv("JAXCXR_CHECKPOINTS", str(tmp_path / "mine"))
  assert checkpoints.checkpoints_root() == tmp_path / "mine"               # the override still wins


# ----------------------------------------------------------------------------- the wheel in a fresh environment


def _fresh_venv(path: pathlib.Path) -> pathlib.Path:
  """A virtual environment without pip whose imports fall back to this environment's site-packages; its python."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
  python = path / "bin" / "python"
  site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True, timeout=60).stdout.strip()
  ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
  pathlib.Path(site, "_jaxcxr_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
  return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(the wheel, the fresh environment's python, an environment without this checkout's paths)."""
  tmp = tmp_path_factory.mktemp("wheel")
  build = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(REPO)],
                         capture_output=True, text=True, timeout=600, check=False)
  assert build.returncode == 0, (f"python -m build failed (the test extra has build and setuptools>=77: "
                                 f"pip install -e '.[test]'):\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}")
  wheel, = (tmp / "dist").glob("jaxcxr-*.whl")
  python = _fresh_venv(tmp / "venv")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAXCXR_CHECKPOINTS")}
  # --ignore-installed: this environment's editable jaxcxr, seen through the .pth, is not the fresh one's.
  pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                        "--no-index", "--ignore-installed", str(wheel)], env=env, capture_output=True, text=True,
                       timeout=300, check=False)
  assert pip.returncode == 0, pip.stderr[-3000:]
  return wheel, python, env


@pytest.mark.slow
@needs_models
def test_wheel_carries_the_default_models_only(installed, record_property):
  wheel, _, _ = installed
  names = zipfile.ZipFile(wheel).namelist()
  folders = {n.split("/")[1] for n in names if n.startswith(f"{checkpoints.MODELS_PACKAGE}/") and n.count("/") > 1}
  assert folders == set(checkpoints.INSTALLED_MODELS)
  root = REPO / "checkpoints"
  want = {f"{checkpoints.MODELS_PACKAGE}/{p.relative_to(root).as_posix()}" for name in checkpoints.INSTALLED_MODELS
          for p in (root / name).rglob("*") if p.is_file() and p.suffix != ".png"}
  assert want <= set(names) and not [n for n in names if n.endswith(".png")]
  assert "jaxcxr/assets/real_examples.npz" in names
  record_property("wheel_mb", round(wheel.stat().st_size / 1e6, 1))


@pytest.mark.slow
@needs_models
def test_wheel_installs_and_runs_the_demo(installed, tmp_path):
  _, python, env = installed
  venv = python.parent.parent
  probe = ("import json, jaxcxr, jaxcxr.checkpoints as c\n"
           "pre = jaxcxr.load_pretrained()\n"
           "try:\n  c.shipped_checkpoint('gan_64/generator'); older = None\n"
           "except c.CheckpointError as e:\n  older = str(e)\n"
           "print(json.dumps({'jaxcxr': jaxcxr.__file__, 'root': str(pre.root), 'available': pre.available, "
           "'older': older}))")
  out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  found = json.loads(out.stdout)
  assert pathlib.Path(found["jaxcxr"]).is_relative_to(venv), found     # the installed copy, not this checkout
  assert pathlib.Path(found["root"]).is_relative_to(venv) and found["root"].endswith(checkpoints.MODELS_PACKAGE)
  assert tuple(found["available"]) == jaxcxr.pretrained.MODEL_NAMES
  assert "holds the default models only" in found["older"] and "source checkout" in found["older"]

  # The smallest demo: one valid image per sampler (the pre-filter, the post-filter, f-AnoGAN all run).
  demo = subprocess.run([str(venv / "bin" / "jaxcxr"), "demo", "--n", "1", "--out", str(tmp_path / "demo"),
                         "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
  assert demo.returncode == 0, demo.stderr[-3000:]
  result = json.loads(demo.stdout)
  assert result["counts"]["kept"] == 1 and all(s["n_valid"] == 1 for s in result["samplers"].values())
  assert len(result["anomaly"]["scores"]) == 4 and result["prefilter_roc"]["stored_test"]["n"] == 2400
  report = pathlib.Path(result["report"])
  assert report == tmp_path / "demo" / "report.html" and report.stat().st_size == result["report_bytes"]
