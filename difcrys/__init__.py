"""difcrys: differentiable physics of crystalline materials in JAX.

Importing difcrys enables JAX's 64-bit mode (``jax_enable_x64``): crystal
geometry and the DFT run in float64; learned models choose float32 explicitly
for their parameters and activations.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
