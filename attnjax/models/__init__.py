"""Models: the encoder with heads, size presets, and builders from configs."""

from attnjax.models.builder import build_classifier, encoder_config
from attnjax.models.classifier import SequenceClassifier
from attnjax.models.decoder import CausalLM, Decoder, build_causal_lm
from attnjax.models.mlm import MaskedLanguageModel, MlmHead, bert_masking, masked_lm_loss
from attnjax.models.presets import PRESETS, get_preset
from attnjax.models.registry import (MODELS, ParamGroup, batch_arrays, build_model,
                                     groups_by_stack)
from attnjax.models.seq2seq import EncoderDecoder, build_encoder_decoder, shift_right

__all__ = ["MODELS", "PRESETS", "CausalLM", "Decoder", "EncoderDecoder", "MaskedLanguageModel",
           "MlmHead", "ParamGroup", "SequenceClassifier", "batch_arrays", "bert_masking",
           "build_causal_lm", "build_classifier", "build_encoder_decoder", "build_model",
           "encoder_config", "get_preset", "groups_by_stack", "masked_lm_loss", "shift_right"]
