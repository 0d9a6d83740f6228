"""Models: the encoder with heads, size presets, and builders from configs."""

from attnjax.models.builder import build_classifier, encoder_config
from attnjax.models.classifier import SequenceClassifier
from attnjax.models.presets import PRESETS, get_preset

__all__ = ["PRESETS", "SequenceClassifier", "build_classifier", "encoder_config",
           "get_preset"]

