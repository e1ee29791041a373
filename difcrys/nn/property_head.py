"""E(3)-equivariant message passing with an invariant readout: a structure → scalar property model.

The successor of :mod:`difcrys.nn.cgcnn`, built from e3nn-jax layers (Geiger & Smidt,
arXiv:2207.09453) in the NequIP style (Batzner et al., Nat. Commun. 13, 2453 (2022)):

* nodes start as scalars ``F x 0e``: the element-feature table of CGCNN (``p @ T``, so soft types
  work) followed by a dense embedding;
* edges: the same supercell-consistent 12-NN(+shell) graph as CGCNN (:func:`difcrys.nn.cgcnn.featurize`),
  spherical harmonics ``Y^l(r̂_ij)``, ``l = 1 … lmax`` (``lmax = 2`` by default), and the Gaussian distance expansion of CGCNN;
* interaction ``t`` (``n_layers`` times):

  .. math::  m_{ij} = R(|r_{ij}|) \\odot \\big[x_j \\oplus (x_j \\otimes Y(\\hat r_{ij}))\\big], \\qquad
             x_i \\leftarrow \\mathrm{Gate}\\big(W_1 \\textstyle\\sum_j m_{ij} / \\sqrt{\\bar k} + W_2 x_i\\big) + x_i

  with ``R`` an MLP of the radial features giving one weight per irrep, ``W`` equivariant linear
  maps and the e3nn gate nonlinearity (the residual is added on the matching irreps);
* readout: the invariant ``0e`` channels → MLP → mean over atoms (intensive, per-atom targets).

Since edge vectors only enter through ``|r|`` and ``Y(r̂)`` and the readout keeps only scalars,
the prediction is invariant under rotations, translations and permutations; with the shell-complete
graph it is also identical for a primitive cell and its supercells. It is differentiable w.r.t.
``frac``, ``lattice`` and soft types, like CGCNN, with the same ``init/apply`` interface
(``variables = {"params", "state"}``, the state is empty).
"""

from __future__ import annotations

import dataclasses

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal
from difcrys.errors import ConfigError
from difcrys.graph import Graph, safe_norm
from difcrys.nn.cgcnn import _masked_mean_pool, atom_features, element_feature_table, flatten_batch, gaussian_expansion

__all__ = ["EquivariantConfig", "EquivariantPropertyNet"]


@dataclasses.dataclass(frozen=True)
class EquivariantConfig:
    """Hyper-parameters of :class:`EquivariantPropertyNet`.

    Attributes:
        n_scalars: number of ``0e`` channels.
        n_vectors: number of channels of each ``l > 0`` irrep (``1o``, ``2e``, …).
        lmax: largest angular momentum of the edge spherical harmonics and of the node features
            (1, 2 or 3; 2 by default). ``lmax = 1`` is cheaper (fewer tensor-product paths).
        n_layers: interaction blocks.
        radial_hidden: width of the radial MLP.
        readout_hidden: width of the readout MLP.
        rbf_dmax, rbf_step, rbf_var: Gaussian expansion of distances [Å].
        avg_neighbors: normalisation ``k̄`` of the neighbour sum (≈ 12 for the 12-NN graph).
        dtype: "float32" or "float64".
    """

    n_scalars: int = 64
    n_vectors: int = 16
    lmax: int = 2
    n_layers: int = 3
    radial_hidden: int = 64
    readout_hidden: int = 64
    rbf_dmax: float = 8.0
    rbf_step: float = 0.2
    rbf_var: float = 0.2
    avg_neighbors: float = 12.0
    dtype: str = "float32"

    def __post_init__(self):
        for f in ("n_scalars", "n_vectors", "n_layers", "radial_hidden", "readout_hidden"):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"EquivariantConfig.{f} must be a positive integer, got {v!r}")
        if self.lmax not in (1, 2, 3):
            raise ConfigError(f"EquivariantConfig.lmax must be 1, 2 or 3, got {self.lmax!r}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")


def _parity(l: int) -> str:
    return "e" if l % 2 == 0 else "o"


class _Net(nn.Module):
    cfg: EquivariantConfig

    @nn.compact
    def __call__(self, x0, vec, src, dst, emask, amask, seg, B):
        c = self.cfg
        dt = x0.dtype
        ef = emask.astype(dt)
        d = safe_norm(vec)
        rbf = gaussian_expansion(d, 0.0, c.rbf_dmax, c.rbf_step, c.rbf_var) * ef[:, None]
        safe_vec = jnp.where(emask[:, None], vec, jnp.array([0.0, 0.0, 1.0], dt))
        ls = range(1, c.lmax + 1)
        sh = e3nn.spherical_harmonics(" + ".join(f"{l}{_parity(l)}" for l in ls), safe_vec, normalize=True,
                                      normalization="component")
        vec_irreps = " + ".join(f"{c.n_vectors}x{l}{_parity(l)}" for l in ls)
        hidden = e3nn.Irreps(f"{c.n_scalars}x0e + {vec_irreps}")
        gated = e3nn.Irreps(f"{c.n_scalars + c.lmax * c.n_vectors}x0e + {vec_irreps}")
        x = e3nn.IrrepsArray(f"{x0.shape[-1]}x0e", x0)
        x = e3nn.flax.Linear(f"{c.n_scalars}x0e")(x)
        n_atoms = x0.shape[0]
        for _ in range(c.n_layers):
            xj = x[dst]
            msg = e3nn.concatenate([xj, e3nn.tensor_product(xj, sh, filter_ir_out=hidden)]).regroup()
            w = e3nn.flax.MultiLayerPerceptron((c.radial_hidden, msg.irreps.num_irreps), act=jax.nn.silu,
                                               output_activation=False)(rbf)
            msg = msg * (w * ef[:, None])
            agg = e3nn.scatter_sum(msg, dst=src, output_size=n_atoms) / jnp.sqrt(c.avg_neighbors).astype(dt)
            y = (e3nn.flax.Linear(gated, force_irreps_out=True)(agg)
                 + e3nn.flax.Linear(gated, force_irreps_out=True)(x))
            y = e3nn.gate(y)
            x = (y + x) if y.irreps == x.irreps else y
        s = x.filter(keep="0e").array
        s = jax.nn.silu(nn.Dense(c.readout_hidden, param_dtype=dt, dtype=dt)(s))
        s = nn.Dense(1, param_dtype=dt, dtype=dt)(s)[:, 0]
        return _masked_mean_pool(s[:, None], amask, seg, B)[:, 0]


class EquivariantPropertyNet:
    """Equivariant (e3nn-jax) property model with the :class:`~difcrys.nn.cgcnn.CGCNN` interface."""

    def __init__(self, config: EquivariantConfig | None = None, **kw):
        self.config = config if config is not None else EquivariantConfig(**kw)
        self.dtype = jnp.dtype(self.config.dtype)
        self.net = _Net(self.config)

    def _inputs(self, crystal, graph, type_probs):
        g = flatten_batch(crystal, graph, self.dtype)
        if type_probs is not None:
            tp = jnp.asarray(type_probs)
            x0 = atom_features(type_probs=tp.reshape(-1, tp.shape[-1]), dtype=self.dtype)
        else:
            x0 = atom_features(g["numbers"], dtype=self.dtype)
        return (x0, g["vec"], g["src"], g["dst"], g["emask"], g["amask"], g["seg"], g["B"])

    def init(self, key, crystal: Crystal | None = None, graph: Graph | None = None):
        """``{"params", "state"}``; needs an example batch (``crystal``, ``graph``) for the shapes."""
        if crystal is None:
            crystal, graph = _dummy(self.dtype)
        args = self._inputs(crystal, graph, None)
        # jitted: an eager e3nn initialisation dispatches thousands of small ops (tens of seconds on CPU)
        params = jax.jit(lambda k, a: self.net.init(k, *a, B=args[-1]))(key, args[:-1])["params"]
        params = jax.tree_util.tree_map(lambda a: a.astype(self.dtype), params)
        return {"params": params, "state": {}}

    def apply(self, variables, crystal: Crystal, graph: Graph, *, train: bool = False, type_probs=None):
        """``(y [B], state)``; see :meth:`difcrys.nn.cgcnn.CGCNN.apply`."""
        args = self._inputs(crystal, graph, type_probs)
        y = self.net.apply({"params": variables["params"]}, *args[:-1], B=args[-1])
        return y, variables["state"]


def _dummy(dtype):
    """A tiny two-atom example batch used only to initialise parameter shapes."""
    from difcrys.nn.cgcnn import featurize

    c = Crystal.create([11, 17], np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.eye(3) * 3.0)
    gd = featurize([c])
    return gd.take(np.arange(1))
