"""The old path of `jaxcxr.models.healthygan` (HealthyGAN's translator and critic), kept for `jaxcxr.cli`."""
from jaxcxr.models.healthygan import Critic, Translator, blend, load_translator, space_to_depth  # noqa: F401
