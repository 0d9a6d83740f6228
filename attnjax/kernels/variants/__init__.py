"""Attention variants: the article's scoring functions and the efficient-attention family.

Importing this package registers every variant (``attnjax.kernels`` does so). Kernels
with learnable parameters declare them (``kernel.params_spec``) and take them as
``params=``; kernels that do not cost dense attention declare their FLOPs
(``kernel.attention_flops``, read through :func:`attention_flops`); see ``_base``.
"""

from attnjax.kernels.variants import clustering
from attnjax.kernels.variants import linear
from attnjax.kernels.variants import lowrank
from attnjax.kernels.variants import recent
from attnjax.kernels.variants import scoring
from attnjax.kernels.variants import sparse
from attnjax.kernels.variants._base import ParamSpec
from attnjax.kernels.variants._base import attention_flops
from attnjax.kernels.variants._base import dense_attention_flops
from attnjax.kernels.variants._base import init_params
from attnjax.kernels.variants._base import params_spec
from attnjax.kernels.variants._base import supports_decode

__all__ = ["ParamSpec", "attention_flops", "clustering", "dense_attention_flops", "init_params",
           "linear", "lowrank", "params_spec", "recent", "scoring", "sparse", "supports_decode"]
