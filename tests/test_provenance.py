"""Tests of `jaxcxr.provenance`: seeds, data digests, version and git revision of a trained model."""

import ast
import pathlib
import shutil
import subprocess

import pytest

import jaxcxr
from jaxcxr import data, provenance

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data"


def test_provenance_records_seeds_digests_version_and_revision():
  nih, covid = FIXTURES / "nih_fixture.npz", FIXTURES / "covid_fixture.npz"
  record = provenance.provenance(f"{nih},{covid}", {"seed": 3, "split_seed": 0})
  assert record["jaxcxr_version"] == jaxcxr.__version__
  assert record["seeds"] == {"seed": 3, "split_seed": 0}
  assert record["data"] == [{"path": str(nih), "sha256": data.file_sha256(nih)},
                            {"path": str(covid), "sha256": data.file_sha256(covid)}]
  assert provenance.provenance([nih], {})["data"] == record["data"][:1]
  assert provenance.provenance(None, {})["data"] == [] and provenance.data_digests(FIXTURES)[0]["sha256"] is None
  if (REPO / ".git").exists() and shutil.which("git"):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert record["git_revision"] == head and isinstance(record["git_dirty"], bool)
  section = provenance.markdown_section(record)
  assert section.startswith("## Provenance\n") and "seed = 3, split_seed = 0" in section
  assert f"`nih_fixture.npz`: `{data.file_sha256(nih)}`" in section


def test_git_revision_outside_and_inside_a_checkout(tmp_path):
  assert provenance.git_revision(tmp_path) == {"git_revision": None, "git_dirty": None}   # not a checkout
  if not shutil.which("git"):
    pytest.skip("git is not installed")
  git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
  subprocess.run([*git, "init", "-q"], check=True)
  (tmp_path / "a.txt").write_text("a")
  subprocess.run([*git, "add", "a.txt"], check=True)
  subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
  head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
  assert provenance.git_revision(tmp_path) == {"git_revision": head, "git_dirty": False}
  (tmp_path / "untracked.txt").write_text("u")                      # untracked files do not count
  assert provenance.git_revision(tmp_path)["git_dirty"] is False
  (tmp_path / "a.txt").write_text("b")
  assert provenance.git_revision(tmp_path) == {"git_revision": head, "git_dirty": True}
  # A package inside another repository's subfolder reports nothing rather than that repository.
  (tmp_path / "pkg").mkdir()
  assert provenance.git_revision(tmp_path / "pkg") == {"git_revision": None, "git_dirty": None}


def test_every_trainer_records_provenance():
  """Each trainer puts `provenance(...)` into its saved model's metadata and its returned summary."""
  trainers = {"gan": "train_gan", "upsampler": "train_upsampler", "segmentation": "train_unet",
              "classifier": "train_classifier", "fanogan": "train_fanogan", "healthygan": "train_healthygan"}
  for module, function in trainers.items():
    tree = ast.parse((REPO / "jaxcxr" / "train" / f"{module}.py").read_text())
    body = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function)
    calls = [node for node in ast.walk(body) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", None)) == "provenance"]
    assert len(calls) == 1, module
    source = ast.unparse(body)
    assert "'provenance': metadata['provenance']" in source or "provenance=metadata['provenance']" in source, module
  # The score predictor's provenance is the cascade pre-filter's (written by `jaxcxr latents cascade`).
  assert "provenance.provenance(args.data" in (REPO / "jaxcxr" / "cli" / "latents.py").read_text()


def test_shipped_model_cards_carry_a_provenance_section():
  cards = sorted((REPO / "checkpoints").glob("*/MODEL_CARD.md"))
  assert cards
  for card in cards:
    text = card.read_text()
    assert "\n## Provenance\n" in text and "- git revision: `" in text, card
