"""attnjax: attention kernels and attention-based encoders in JAX and Flax.

The package root stays light on purpose: ``import attnjax.kernels`` must not pull in
flax, optax, orbax or tensorflow_datasets. Import subpackages explicitly.
"""

__version__ = "0.1.0"
