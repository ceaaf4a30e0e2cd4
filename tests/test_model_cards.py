"""Every model card's "Reproduce" section: `jaxcxr` commands that the CLI's own parser accepts.

docs/model_card_template.md: a card's Reproduce section is a sequence of `jaxcxr` commands, run
from the repository root, that name every model they use (a command that leaves out its
`--checkpoint`, `--scoring`, `--unet`, ... silently uses whatever is shipped at the time), read
their data through `$JAXCXR_DATA` or an explicit path, and write only under `runs/`. Each
command is parsed with `jaxcxr.cli.build_parser()` (nothing runs, no jax compiles) and checked:

* which options name a model is read from the parser: the options whose destination is a model
  folder (`MODEL_DESTS`) or whose help says the default is a shipped model;
* which options name data likewise: `--data` and the options whose help gives a default in the
  data folder;
* model paths exist in the repository or come from an earlier command's output under `runs/`.

A shell loop cannot be parsed command by command, so cards write their commands out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
import re
import shlex

import pytest

from jaxcxr import cli
from jaxcxr import config

ROOT = pathlib.Path(__file__).resolve().parents[1]
CARDS = sorted((ROOT / "checkpoints").glob("*/MODEL_CARD.md"))

# Option destinations that name a trained model folder or file.
MODEL_DESTS = frozenset({"checkpoint", "scoring", "unet", "classifier", "gan", "generator", "sex_classifier",
                         "feature_classifier"})
# Model options that must be named explicitly: the help's default is a shipped model.
SHIPPED_DEFAULT = re.compile(r"default:? (?:is )?(?:the )?shipped|default: checkpoints/", re.IGNORECASE)
# Options that read data, and the help of those whose default is a file of the data folder.
DATA_DEFAULT = re.compile(r"\$JAXCXR_DATA|data folder", re.IGNORECASE)
# Options that take model paths besides MODEL_DESTS (inputs that must exist or come from an earlier command).
MODEL_INPUT_DESTS = MODEL_DESTS | {"members", "init_from", "base_gan", "upsampler"}
# Options (and redirections) that write files: only under runs/.
OUTPUT_OPTIONS = ("--out", "--scores", "--pairs")
DATA_PREFIXES = ("$JAXCXR_DATA/", "${JAXCXR_DATA}/")
# A model or data option a command may leave out when its other arguments make it unused:
# (command path, destination) -> when the option is used.
USED_WHEN = {
    ("evaluate anomaly-cv", "gan"): lambda args: args.method == "fanogan",
    ("evaluate anomaly-cv", "encoder"): lambda args: args.method == "patchcore",
    ("evaluate anomaly", "covid_data"): lambda args: args.abnormal == "covid",
    ("evaluate anomaly", "feature_encoder"):
        lambda args: args.method == "anogan" and args.feature_term != "discriminator",
    ("calibrate", "generator"): lambda args: args.strict_valid_rate > 0,
}


def reproduce_section(text: str) -> str | None:
  """The text of the card's `## Reproduce ...` section (up to the next `## ` heading), or None."""
  match = re.search(r"^## Reproduce\b.*?$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
  return match.group(1) if match else None


def shell_commands(section: str) -> list[str]:
  """The commands of the section's code blocks: continuation lines joined, one command per line, comments kept."""
  blocks = re.findall(r"^```(?:bash|sh|shell)?\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
  lines = []
  for block in blocks:
    lines += [line for line in re.sub(r"\\\n", " ", block).splitlines() if line.strip()]
  return lines


def split_command(line: str) -> tuple[list[str], list[str]]:
  """`line`'s words (comments stripped) and the files it redirects stdout to.

  Raises:
    ValueError: the line is not one simple command (a loop, a pipe, `;`, `&&`, a variable assignment).
  """
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  lexer.commenters = "#"
  tokens = list(lexer)
  words, redirects = [], []
  i = 0
  while i < len(tokens):
    token = tokens[i]
    if token in (">", ">>", "2>", "1>"):
      if i + 1 >= len(tokens):
        raise ValueError(f"redirection without a file: {line}")
      redirects.append(tokens[i + 1])
      i += 2
      continue
    if token in (";", "&&", "||", "|", "&", "<") or token in ("for", "while", "do", "done", "if", "then", "fi"):
      raise ValueError(f"not one simple command ({token!r}): write the commands out, one per line: {line}")
    if not words and re.fullmatch(r"[A-Za-z_]\w*=.*", token):
      raise ValueError(f"a variable assignment before the command: use $JAXCXR_DATA or --data instead: {line}")
    words.append(token)
    i += 1
  return words, redirects


def leaf_parser(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.ArgumentParser, str]:
  """The (sub)parser that parses `argv`'s options, and its command path ("evaluate anomaly")."""
  path = []
  while True:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # pylint: disable=protected-access
    if not subparsers:
      return parser, " ".join(path)
    name = argv[len(path)]
    parser = subparsers[0].choices[name]
    path.append(name)


def _under(path: str, outputs: list[str]) -> bool:
  """Whether `path` is one of `outputs` or inside one of them."""
  parts = pathlib.PurePosixPath(path).parts
  return any(parts[:len(pathlib.PurePosixPath(o).parts)] == pathlib.PurePosixPath(o).parts for o in outputs)


def _model_input_problem(value: str, outputs: list[str]) -> str | None:
  if value == "bilinear":
    return None
  if value.startswith("runs/"):
    return None if _under(value, outputs) else f"{value} is not written by an earlier command of the section"
  if pathlib.PurePosixPath(value).is_absolute() or value.startswith("$"):
    return f"{value}: name models by their path from the repository root"
  return None if (ROOT / value).exists() else f"{value} does not exist in the repository"


def _data_problem(value: str, outputs: list[str]) -> str | None:
  for part in value.split(","):
    if part.startswith(DATA_PREFIXES) or pathlib.PurePosixPath(part).is_absolute():
      continue
    if part in ("$JAXCXR_DATA", "${JAXCXR_DATA}"):        # the data folder itself (`train encoder --data FOLDER`)
      continue
    if part.startswith("runs/"):
      if not _under(part, outputs):
        return f"{part} is not written by an earlier command of the section"
      continue
    if not (ROOT / part).is_file():
      return (f"data {part!r} is relative to the working directory: write \"$JAXCXR_DATA/{part}\" or a file "
              "committed in the repository")
  return None


def command_problems(parser: argparse.ArgumentParser, line: str, outputs: list[str]) -> list[str]:
  """What is wrong with one Reproduce line; the files it writes are appended to `outputs`."""
  try:
    argv, redirects = split_command(line)
  except ValueError as e:
    return [str(e)]
  if not argv:
    return []
  if argv[0] != "jaxcxr":
    return [f"not a jaxcxr command: {line}"]
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr):
    try:
      args = parser.parse_args(argv[1:])
    except SystemExit:
      # Its outputs still count as written, so that one refused command is reported once.
      outputs += [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in OUTPUT_OPTIONS] + redirects
      return [f"the parser refuses {line!r}: {stderr.getvalue().strip()}"]
  leaf, path = leaf_parser(parser, argv[1:])
  problems = []
  given: dict[str, list[str]] = {}
  for i, word in enumerate(argv):
    if word.startswith("--"):
      name, _, inline = word.partition("=")
      if name not in leaf._option_string_actions:  # pylint: disable=protected-access
        problems.append(f"{name}: write the option's full name (`jaxcxr {path} --help`)")
        continue
      action = leaf._option_string_actions[name]  # pylint: disable=protected-access
      values = [inline] if inline else []
      if not inline and action.nargs != 0:
        for value in argv[i + 1:]:
          if value.startswith("--"):
            break
          values.append(value)
          if action.nargs in (None, 1):
            break
      given[action.dest] = values

  for action in leaf._actions:  # pylint: disable=protected-access
    if not action.option_strings or action.required:
      continue
    names_model = action.dest in MODEL_DESTS or bool(SHIPPED_DEFAULT.search(action.help or ""))
    names_data = action.dest == "data" or bool(DATA_DEFAULT.search(action.help or ""))
    used = USED_WHEN.get((path, action.dest), lambda _: True)(args)
    if (names_model or names_data) and used and action.dest not in given:
      what = "model" if names_model else "data"
      problems.append(f"`jaxcxr {path}` leaves out {action.option_strings[-1]}: name its {what} explicitly, or the "
                      f"default is used: {line}")

  for dest, values in given.items():
    for value in values:
      if dest in MODEL_INPUT_DESTS:
        problem = _model_input_problem(value, outputs)
      elif dest in ("data", "covid_data", "covid"):
        problem = _data_problem(value, outputs)
      else:
        problem = None
      if problem:
        problems.append(f"{problem}: {line}")
  if path == "evaluate anomaly-ensemble":
    problems += [f"{p}: {line}" for p in filter(None, (_model_input_problem(s, outputs) for s in args.scores))]
  if "preset" in given and given["preset"] and given["preset"][0] not in {**config.PRESETS, **config.LATENT_PRESETS}:
    problems.append(f"unknown preset {given['preset'][0]!r}: {line}")

  for target in redirects:   # the shell opens the file before the command runs: its folder must exist already
    folder = str(pathlib.PurePosixPath(target).parent)
    if target.startswith("runs/") and not _under(folder, outputs):
      problems.append(f"redirects into {folder}, which no earlier command of the section creates: {line}")
  written = redirects + [v for option in OUTPUT_OPTIONS for v in given.get(option.lstrip("-").replace("-", "_"), [])]
  for target in written:
    if not target.startswith("runs/"):
      problems.append(f"writes {target}: a Reproduce command writes under runs/ only (never into checkpoints/): {line}")
    outputs.append(target)
  return problems


def card_problems(text: str) -> list[str]:
  """What is wrong with a card's Reproduce section (no section, no command, or its commands' problems)."""
  section = reproduce_section(text)
  if section is None:
    return ["no `## Reproduce` section"]
  lines = shell_commands(section)
  if not lines:
    return ["the Reproduce section has no command in a ```bash block"]
  parser = cli.build_parser()
  outputs: list[str] = []
  problems = []
  for line in lines:
    problems += command_problems(parser, line, outputs)
  return problems


def test_there_are_cards():
  assert len(CARDS) >= 18


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.name)
def test_reproduce_commands_parse_and_name_their_models_and_data(card):
  problems = card_problems(card.read_text())
  assert not problems, f"{card.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


GOOD = """\
## Reproduce
```bash
jaxcxr evaluate segmentation --checkpoint checkpoints/unet_256/unet --data "$JAXCXR_DATA/covid_v7lungs_256.npz" \\
  --split val --out runs/unet_256   # a comment
jaxcxr evaluate segmentation --checkpoint checkpoints/unet_256/unet \\
  --data "$JAXCXR_DATA/covid_v7lungs_256.npz" --split test --json > runs/unet_256/evaluation_test.json
```
"""


def test_a_good_section_passes():
  assert card_problems(GOOD) == []


@pytest.mark.parametrize("section, expected", [
    ("# card\nno section\n", "no `## Reproduce` section"),
    ("## Reproduce\nprose only\n", "has no command"),
    ("## Reproduce\n```bash\npython -c 'import jaxcxr'\n```\n", "not a jaxcxr command"),
    ("## Reproduce\n```bash\nfor s in 0 1; do jaxcxr data stats --data \"$JAXCXR_DATA/a.npz\"; done\n```\n",
     "not one simple command"),
    ("## Reproduce\n```bash\nJAXCXR_DATA=/d jaxcxr data stats --data /d/a.npz\n```\n", "variable assignment"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --data \"$JAXCXR_DATA/c.npz\" --split test\n```\n",
     "leaves out --checkpoint"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --checkpoint checkpoints/unet_256/unet --split test\n```\n",
     "leaves out --data"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --checkpoint checkpoints/unet_256/unet "
     "--data covid_v7lungs_256.npz\n```\n", "relative to the working directory"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --checkpoint runs/unet/unet "
     "--data \"$JAXCXR_DATA/c.npz\"\n```\n", "not written by an earlier command"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --checkpoint checkpoints/no_such_unet "
     "--data \"$JAXCXR_DATA/c.npz\"\n```\n", "does not exist in the repository"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --checkpoint checkpoints/unet_256/unet "
     "--data \"$JAXCXR_DATA/c.npz\" --out checkpoints/unet_256\n```\n", "writes under runs/ only"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --checkpoint checkpoints/unet_256/unet "
     "--data \"$JAXCXR_DATA/c.npz\" --json > checkpoints/unet_256/evaluation.json\n```\n", "writes under runs/ only"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --checkpoint checkpoints/unet_256/unet "
     "--data \"$JAXCXR_DATA/c.npz\" --out runs/u --json > runs/u/evaluation.json\n```\n", "no earlier command"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --checkpont checkpoints/unet_256/unet\n```\n",
     "the parser refuses"),
    ("## Reproduce\n```bash\njaxcxr evaluate segmentation --check checkpoints/unet_256/unet "
     "--data \"$JAXCXR_DATA/c.npz\"\n```\n", "full name"),
    ("## Reproduce\n```bash\njaxcxr evaluate gan --checkpoint checkpoints/gan_256 --data \"$JAXCXR_DATA/a.npz\" "
     "--sex-classifier checkpoints/classifier_sex_ensemble_64/classifier\n```\n", "leaves out --feature-classifier"),
    ("## Reproduce\n```bash\njaxcxr evaluate anomaly --method fanogan --checkpoint checkpoints/fanogan_256/encoder "
     "--data \"$JAXCXR_DATA/a.npz\" --abnormal covid\n```\n", "leaves out --covid-data"),
])
def test_the_check_refuses(section, expected):
  problems = card_problems(section)
  assert any(expected in p for p in problems), problems
