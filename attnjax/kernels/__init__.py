"""Attention kernels: pure functions on ``jax.Array`` (no Flax needed).

Layout ``[batch..., seq, heads, head_dim]``; see ``/ARCHITECTURE.md`` ("The kernel
contract"). Every kernel is registered by name::

  from attnjax import kernels
  out = kernels.get_kernel("dot_product")(q, k, v, mask=mask, is_causal=True)

Imports only jax, numpy and the standard library.
"""

from attnjax.kernels.dispatch import Choice
from attnjax.kernels.dot_product import attention_weights
from attnjax.kernels.dot_product import chunked_attention
from attnjax.kernels.dot_product import dot_product_attention
from attnjax.kernels.dot_product import explain_implementation
from attnjax.kernels.positions import alibi_slopes
from attnjax.kernels.positions import apply_rotary
from attnjax.kernels.positions import relative_position_bucket
from attnjax.kernels.registry import KERNELS
from attnjax.kernels.registry import get_kernel
from attnjax.kernels.registry import list_kernels
from attnjax.kernels.registry import register_kernel
from attnjax.kernels import patterns
from attnjax.kernels import variants  # registers the variant kernels
from attnjax.kernels.variants import ParamSpec
from attnjax.kernels.variants import init_params
from attnjax.kernels.variants import params_spec
from attnjax.kernels.variants import supports_decode

__all__ = [
    "Choice",
    "KERNELS",
    "ParamSpec",
    "alibi_slopes",
    "apply_rotary",
    "attention_weights",
    "chunked_attention",
    "dot_product_attention",
    "explain_implementation",
    "get_kernel",
    "init_params",
    "list_kernels",
    "params_spec",
    "patterns",
    "register_kernel",
    "relative_position_bucket",
    "supports_decode",
    "variants",
]
