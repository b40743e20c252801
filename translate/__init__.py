"""Unpaired image-to-image translation with OT conditional flow matching in a VAE latent space."""

from translate.errors import TranslateError
from translate.pipeline import Translator

__all__ = ["TranslateError", "Translator"]
__version__ = "0.1.0"
