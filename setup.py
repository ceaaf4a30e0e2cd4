"""Build script: only the package list; everything else (metadata, dependencies, package data) is in pyproject.toml.

Besides the `jaxcxr` packages, the wheel carries the companion package `jaxcxr_models`: the
source folder `checkpoints/` under that name, with the default models only (pyproject.toml's
package data for `jaxcxr_models`, which must list `jaxcxr.checkpoints.INSTALLED_MODELS`). A
package whose name differs from its folder cannot be written in pyproject.toml next to the
discovered `jaxcxr` packages, hence this file.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["jaxcxr", "jaxcxr.*"]), "jaxcxr_models"],
      package_dir={"jaxcxr_models": "checkpoints"})
