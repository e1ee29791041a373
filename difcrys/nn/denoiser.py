"""Periodic E(3)-invariant denoiser for crystal diffusion (a CSPNet-style network, flax).

Architecture (after DiffCSP's CSPNet, Jiao et al., NeurIPS 2023, Eqs. 8–10; written from the
paper, not from its code). For every crystal (all atom pairs, i.e. a fully connected periodic
graph; ``n ≤ ~50``):

* node state ``h_i``: an embedding of the (possibly masked) type plus an embedding of the
  diffusion time and, optionally, of the conditioning property;
* lattice features: the entries of the **symmetric** lattice ``S/s`` (6 numbers, ``s`` a length
  scale supplied by the caller, e.g. ``μ(n)``), the shape of its Gram matrix ``G/s_G²`` with
  ``s_G = (tr G/3)^{1/2}`` and ``log(s_G/s)``. The network works on the rotation-free symmetric
  representation of :mod:`difcrys.diffusion.lattice` (``S = (L Lᵀ)^{1/2}``, identical for every
  rotated copy ``L Rᵀ`` of a crystal), so all outputs are rotation-invariant by canonicalisation.
  ``S`` itself (not only ``G = S²``) is needed: noisy lattices of the diffusion are symmetric but
  indefinite, and ``G`` loses the signs of their eigenvalues;
* pair features: Fourier features of the fractional difference ``d_ij = x_j − x_i``,
  ``[sin 2πk d, cos 2πk d]_{k=1…F}`` — periodic (invariant to ``d → d + ℤ³``) and invariant to a
  global fractional translation;
* ``n_layers`` message-passing layers: ``m_ij = φ_m(h_i, h_j, G, ψ(d_ij))``,
  ``h_i ← LN(h_i + φ_h(h_i, mean_j m_ij))``;
* outputs: per-atom fractional-coordinate score ``φ_x(h_i) ∈ ℝ³`` (invariant to rotations and
  translations, permutation-equivariant), per-atom type logits ``φ_a(h_i) ∈ ℝ^K``, and the lattice
  noise ``ε̂_L = M_1 S / s_G + M_2`` with ``M_1, M_2 ∈ ℝ^{3×3}`` from the pooled node states,
  the lattice features and the time (the training loss and the sampler use its symmetric part).

Conditioning (classifier-free guidance and MatterGen-style adapters, Zeni et al., Nature 2025):
a property vector ``y`` is embedded by an MLP; a boolean ``cond_mask`` replaces it by a learned
null embedding (unconditional). In every layer an **adapter** ``A_l(emb(y))`` with a zero-initialised
output is added to ``h``: a freshly initialised adapter leaves the network's function unchanged,
so a base model can be fine-tuned by training only the parameters whose names start with
``adapter`` / ``cond`` (see :func:`adapter_mask`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from difcrys.errors import ConfigError

__all__ = ["DenoiserConfig", "CSPNet", "adapter_mask", "time_features"]


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """Hyper-parameters of :class:`CSPNet`.

    Attributes:
        n_types: number of real atom classes ``K`` (the input has ``K + 1`` with MASK).
        hidden: width of node states and MLPs.
        n_layers: message-passing layers.
        n_freq: Fourier frequencies per fractional direction.
        n_cond: length of the conditioning vector (0: unconditional model).
        time_dim: sinusoidal time-feature size.
    """

    n_types: int = 100
    hidden: int = 128
    n_layers: int = 4
    n_freq: int = 10
    n_cond: int = 0
    time_dim: int = 64

    def __post_init__(self):
        for k in ("n_types", "hidden", "n_layers", "n_freq", "time_dim"):
            if int(getattr(self, k)) < 1:
                raise ConfigError(f"denoiser.{k} must be >= 1, got {getattr(self, k)}")
        if int(self.n_cond) < 0:
            raise ConfigError(f"denoiser.n_cond must be >= 0, got {self.n_cond}")


def time_features(t, dim: int):
    """Sinusoidal features of ``t ∈ [0, 1]`` ``[..., dim]`` (Vaswani et al. 2017 style)."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half) / max(half - 1, 1))
    a = 1000.0 * jnp.asarray(t)[..., None] * freqs
    return jnp.concatenate([jnp.sin(a), jnp.cos(a)], axis=-1)


def _mlp(x, width, out, name, n=2):
    for i in range(n - 1):
        x = nn.silu(nn.Dense(width, name=f"{name}_{i}")(x))
    return nn.Dense(out, name=f"{name}_{n - 1}")(x)


class CSPNet(nn.Module):
    """See the module docstring. Call on a batch:

    Args:
        types: ``[B, n]`` int classes ``0 … K`` (``K`` = MASK).
        frac: ``[B, n, 3]`` fractional coordinates.
        lattice: ``[B, 3, 3]`` lattice rows [Å].
        mask: ``[B, n]`` bool, real atoms.
        t: ``[B]`` diffusion time in ``[0, 1]``.
        length_scale: ``[B]`` [Å] length scale of ``G`` (e.g. ``μ(n)``).
        cond: ``[B, n_cond]`` property vector or None. cond_mask: ``[B]`` bool (True: use ``cond``).

    Returns:
        dict with ``coord [B, n, 3]``, ``lattice [B, 3, 3]``, ``type_logits [B, n, K]``.
    """

    config: DenoiserConfig

    @nn.compact
    def __call__(self, types, frac, lattice, mask, t, length_scale, cond=None, cond_mask=None):
        cfg = self.config
        H = cfg.hidden
        dtype = frac.dtype
        maskf = mask.astype(dtype)
        lattice = lattice.astype(dtype)
        G = lattice @ jnp.swapaxes(lattice, -1, -2)
        sL = jnp.sqrt(jnp.trace(G, axis1=-2, axis2=-1) / 3.0 + 1e-6)  # rotation-invariant own scale
        iu = jnp.triu_indices(3)
        ls = jnp.asarray(length_scale, dtype)[:, None, None]
        gfeat = jnp.concatenate([(G / sL[:, None, None] ** 2)[:, iu[0], iu[1]],
                                 jnp.log(sL / ls[:, 0, 0])[:, None],
                                 (lattice / ls)[:, iu[0], iu[1]]], -1)  # [B, 13]
        temb = nn.silu(nn.Dense(H, name="time_0")(time_features(t, cfg.time_dim).astype(dtype)))
        temb = nn.Dense(H, name="time_1")(temb)
        h = nn.Embed(cfg.n_types + 1, H, name="type_embed")(types).astype(dtype) + temb[:, None, :]
        cemb = None
        if cfg.n_cond > 0:
            if cond is None:
                cond = jnp.zeros((frac.shape[0], cfg.n_cond), dtype)
                cond_mask = jnp.zeros((frac.shape[0],), bool)
            if cond_mask is None:
                cond_mask = jnp.ones((frac.shape[0],), bool)
            ce = _mlp(jnp.asarray(cond, dtype), H, H, "cond_embed")
            null = self.param("cond_null", nn.initializers.normal(0.02), (H,), dtype)
            cemb = jnp.where(cond_mask[:, None], ce, null[None, :])
        d = frac[:, None, :, :] - frac[:, :, None, :]  # [B, i, j, 3] = x_j - x_i
        k = jnp.arange(1, cfg.n_freq + 1, dtype=dtype)
        ang = 2 * jnp.pi * d[..., None] * k  # [B, i, j, 3, F]
        psi = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1).reshape(d.shape[:3] + (-1,))
        pair_mask = maskf[:, :, None] * maskf[:, None, :]
        n_real = jnp.maximum(jnp.sum(maskf, axis=1), 1.0)
        for l in range(cfg.n_layers):
            if cemb is not None:
                a = nn.silu(nn.Dense(H, name=f"adapter_{l}_in")(cemb))
                a = nn.Dense(H, name=f"adapter_{l}_out", kernel_init=nn.initializers.zeros)(a)
                h = h + a[:, None, :] * maskf[..., None]
            nb = h.shape[1]
            hi = jnp.broadcast_to(h[:, :, None, :], h.shape[:2] + (nb, H))
            hj = jnp.broadcast_to(h[:, None, :, :], h.shape[:2] + (nb, H))
            gb = jnp.broadcast_to(gfeat[:, None, None, :], h.shape[:2] + (nb, gfeat.shape[-1]))
            m = _mlp(jnp.concatenate([hi, hj, gb, psi], axis=-1), H, H, f"edge_{l}")
            m = nn.silu(m) * pair_mask[..., None]
            agg = jnp.sum(m, axis=2) / n_real[:, None, None]
            h = nn.LayerNorm(name=f"norm_{l}")(h + _mlp(jnp.concatenate([h, agg], -1), H, H, f"node_{l}"))
            h = h * maskf[..., None]
        coord = _mlp(h, H, 3, "coord_out") * maskf[..., None]
        logits = _mlp(h, H, cfg.n_types, "type_out")
        pooled = jnp.sum(h, axis=1) / n_real[:, None]
        M = _mlp(jnp.concatenate([pooled, gfeat, temb], -1), H, 18, "lattice_out").reshape(-1, 2, 3, 3)
        eps_L = M[:, 0] @ lattice / sL[:, None, None] + M[:, 1]
        return {"coord": coord, "lattice": eps_L, "type_logits": logits}


def adapter_mask(params) -> dict:
    """Boolean pytree: True for adapter/conditioning parameters (trainable in adapter fine-tuning)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    tree = jax.tree_util.tree_structure(params)

    def is_adapter(path):
        names = [str(getattr(p, "key", p)) for p in path]
        return any(n.startswith("adapter") or n.startswith("cond") for n in names)

    return jax.tree_util.tree_unflatten(tree, [is_adapter(p) for p, _ in flat])
