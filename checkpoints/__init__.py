"""The shipped models; installed as the package `jaxcxr_models` (setup.py) by a non-editable install.

The installed package holds the default models only (`jaxcxr.checkpoints.INSTALLED_MODELS`,
without their figures); `jaxcxr.checkpoints.checkpoints_root()` finds it where there is no
source checkout. Every model folder here has a MODEL_CARD.md.
"""
