"""Crystal Graph Convolutional Neural Network (CGCNN) for per-structure scalar properties.

Xie & Grossman, "Crystal Graph Convolutional Neural Networks for an Accurate and Interpretable
Prediction of Material Properties", Phys. Rev. Lett. 120, 145301 (2018).

Architecture (as in the paper and its reference implementation):

* **Nodes** ``v_i``: atom features from an element-property table (:func:`element_feature_table`),
  one-hot binned as in the paper's Table S2 (group, period, electronegativity, atomic radius,
  first ionisation energy, electron affinity, block, molar volume), linearly embedded to
  ``atom_fea_len``. The table is a documented *fixed* input, not a learned embedding. Because the
  features are ``p @ T`` for a one-hot ``p`` over elements, a *soft* type distribution ``p``
  (``type_probs``) gives differentiable predictions w.r.t. atom-type probabilities.
* **Edges**: the 12 nearest periodic neighbours of each atom (:func:`property_graph`), with the
  distance expanded in Gaussians ``e_k = exp(-(d - μ_k)² / σ²)``, ``μ_k = 0, 0.2, …, 8 Å``,
  ``σ = 0.2 Å`` (paper / reference code defaults).
* **Convolution** (paper eq. 5, with the batch normalisation of the reference code): with
  ``z_ij = v_i ⊕ v_j ⊕ e_ij``,

  .. math::  v_i \\leftarrow g\\Big(v_i + \\mathrm{BN}\\big(\\sum_j \\sigma(z_{ij} W_f + b_f)
             \\odot g(z_{ij} W_s + b_s)\\big)\\Big),

  where ``[z W_f + b_f, z W_s + b_s]`` is one dense layer followed by a batch norm over edges,
  ``σ`` the logistic sigmoid and ``g`` the softplus.
* **Pooling**: mean over the atoms of each structure, then ``softplus → dense(h_fea_len) →
  softplus → … → dense(1)``.

Graph choice and cell invariance: a strict 12-NN list is ill-defined when the 12th and 13th
neighbours are equidistant (the common case in high-symmetry cells: the 12-NN set of an atom in
a supercell can pick different, equally distant atoms of different species than in the primitive
cell). :func:`property_graph` therefore defaults to ``mode="knn_shell"``: the 12 nearest neighbours
*plus every neighbour within ``shell_tol`` (1e-3 Å) of the 12th distance* (the shell is completed).
This graph is identical, atom by atom, for a primitive cell and any supercell, so predictions are
exactly cell-invariant; for structures without ties it is the paper's 12-NN graph.
``mode="knn"`` gives the strict 12-NN graph of :func:`difcrys.graph.knn_graph` (ties broken by
index). The ``knn_shell`` graph is built on the host by a NumPy periodic-image search
(:func:`_shell_edges_numpy`, no per-shape compilation); it equals the JAX search of
:mod:`difcrys.graph` edge for edge (tested).

Precision: parameters and activations are float32 by default (``dtype``); pass
``dtype="float64"`` e.g. for finite-difference tests. Edge geometry is recomputed from the
crystal with :func:`difcrys.graph.edge_vectors`, so predictions are differentiable w.r.t.
``crystal.frac`` and ``crystal.lattice``.

Models follow the difcrys pattern ``init(key) -> variables``,
``apply(variables, crystal, graph, train=False) -> (prediction [B], new_state)`` where
``variables = {"params": ..., "state": ...}`` (``state`` holds batch-norm running statistics).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal
from difcrys.errors import ConfigError, ElementError, StructureError
from difcrys.graph import Graph, edge_lengths, knn_graph, neighbor_graph

__all__ = [
    "MAX_Z",
    "CGCNNConfig",
    "CGCNN",
    "element_feature_table",
    "check_elements",
    "atom_features",
    "property_graph",
    "GraphData",
    "featurize",
    "flatten_batch",
    "gaussian_expansion",
]

#: Largest atomic number in the element-feature table (H … Fm, as the CGCNN ``atom_init.json``).
MAX_Z = 100


# ------------------------------------------------------------------------------ element table
def _onehot(value, edges):
    """One-hot over bins ``[edges[k], edges[k+1])`` (clipped); zeros for a missing value."""
    out = np.zeros(len(edges) - 1)
    if value is None or not np.isfinite(value):
        return out
    k = int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(edges) - 2))
    out[k] = 1.0
    return out


@functools.lru_cache(maxsize=1)
def element_feature_table() -> np.ndarray:
    """The ``[MAX_Z + 1, F]`` table of one-hot binned element properties (row 0: padding, zeros).

    Properties (pymatgen's ``periodic_table.json`` data), following the feature list of Xie &
    Grossman 2018, Table S2 (the bins are ours; the values come from pymatgen, not from the CGCNN
    file):

    =====================  =========  ========================================
    property               bins       range
    =====================  =========  ========================================
    group                  18         1 … 18 (one-hot; lanthanides/actinides: 3)
    period                 7          1 … 7
    electronegativity      10         0.5 … 4.0 (Pauling)
    atomic radius          10         0.25 … 2.6 Å (empirical, pymatgen)
    first ionisation en.   10         log-spaced 3.5 … 25 eV
    electron affinity      10         −1 … 3.7 eV
    block                  4          s, p, d, f
    molar volume           10         log-spaced 4 … 75 cm³/mol
    =====================  =========  ========================================

    A missing value (e.g. noble-gas electronegativity) leaves its block all zero. ``F = 79``.
    """
    from pymatgen.core.periodic_table import Element

    specs = [
        ("group", np.arange(0.5, 19.5, 1.0)),
        ("row", np.arange(0.5, 8.5, 1.0)),
        ("X", np.linspace(0.5, 4.0, 11)),
        ("atomic_radius", np.linspace(0.25, 2.6, 11)),
        ("ionization_energy", np.geomspace(3.5, 25.0, 11)),
        ("electron_affinity", np.linspace(-1.0, 3.7, 11)),
        ("molar_volume", np.geomspace(4.0, 75.0, 11)),
    ]
    rows = [None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, MAX_Z + 1):
            el = Element.from_Z(z)
            feats = []
            for name, edges in specs:
                try:
                    v = getattr(el, name)
                    v = None if v is None else float(v)
                except Exception:  # pymatgen raises for some missing data
                    v = None
                feats.append(_onehot(v, edges))
            blk = np.zeros(4)
            blk["spdf".index(el.block)] = 1.0
            feats.insert(6, blk)
            rows.append(np.concatenate(feats))
    n_feat = len(rows[1])
    rows[0] = np.zeros(n_feat)
    return np.stack(rows)


def check_elements(numbers, mask=None) -> None:
    """Raise :class:`~difcrys.errors.ElementError` if a real atom is outside the feature table.

    Args:
        numbers: ``[..., n]`` atomic numbers.
        mask: ``[..., n]`` bool, real atoms (default all).
    """
    z = np.asarray(numbers)
    m = np.ones(z.shape, bool) if mask is None else np.asarray(mask, bool)
    bad = m & ((z < 1) | (z > MAX_Z))
    if bad.any():
        vals = sorted(set(int(v) for v in z[bad]))
        raise ElementError(
            f"atomic number(s) {vals} not in the CGCNN element-feature table (Z = 1 … {MAX_Z}, "
            "H … Fm); remove these atoms or use a model with a learned embedding")


def atom_features(numbers=None, type_probs=None, dtype=jnp.float32):
    """Element features ``[..., n, F]``: rows of :func:`element_feature_table` or ``p @ T``.

    Args:
        numbers: ``[..., n]`` atomic numbers (0 for padding).
        type_probs: ``[..., n, MAX_Z]`` type probabilities over Z = 1 … MAX_Z (soft types; the
            features are then linear, hence differentiable, in ``type_probs``). Overrides
            ``numbers``.
    """
    table = jnp.asarray(element_feature_table(), dtype)
    if type_probs is not None:
        tp = jnp.asarray(type_probs)
        if tp.shape[-1] != MAX_Z:
            raise ConfigError(f"type_probs must have {MAX_Z} columns (Z = 1 … {MAX_Z}), got {tp.shape[-1]}")
        return tp.astype(dtype) @ table[1:]
    return table[jnp.clip(jnp.asarray(numbers), 0, MAX_Z)]


def gaussian_expansion(d, dmin: float = 0.0, dmax: float = 8.0, step: float = 0.2, var: float = 0.2):
    """Gaussian distance features ``exp(-(d - μ_k)² / var²)``, ``μ_k = dmin, dmin+step, …, dmax``.

    Args:
        d: ``[...]`` distances [Å].

    Returns:
        ``[..., K]`` with ``K = round((dmax - dmin) / step) + 1`` (41 for the defaults).
    """
    mu = jnp.linspace(dmin, dmax, int(round((dmax - dmin) / step)) + 1, dtype=d.dtype)
    return jnp.exp(-((d[..., None] - mu) ** 2) / var**2)


# ------------------------------------------------------------------------------------- graphs
def _as_list(crystals):
    if isinstance(crystals, Crystal):
        if np.ndim(crystals.frac) == 3:
            from difcrys.crystal import unbatch

            return unbatch(crystals)
        return [crystals]
    return list(crystals)


def property_graph(crystal: Crystal, k: int = 12, mode: str = "knn_shell", shell_tol: float = 1e-3):
    """Neighbour graph of one crystal for CGCNN-type models (host side).

    Args:
        crystal: a single Crystal.
        k: neighbours per atom (12 in CGCNN).
        mode: ``"knn_shell"`` (default): the ``k`` nearest neighbours plus all neighbours within
            ``shell_tol`` of the ``k``-th distance (supercell-consistent, see module docstring);
            ``"knn"``: strict ``k``-NN (:func:`difcrys.graph.knn_graph`).
        shell_tol: distance tolerance [Å] of the shell completion.

    Returns:
        ``(i, j, S)`` NumPy edge arrays (ASE convention: ``r = (X_j + S - X_i) L``).

    Raises:
        StructureError: unknown mode or invalid ``k``; CapacityError from the neighbour search.
    """
    if np.ndim(crystal.frac) != 2:
        raise StructureError("property_graph takes a single crystal; use featurize() for many")
    return _batch_edges([crystal.unpadded()], k, mode, shell_tol)[0]


def _shell_edges_numpy(crystal: Crystal, k: int, shell_tol: float):
    """``knn_shell`` edges of one unpadded crystal by a host-side (NumPy) periodic image search.

    Every image ``X_j + S`` with ``|S_a| <= ceil(r_c / h_a)`` (``h_a`` the spacing of the lattice
    planes normal to reciprocal vector ``a``) is enumerated, so that all neighbours within ``r_c``
    are found; ``r_c`` starts at the radius expected to hold ``2k`` atoms and grows ×1.5 until
    every atom's ``k``-th distance plus ``shell_tol`` lies inside it.
    """
    frac = np.asarray(crystal.frac, np.float64)
    lat = np.asarray(crystal.lattice, np.float64)
    n = frac.shape[0]
    vol = abs(np.linalg.det(lat))
    if not np.isfinite(vol) or vol < 1e-8:
        raise StructureError("singular lattice: cannot build a neighbour graph")
    h = 1.0 / np.linalg.norm(np.linalg.inv(lat).T, axis=1)  # interplanar spacings [Å]
    rc = (3.0 * 2 * k / (4.0 * math.pi * n / vol)) ** (1.0 / 3.0)
    for _ in range(40):
        m = np.ceil(rc / h).astype(int)
        S = np.stack(np.meshgrid(*[np.arange(-a, a + 1) for a in m], indexing="ij"), -1).reshape(-1, 3)
        disp = (frac[None, :, None, :] + S[None, None, :, :] - frac[:, None, None, :]) @ lat  # [i, j, S, 3]
        r = np.linalg.norm(disp, axis=-1)
        self_img = np.zeros_like(r, bool)
        s0 = int(np.flatnonzero((S == 0).all(1))[0])
        self_img[np.arange(n), np.arange(n), s0] = True
        r = np.where(self_img, np.inf, r).reshape(n, -1)
        inside = (r <= rc).sum(1)
        if inside.min() >= k:
            dk = np.partition(r, k - 1, axis=1)[:, k - 1]
            if np.all(dk + shell_tol <= rc):
                keep = r <= (dk + shell_tol)[:, None]
                i, flat = np.nonzero(keep)
                j, s = np.divmod(flat, len(S))
                rr = r[i, flat]
                order = np.lexsort((rr, i))
                return i[order].astype(np.int64), j[order].astype(np.int64), S[s[order]].astype(np.int64)
        rc *= 1.5
    raise StructureError(f"could not find {k} neighbours per atom (search radius {rc:.3g} Å)")


def _batch_edges(cl, k, mode, shell_tol, backend: str = "numpy"):
    """:func:`property_graph` of several crystals.

    ``knn_shell`` with ``backend="numpy"`` (default): host search per crystal
    (:func:`_shell_edges_numpy`, no compilation); otherwise batched (vmapped)
    :func:`difcrys.graph.knn_graph` / :func:`~difcrys.graph.neighbor_graph` (the two give the same
    edge sets; a test checks it).
    """
    from difcrys.crystal import batch

    if mode not in ("knn", "knn_shell"):
        raise ConfigError(f"graph mode must be 'knn' or 'knn_shell', got {mode!r}")
    if mode == "knn_shell" and backend == "numpy":
        return [_shell_edges_numpy(c, k, shell_tol) for c in cl]
    bc = batch(cl)
    g = knn_graph(bc, k)
    if mode == "knn":
        return [jax.tree_util.tree_map(lambda x: x[b], g).edges_numpy() for b in range(len(cl))]
    nb = bc.frac.shape[1]
    d = np.asarray(edge_lengths(bc, g)).reshape(len(cl), nb, k)
    dk = d[..., k - 1]
    real = np.asarray(bc.mask, bool)
    rc = float(dk[real].max()) + shell_tol + 1e-6
    rg = neighbor_graph(bc, rc)
    snd, rcv, sh, em = (np.asarray(x) for x in (rg.senders, rg.receivers, rg.shifts, rg.mask))
    frac, lat = np.asarray(bc.frac), np.asarray(bc.lattice)
    out = []
    for b in range(len(cl)):
        m = em[b]
        i, j, s = snd[b][m], rcv[b][m], sh[b][m]
        r = np.linalg.norm((frac[b][j] + s - frac[b][i]) @ lat[b], axis=-1)
        keep = r <= dk[b][i] + shell_tol
        i, j, s, r = i[keep], j[keep], s[keep], r[keep]
        order = np.lexsort((r, i))
        out.append((i[order], j[order], s[order]))
    return out


@dataclasses.dataclass
class GraphData:
    """Padded, batched crystals and their graphs as NumPy arrays (host side).

    Attributes:
        crystal: batched Crystal with NumPy leaves ``[N, n_max]`` …
        graph: batched :class:`~difcrys.graph.Graph` ``[N, E_max]``.
    """

    crystal: Crystal
    graph: Graph

    def __len__(self):
        return int(np.shape(self.crystal.numbers)[0])

    def take(self, idx) -> tuple[Crystal, Graph]:
        """Rows ``idx`` as JAX arrays (a batch)."""
        idx = np.asarray(idx)
        f = lambda x: jnp.asarray(np.asarray(x)[idx])
        return jax.tree_util.tree_map(f, self.crystal), jax.tree_util.tree_map(f, self.graph)


def featurize(crystals, k: int = 12, mode: str = "knn_shell", shell_tol: float = 1e-3,
              n_max: int | None = None, e_max: int | None = None, chunk: int = 256) -> GraphData:
    """Graphs of many crystals, padded to common sizes (atoms ``n_max``, edges ``E_max``).

    Args:
        crystals: list of Crystals (or a batched Crystal).
        k, mode, shell_tol: see :func:`property_graph`.
        n_max, e_max: pad to at least these sizes.
        chunk: structures per batched neighbour search (same graphs for any value).

    Raises:
        StructureError: empty input. ElementError: element outside the feature table.
    """
    cl = [c.unpadded() if hasattr(c, "unpadded") else c for c in _as_list(crystals)]
    if len(cl) == 0:
        raise StructureError("empty batch: no structures to featurize")
    for c in cl:
        check_elements(c.numbers, c.mask)
    edges = []
    for start in range(0, len(cl), chunk):
        edges.extend(_batch_edges(cl[start:start + chunk], k, mode, shell_tol))
    n_max = max(n_max or 0, max(c.frac.shape[0] for c in cl))
    e_max = max(e_max or 0, max(len(e[0]) for e in edges))
    N = len(cl)
    numbers = np.zeros((N, n_max), np.int32)
    frac = np.zeros((N, n_max, 3))
    lattice = np.zeros((N, 3, 3))
    mask = np.zeros((N, n_max), bool)
    snd = np.full((N, e_max), n_max, np.int32)
    rcv = np.full((N, e_max), n_max, np.int32)
    sh = np.zeros((N, e_max, 3), np.int32)
    em = np.zeros((N, e_max), bool)
    for b, (c, (i, j, s)) in enumerate(zip(cl, edges)):
        n = c.frac.shape[0]
        numbers[b, :n] = np.asarray(c.numbers)
        frac[b, :n] = np.asarray(c.frac)
        lattice[b] = np.asarray(c.lattice)
        mask[b, :n] = np.asarray(c.mask)
        m = len(i)
        snd[b, :m], rcv[b, :m], sh[b, :m], em[b, :m] = i, j, s, True
    crystal = Crystal(numbers=numbers, frac=frac, lattice=lattice, mask=mask)
    graph = Graph(senders=snd, receivers=rcv, shifts=sh, mask=em, n_edges=em.sum(1).astype(np.int32),
                  overflow=np.zeros(N, bool))
    return GraphData(crystal=crystal, graph=graph)


def flatten_batch(crystal: Crystal, graph: Graph, dtype):
    """Common geometry of a batch for message passing over ``B * n`` flattened atoms.

    Returns:
        dict with ``vec [B*E, 3]`` edge vectors [Å] (``dtype``), ``src``/``dst`` flattened atom
        indices of sender ``i`` / neighbour ``j`` (0 for padding edges), ``emask [B*E]``,
        ``amask [B*n]``, ``seg [B*n]`` structure index of each atom, ``B``, ``n``.
    """
    from difcrys.graph import edge_vectors

    if jnp.ndim(crystal.frac) == 2:  # single structure
        crystal = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], crystal)
        graph = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], graph)
    B, n = crystal.numbers.shape
    vec = edge_vectors(crystal, graph).astype(dtype)  # [B, E, 3]
    E = vec.shape[1]
    off = (jnp.arange(B) * n)[:, None]
    emask = graph.mask
    src = jnp.where(emask, graph.senders + off, 0).reshape(-1)
    dst = jnp.where(emask, graph.receivers + off, 0).reshape(-1)
    return dict(vec=vec.reshape(B * E, 3), src=src, dst=dst, emask=emask.reshape(-1),
                amask=crystal.mask.reshape(-1), seg=jnp.repeat(jnp.arange(B), n), B=B, n=n,
                numbers=crystal.numbers.reshape(-1))


def _masked_mean_pool(x, amask, seg, B):
    w = amask.astype(x.dtype)
    s = jax.ops.segment_sum(x * w[:, None], seg, num_segments=B)
    cnt = jax.ops.segment_sum(w, seg, num_segments=B)
    return s / jnp.maximum(cnt, 1.0)[:, None]


# -------------------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class CGCNNConfig:
    """Hyper-parameters (defaults: the reference implementation's defaults).

    Attributes:
        atom_fea_len: node feature width (64).
        n_conv: number of convolutions (3).
        h_fea_len: hidden width after pooling (128).
        n_h: number of hidden layers after pooling (1).
        rbf_dmax, rbf_step, rbf_var: Gaussian expansion (8 Å, 0.2 Å, 0.2 Å).
        bn_momentum: running-statistics momentum of the batch norms (0.1 as PyTorch).
        dtype: "float32" (default) or "float64".
    """

    atom_fea_len: int = 64
    n_conv: int = 3
    h_fea_len: int = 128
    n_h: int = 1
    rbf_dmax: float = 8.0
    rbf_step: float = 0.2
    rbf_var: float = 0.2
    bn_momentum: float = 0.1
    dtype: str = "float32"

    def __post_init__(self):
        for f in ("atom_fea_len", "n_conv", "h_fea_len", "n_h"):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"CGCNNConfig.{f} must be a positive integer, got {v!r}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")


def _dense_init(key, n_in, n_out, dtype):
    # PyTorch nn.Linear default init (uniform ±1/sqrt(n_in)), as in the reference code.
    k1, k2 = jax.random.split(key)
    lim = 1.0 / math.sqrt(n_in)
    return {"w": jax.random.uniform(k1, (n_in, n_out), dtype, -lim, lim),
            "b": jax.random.uniform(k2, (n_out,), dtype, -lim, lim)}


def _dense(p, x):
    return x @ p["w"] + p["b"]


def _batch_norm(p, st, x, mask, train, momentum, eps=1e-5):
    """Batch norm over the rows of ``x`` where ``mask`` (train: batch statistics; eval: running)."""
    if train:
        w = mask.astype(x.dtype)[:, None]
        cnt = jnp.maximum(w.sum(), 1.0)
        mean = (x * w).sum(0) / cnt
        var = (((x - mean) ** 2) * w).sum(0) / cnt
        new = {"mean": (1 - momentum) * st["mean"] + momentum * jax.lax.stop_gradient(mean),
               "var": (1 - momentum) * st["var"] + momentum * jax.lax.stop_gradient(var * cnt / jnp.maximum(cnt - 1, 1))}
    else:
        mean, var, new = st["mean"], st["var"], st
    y = (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]
    return y, new


def _bn_init(n, dtype):
    return ({"scale": jnp.ones((n,), dtype), "bias": jnp.zeros((n,), dtype)},
            {"mean": jnp.zeros((n,), dtype), "var": jnp.ones((n,), dtype)})


class CGCNN:
    """CGCNN regressor of one scalar per structure (see the module docstring).

    Example::

        model = CGCNN(CGCNNConfig())
        variables = model.init(jax.random.PRNGKey(0))
        data = featurize(crystals)
        crystal, graph = data.take(np.arange(len(data)))
        y, _ = model.apply(variables, crystal, graph)          # [B], eval mode
    """

    def __init__(self, config: CGCNNConfig | None = None, **kw):
        self.config = config if config is not None else CGCNNConfig(**kw)
        self.dtype = jnp.dtype(self.config.dtype)
        self.n_rbf = int(round(self.config.rbf_dmax / self.config.rbf_step)) + 1

    def init(self, key, *_):
        """Parameters and batch-norm state: ``{"params": ..., "state": ...}``."""
        c, dt = self.config, self.dtype
        n_feat = element_feature_table().shape[1]
        keys = jax.random.split(key, 3 + c.n_conv + c.n_h)
        params = {"embed": _dense_init(keys[0], n_feat, c.atom_fea_len, dt), "conv": [], "hidden": []}
        state = {"conv": []}
        for t in range(c.n_conv):
            bn1p, bn1s = _bn_init(2 * c.atom_fea_len, dt)
            bn2p, bn2s = _bn_init(c.atom_fea_len, dt)
            params["conv"].append({"full": _dense_init(keys[1 + t], 2 * c.atom_fea_len + self.n_rbf,
                                                       2 * c.atom_fea_len, dt), "bn1": bn1p, "bn2": bn2p})
            state["conv"].append({"bn1": bn1s, "bn2": bn2s})
        width = c.atom_fea_len
        for t in range(c.n_h):
            params["hidden"].append(_dense_init(keys[1 + c.n_conv + t], width, c.h_fea_len, dt))
            width = c.h_fea_len
        params["out"] = _dense_init(keys[-1], width, 1, dt)
        return {"params": params, "state": state}

    def apply(self, variables, crystal: Crystal, graph: Graph, *, train: bool = False, type_probs=None):
        """Predictions ``[B]`` (normalised units of the training target) and the new state.

        Args:
            variables: ``{"params", "state"}`` from :meth:`init` / training.
            crystal: batched (or single) Crystal, padded.
            graph: its batched Graph (e.g. from :func:`featurize`).
            train: use batch statistics in the batch norms (and return updated running stats).
            type_probs: optional ``[B, n, MAX_Z]`` soft atom types (replace ``crystal.numbers``).

        Returns:
            ``(y [B], new_state)``.
        """
        c, dt = self.config, self.dtype
        p, st = variables["params"], variables["state"]
        if type_probs is not None and jnp.shape(type_probs)[-1] != MAX_Z:  # fail before any work
            raise ConfigError(f"type_probs must have {MAX_Z} columns (Z = 1 … {MAX_Z}), got {jnp.shape(type_probs)[-1]}")
        g = flatten_batch(crystal, graph, dt)
        if type_probs is not None:
            tp = jnp.asarray(type_probs)
            x = atom_features(type_probs=tp.reshape(-1, tp.shape[-1]), dtype=dt)
        else:
            x = atom_features(g["numbers"], dtype=dt)
        v = _dense(p["embed"], x)
        from difcrys.graph import safe_norm

        d = safe_norm(g["vec"])
        e = gaussian_expansion(d, 0.0, c.rbf_dmax, c.rbf_step, c.rbf_var)
        emask, amask = g["emask"], g["amask"]
        ef = emask.astype(dt)[:, None]
        n_atoms = v.shape[0]
        new_state = {"conv": []}
        for cp, cs in zip(p["conv"], st["conv"]):
            z = jnp.concatenate([v[g["src"]], v[g["dst"]], e], axis=-1)
            h = _dense(cp["full"], z)
            h, s1 = _batch_norm(cp["bn1"], cs["bn1"], h, emask, train, c.bn_momentum)
            filt, core = jnp.split(h, 2, axis=-1)
            m = jax.nn.sigmoid(filt) * jax.nn.softplus(core) * ef
            agg = jax.ops.segment_sum(m, g["src"], num_segments=n_atoms)
            agg, s2 = _batch_norm(cp["bn2"], cs["bn2"], agg, amask, train, c.bn_momentum)
            v = jax.nn.softplus(v + agg)
            new_state["conv"].append({"bn1": s1, "bn2": s2})
        crys = _masked_mean_pool(v, amask, g["seg"], g["B"])
        h = jax.nn.softplus(crys)
        for hp in p["hidden"]:
            h = jax.nn.softplus(_dense(hp, h))
        y = _dense(p["out"], h)[:, 0]
        return y, new_state
