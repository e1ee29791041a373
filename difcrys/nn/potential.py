"""E(3)-equivariant message-passing interatomic potential (NequIP-like), in e3nn-jax + flax.

The model maps a crystal ``M = (A, X, L)`` to a total energy ``E = Σ_i E_i`` [eV], a sum of
atomic energies. Forces ``F = −∂E/∂C`` [eV/Å] and the stress ``σ = (1/V) ∂E/∂ε`` [GPa] (at fixed
fractional coordinates, ``L' = L (I + ε)``, sign convention of ASE / DESIGN.md) are exact
derivatives of the same energy, computed by ``jax.grad`` — there is no separate head.

Architecture (Batzner et al., "E(3)-equivariant graph neural networks for data-efficient and
accurate interatomic potentials", Nat. Commun. 13, 2453 (2022), NequIP, Eqs. 3–6):

* species embedding: one-hot of the species index → ``C x 0e`` features;
* edges ``r_ij = C_j − C_i + S L`` within the cutoff ``r_c`` (:mod:`difcrys.graph`); radial
  features ``B_n(r) u(r / r_c)``: ``n_radial`` Bessel functions ``√(2/r_c) sin(nπr/r_c)/r``
  (Klicpera et al., DimeNet, ICLR 2020, Eq. 7) times the smooth polynomial envelope ``u_p``
  (DimeNet Eq. 8, ``p = envelope_p``), which vanishes with its first two derivatives at
  ``r_c``: energies and forces are smooth when atoms cross the cutoff;
* ``num_layers`` interaction blocks: messages ``m_ij = R(r_ij) ⊙ (h_j ⊗ Y(r̂_ij))``
  (tensor product of neighbour features with the spherical harmonics ``Y^l``, ``l ≤ l_max``,
  weighted per path by an MLP ``R`` of the radial features), summed over neighbours and divided
  by ``√(avg_num_neighbors)``, a linear map, a species-dependent self-connection, and a gated
  nonlinearity (Weiler et al. 2018): hidden irreps ``C x 0e + C x 1o + C x 2e + …``;
* readout: a linear map of the scalar channels to one number per atom, then
  ``E_i = scale · out_i + shift[species_i]``; ``shift`` (per species, eV/atom) and ``scale``
  (eV) are fitted from the training set (:func:`fit_statistics`): least squares of the total
  energies on the composition, and the RMS force component.

Everything is pure: ``Potential.init(key) -> params`` and
``Potential.energy(params, crystal, graph) -> E``. Parameters and activations use
``config.dtype`` (float32 by default, float64 for tight tests); inputs are cast to it.

Species: the model knows the atomic numbers in ``config.species``; any other element raises
:class:`~difcrys.errors.ElementError` on the host (:meth:`Potential.check_numbers`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal, atomic_number, chemical_symbol
from difcrys.errors import ConfigError, ElementError
from difcrys.graph import Graph, edge_vectors_from_positions, neighbor_graph, safe_norm
from difcrys.units import EV_PER_ANG3_GPA

__all__ = ["PotentialConfig", "NequIP", "DeepPotSE", "Potential", "fit_statistics", "polynomial_envelope"]


# ------------------------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class PotentialConfig:
    """Hyper-parameters and fitted statistics of a :class:`Potential` (JSON/YAML-serialisable).

    Attributes:
        species: atomic numbers the model knows (order = species index).
        cutoff: radial cutoff ``r_c`` [Å].
        num_layers: number of interaction blocks (body order grows with each).
        l_max: maximum degree of the spherical harmonics and hidden irreps.
        channels: multiplicity ``C`` of every hidden irrep.
        n_radial: number of Bessel radial basis functions.
        radial_hidden: width of the two hidden layers of the radial MLP.
        envelope_p: exponent ``p`` of the polynomial cutoff envelope.
        avg_num_neighbors: normalisation of the neighbour sum (fitted).
        shift: per-species atomic energy shift [eV/atom] (fitted), same order as ``species``.
        scale: energy scale [eV] (fitted).
        dtype: ``"float32"`` or ``"float64"`` for parameters and activations.
        kind: ``"nequip"`` (equivariant message passing, :class:`NequIP`) or ``"dpmd"`` (the
            DeepPot-SE descriptor baseline, :class:`DeepPotSE`: ``channels`` = embedding width
            ``M1``, ``axis_neurons`` = ``M2``, ``radial_hidden`` = fitting-net width).
        axis_neurons: ``M2`` of the DeepPot-SE descriptor.
    """

    species: tuple = (14,)
    cutoff: float = 5.0
    num_layers: int = 3
    l_max: int = 2
    channels: int = 32
    n_radial: int = 8
    radial_hidden: int = 64
    envelope_p: int = 6
    avg_num_neighbors: float = 1.0
    shift: tuple | None = None
    scale: float = 1.0
    dtype: str = "float32"
    kind: str = "nequip"
    axis_neurons: int = 4

    def __post_init__(self):
        try:
            sp = tuple(atomic_number(s) for s in self.species)
        except ElementError as e:
            raise ConfigError(f"model species: {e}") from None
        object.__setattr__(self, "species", sp)
        if len(sp) == 0 or len(set(sp)) != len(sp):
            raise ConfigError(f"model species must be a non-empty list of distinct elements, got {self.species}")
        for name in ("num_layers", "channels", "n_radial", "radial_hidden", "envelope_p"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model {name} must be >= 1, got {getattr(self, name)}")
        if int(self.l_max) < 0:
            raise ConfigError(f"model l_max must be >= 0, got {self.l_max}")
        if not (float(self.cutoff) > 0 and math.isfinite(float(self.cutoff))):
            raise ConfigError(f"model cutoff must be a positive distance in Å, got {self.cutoff}")
        if self.kind not in ("nequip", "dpmd"):
            raise ConfigError(f"model kind must be 'nequip' or 'dpmd', got {self.kind!r}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"model dtype must be 'float32' or 'float64', got {self.dtype!r}")
        shift = (0.0,) * len(sp) if self.shift is None else tuple(float(s) for s in self.shift)
        if len(shift) != len(sp):
            raise ConfigError(f"model shift has {len(shift)} entries for {len(sp)} species")
        object.__setattr__(self, "shift", shift)

    @classmethod
    def from_dict(cls, d: dict) -> "PotentialConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model option(s) {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "species" in d:
            d["species"] = tuple(d["species"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["species"] = [chemical_symbol(z) for z in self.species]
        d["shift"] = list(self.shift)
        return d


def polynomial_envelope(x, p: int = 6):
    """Smooth cutoff ``u_p(x) = 1 − (p+1)(p+2)/2 x^p + p(p+2) x^{p+1} − p(p+1)/2 x^{p+2}`` for
    ``x < 1``, 0 beyond (DimeNet, Klicpera et al. 2020, Eq. 8). ``u(1) = u'(1) = u''(1) = 0``."""
    x = jnp.asarray(x)
    xs = jnp.where(x < 1.0, x, 0.0)
    u = 1 - (p + 1) * (p + 2) / 2 * xs ** p + p * (p + 2) * xs ** (p + 1) - p * (p + 1) / 2 * xs ** (p + 2)
    return jnp.where(x < 1.0, u, 0.0)


# ------------------------------------------------------------------------------------ network
def _hidden_irreps(channels: int, l_max: int) -> e3nn.Irreps:
    return e3nn.Irreps([(channels, (l, (-1) ** l)) for l in range(l_max + 1)])


def gated_interaction(h, sh, radial, species, senders, receivers, target, *, t: int, channels: int,
                      n_species: int, radial_hidden: int, norm: float):
    """One NequIP-style interaction block, shared by the potential and the Hamiltonian network.

    Messages ``Linear(h)[receivers] ⊗ Y(r̂)`` restricted to the irreps ``target``, weighted per path
    by an MLP of the radial basis, summed onto ``senders`` and scaled by ``norm``; then a linear
    layer plus a species-indexed self-connection, and a gated nonlinearity (SiLU on the scalars,
    sigmoid gates on the other irreps). Call it inside a flax ``nn.compact`` method: its layers
    become submodules of the caller, named ``pre_t``, ``radial_t``, ``post_t`` and ``self_t``.
    """
    n = h.shape[0]
    x = e3nn.flax.Linear(h.irreps, name=f"pre_{t}")(h)
    msg = e3nn.tensor_product(x[receivers], sh, filter_ir_out=target)
    w = e3nn.flax.MultiLayerPerceptron((radial_hidden, radial_hidden, msg.irreps.num_irreps),
                                       act=jax.nn.silu, output_activation=False, name=f"radial_{t}")(radial)
    agg = e3nn.scatter_sum(msg * w, dst=senders, output_size=n, mode="drop") * norm
    # gated nonlinearity: scalars + one gate per gated irrep, then the gated irreps
    n_gates = target.filter(drop="0e").num_irreps
    pre = e3nn.Irreps(f"{channels + n_gates}x0e") + target.filter(drop="0e")
    y = e3nn.flax.Linear(pre, force_irreps_out=True, name=f"post_{t}")(agg)
    sc = e3nn.flax.Linear(pre, num_indexed_weights=n_species, force_irreps_out=True, name=f"self_{t}")(species, h)
    return e3nn.gate(y + sc, even_act=jax.nn.silu, even_gate_act=jax.nn.sigmoid)


class NequIP(nn.Module):
    """Per-atom outputs of the NequIP-like network (before scale and shift).

    Call with ``species [n] int`` (index into ``config.species``), ``vectors [E, 3]`` edge vectors
    ``r_ij`` [Å], ``senders [E]``, ``receivers [E]`` (edge ``e`` carries a message from
    ``receivers[e] = j`` to ``senders[e] = i``), ``edge_mask [E]`` bool; returns ``[n]``.
    """

    config: PotentialConfig

    @nn.compact
    def __call__(self, species, vectors, senders, receivers, edge_mask):
        cfg = self.config
        n_species = len(cfg.species)
        dtype = vectors.dtype
        rc = cfg.cutoff
        C = cfg.channels

        # edges: safe unit vectors and lengths (padding edges → a dummy vector, zero weight)
        r = safe_norm(vectors)
        valid = edge_mask & (r > 0)
        safe_vec = jnp.where(valid[:, None], vectors, jnp.asarray([1.0, 0.0, 0.0], dtype))
        safe_r = jnp.where(valid, r, 1.0)
        sh = e3nn.spherical_harmonics(list(range(cfg.l_max + 1)), e3nn.IrrepsArray("1o", safe_vec),
                                      normalize=True, normalization="component")
        radial = e3nn.bessel(safe_r, cfg.n_radial, rc) * (polynomial_envelope(safe_r / rc, cfg.envelope_p)
                                                          * valid)[:, None]
        radial = radial.astype(dtype)

        onehot = jax.nn.one_hot(species, n_species, dtype=dtype)
        h = e3nn.flax.Linear(f"{C}x0e", name="embed")(e3nn.IrrepsArray(f"{n_species}x0e", onehot))
        hidden = _hidden_irreps(C, cfg.l_max)
        norm = 1.0 / math.sqrt(max(float(cfg.avg_num_neighbors), 1e-6))
        for t in range(cfg.num_layers):
            last = t == cfg.num_layers - 1
            target = e3nn.Irreps(f"{C}x0e") if last else hidden
            h = gated_interaction(h, sh, radial, species, senders, receivers, target, t=t, channels=C,
                                  n_species=n_species, radial_hidden=cfg.radial_hidden, norm=norm)
        out = e3nn.flax.Linear(f"{max(C // 2, 1)}x0e", name="readout_1")(h.filter(keep="0e"))
        out = e3nn.flax.Linear("0e", name="readout_2")(
            e3nn.IrrepsArray(out.irreps, jax.nn.silu(out.array)))
        return out.array[:, 0]


class DeepPotSE(nn.Module):
    """DeepPot-SE descriptor model (the seed's DPMD baseline), same call signature as :class:`NequIP`.

    Zhang et al., "End-to-end symmetry preserving inter-atomic potential energy model for finite and
    extended systems", NeurIPS 2018 (DeepPot-SE), Eqs. 3–6: generalized environment rows
    ``R̃_ij = s(r) (1, x/r, y/r, z/r)`` with the smooth weight ``s(r) = u(r/r_c) / r``; an embedding
    net ``G(s(r_ij), species_j)`` with ``M1`` outputs; ``T_i = Σ_j G_ij^T R̃_ij / N_avg`` (``M1 x 4``);
    the invariant descriptor ``D_i = T_i T_i^{<T}`` (``M1 x M2``, contraction over the 4-vector
    index: rotation, translation and permutation invariant); a fitting net → atomic energy.
    """

    config: PotentialConfig

    @nn.compact
    def __call__(self, species, vectors, senders, receivers, edge_mask):
        cfg = self.config
        n = species.shape[0]
        n_species = len(cfg.species)
        dtype = vectors.dtype
        r = safe_norm(vectors)
        valid = edge_mask & (r > 0)
        safe_r = jnp.where(valid, r, 1.0)
        sr = jnp.where(valid, polynomial_envelope(safe_r / cfg.cutoff, cfg.envelope_p) / safe_r, 0.0)
        rt = jnp.concatenate([sr[:, None], (sr / safe_r)[:, None] * vectors], axis=-1)  # [E, 4]
        onehot_j = jax.nn.one_hot(species[receivers], n_species, dtype=dtype)
        x = jnp.concatenate([sr[:, None], onehot_j], axis=-1)
        for k, w in enumerate((cfg.channels // 2 or 1, cfg.channels)):
            x = jnp.tanh(nn.Dense(w, param_dtype=dtype, dtype=dtype, name=f"embed_{k}")(x))
        g = x * valid[:, None]  # [E, M1]
        t = jax.ops.segment_sum(g[:, :, None] * rt[:, None, :], senders, num_segments=n)  # [n, M1, 4]
        t = t / float(max(cfg.avg_num_neighbors, 1.0))
        m2 = min(cfg.axis_neurons, cfg.channels)
        d = jnp.einsum("nak,nbk->nab", t, t[:, :m2]).reshape(n, -1)
        h = jnp.concatenate([d, jax.nn.one_hot(species, n_species, dtype=dtype)], axis=-1)
        for k in range(2):
            h = jnp.tanh(nn.Dense(cfg.radial_hidden, param_dtype=dtype, dtype=dtype, name=f"fit_{k}")(h))
        return nn.Dense(1, param_dtype=dtype, dtype=dtype, name="fit_out")(h)[:, 0]


# ------------------------------------------------------------------------------------ wrapper
class Potential:
    """A learned potential-energy surface: config + pure functions of ``params``.

    Example::

        pot = Potential(PotentialConfig(species=["Si"], cutoff=5.0))
        params = pot.init(jax.random.PRNGKey(0))
        g = pot.graph(crystal)
        out = pot.energy_forces_stress(params, crystal, g)   # energy [eV], forces [n,3], stress [3,3] GPa
    """

    def __init__(self, config: PotentialConfig):
        if not isinstance(config, PotentialConfig):
            raise ConfigError(f"Potential needs a PotentialConfig, got {type(config).__name__}")
        self.config = config
        self.module = NequIP(config) if config.kind == "nequip" else DeepPotSE(config)
        self.dtype = jnp.dtype(config.dtype)
        table = np.full(128, -1, np.int32)
        for k, z in enumerate(config.species):
            table[z] = k
        self._table = table
        self._shift = np.asarray(config.shift, np.float64)

    # ---------------------------------------------------------------- host helpers
    def __repr__(self):
        return f"Potential({self.config})"

    def check_numbers(self, numbers, mask=None) -> None:
        """Raise ElementError if a real atom's element is not among ``config.species``."""
        z = np.asarray(numbers).reshape(-1)
        m = np.ones_like(z, bool) if mask is None else np.asarray(mask, bool).reshape(-1)
        zz = z[m]
        bad = sorted({int(v) for v in zz if not (0 < v < 128) or self._table[int(v)] < 0})
        if bad:
            names = [chemical_symbol(v) if 0 < v < 119 else str(v) for v in bad]
            known = [chemical_symbol(v) for v in self.config.species]
            raise ElementError(f"element(s) {names} not seen in training; this model knows {known}")

    def graph(self, crystal: Crystal, **kw) -> Graph:
        """Neighbour graph at the model cutoff (host; checks elements first)."""
        self.check_numbers(crystal.numbers, crystal.mask)
        return neighbor_graph(crystal, self.config.cutoff, **kw)

    @functools.cached_property
    def _init_fn(self):
        def init(key):
            species = jnp.zeros((2,), jnp.int32)
            vec = jnp.asarray([[1.0, 0.5, 0.2], [-1.0, -0.5, -0.2]], self.dtype)
            s = jnp.asarray([0, 1], jnp.int32)
            return self.module.init(key, species, vec, s, s[::-1], jnp.ones((2,), bool))
        return jax.jit(init)

    def init(self, key) -> dict:
        """Random parameters (the e3nn init is jitted: fast)."""
        return self._init_fn(key)

    # ---------------------------------------------------------------- pure functions
    def species_index(self, numbers):
        """``[n]`` species index of atomic numbers (jittable; unknown → 0, check on the host)."""
        idx = jnp.asarray(self._table)[jnp.clip(jnp.asarray(numbers), 0, 127)]
        return jnp.maximum(idx, 0)

    def atomic_energies(self, params, numbers, positions, lattice, mask, graph: Graph):
        """``[n]`` atomic energies [eV] (0 for padding atoms) of a single structure."""
        pos = jnp.asarray(positions).astype(self.dtype)
        vec = edge_vectors_from_positions(pos, jnp.asarray(lattice).astype(self.dtype), graph)
        sp = self.species_index(numbers)
        out = self.module.apply(params, sp, vec, graph.senders, graph.receivers, graph.mask)
        e = self.config.scale * out + jnp.asarray(self._shift, out.dtype)[sp]
        return jnp.where(jnp.asarray(mask), e, 0.0)

    def energy_from_positions(self, params, numbers, positions, lattice, mask, graph: Graph):
        """Total energy [eV] as a function of cartesian positions ``[n, 3]`` and lattice rows."""
        return jnp.sum(self.atomic_energies(params, numbers, positions, lattice, mask, graph))

    def energy(self, params, crystal: Crystal, graph: Graph):
        """Total energy [eV] of a crystal (or ``[B]`` for a batch)."""
        if jnp.ndim(crystal.frac) == 3:
            return jax.vmap(lambda c, g: self.energy(params, c, g))(crystal, graph)
        return self.energy_from_positions(params, crystal.numbers, crystal.positions, crystal.lattice,
                                          crystal.mask, graph)

    def energy_forces_stress(self, params, crystal: Crystal, graph: Graph, stress: bool = True) -> dict:
        """Energy [eV], forces ``−∂E/∂C`` ``[n, 3]`` [eV/Å] and stress ``(1/V) ∂E/∂ε`` ``[3, 3]`` [GPa].

        The stress is the derivative at fixed fractional coordinates of ``E`` under the homogeneous
        deformation ``C' = C (I + ε)``, ``L' = L (I + ε)`` (symmetrised). Batches are vmapped.
        """
        if jnp.ndim(crystal.frac) == 3:
            return jax.vmap(lambda c, g: self.energy_forces_stress(params, c, g, stress))(crystal, graph)
        pos = crystal.positions
        lat = jnp.asarray(crystal.lattice)

        def e_of(p, eps):
            d = jnp.eye(3, dtype=p.dtype) + eps
            return self.energy_from_positions(params, crystal.numbers, p @ d, lat @ d, crystal.mask, graph)

        eps0 = jnp.zeros((3, 3), pos.dtype)
        if stress:
            e, (g_pos, g_eps) = jax.value_and_grad(e_of, argnums=(0, 1))(pos, eps0)
            vol = jnp.abs(jnp.linalg.det(lat))
            s = 0.5 * (g_eps + g_eps.T) / vol * EV_PER_ANG3_GPA
        else:
            e, g_pos = jax.value_and_grad(e_of)(pos, eps0)
            s = None
        f = jnp.where(jnp.asarray(crystal.mask)[:, None], -g_pos, 0.0)
        out = {"energy": e, "forces": f}
        if stress:
            out["stress"] = s
        return out

    # ---------------------------------------------------------------- convenience (host)
    def compute(self, params, crystal: Crystal, stress: bool = True) -> dict:
        """Host helper: check the input, build the graph, return NumPy energy/forces/stress."""
        crystal.validate()
        g = self.graph(crystal)
        out = _jit_efs(self, stress)(params, crystal, g)
        return {k: np.asarray(v) for k, v in out.items()}

    # ---------------------------------------------------------------- serialisation
    def to_json(self) -> str:
        return json.dumps({"format": "difcrys-potential-1", "config": self.config.to_dict()})

    @classmethod
    def from_json(cls, text: str) -> "Potential":
        d = json.loads(text)
        if not (d.get("format") == "difcrys-potential-1" or d.get("kind") == "nequip") or "config" not in d:
            raise ConfigError("not a difcrys potential model file (expected format 'difcrys-potential-1')")
        return cls(PotentialConfig.from_dict(d["config"]))


@functools.lru_cache(maxsize=32)
def _jit_efs(pot: Potential, stress: bool):
    return jax.jit(lambda p, c, g: pot.energy_forces_stress(p, c, g, stress))


# ------------------------------------------------------------------------------------ statistics
def fit_statistics(config: PotentialConfig, dataset, max_structures: int = 200) -> PotentialConfig:
    """Fit ``shift`` (per species), ``scale`` and ``avg_num_neighbors`` from a training set.

    * ``shift``: least squares ``E_k ≈ Σ_s n_{k,s} μ_s`` of total energies on compositions (with a
      tiny ridge so that elements which always appear together stay defined);
    * ``scale``: RMS force component if forces are present, else the RMS of the per-atom
      energy residual (floored at 1e-3 eV);
    * ``avg_num_neighbors``: mean number of neighbours within the cutoff (first ``max_structures``).

    Args:
        config: the model configuration; its ``species`` must cover the data set.
        dataset: a :class:`difcrys.data.Dataset` with energies.

    Returns:
        A new PotentialConfig with the fitted values.

    Raises:
        ConfigError: no energies in the data set; ElementError: an element not in ``species``.
    """
    if dataset.energy is None:
        raise ConfigError(f"{dataset.name}: fitting the energy shift needs energies")
    pot = Potential(config)
    idx = {z: k for k, z in enumerate(config.species)}
    counts = np.zeros((len(dataset), len(config.species)))
    for k, c in enumerate(dataset.crystals):
        m = np.asarray(c.mask, bool)
        pot.check_numbers(c.numbers, m)
        for z in np.asarray(c.numbers)[m]:
            counts[k, idx[int(z)]] += 1
    e = np.asarray(dataset.energy, float)
    A = counts
    mu = np.linalg.solve(A.T @ A + 1e-8 * np.eye(A.shape[1]), A.T @ e)
    resid = (e - A @ mu) / np.maximum(A.sum(1), 1)
    if dataset.forces is not None:
        scale = float(np.sqrt(np.mean(np.concatenate([np.asarray(f).reshape(-1) for f in dataset.forces]) ** 2)))
    else:
        scale = float(np.sqrt(np.mean(resid ** 2)))
    scale = max(scale, 1e-3)
    nn_counts = []
    for c in dataset.crystals[:max_structures]:
        g = neighbor_graph(c, config.cutoff)
        nn_counts.append(int(np.asarray(g.n_edges)) / max(int(np.asarray(c.mask).sum()), 1))
    avg = float(np.mean(nn_counts)) if nn_counts else 1.0
    return dataclasses.replace(config, shift=tuple(float(x) for x in mu), scale=scale,
                               avg_num_neighbors=max(avg, 1.0))
