"""Neural-network models built on e3nn-jax and flax.

Submodules are imported on demand (no eager imports), e.g.::

    from difcrys.nn.potential import Potential, PotentialConfig
"""
