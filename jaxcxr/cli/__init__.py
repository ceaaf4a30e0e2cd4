"""The `jaxcxr` command line, by command group (the console script is `jaxcxr.cli:main`).

=================  ==========================================================================
module             what it holds
=================  ==========================================================================
`entry`            the parser of every command and `main` (exit status, one error line)
`common`           the contract every command shares: `UsageError`, progress on stderr,
                   the JSON or human output, the run record; no jax
`inputs`           what several commands read: `--data` defaults, given or shipped
                   checkpoints, the post-filter, run folders, training presets
`data`             `data stats`, `data dedup`
`train`            `train MODEL` for every shipped model (gan, upsampler, unet, classifier,
                   ensemble, fanogan, healthygan, patchcore, encoder; prefilter and
                   cascade-prefilter run `latents`' handlers), `cascade`
`generate`         `sample` and `demo`: the whole sample path
`postfilter`       `score`, `calibrate`, `report scoring`
`evaluate`         `evaluate gan|anomaly|anomaly-cv|anomaly-ensemble|segmentation|classifier`
                   (`anomaly-cv`: f-AnoGAN, HealthyGAN or PatchCore refitted per fold)
`latents`          `latents build|table|fit|cascade`
=================  ==========================================================================

Handlers parse their options, call the library and format its result; the policy (which
sampler runs, the default limits, the strict level, which images an evaluation uses) lives in
the library. Bad input ends with exactly one `jaxcxr: error: ...` line on stderr and exit
status 2; `--json` prints one JSON object on stdout.
"""

from jaxcxr.cli.common import EXIT_USAGE, UsageError
from jaxcxr.cli.entry import build_parser, main

__all__ = ["EXIT_USAGE", "UsageError", "build_parser", "main"]
