"""Models: the encoder with heads, size presets, and builders from configs."""

from attnjax.models.builder import build_classifier, encoder_config
from attnjax.models.classifier import SequenceClassifier
from attnjax.models.mlm import MaskedLanguageModel, MlmHead, bert_masking, masked_lm_loss
from attnjax.models.presets import PRESETS, get_preset
from attnjax.models.registry import (MODELS, ParamGroup, batch_arrays, build_model,
                                     groups_by_stack)

__all__ = ["MODELS", "ParamGroup", "batch_arrays", "build_model", "groups_by_stack", "PRESETS", "MaskedLanguageModel", "MlmHead", "SequenceClassifier", "bert_masking",
           "build_classifier", "encoder_config", "get_preset", "masked_lm_loss"]

