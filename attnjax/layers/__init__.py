"""Flax (linen) building blocks of the encoder."""

from attnjax.layers.attention import MultiHeadAttention
from attnjax.layers.config import EncoderConfig
from attnjax.layers.embeddings import Embeddings, sinusoidal_positions
from attnjax.layers.encoder import Encoder, EncoderBlock, TransformerBlock, apply_blocks
from attnjax.layers.feedforward import FeedForward, activation_fn
from attnjax.layers.pooling import (POOLINGS, AdditiveAttentionPooling, ClsPooling,
                                    MeanPooling, get_pooling)

__all__ = [
    "AdditiveAttentionPooling", "ClsPooling", "Embeddings", "Encoder", "EncoderBlock",
    "EncoderConfig", "FeedForward", "MeanPooling", "MultiHeadAttention", "POOLINGS",
    "TransformerBlock", "apply_blocks",
    "activation_fn", "get_pooling", "sinusoidal_positions",
]
