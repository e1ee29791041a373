"""E(3)-equivariant network for DFT Hamiltonian blocks in a localized basis (DeepH-E3 family).

The network maps a structure to the real-space blocks ``H_{iα,jβ}(R)`` (and the overlap
``S_{iα,jβ}(R)``) of :mod:`difcrys.tb` for every atom pair within the cutoff ``r_c`` (the
nearsightedness radius) and every on-site block, in linear time in the number of atoms.

Architecture (after X. Gong et al., "General framework for E(3)-equivariant neural network
representation of density functional theory Hamiltonian", Nat. Commun. 14, 2848 (2023),
DeepH-E3; and H. Li et al., Nat. Comput. Sci. 2, 367 (2022), DeepH):

* nodes: species embedding → hidden irreps ``C × (0e, 1o, 1e, 2e, 2o, …)`` up to ``l_max``,
  updated by ``num_layers`` NequIP-style interaction blocks (messages ``R(r) ⊙ (h_j ⊗ Y(r̂_ij))``,
  neighbour sum / √avg_neighbours, linear, species self-connection, gate), as in
  :mod:`difcrys.nn.potential`;
* edges ``(i, j, R)``: ``x = [W_a h_i, W_b h_j]``, ``(x ⊗ Y(r̂)) ⊙ MLP(radial, h_i^0, h_j^0)``,
  then a linear map indexed by the species pair to the **block irreps**; the on-site blocks come
  from a species-indexed linear map of ``h_i``;
* block irreps → blocks: a block between shells ``l1`` (atom i) and ``l2`` (atom j) is
  ``B_{m1 m2} = Σ_{L=|l1−l2|}^{l1+l2} Σ_M C^{l1 l2 L}_{m1 m2 M} c^L_M`` with e3nn's
  Clebsch–Gordan coefficients and ``c^L`` of parity ``(−1)^{l1+l2}`` (DeepH-E3, Eq. 3), so
  rotating the structure by ``R`` gives ``B → D^{l1}(R) B D^{l2}(R)^T`` exactly;
* hermiticity ``H_ij(R) = H_ji(−R)^T`` is built in: the final edge block is
  ``½ (B_{ij,R} + B_{ji,−R}^T)`` (the graph holds both directions), the on-site block
  ``½ (B + B^T)``;
* overlap: S is a two-centre quantity, ``S_ij(d) = Σ_L f_{ab,L}(|d|) C^{l1 l2 L} Y^L(d̂)``
  (only ``L`` with ``(−1)^L = (−1)^{l1+l2}`` survive), with radial functions ``f`` from an MLP
  per species pair; on-site overlaps are the per-species constants of the training data.
  Edge blocks carry the smooth envelope ``u(r/r_c)`` (they vanish at the cutoff).
* fitted two-centre baseline (``two_centre_k > 0``): the same two-centre (Slater–Koster) form with
  radial functions expanded on ``K`` Gaussians, its coefficients fitted to the training blocks by
  linear least squares before training (:func:`difcrys.train.hamiltonian.fit_two_centre`). S is
  then this expansion alone (S is exactly two-centre: on the PySCF graphene data it reproduces
  unseen S blocks to ~1e-6), and the network learns only ``H − H_2c`` (on-site blocks: ``H −``
  the species mean). The learned part is smaller, so the same network reaches lower errors.

Orbitals follow the e3nn-jax order (:mod:`difcrys.tb.orbitals`). Energies in eV, lengths in Å.
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

from difcrys.crystal import Crystal, chemical_symbol
from difcrys.errors import ConfigError
from difcrys.graph import edge_vectors_from_positions, neighbor_graph, safe_norm
from difcrys.nn.potential import gated_interaction, polynomial_envelope
from difcrys.tb.orbitals import OrbitalBasis

__all__ = ["HamiltonianConfig", "HamiltonianNet", "HamiltonianModel", "HGraph", "reverse_edges"]


# ------------------------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class HamiltonianConfig:
    """Hyper-parameters and fitted statistics of a :class:`HamiltonianModel`.

    Attributes:
        basis: ``{element: shells}`` (``{"C": [0, 1]}`` or ``{"Si": "1s1p"}``).
        cutoff: nearsightedness radius ``r_c`` [Å] (blocks beyond are zero).
        num_layers: interaction blocks on the nodes.
        l_max: highest degree of hidden irreps and spherical harmonics (≥ 2·max shell l is exact
            for the CG decomposition; lower is allowed).
        channels: multiplicity of each hidden irrep.
        n_radial: Bessel radial functions.
        radial_hidden: width of the radial MLPs.
        envelope_p: exponent of the polynomial envelope.
        avg_num_neighbors: neighbour-sum normalisation (fitted).
        onsite_H, onsite_S: per-species mean on-site blocks ``[n_species][no][no]`` (fitted).
        scale: scale of the learned corrections [eV] (fitted: RMS of the edge blocks, after the
            two-centre baseline when there is one).
        onsite_scale: scale of the learned on-site corrections [eV] (fitted: RMS deviation of the
            on-site blocks from their species mean); ``None``: ``scale`` (models before session 5).
        dtype: ``"float32"`` or ``"float64"``.
        two_centre_k: number of radial Gaussians of the fitted two-centre baseline (0: none).
            With a baseline, ``S`` *is* the fitted two-centre expansion (no learned overlap head) and
            the network learns ``H`` minus its two-centre part (see :func:`two_centre_radial`).
        two_centre_rmin: first Gaussian centre [Å] (the last is at ``cutoff``).
        two_centre_H, two_centre_S: fitted coefficients ``[n_species², n_paths, two_centre_k]``
            (:func:`difcrys.train.hamiltonian.fit_two_centre`).
        edge_product: channels ``P`` of an extra edge feature coupling the two atoms' environments,
            the channel-wise tensor product ``(W_c h_i) ⊗ (W_d h_j)`` of two ``P``-channel
            projections (e.g. ``v_i · v_j``, ``v_i × v_j`` and ``[v_i ⊗ v_j]_2`` of vector features);
            0: off (the edge head then sees ``h_i`` and ``h_j`` only linearly, each coupled to the
            bond direction).
        two_centre_onsite: fitted coefficients of the crystal-field part of the on-site blocks,
            ``H_ii − mean ≈ Σ_j Σ_q g_{ab,q}(r_ij) C^{l1 l2 L_q} Y^{L_q}(r̂_ij)`` over the neighbours
            ``j`` within the cutoff (both shells on atom ``i``; the environment-dependent on-site
            term of tight-binding models), same shape (``None``: no on-site baseline).
        three_body: channels ``P`` of a bond-environment (three-centre) edge feature, 0: off. For
            an edge ``i → j`` it sums over the neighbours ``k`` of ``i`` within
            ``three_body_cutoff`` the spherical harmonics ``Y(r̂_ik)`` and ``Y(r̂_jk)`` (``r_jk =
            r_ik − r_ij``), each weighted per channel by an MLP of ``(r_ik, r_jk, cos θ_jik,
            species_k)`` — the geometry on which a three-centre integral ``<φ_i|V_k|φ_j>``
            depends. The reverse edge supplies the neighbours of ``j`` (hermitisation).
        three_body_cutoff: reach [Å] of the third atom ``k`` from ``i``.
        three_body_max: static capacity of neighbours per atom within ``three_body_cutoff``
            (checked on the host when the graph is built: more raises :class:`ConfigError`).
        bond_env_k: radial functions ``φ_a(r_ik)`` of the fitted *bond crystal-field* baseline
            (0: off; needs ``two_centre_k``). It adds to the two-centre edge blocks the linear,
            environment-dependent term ``Σ_q Σ_{a,b} ψ_b(r_ij) [c¹_{q,ab} Σ_{k∈N(i)} φ_a(r_ik)
            C^{l1 l2 L_q} Y^{L_q}(r̂_ik) + c²_{q,ab} Σ_{k∈N(j)} φ_a(r_jk) C^{l1 l2 L_q} Y^{L_q}(r̂_jk)]``
            over the neighbours ``k`` (other than the bond partner) within ``three_body_cutoff``
            of either atom: the three-centre crystal field that makes graphene's π hopping
            (p_z–p_z) differ from the in-plane ppπ, which a two-centre form forces equal.
            Fitted jointly with the two-centre part (:func:`difcrys.train.hamiltonian.fit_two_centre`).
        bond_env_kb: bond-length functions ``ψ_b(r_ij)`` of that term.
        onsite_product: channels ``P`` of a second-order on-site feature, the channel-wise tensor
            square ``(W h_i) ⊗ (W h_i)`` of a ``P``-channel projection of the node features (0:
            off). The on-site head is otherwise linear in ``h_i``, i.e. in sums over single
            neighbours; the square adds products over neighbour pairs ``(j, k)``, such as the
            squared local normal that shifts graphene's p_z level when its neighbours leave
            the plane.
        bond_env_H: its fitted coefficients ``[n_species², n_paths, 2, bond_env_k, bond_env_kb]``.
    """

    basis: dict = dataclasses.field(default_factory=lambda: {"C": [0, 1]})
    cutoff: float = 6.0
    num_layers: int = 2
    l_max: int = 2
    channels: int = 16
    n_radial: int = 8
    radial_hidden: int = 32
    envelope_p: int = 6
    avg_num_neighbors: float = 20.0
    onsite_H: tuple | None = None
    onsite_S: tuple | None = None
    scale: float = 1.0
    onsite_scale: float | None = None
    dtype: str = "float32"
    two_centre_k: int = 0
    two_centre_rmin: float = 0.5
    two_centre_H: tuple | None = None
    two_centre_S: tuple | None = None
    two_centre_onsite: tuple | None = None
    edge_product: int = 0
    three_body: int = 0
    three_body_cutoff: float = 3.0
    three_body_max: int = 16
    bond_env_k: int = 0
    bond_env_kb: int = 8
    bond_env_H: tuple | None = None
    onsite_product: int = 0

    def __post_init__(self):
        if not self.basis:
            raise ConfigError("model.basis must name at least one element and its shells")
        OrbitalBasis(self.basis)  # validates
        if not (float(self.cutoff) > 0):
            raise ConfigError(f"model.cutoff must be > 0 Å, got {self.cutoff}")
        if int(self.num_layers) < 0 or int(self.l_max) < 0 or int(self.channels) < 1:
            raise ConfigError("model.num_layers >= 0, l_max >= 0, channels >= 1 required")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"model.dtype must be float32 or float64, got {self.dtype!r}")
        if int(self.onsite_product) < 0:
            raise ConfigError(f"model.onsite_product must be >= 0, got {self.onsite_product}")
        if int(self.edge_product) < 0:
            raise ConfigError(f"model.edge_product must be >= 0, got {self.edge_product}")
        if int(self.three_body) < 0 or int(self.three_body_max) < 1:
            raise ConfigError(f"model.three_body must be >= 0 and three_body_max >= 1, got "
                              f"{self.three_body}, {self.three_body_max}")
        if (self.three_body or self.bond_env_k) and not (0 < float(self.three_body_cutoff) <= float(self.cutoff)):
            raise ConfigError(f"model.three_body_cutoff must lie in (0, cutoff], got {self.three_body_cutoff}")
        if int(self.bond_env_k) and (int(self.bond_env_k) < 2 or int(self.bond_env_kb) < 2 or not int(self.two_centre_k)):
            raise ConfigError("model.bond_env_k needs bond_env_k >= 2, bond_env_kb >= 2 and two_centre_k > 0")
        if int(self.two_centre_k) < 0 or int(self.two_centre_k) == 1:
            raise ConfigError(f"model.two_centre_k must be 0 (off) or >= 2, got {self.two_centre_k}")
        if not (0 <= float(self.two_centre_rmin) < float(self.cutoff)):
            raise ConfigError(f"model.two_centre_rmin must lie in [0, cutoff), got {self.two_centre_rmin}")

    @property
    def orbital_basis(self) -> OrbitalBasis:
        return OrbitalBasis(self.basis)

    @property
    def species(self) -> tuple:
        return tuple(sorted(self.orbital_basis.shells))

    @classmethod
    def from_dict(cls, d: dict) -> "HamiltonianConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        bad = set(d) - names
        if bad:
            raise ConfigError(f"unknown model setting(s) {sorted(bad)}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["basis"] = {k if isinstance(k, str) else chemical_symbol(k): list(OrbitalBasis({k: v}).shells.values())[0]
                      for k, v in self.basis.items()}
        d["basis"] = {k: list(v) for k, v in d["basis"].items()}
        return d


# ------------------------------------------------------------------------------------ layout
@dataclasses.dataclass(frozen=True)
class _Layout:
    """Static orbital bookkeeping: global shell slots and per-species selections."""

    species: tuple            # atomic numbers
    slots: tuple              # l of each global slot
    slot_off: tuple           # orbital offset of each slot in the global layout
    nG: int                   # global orbital count
    no: int                   # padded per-atom orbital count (species layout)
    select: np.ndarray        # [n_species, no] global orbital index of each species orbital (nG = none)
    edge_paths: tuple         # ((a, b, L), ...) for all slot pairs
    irreps_edge: e3nn.Irreps  # simplified irreps of the block coefficients
    path_index: tuple         # (irrep position in irreps_edge, multiplicity index) per path
    s_paths: tuple            # indices of edge_paths with (-1)^L == (-1)^(la+lb)


def _layout(cfg: HamiltonianConfig) -> _Layout:
    basis = cfg.orbital_basis
    species = tuple(sorted(basis.shells))
    count = {}
    for z in species:
        c = {}
        for l in basis.shells[z]:
            c[l] = c.get(l, 0) + 1
        for l, k in c.items():
            count[l] = max(count.get(l, 0), k)
    slots = tuple(l for l in sorted(count) for _ in range(count[l]))
    off = np.concatenate([[0], np.cumsum([2 * l + 1 for l in slots])]).astype(int)
    nG = int(off[-1])
    no = basis.max_orbitals()
    select = np.full((len(species), no), nG, np.int64)
    for s, z in enumerate(species):
        seen, o = {}, 0
        for l in basis.shells[z]:
            k = seen.get(l, 0)
            seen[l] = k + 1
            slot = [q for q, lq in enumerate(slots) if lq == l][k]
            select[s, o:o + 2 * l + 1] = off[slot] + np.arange(2 * l + 1)
            o += 2 * l + 1
    paths = []
    for a, la in enumerate(slots):
        for b, lb in enumerate(slots):
            for L in range(abs(la - lb), la + lb + 1):
                paths.append((a, b, L))
    irs = {}
    pidx_raw = []
    for a, b, L in paths:
        ir = e3nn.Irrep(L, (-1) ** (slots[a] + slots[b]))
        pidx_raw.append((ir, irs.get(ir, 0)))
        irs[ir] = irs.get(ir, 0) + 1
    order = sorted(irs)
    irreps = e3nn.Irreps([(irs[ir], ir) for ir in order])
    pidx = tuple((order.index(ir), k) for ir, k in pidx_raw)
    s_paths = tuple(q for q, (a, b, L) in enumerate(paths) if (L + slots[a] + slots[b]) % 2 == 0)
    return _Layout(species, slots, tuple(int(x) for x in off), nG, no, select, tuple(paths), irreps, pidx, s_paths)


def _coeffs_to_blocks(layout: _Layout, chunks, dtype, lead: tuple):
    """Per-path coefficients → ``[..., nG, nG]`` blocks via Clebsch–Gordan.

    ``chunks``: list over paths of ``[..., 2L+1]`` arrays (or None for zero).
    """
    G = jnp.zeros(lead + (layout.nG, layout.nG), dtype)
    for (a, b, L), c in zip(layout.edge_paths, chunks):
        if c is None:
            continue
        la, lb = layout.slots[a], layout.slots[b]
        cg = jnp.asarray(e3nn.clebsch_gordan(la, lb, L), dtype) * math.sqrt(2 * L + 1)
        blk = jnp.einsum("ijm,...m->...ij", cg, c)
        oa, ob = layout.slot_off[a], layout.slot_off[b]
        G = G.at[..., oa:oa + 2 * la + 1, ob:ob + 2 * lb + 1].add(blk)
    return G


def _path_chunks(layout: _Layout, x: e3nn.IrrepsArray):
    ch = x.chunks  # per irrep: [..., mul, 2L+1]
    return [None if ch[i] is None else ch[i][..., k, :] for i, k in layout.path_index]


def _to_species_layout(layout: _Layout, G, si, sj):
    """``[E, nG, nG]`` global blocks → ``[E, no, no]`` species layout (padding zero)."""
    Gp = jnp.pad(G, [(0, 0)] * (G.ndim - 2) + [(0, 1), (0, 1)])
    sel = jnp.asarray(layout.select)
    ri, rj = sel[si], sel[sj]  # [E, no]
    return jnp.take_along_axis(jnp.take_along_axis(Gp, ri[:, :, None], axis=1), rj[:, None, :], axis=2)


def _hidden_irreps(C, l_max):
    out = [(C, (0, 1))]
    for l in range(1, l_max + 1):
        out += [(C, (l, (-1) ** l)), (C, (l, -((-1) ** l)))]
    return e3nn.Irreps(out)


def two_centre_radial(r, cfg: HamiltonianConfig):
    """``[E, K]`` radial basis of the two-centre baseline: Gaussians ``exp(−((r − c_k)/w)²)`` with
    centres ``c_k`` evenly spaced from ``two_centre_rmin`` to ``cutoff`` and width ``w`` their
    spacing, times the envelope ``u(r/r_c)`` (smooth vanishing at the cutoff)."""
    K = int(cfg.two_centre_k)
    rc, r0 = float(cfg.cutoff), float(cfg.two_centre_rmin)
    c = jnp.linspace(r0, rc, K, dtype=r.dtype)
    w = (rc - r0) / (K - 1)
    return jnp.exp(-(((r[:, None] - c) / w) ** 2)) * polynomial_envelope(r / rc, cfg.envelope_p)[:, None]


def _two_centre_sh(layout: _Layout, vectors, valid):
    """``{L: [E, 2L+1]}`` spherical harmonics of the bond directions for the parity-allowed paths
    (padding / zero vectors get a dummy direction)."""
    u = jnp.where(valid[:, None], vectors, jnp.asarray([1.0, 0.0, 0.0], vectors.dtype))
    Ls = sorted({layout.edge_paths[q][2] for q in layout.s_paths})
    sh = e3nn.spherical_harmonics(Ls, e3nn.IrrepsArray("1o", u), normalize=True, normalization="component")
    return {ir.l: sh.chunks[k][:, 0, :] for k, (_, ir) in enumerate(sh.irreps)}


def two_centre_path_blocks(layout: _Layout, vectors, dtype):
    """``{path q: [E, nG, nG]}`` templates ``C^{l1 l2 L} Y^L(r̂)`` of the parity-allowed paths
    (``(−1)^L = (−1)^{l1+l2}``): a two-centre block is ``Σ_q f_q(r) T_q``."""
    shl = _two_centre_sh(layout, vectors, safe_norm(vectors) > 0)
    out = {}
    for q in layout.s_paths:
        chunks = [None] * len(layout.edge_paths)
        chunks[q] = shl[layout.edge_paths[q][2]]
        out[q] = _coeffs_to_blocks(layout, chunks, dtype, (vectors.shape[0],))
    return out


def _two_centre_eval(layout: _Layout, cfg: HamiltonianConfig, coeff_sets, vectors, pair, valid, dtype):
    """Global-layout two-centre blocks ``[E, nG, nG]``, one per coefficient set ``[nS², n_paths, K]``
    (radial basis and spherical harmonics computed once for all sets)."""
    safe_r = jnp.where(valid, safe_norm(vectors), 1.0)
    phi = two_centre_radial(safe_r, cfg) * valid[:, None]
    shl = _two_centre_sh(layout, vectors, valid)
    nP = len(layout.edge_paths)
    out = []
    for coeffs in coeff_sets:
        c = jnp.asarray(coeffs, dtype)  # [nS², nP, K]
        f = (phi @ c.reshape(-1, c.shape[-1]).T).reshape(-1, c.shape[0], nP)  # [E, nS², nP]
        f = jnp.take_along_axis(f, pair[:, None, None], axis=1)[:, 0, :]
        chunks = [None] * nP
        for q in layout.s_paths:
            chunks[q] = f[:, q:q + 1] * shl[layout.edge_paths[q][2]]
        out.append(_coeffs_to_blocks(layout, chunks, dtype, (vectors.shape[0],)))
    return out


def _gaussians(r, lo, hi, K, r_env, p):
    """``[..., K]`` Gaussians centred evenly on ``[lo, hi]`` (width: their spacing) times the
    envelope ``u(r / r_env)``."""
    c = jnp.linspace(lo, hi, K, dtype=r.dtype)
    w = (hi - lo) / (K - 1)
    return jnp.exp(-(((r[..., None] - c) / w) ** 2)) * polynomial_envelope(r / r_env, p)[..., None]


def bond_env_sums(layout: _Layout, cfg: HamiltonianConfig, vectors, valid, senders, n: int):
    """``{L: [E, bond_env_k, 2L+1]}``: ``Σ_k φ_a(r_ik) Y^L(r̂_ik)`` over the neighbours ``k`` of the
    sender ``i`` of each edge within ``three_body_cutoff``, the edge's own partner excluded (the
    environment of the bond's first atom; the reverse edge gives the second's)."""
    r3, M = float(cfg.three_body_cutoff), int(cfg.three_body_max)
    r = jnp.where(valid, safe_norm(vectors), 1.0)
    nb, ok = _three_body_table(senders, valid & (r < r3), n, M)
    ok = ok & valid[:, None]
    phi = _gaussians(r[nb], float(cfg.two_centre_rmin), r3, int(cfg.bond_env_k), r3, cfg.envelope_p) * ok[..., None]
    E = vectors.shape[0]
    shl = _two_centre_sh(layout, vectors[nb].reshape(-1, 3), ok.reshape(-1))
    return {L: jnp.einsum("emk,emc->ekc", phi, y.reshape(E, M, -1)) for L, y in shl.items()}


def bond_env_radial(r, cfg: HamiltonianConfig):
    """``[E, bond_env_kb]`` bond-length functions ``ψ_b(r_ij)`` of the bond crystal field."""
    return _gaussians(r, float(cfg.two_centre_rmin), float(cfg.cutoff), int(cfg.bond_env_kb), float(cfg.cutoff),
                      cfg.envelope_p)


def _bond_env_eval(layout: _Layout, cfg: HamiltonianConfig, coeffs, vectors, pair, valid, senders, reverse, n, dtype):
    """Global-layout bond crystal-field blocks ``[E, nG, nG]`` (see ``HamiltonianConfig.bond_env_k``)."""
    env1 = bond_env_sums(layout, cfg, vectors, valid, senders, n)
    env = [env1, {L: x[reverse] for L, x in env1.items()}]
    psi = bond_env_radial(jnp.where(valid, safe_norm(vectors), 1.0), cfg) * valid[:, None]
    c = jnp.asarray(coeffs, dtype)[pair]                       # [E, nP, 2, Ka, Kb]
    W = jnp.einsum("eqsab,eb->eqsa", c, psi)
    chunks = [None] * len(layout.edge_paths)
    for q in layout.s_paths:
        L = layout.edge_paths[q][2]
        chunks[q] = sum(jnp.einsum("ea,eac->ec", W[:, q, s], env[s][L]) for s in (0, 1))
    return _coeffs_to_blocks(layout, chunks, dtype, (vectors.shape[0],))


# ------------------------------------------------------------------------------------ network
def _three_body_table(senders, mask3, n: int, M: int):
    """``[E, M]`` indices of the edges ``i → k`` (``mask3``) leaving the sender ``i`` of each edge,
    and their validity; built in-graph by sorting the edges by sender (static capacity ``M``)."""
    E = senders.shape[0]
    key = jnp.where(mask3, senders, n)
    order = jnp.argsort(key, stable=True)
    start = jnp.searchsorted(key[order], jnp.arange(n + 1), side="left")
    si = jnp.clip(senders, 0, n - 1)
    slot = start[si][:, None] + jnp.arange(M)[None, :]
    ok = slot < start[si + 1][:, None]
    nb = order[jnp.clip(slot, 0, E - 1)]
    ok = ok & (nb != jnp.arange(E)[:, None])
    return nb, ok


class _ThreeBodyWeights(nn.Module):
    """Per-triplet channel weights: an MLP of the triplet's invariants."""

    hidden: int
    n_out: int

    @nn.compact
    def __call__(self, x):
        x = jax.nn.silu(nn.Dense(self.hidden)(x))
        x = jax.nn.silu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.n_out)(x)


def _three_body_features(cfg, safe_vec, safe_r, valid, senders, receivers, species, nS, n, lsh):
    """Bond-environment feature of each edge ``i → j`` (see ``HamiltonianConfig.three_body``):
    ``Σ_k [w^a_c(·) Y(r̂_ik), w^b_c(·) Y(r̂_jk)]`` over the neighbours ``k ≠ j`` of ``i`` within
    ``three_body_cutoff``, smoothly cut off in ``r_ik``. Equivariant: invariant weights times
    spherical harmonics of relative vectors; invariant under permutations of the ``k``."""
    P, M, r3 = int(cfg.three_body), int(cfg.three_body_max), float(cfg.three_body_cutoff)
    dtype = safe_vec.dtype
    mask3 = valid & (safe_r < r3)
    nb, ok = _three_body_table(senders, mask3, n, M)
    v_ik = safe_vec[nb]                                  # [E, M, 3]
    r_ik = safe_r[nb]
    v_jk = v_ik - safe_vec[:, None, :]
    r_jk = safe_norm(v_jk)
    ok = ok & valid[:, None] & (r_jk > 1e-6)
    v_jk = jnp.where(ok[..., None], v_jk, jnp.asarray([1.0, 0.0, 0.0], dtype))
    r_jk = jnp.where(ok, r_jk, 1.0)
    cos = jnp.sum(v_ik * safe_vec[:, None, :], -1) / (r_ik * safe_r[:, None])
    env3 = polynomial_envelope(r_ik / r3, cfg.envelope_p) * ok
    rmax = float(cfg.cutoff) + r3
    sk = species[jnp.clip(receivers[nb], 0, n - 1)]
    inv = jnp.concatenate([e3nn.bessel(r_ik.reshape(-1), cfg.n_radial, r3).reshape(r_ik.shape + (-1,)),
                           e3nn.bessel(r_jk.reshape(-1), cfg.n_radial, rmax).reshape(r_jk.shape + (-1,)),
                           cos[..., None], jax.nn.one_hot(sk, nS, dtype=dtype)], -1).astype(dtype)
    ls = list(range(max(lsh) + 1))
    y_ik = e3nn.spherical_harmonics(ls, e3nn.IrrepsArray("1o", v_ik), normalize=True, normalization="component")
    y_jk = e3nn.spherical_harmonics(ls, e3nn.IrrepsArray("1o", v_jk), normalize=True, normalization="component")
    nL = len(ls)
    w = _ThreeBodyWeights(cfg.radial_hidden, 2 * P * nL, name="three_body_mlp")(inv)
    w = (w * env3[..., None]).reshape(w.shape[:-1] + (2, P, nL))   # [E, M, 2, P, nL]
    norm = 1.0 / math.sqrt(float(M))
    parts = []
    for L in ls:
        sl = slice(L * L, (L + 1) * (L + 1))
        a = jnp.einsum("emp,emi->epi", w[:, :, 0, :, L], y_ik.array[..., sl]) * norm
        b = jnp.einsum("emp,emi->epi", w[:, :, 1, :, L], y_jk.array[..., sl]) * norm
        parts.append(jnp.concatenate([a, b], axis=1).reshape(a.shape[0], -1))
    irreps = e3nn.Irreps([(2 * P, (L, (-1) ** L)) for L in ls])
    return e3nn.IrrepsArray(irreps, jnp.concatenate(parts, -1))


class HamiltonianNet(nn.Module):
    """Raw network: returns ``(H_edge [E,no,no], H_onsite [n,no,no], S_edge [E,no,no])`` before
    hermitisation and the on-site means (see :class:`HamiltonianModel`)."""

    config: HamiltonianConfig

    @nn.compact
    def __call__(self, species, vectors, senders, receivers, edge_mask):
        cfg = self.config
        lay = _layout(cfg)
        n = species.shape[0]
        nS = len(lay.species)
        dtype = vectors.dtype
        rc = float(cfg.cutoff)
        C = int(cfg.channels)
        r = safe_norm(vectors)
        valid = edge_mask & (r > 0)
        safe_vec = jnp.where(valid[:, None], vectors, jnp.asarray([1.0, 0.0, 0.0], dtype))
        safe_r = jnp.where(valid, r, 1.0)
        lsh = list(range(max(cfg.l_max, 2 * max(lay.slots)) + 1))
        sh = e3nn.spherical_harmonics(lsh, e3nn.IrrepsArray("1o", safe_vec), normalize=True,
                                      normalization="component")
        env = (polynomial_envelope(safe_r / rc, cfg.envelope_p) * valid).astype(dtype)
        radial = (e3nn.bessel(safe_r, cfg.n_radial, rc) * env[:, None]).astype(dtype)
        si = species[jnp.clip(senders, 0, n - 1)]
        sj = species[jnp.clip(receivers, 0, n - 1)]
        pair = si * nS + sj

        onehot = jax.nn.one_hot(species, nS, dtype=dtype)
        h = e3nn.flax.Linear(f"{C}x0e", name="embed")(e3nn.IrrepsArray(f"{nS}x0e", onehot))
        hidden = _hidden_irreps(C, cfg.l_max)
        norm = 1.0 / math.sqrt(max(float(cfg.avg_num_neighbors), 1e-6))
        for t in range(cfg.num_layers):
            h = gated_interaction(h, sh, radial, species, senders, receivers, hidden, t=t, channels=C,
                                  n_species=nS, radial_hidden=cfg.radial_hidden, norm=norm)

        # ---- edge blocks
        xa = e3nn.flax.Linear(h.irreps, name="edge_a")(h)[senders]
        xb = e3nn.flax.Linear(h.irreps, name="edge_b")(h)[receivers]
        xe = e3nn.concatenate([xa, xb])
        scal3 = []
        if cfg.three_body:
            b3 = _three_body_features(cfg, safe_vec, safe_r, valid, senders, receivers, species, nS, n, lsh)
            xe = e3nn.concatenate([xe, b3])
            scal3 = [b3.filter(keep="0e").array]
        out_irreps = lay.irreps_edge
        tp = e3nn.tensor_product(xe, sh, filter_ir_out=list({ir for _, ir in out_irreps} | {ir for _, ir in hidden}))
        scal = jnp.concatenate([radial, xa.filter(keep="0e").array, xb.filter(keep="0e").array] + scal3, axis=-1)
        w = e3nn.flax.MultiLayerPerceptron((cfg.radial_hidden, cfg.radial_hidden, tp.irreps.num_irreps),
                                           act=jax.nn.silu, output_activation=False, name="edge_radial")(scal)
        tp = tp * w
        parts = [tp, xe]
        if cfg.edge_product:
            hid_p = _hidden_irreps(int(cfg.edge_product), cfg.l_max)
            pa = e3nn.flax.Linear(hid_p, force_irreps_out=True, name="edge_pa")(h)[senders]
            pb = e3nn.flax.Linear(hid_p, force_irreps_out=True, name="edge_pb")(h)[receivers]
            parts.append(e3nn.elementwise_tensor_product(pa, pb, filter_ir_out=list({ir for _, ir in out_irreps})))
        feat = e3nn.concatenate(parts).regroup()
        ce = e3nn.flax.Linear(out_irreps, num_indexed_weights=nS * nS, force_irreps_out=True,
                              name="edge_out")(pair, feat)
        ce = ce * (env * cfg.scale)[:, None]
        G = _coeffs_to_blocks(lay, _path_chunks(lay, ce), dtype, (vectors.shape[0],))
        H_edge = _to_species_layout(lay, G, si, sj)

        # ---- on-site blocks (same-slot paths of one atom)
        ho = h
        if cfg.onsite_product:
            hid_o = _hidden_irreps(int(cfg.onsite_product), cfg.l_max)
            po = e3nn.flax.Linear(hid_o, force_irreps_out=True, name="onsite_p")(h)
            ho = e3nn.concatenate([h, e3nn.elementwise_tensor_product(
                po, po, filter_ir_out=list({ir for _, ir in out_irreps}))])
        co = e3nn.flax.Linear(out_irreps, num_indexed_weights=nS, force_irreps_out=True,
                              name="onsite_out")(species, ho.regroup())
        osc = cfg.scale if cfg.onsite_scale is None else cfg.onsite_scale
        Go = _coeffs_to_blocks(lay, _path_chunks(lay, co * osc), dtype, (n,))
        H_on = _to_species_layout(lay, Go, species, species)

        # ---- overlap: two-centre form (learned here unless the fitted baseline supplies S)
        if cfg.two_centre_k:
            return H_edge, H_on, jnp.zeros_like(H_edge)
        n_sp = len(lay.s_paths)
        f = e3nn.flax.MultiLayerPerceptron((cfg.radial_hidden, cfg.radial_hidden, n_sp * nS * nS),
                                           act=jax.nn.silu, output_activation=False, name="overlap_radial")(
            e3nn.IrrepsArray(f"{cfg.n_radial}x0e", radial)).array.reshape(-1, nS * nS, n_sp)
        f = jnp.take_along_axis(f, pair[:, None, None], axis=1)[:, 0, :] * env[:, None]
        shc = sh.chunks
        sh_l = {ir.l: shc[k][:, 0, :] for k, (_, ir) in enumerate(sh.irreps)}
        chunks = [None] * len(lay.edge_paths)
        for q, pidx in enumerate(lay.s_paths):
            L = lay.edge_paths[pidx][2]
            chunks[pidx] = f[:, q:q + 1] * sh_l[L]
        Gs = _coeffs_to_blocks(lay, chunks, dtype, (vectors.shape[0],))
        S_edge = _to_species_layout(lay, Gs, si, sj)
        return H_edge, H_on, S_edge


# ------------------------------------------------------------------------------------ graph
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class HGraph:
    """Neighbour graph with the reverse-edge index (for hermitisation).

    Attributes:
        senders, receivers: ``[E]`` atoms i, j; shifts ``[E, 3]`` lattice translation R of j;
        mask: ``[E]`` real edges; reverse: ``[E]`` index of edge ``(j, i, −R)`` (itself for padding).
    """

    senders: jax.Array
    receivers: jax.Array
    shifts: jax.Array
    mask: jax.Array
    reverse: jax.Array


def reverse_edges(senders, receivers, shifts, mask) -> np.ndarray:
    """Host: index of the reverse edge ``(j, i, −R)`` of each edge (vectorised, O(E log E))."""
    s, r, S, m = (np.asarray(x) for x in (senders, receivers, shifts, mask))
    E = len(s)
    idx = np.arange(E)
    out = idx.copy()
    real = np.nonzero(m)[0]
    if len(real) == 0:
        return out
    n = int(max(s[real].max(), r[real].max())) + 1
    K = int(np.abs(S[real]).max()) * 2 + 1
    off = K // 2

    def code(i, j, T):
        T = T.astype(np.int64) + off
        return (((i.astype(np.int64) * n + j) * K + T[:, 0]) * K + T[:, 1]) * K + T[:, 2]

    fwd = code(s[real], r[real], S[real])
    bwd = code(r[real], s[real], -S[real])
    order = np.argsort(fwd)
    pos = np.searchsorted(fwd[order], bwd)
    pos = np.clip(pos, 0, len(real) - 1)
    found = fwd[order][pos] == bwd
    if not np.all(found):
        raise ConfigError("neighbour graph is not symmetric (an edge lacks its reverse)")
    out[real] = real[order[pos]]
    return out


# ------------------------------------------------------------------------------------ wrapper
class HamiltonianModel:
    """A learned Hamiltonian: config + pure functions of ``params``.

    Example::

        model = HamiltonianModel(HamiltonianConfig(basis={"C": [0, 1]}, cutoff=6.0))
        params = model.init(jax.random.PRNGKey(0))
        op = model.predict_operator(params, crystal)        # difcrys.tb.TBOperator
    """

    def __init__(self, config: HamiltonianConfig):
        if not isinstance(config, HamiltonianConfig):
            raise ConfigError(f"HamiltonianModel needs a HamiltonianConfig, got {type(config).__name__}")
        self.config = config
        self.layout = _layout(config)
        self.module = HamiltonianNet(config)
        self.dtype = jnp.dtype(config.dtype)
        table = np.full(128, -1, np.int32)
        for k, z in enumerate(self.layout.species):
            table[z] = k
        self._table = table
        no, nS = self.layout.no, len(self.layout.species)
        self._onsite_H = np.zeros((nS, no, no)) if config.onsite_H is None else np.asarray(config.onsite_H, float)
        self._onsite_S = (np.zeros((nS, no, no)) if config.onsite_S is None else np.asarray(config.onsite_S, float))
        if config.onsite_S is None:
            for s, z in enumerate(self.layout.species):
                k = config.orbital_basis.n_orbitals(z)
                self._onsite_S[s, :k, :k] = np.eye(k)

    @property
    def basis(self) -> OrbitalBasis:
        return self.config.orbital_basis

    def check_numbers(self, numbers, mask=None) -> None:
        """Raise :class:`BasisError` if an element has no orbital basis in this model."""
        z = np.asarray(numbers).reshape(-1)
        m = np.ones_like(z, bool) if mask is None else np.asarray(mask, bool).reshape(-1)
        for v in sorted({int(x) for x in z[m]}):
            self.basis.for_element(v)

    def graph(self, crystal: Crystal, **kw) -> HGraph:
        """Neighbour graph within the cutoff, with reverse edges (host)."""
        self.check_numbers(crystal.numbers, crystal.mask)
        self.check_three_body(crystal)
        g = neighbor_graph(crystal, self.config.cutoff, **kw)
        rev = reverse_edges(g.senders, g.receivers, g.shifts, g.mask)
        return HGraph(senders=jnp.asarray(g.senders), receivers=jnp.asarray(g.receivers),
                      shifts=jnp.asarray(g.shifts), mask=jnp.asarray(g.mask), reverse=jnp.asarray(rev, jnp.int32))

    def check_three_body(self, crystal: Crystal) -> None:
        """Raise :class:`ConfigError` if an atom has more neighbours within ``three_body_cutoff``
        than the static capacity ``three_body_max`` (host; no-op when ``three_body`` is off)."""
        cfg = self.config
        if not (cfg.three_body or cfg.bond_env_k):
            return
        g = neighbor_graph(crystal, float(cfg.three_body_cutoff))
        m = np.asarray(g.mask)
        s_ = np.asarray(g.senders)[m]
        worst = int(np.bincount(s_).max()) if len(s_) else 0
        if worst > int(cfg.three_body_max):
            raise ConfigError(f"an atom has {worst} neighbours within three_body_cutoff = {cfg.three_body_cutoff} Å, "
                              f"more than model.three_body_max = {cfg.three_body_max}")

    @functools.cached_property
    def _init_fn(self):
        def init(key):
            species = jnp.zeros((2,), jnp.int32)
            vec = jnp.asarray([[1.0, 0.5, 0.2], [-1.0, -0.5, -0.2]], self.dtype)
            s = jnp.asarray([0, 1], jnp.int32)
            return self.module.init(key, species, vec, s, s[::-1], jnp.ones((2,), bool))
        return jax.jit(init)

    def init(self, key):
        return self._init_fn(key)

    def species_index(self, numbers):
        return jnp.maximum(jnp.asarray(self._table)[jnp.clip(jnp.asarray(numbers), 0, 127)], 0)

    def blocks(self, params, numbers, positions, lattice, mask, graph: HGraph) -> dict:
        """Predicted blocks of one structure (jittable).

        Returns:
            ``{"H_edge": [E,no,no], "S_edge": [E,no,no], "H_onsite": [n,no,no], "S_onsite": [n,no,no]}``
            [eV / dimensionless]; edge ``e`` is the block ``(senders[e], receivers[e], shifts[e])``;
            padding edges/atoms are zero. Hermitian by construction.
        """
        pos = jnp.asarray(positions).astype(self.dtype)
        vec = edge_vectors_from_positions(pos, jnp.asarray(lattice).astype(self.dtype), graph)
        sp = self.species_index(numbers)
        He, Ho, Se = self.module.apply(params, sp, vec, graph.senders, graph.receivers, graph.mask)
        if self.config.two_centre_k:
            He, Se, Ho = self._add_two_centre(He, Se, Ho, vec, sp, graph)
        He = 0.5 * (He + jnp.swapaxes(He[graph.reverse], -1, -2))
        Se = 0.5 * (Se + jnp.swapaxes(Se[graph.reverse], -1, -2))
        Ho = Ho + jnp.asarray(self._onsite_H, Ho.dtype)[sp]
        Ho = 0.5 * (Ho + jnp.swapaxes(Ho, -1, -2))
        So = jnp.asarray(self._onsite_S, Ho.dtype)[sp]
        em = graph.mask[:, None, None]
        am = jnp.asarray(mask)[:, None, None]
        return {"H_edge": jnp.where(em, He, 0.0), "S_edge": jnp.where(em, Se, 0.0),
                "H_onsite": jnp.where(am, Ho, 0.0), "S_onsite": jnp.where(am, So, 0.0)}

    def _add_two_centre(self, He, Se, Ho, vec, sp, graph):
        """Add the fitted two-centre baseline to the learned H edge blocks (S is the baseline) and
        the fitted crystal-field term to the learned on-site blocks."""
        lay, cfg = self.layout, self.config
        if cfg.two_centre_H is None or cfg.two_centre_S is None:
            raise ConfigError("model.two_centre_k > 0 but the two-centre coefficients were never fitted "
                              "(train the model, or fit them with difcrys.train.hamiltonian.fit_two_centre)")
        n = sp.shape[0]
        si = sp[jnp.clip(graph.senders, 0, n - 1)]
        sj = sp[jnp.clip(graph.receivers, 0, n - 1)]
        pair = si * len(lay.species) + sj
        valid = graph.mask & (safe_norm(vec) > 0)
        sets = [cfg.two_centre_H, cfg.two_centre_S]
        if cfg.two_centre_onsite is not None:
            sets.append(cfg.two_centre_onsite)
        G = _two_centre_eval(lay, cfg, sets, vec, pair, valid, He.dtype)
        He = He + _to_species_layout(lay, G[0], si, sj)
        if cfg.bond_env_k:
            if cfg.bond_env_H is None:
                raise ConfigError("model.bond_env_k > 0 but the bond crystal-field coefficients were never fitted")
            Gb = _bond_env_eval(lay, cfg, cfg.bond_env_H, vec, pair, valid, graph.senders, graph.reverse, n, He.dtype)
            He = He + _to_species_layout(lay, Gb, si, sj)
        Se = _to_species_layout(lay, G[1], si, sj)
        if cfg.two_centre_onsite is not None:  # crystal field: both shells on the sender atom
            cf = _to_species_layout(lay, G[2], si, si)
            Ho = Ho + jax.ops.segment_sum(cf, jnp.clip(graph.senders, 0, n), num_segments=n + 1)[:n]
        return He, Se, Ho

    def predict_operator(self, params, crystal: Crystal, graph: HGraph | None = None, jit: bool = True):
        """Host helper: predicted :class:`difcrys.tb.TBOperator` of a single structure."""
        from difcrys.tb.operators import TBOperator

        if graph is None:
            graph = self.graph(crystal)
        fn = _jit_blocks(self) if jit else functools.partial(self.blocks)
        out = fn(params, jnp.asarray(crystal.numbers), jnp.asarray(crystal.positions), jnp.asarray(crystal.lattice),
                 jnp.asarray(crystal.mask), graph)
        out = {k: np.asarray(v, np.float64) for k, v in out.items()}
        m = np.asarray(graph.mask)
        n = len(np.asarray(crystal.numbers))
        pairs = np.concatenate([np.stack([np.arange(n), np.arange(n)], 1),
                                np.stack([np.asarray(graph.senders)[m], np.asarray(graph.receivers)[m]], 1)])
        shifts = np.concatenate([np.zeros((n, 3), np.int64), np.asarray(graph.shifts)[m]])
        H = np.concatenate([out["H_onsite"], out["H_edge"][m]])
        S = np.concatenate([out["S_onsite"], out["S_edge"][m]])
        no = self.basis.orbitals_per_atom(crystal.numbers).max()
        crystal_np = Crystal(numbers=np.asarray(crystal.numbers), frac=np.asarray(crystal.frac, float),
                             lattice=np.asarray(crystal.lattice, float), mask=np.asarray(crystal.mask))
        return TBOperator(crystal=crystal_np, basis=self.basis, pairs=pairs, shifts=shifts, H=H[:, :no, :no],
                          S=S[:, :no, :no], meta={"source": "HamiltonianModel"})

    def predict_operator_tiled(self, params, crystal: Crystal, tile: float = 20.0, progress: bool = False):
        """Predicted :class:`difcrys.tb.TBOperator` of a large periodic structure with bounded memory.

        The home cell is cut into tiles of about ``tile`` Å along each periodic lattice direction
        longer than ``2 tile``. Each tile's atoms ("core") are predicted inside a finite cluster
        made of all periodic images within the receptive field ``(num_layers + 1) · r_c`` of
        the core (node features after ``num_layers`` layers depend on atoms within
        ``num_layers · r_c``; an edge block on both end atoms' features), placed in a box with no
        periodic images in reach. Core blocks are therefore identical to those of
        :meth:`predict_operator` (up to floating-point summation order), while memory is set by
        the cluster size, and time stays linear in the number of atoms. All clusters are padded
        to one shape (one compilation).
        """
        from scipy.spatial import cKDTree

        from difcrys.tb.operators import TBOperator

        self.check_numbers(crystal.numbers, crystal.mask)
        self.check_three_body(crystal)
        cfg = self.config
        rc = float(cfg.cutoff)
        halo = (int(cfg.num_layers) + 1) * rc
        L = np.asarray(crystal.lattice, float)
        frac = np.asarray(crystal.frac, float)
        num = np.asarray(crystal.numbers)
        n = len(num)
        pos = frac @ L
        heights = 1.0 / np.linalg.norm(np.linalg.inv(L).T, axis=1)  # plane spacings
        ntile = np.array([max(1, int(h // tile)) if h > 2 * tile else 1 for h in heights])
        reach = np.ceil((halo + tile * 1.5) / heights).astype(int) + 1
        shifts = np.array(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")).reshape(3, -1).T
        tid = np.floor(np.mod(frac, 1.0) * ntile).astype(int) % ntile
        tile_index = (tid[:, 0] * ntile[1] + tid[:, 1]) * ntile[2] + tid[:, 2]
        clusters = []
        for t in np.unique(tile_index):
            core = np.nonzero(tile_index == t)[0]
            tree = cKDTree(pos[core])
            sel_i, sel_S = [], []
            for S in shifts:
                img = pos + S @ L
                d, _ = tree.query(img, distance_upper_bound=halo)
                ok = np.isfinite(d)
                if not np.any(S):
                    ok[core] = False  # cores go first
                sel_i.append(np.nonzero(ok)[0])
                sel_S.append(np.repeat(S[None], ok.sum(), 0))
            idx = np.concatenate([core] + sel_i)
            Ssel = np.concatenate([np.zeros((len(core), 3), int)] + sel_S)
            clusters.append((core, idx, Ssel))
        n_max = max(len(c[1]) for c in clusters)
        crystals, graphs = [], []
        for core, idx, Ssel in clusters:
            p = pos[idx] + Ssel @ L
            lo = p.min(0) - rc - 1.0
            box = np.diag(np.maximum(p.max(0) - lo + rc + 1.0, 3 * rc))
            cc = Crystal(numbers=num[idx], frac=(p - lo) @ np.linalg.inv(box), lattice=box,
                         mask=np.ones(len(idx), bool))
            crystals.append(cc)
            graphs.append(neighbor_graph(cc, rc))
        E_max = max(int(np.asarray(g.mask).sum()) for g in graphs)
        fn = _jit_blocks(self)
        pairs, bshifts, Hs, Ss = [], [], [], []
        for k, ((core, idx, Ssel), cc, g) in enumerate(zip(clusters, crystals, graphs)):
            m = np.asarray(g.mask)
            s_, r_, sh_ = (np.asarray(x)[m] for x in (g.senders, g.receivers, g.shifts))
            if np.any(sh_):
                raise ConfigError("cluster box too small: an edge crosses its boundary")
            E = len(s_)
            pad = E_max - E
            rev = reverse_edges(s_, r_, sh_, np.ones(E, bool))
            hg = HGraph(senders=jnp.asarray(np.concatenate([s_, np.full(pad, n_max)]).astype(np.int32)),
                        receivers=jnp.asarray(np.concatenate([r_, np.full(pad, n_max)]).astype(np.int32)),
                        shifts=jnp.zeros((E_max, 3), jnp.int32),
                        mask=jnp.asarray(np.concatenate([np.ones(E, bool), np.zeros(pad, bool)])),
                        reverse=jnp.asarray(np.concatenate([rev, np.arange(E, E_max)]).astype(np.int32)))
            na = len(idx)
            numbers = np.zeros(n_max, np.int64)
            numbers[:na] = cc.numbers
            pp = np.zeros((n_max, 3))
            pp[:na] = np.asarray(cc.frac) @ np.asarray(cc.lattice)
            out = fn(params, jnp.asarray(numbers), jnp.asarray(pp), jnp.asarray(cc.lattice),
                     jnp.asarray(np.arange(n_max) < na), hg)
            He, Se = np.asarray(out["H_edge"], np.float64)[:E], np.asarray(out["S_edge"], np.float64)[:E]
            nc = len(core)
            sel = s_ < nc
            pairs.append(np.stack([idx[s_[sel]], idx[r_[sel]]], 1))
            bshifts.append(Ssel[r_[sel]] - Ssel[s_[sel]])
            Hs.append(He[sel])
            Ss.append(Se[sel])
            pairs.append(np.stack([core, core], 1))
            bshifts.append(np.zeros((nc, 3), int))
            Hs.append(np.asarray(out["H_onsite"], np.float64)[:nc])
            Ss.append(np.asarray(out["S_onsite"], np.float64)[:nc])
            if progress:
                print(f"tile {k + 1}/{len(clusters)}: {nc} core atoms, cluster {len(idx)}, {E} edges", flush=True)
        no = int(self.basis.orbitals_per_atom(num).max())
        crystal_np = Crystal(numbers=num, frac=frac, lattice=L, mask=np.ones(n, bool))
        return TBOperator(crystal=crystal_np, basis=self.basis, pairs=np.concatenate(pairs),
                          shifts=np.concatenate(bshifts), H=np.concatenate(Hs)[:, :no, :no],
                          S=np.concatenate(Ss)[:, :no, :no],
                          meta={"source": "HamiltonianModel (tiled)", "n_tiles": len(clusters),
                                "cluster_atoms": n_max, "cluster_edges": E_max})

    def to_json(self) -> str:
        return json.dumps(self.config.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "HamiltonianModel":
        return cls(HamiltonianConfig.from_dict(json.loads(text)))


@functools.lru_cache(maxsize=8)
def _jit_blocks(model: HamiltonianModel):
    return jax.jit(model.blocks)
