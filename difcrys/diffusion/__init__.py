"""Crystal diffusion (DiffCSP / MatterGen family) over M = (A, X, L).

Submodules (imported on demand):

* :mod:`~difcrys.diffusion.schedules` — discrete-time schedules of the three corruptions;
* :mod:`~difcrys.diffusion.wrapped_normal` — fractional coordinates: wrapped normal on the torus;
* :mod:`~difcrys.diffusion.masked` — atom types: absorbing-state (MASK) discrete diffusion;
* :mod:`~difcrys.diffusion.lattice` — lattice: symmetric representation, MatterGen limit ``μ(n), σ(n)``;
* :mod:`~difcrys.diffusion.model` — spec, data preparation, training loss, samplers (CSP, de novo, CFG);
* :mod:`~difcrys.diffusion.guidance` — gradient guidance by differentiable predictors, latent optimisation;
* :mod:`~difcrys.diffusion.metrics` — CSP match rate/RMSE, validity, coverage, property distances.

The denoiser is :class:`difcrys.nn.denoiser.CSPNet`; training is :mod:`difcrys.train.diffusion`.
"""
