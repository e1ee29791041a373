"""Training of the Hamiltonian network (``difcrys train CONFIG.yaml`` with ``task: hamiltonian``).

Data: a list of :class:`difcrys.tb.TBOperator` (``.npz`` files written by
``experiments/deeph/generate.py`` or :meth:`TBOperator.to_npz`, or a DeePTB HDF5 folder such as
the ABACUS Si64 set). Each structure's targets are its blocks on the model's neighbour graph
(edges within the cutoff, both directions) and its on-site blocks. Loss:

    L = w_H · mean over real orbital entries of (H_pred − H_DFT)^2 [eV^2]
      + w_S · mean of (S_pred − S_DFT)^2,

evaluated with the shared :func:`difcrys.train.loop.fit` (optax, EMA, plateau decay, orbax
checkpoints with resume). Metrics: block mean absolute errors ``mae_H_meV`` (edges and on-site,
real orbitals only) and ``mae_S``.

Config sections (YAML)::

    task: hamiltonian
    name: graphene
    data:
      train: {glob: experiments/deeph/data/graphene_0*.npz}      # or {deeptb: PATH, n_electrons: N,
                                                                 #     kpoints: [[...]]} / {files: [...]}
      val_fraction: 0.15                                         # or val: {...}
      test: {held_out: {glob: ...}}                              # optional named test sets
      band_window_ev: 1.0                                        # |E − E_F| window of band metrics
    model: {basis: {C: [0, 1]}, cutoff: 6.0, ...}                # HamiltonianConfig
    loss: {H: 1.0, S: 1.0, bands: 0.0}                           # HLossConfig (band loss optional)
    train: {...}                                                 # TrainConfig
    finetune: {from_run: RUN_DIR}                                # optional: start from a trained run
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import json
import os
import time

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from difcrys.errors import ConfigError
from difcrys.nn.hamiltonian import HamiltonianConfig, HamiltonianModel
from difcrys.tb.operators import TBOperator
from difcrys.train.config import dataclass_from_dict, dump_yaml, load_yaml
from difcrys.train import checkpoint as ckpt
from difcrys.train.loop import TrainConfig, fit

__all__ = ["HLossConfig", "load_operators", "HamiltonianTask", "train_hamiltonian", "load_run",
           "block_errors", "band_errors", "pool_band_errors", "fit_two_centre", "fit_statistics"]


@dataclasses.dataclass(frozen=True)
class HLossConfig:
    """Loss weights and band-loss settings.

    Attributes:
        H: weight of the block loss on Hamiltonian entries [1/eV^2].
        S: weight of the block loss on overlap entries.
        bands: weight of the band-energy loss [1/eV^2] (0: off): mean squared difference between
            the eigenvalues of the predicted ``H(k) c = ε S(k) c`` and the reference band
            energies, over the bands within ``band_window_ev`` of the reference Fermi level at
            ``band_kpoints`` (index-matched, ascending). Differentiated with the Hellmann–Feynman
            derivative (:func:`difcrys.tb.solve.generalized_eigvalsh`).
        band_kpoints: fractional k-points of the band loss; ``None``: the DFT mesh stored with
            each structure (``kpts_mesh``, reference energies ``eig_mesh``), else Γ. With explicit
            k-points the reference energies are the eigenvalues of the structure's own H and S.
        band_window_ev: half-width of the energy window of the band loss [eV].
        onsite: extra factor on the on-site entries of the H block loss (1: all entries alike).
            On-site blocks are a few per cent of the entries, but their errors move whole bands
            (an atom's p_z level enters every π state on it).
        select_by: validation metric that picks the best checkpoint and drives the LR plateau and
            early stopping when there is a band loss: ``"bands"`` (band MAE) or ``"blocks"``
            (block MAE, which is less noisy on a handful of validation cells).
        gauge: make the H loss invariant to a constant potential offset per structure. In a
            periodic DFT calculation the zero of the potential is the cell average (the G = 0
            term is dropped), so each structure's H carries an offset ``c·S`` that depends on the
            whole cell (its charge moments over the cell volume), which no local model can know.
            With ``gauge`` the block loss uses ``ΔH − c*·S`` with ``c* = <ΔH, S>/<S, S>`` per
            structure (the best offset, closed form), and the band loss subtracts each
            structure's mean band difference. Only offset-invariant quantities are then learned:
            band energies relative to the Fermi level, band widths, gaps. Validation and test
            report both the raw and the offset-removed errors.
    """

    H: float = 1.0
    S: float = 1.0
    bands: float = 0.0
    band_kpoints: list | None = None
    band_window_ev: float = 2.0
    onsite: float = 1.0
    select_by: str = "bands"
    gauge: bool = False


# ------------------------------------------------------------------------------------ data
def _resolve(path: str, base: str | None) -> str:
    if path.startswith("shared:"):
        from difcrys.data.shared import shared_data_dir

        return str(shared_data_dir() / path[len("shared:"):])
    if not os.path.isabs(path) and base and not os.path.exists(path):
        cand = os.path.join(base, path)
        if os.path.exists(cand):
            return cand
    return path


def load_operators(spec, base: str | None = None) -> list[TBOperator]:
    """Read a data spec: ``{glob: PATTERN or [PATTERNS]}``, ``{files: [...]}``, ``{deeptb: FOLDER}`` or a path.

    Raises:
        ConfigError: unknown spec or nothing matched.
    """
    if isinstance(spec, str):
        spec = {"deeptb": spec} if os.path.isdir(_resolve(spec, base)) else {"files": [spec]}
    if not isinstance(spec, dict):
        raise ConfigError(f"data spec must be a mapping or a path, got {spec!r}")
    spec = {k: v for k, v in spec.items() if v is not None}  # a variant may null out a base key
    if len({"deeptb", "glob", "files"} & set(spec)) > 1:
        raise ConfigError(f"data spec {spec} names more than one of deeptb, glob, files")
    if "deeptb" in spec:
        from difcrys.data.hamiltonian import read_hamiltonian_h5

        hd = read_hamiltonian_h5(_resolve(spec["deeptb"], base))
        op = TBOperator.from_hamiltonian_data(hd, p_order=spec.get("p_order", "yzx"))
        if "n_electrons" in spec:  # places the Fermi level of band metrics and the band loss
            op.meta["n_electrons"] = float(spec["n_electrons"])
        if "kpoints" in spec:  # fractional k-points of the band metrics
            op.meta["kpoints"] = np.atleast_2d(np.asarray(spec["kpoints"], float))
        return [op]
    if "glob" in spec:
        files = []
        for pat in [spec["glob"]] if isinstance(spec["glob"], str) else list(spec["glob"]):
            found = sorted(_glob.glob(_resolve(pat, base)))
            if not found and base:
                found = sorted(_glob.glob(os.path.join(base, pat)))
            files += [f for f in found if f not in files]
    elif "files" in spec:
        files = [_resolve(f, base) for f in spec["files"]]
    else:
        raise ConfigError(f"data spec {spec} needs one of glob, files, deeptb")
    if "max_structures" in spec:
        files = files[: int(spec["max_structures"])]
    if not files:
        raise ConfigError(f"data spec {spec} matched no files")
    out = []
    for f in files:
        op = TBOperator.from_npz(f)
        op.meta["file"] = f
        out.append(op)
    return out


def _targets(model: HamiltonianModel, op: TBOperator, n_max: int, e_max: int | None = None) -> dict:
    """Padded per-structure arrays: inputs, graph and target blocks on the graph edges."""
    g = model.graph(op.crystal)
    m = np.asarray(g.mask)
    E = int(m.sum()) if e_max is None else e_max
    s, r, sh = (np.asarray(x)[m] for x in (g.senders, g.receivers, g.shifts))
    rev = np.asarray(g.reverse)[m]
    if len(s) > E:
        raise ConfigError(f"edge capacity {E} < {len(s)}")
    key = {(int(i), int(j), tuple(int(x) for x in R)): p for p, ((i, j), R) in enumerate(zip(op.pairs, op.shifts))}
    no = model.layout.no
    ne = len(s)
    He, Se = np.zeros((ne, no, no)), np.zeros((ne, no, no))
    emask = np.zeros(ne, bool)
    tmask = np.zeros(ne, bool)
    for e, (i, j, R) in enumerate(zip(s, r, sh)):
        emask[e] = True
        p = key.get((int(i), int(j), tuple(int(x) for x in R)))
        if p is not None:
            He[e] = op.H[p][:no, :no]
            if op.S is not None:
                Se[e] = op.S[p][:no, :no]
            tmask[e] = True
    n = op.n_atoms
    Ho, So = np.zeros((n_max, no, no)), np.zeros((n_max, no, no))
    for i in range(n):
        p = key.get((i, i, (0, 0, 0)))
        if p is None:
            raise ConfigError(f"{op.meta.get('file', 'structure')}: no on-site block for atom {i}")
        Ho[i], Se_ = op.H[p][:no, :no], (op.S[p][:no, :no] if op.S is not None else np.eye(no))
        So[i] = Se_
    orb = np.zeros((n_max, no), bool)
    for i, k in enumerate(op.orbitals):
        orb[i, :k] = True
    pad_e = E - len(s)
    pad = lambda a, v=0: np.concatenate([a, np.full((pad_e,) + a.shape[1:], v, a.dtype)])  # noqa: E731
    numbers = np.zeros(n_max, np.int64)
    numbers[:n] = op.crystal.numbers
    pos = np.zeros((n_max, 3))
    pos[:n] = np.asarray(op.crystal.frac) @ np.asarray(op.crystal.lattice)
    amask = np.zeros(n_max, bool)
    amask[:n] = True
    return {"numbers": numbers, "positions": pos, "lattice": np.asarray(op.crystal.lattice, float), "mask": amask,
            "senders": pad(s.astype(np.int32), n_max), "receivers": pad(r.astype(np.int32), n_max),
            "shifts": pad(sh.astype(np.int32)), "edge_mask": pad(emask), "reverse": np.concatenate(
                [rev, np.arange(len(s), E)]).astype(np.int32),
            "H_edge": pad(He), "S_edge": pad(Se), "target_mask": pad(tmask), "H_onsite": Ho, "S_onsite": So,
            "orb_mask": orb}


def _hgraph(b):
    from difcrys.nn.hamiltonian import HGraph

    return HGraph(senders=b["senders"], receivers=b["receivers"], shifts=b["shifts"], mask=b["edge_mask"],
                  reverse=b["reverse"])


def _band_targets(op: TBOperator, loss: HLossConfig, n_max: int, no: int):
    """Reference band energies of one structure: ``(kpts [K,3], eig [K, n_max·no], mask)``."""
    from difcrys.tb.solve import eigenvalues, fermi_level

    if loss.band_kpoints is None and "eig_mesh" in op.meta:
        kp, e = np.asarray(op.meta["kpts_mesh"], float), np.asarray(op.meta["eig_mesh"], float)
        mu = float(op.meta.get("mu_ev", np.nan))
        if not np.isfinite(mu):
            mu = fermi_level(e, float(op.meta["n_electrons"]))
    else:
        kp = np.zeros((1, 3)) if loss.band_kpoints is None else np.atleast_2d(np.asarray(loss.band_kpoints, float))
        e = eigenvalues(op, kp)
        nel = op.meta.get("n_electrons")
        if nel is None:
            raise ConfigError(f"{op.meta.get('file', 'structure')}: the band loss needs the electron count "
                              "(n_electrons) to place the Fermi level")
        mu = fermi_level(e, float(nel))
    N = n_max * no
    nb = min(e.shape[1], N)
    eig = np.zeros((len(kp), N))
    eig[:, :nb] = e[:, :nb]
    mask = np.zeros((len(kp), N), bool)
    mask[:, :nb] = np.abs(e[:, :nb] - mu) < loss.band_window_ev
    return kp, eig, mask


def _bloch_dense(pred, b, kpts, name):
    """Dense Bloch matrices ``[K, n·no, n·no]`` of predicted blocks of one (padded) structure,
    by :func:`difcrys.tb.operators.bloch_sum` over the edge and on-site blocks; padding orbitals
    get ``S = 1`` and ``H = 10^3 eV`` on the diagonal (above every window)."""
    from difcrys.tb.operators import bloch_sum

    n, no = b["H_onsite"].shape[0], b["H_onsite"].shape[-1]
    atoms = jnp.arange(n, dtype=b["senders"].dtype)
    pairs = jnp.concatenate([jnp.stack([b["senders"], b["receivers"]], 1), jnp.stack([atoms, atoms], 1)])
    shifts = jnp.concatenate([b["shifts"], jnp.zeros((n, 3), b["shifts"].dtype)])
    blocks = jnp.concatenate([pred[f"{name}_edge"], pred[f"{name}_onsite"]])
    m = bloch_sum(blocks, pairs, shifts, kpts, n, jnp.arange(n * no))  # padding edges (index n) drop out
    valid = b["orb_mask"].reshape(-1)
    pad_diag = jnp.where(valid, 0.0, 1.0e3 if name == "H" else 1.0)
    return jnp.where(valid[:, None] & valid[None, :], m, 0.0) + jnp.diag(pad_diag)


class HamiltonianTask:
    """:class:`difcrys.train.loop.Task` for block regression (and optionally band energies)."""

    val_metric = "mae_H_meV"

    def __init__(self, model: HamiltonianModel, train, val, loss: HLossConfig, cfg: TrainConfig):
        self.model, self.loss_cfg, self.cfg = model, loss, cfg
        if loss.select_by not in ("bands", "blocks"):
            raise ConfigError(f"loss.select_by must be 'bands' or 'blocks', got {loss.select_by!r}")
        if loss.onsite < 0 or loss.H < 0 or loss.S < 0 or loss.bands < 0:
            raise ConfigError(f"loss weights must be >= 0, got H={loss.H}, S={loss.S}, bands={loss.bands}, "
                              f"onsite={loss.onsite}")
        ops = list(train) + list(val)
        self.n_max = max(op.n_atoms for op in ops)
        self.e_max = max(int(np.asarray(model.graph(op.crystal).mask).sum()) for op in ops)
        self.train = [_targets(model, op, self.n_max, self.e_max) for op in train]
        self.val = [_targets(model, op, self.n_max, self.e_max) for op in val]
        if loss.bands > 0:
            no = model.layout.no
            bt = [_band_targets(op, loss, self.n_max, no) for op in ops]
            nk = max(len(t[0]) for t in bt)
            for it, (kp, eig, msk) in zip(self.train + self.val, bt):
                pad = nk - len(kp)
                it["band_k"] = np.concatenate([kp, np.zeros((pad, 3))])
                it["band_e"] = np.concatenate([eig, np.zeros((pad,) + eig.shape[1:])])
                it["band_m"] = np.concatenate([msk, np.zeros((pad,) + msk.shape[1:], bool)])
        self._eval_fn = jax.jit(self._eval_errors)
        g = "_gauge" if loss.gauge else ""
        self.val_metric = f"mae_H{g}_meV"
        if loss.bands > 0:
            if loss.select_by == "bands":
                self.val_metric = f"mae_band{g}_meV"  # select the model that reproduces the bands best

    def _eval_errors(self, params, b):
        pred = self._predict(params, b)
        out = self._errors(pred, b)
        if self.loss_cfg.bands > 0:
            out["sse_band"], out["sae_band"], out["n_band"], out["sse_band_gauge"], out["sae_band_gauge"] = \
                self._band_sq(pred, b)
        return out

    init_params = None  # finetuning: start from these parameters (same architecture)

    def init(self, key):
        return self.model.init(key) if self.init_params is None else self.init_params

    def _stack(self, items):
        return {k: jnp.asarray(np.stack([it[k] for it in items])) for k in items[0]}

    def train_batches(self, epoch):
        rng = np.random.default_rng([self.cfg.seed, epoch])
        idx = rng.permutation(len(self.train))
        bs = min(self.cfg.batch_size, len(self.train))
        for a in range(0, len(idx) - bs + 1, bs):
            yield self._stack([self.train[i] for i in idx[a:a + bs]])

    def val_batches(self):
        bs = min(self.cfg.batch_size, max(len(self.val), 1))
        for a in range(0, len(self.val), bs):
            items = self.val[a:a + bs]
            while len(items) < bs:  # pad with repeats (masked out in metrics)
                items = items + [dict(items[0], mask=np.zeros_like(items[0]["mask"]),
                                      edge_mask=np.zeros_like(items[0]["edge_mask"]),
                                      target_mask=np.zeros_like(items[0]["target_mask"]),
                                      **({"band_m": np.zeros_like(items[0]["band_m"])} if "band_m" in items[0]
                                         else {}))]
            yield self._stack(items)

    def loss_weights(self, epoch):
        return {"H": self.loss_cfg.H, "S": self.loss_cfg.S, "bands": self.loss_cfg.bands, "onsite": self.loss_cfg.onsite}

    def _predict(self, params, b):
        def one(x):
            return self.model.blocks(params, x["numbers"], x["positions"], x["lattice"], x["mask"], _hgraph(x))
        return jax.vmap(one)(b)

    @staticmethod
    def _errors(pred, b):
        om = b["orb_mask"]
        em = (om[:, :, :, None] & om[:, :, None, :]) & b["mask"][:, :, None, None]
        si = jnp.clip(b["senders"], 0, om.shape[1] - 1)
        sj = jnp.clip(b["receivers"], 0, om.shape[1] - 1)
        oi = jnp.take_along_axis(om, si[..., None], axis=1)
        oj = jnp.take_along_axis(om, sj[..., None], axis=1)
        ee = (oi[..., :, None] & oj[..., None, :]) & b["target_mask"][..., None, None]
        out = {}
        for name in ("H", "S"):
            de = (pred[f"{name}_edge"] - b[f"{name}_edge"]) * ee
            do = (pred[f"{name}_onsite"] - b[f"{name}_onsite"]) * em
            cnt = jnp.sum(ee) + jnp.sum(em)
            out[f"sse_{name}"] = jnp.sum(de ** 2) + jnp.sum(do ** 2)
            out[f"sse_{name}_onsite"] = jnp.sum(do ** 2)
            out[f"sae_{name}"] = jnp.sum(jnp.abs(de)) + jnp.sum(jnp.abs(do))
            out[f"max_{name}"] = jnp.maximum(jnp.max(jnp.abs(de)), jnp.max(jnp.abs(do)))
            out["count"] = cnt
        # the same H errors with each structure's best constant potential offset c·S removed
        se, so = b["S_edge"] * ee, b["S_onsite"] * em
        dHe = (pred["H_edge"] - b["H_edge"]) * ee
        dHo = (pred["H_onsite"] - b["H_onsite"]) * em
        ax = lambda a: tuple(range(1, a.ndim))  # noqa: E731
        c = (jnp.sum(dHe * se, ax(se)) + jnp.sum(dHo * so, ax(so))) / jnp.maximum(
            jnp.sum(se ** 2, ax(se)) + jnp.sum(so ** 2, ax(so)), 1e-30)
        ge = dHe - c[:, None, None, None] * se
        go = dHo - c[:, None, None, None] * so
        out["sse_H_gauge"] = jnp.sum(ge ** 2) + jnp.sum(go ** 2)
        out["sse_H_gauge_onsite"] = jnp.sum(go ** 2)
        out["sae_H_gauge"] = jnp.sum(jnp.abs(ge)) + jnp.sum(jnp.abs(go))
        out["offset_H"] = c
        return out

    def _band_sq(self, pred, b):
        """Band errors of a batch: sum of squares [eV^2], sum of absolute values, count, and the
        sums of squares and absolute values with each structure's mean band offset removed."""
        from difcrys.tb.solve import generalized_eigvalsh

        def one(p, x):
            Hk = _bloch_dense(p, x, x["band_k"], "H")
            Sk = _bloch_dense(p, x, x["band_k"], "S")
            m = x["band_m"]
            d = (generalized_eigvalsh(Hk, Sk) - x["band_e"]) * m
            n = jnp.sum(m)
            dg = (d - jnp.sum(d) / jnp.maximum(n, 1.0)) * m
            return jnp.sum(d ** 2), jnp.sum(jnp.abs(d)), n, jnp.sum(dg ** 2), jnp.sum(jnp.abs(dg))

        sq, ab, n, sqg, abg = jax.vmap(one)(pred, b)
        return jnp.sum(sq), jnp.sum(ab), jnp.sum(n), jnp.sum(sqg), jnp.sum(abg)

    def loss(self, params, b, weights):
        pred = self._predict(params, b)
        e = self._errors(pred, b)
        c = jnp.maximum(e["count"], 1.0)
        g = "_gauge" if self.loss_cfg.gauge else ""
        sse_H = e[f"sse_H{g}"] + (weights["onsite"] - 1.0) * e[f"sse_H{g}_onsite"]
        loss = weights["H"] * sse_H / c + weights["S"] * e["sse_S"] / c
        aux = {"mae_H_meV": 1000.0 * e["sae_H"] / c, "mae_H_gauge_meV": 1000.0 * e["sae_H_gauge"] / c,
               "mae_S": e["sae_S"] / c}
        if self.loss_cfg.bands > 0:
            sq, ab, nb, sqg, abg = self._band_sq(pred, b)
            nb = jnp.maximum(nb, 1.0)
            loss = loss + weights["bands"] * (sqg if self.loss_cfg.gauge else sq) / nb
            aux["mae_band_meV"] = 1000.0 * ab / nb
            aux["mae_band_gauge_meV"] = 1000.0 * abg / nb
        return loss, aux

    def evaluate(self, params, batches) -> dict:
        tot = {"sae_H": 0.0, "sae_S": 0.0, "count": 0.0, "sse_H": 0.0, "max_H": 0.0, "max_S": 0.0,
               "sae_H_gauge": 0.0, "sse_H_gauge": 0.0}
        if self.loss_cfg.bands > 0:
            tot.update(sse_band=0.0, sae_band=0.0, n_band=0.0, sse_band_gauge=0.0, sae_band_gauge=0.0)
        for b in batches:
            e = self._eval_fn(params, b)
            for k in tot:
                tot[k] = max(tot[k], float(e[k])) if k.startswith("max") else tot[k] + float(e[k])
        c = max(tot["count"], 1.0)
        out = {"mae_H_meV": 1000.0 * tot["sae_H"] / c, "rmse_H_meV": 1000.0 * (tot["sse_H"] / c) ** 0.5,
               "max_H_meV": 1000.0 * tot["max_H"], "mae_S": tot["sae_S"] / c, "max_S": tot["max_S"],
               "n_entries": c, "mae_H_gauge_meV": 1000.0 * tot["sae_H_gauge"] / c,
               "rmse_H_gauge_meV": 1000.0 * (tot["sse_H_gauge"] / c) ** 0.5}
        if self.loss_cfg.bands > 0:
            nb = max(tot["n_band"], 1.0)
            out.update(mae_band_meV=1000.0 * tot["sae_band"] / nb, rmse_band_meV=1000.0 * (tot["sse_band"] / nb) ** 0.5,
                       mae_band_gauge_meV=1000.0 * tot["sae_band_gauge"] / nb,
                       rmse_band_gauge_meV=1000.0 * (tot["sse_band_gauge"] / nb) ** 0.5)
        return out


# ------------------------------------------------------------------------------------ statistics
def fit_two_centre(cfg: HamiltonianConfig, ops, ridge: float = 1e-9, onsite_mean=None):
    """Least-squares two-centre expansion of the edge blocks of ``ops`` (host, float64).

    Each edge block ``(i, j, R)`` with bond ``d`` (``0 < |d| < cutoff``) is modelled as
    ``B(d) = Σ_q f_{ab,q}(|d|) C^{l1 l2 L_q} Y^{L_q}(d̂)`` over the parity-allowed paths
    ``q`` of the two atoms' shells (the Slater–Koster form, equivariant by construction), with
    ``f_{ab,q}(r) = Σ_k c_{ab,q,k} φ_k(r)`` on the radial basis of
    :func:`difcrys.nn.hamiltonian.two_centre_radial`. The coefficients of each species pair and
    shell pair solve a ridge-regularised linear least-squares problem (ridge ``ridge`` times the
    mean diagonal of the normal matrix). For the overlap, which *is* a two-centre quantity, this
    is exact up to the radial resolution; for H it is the baseline the network corrects.

    With ``cfg.bond_env_k > 0`` the H blocks get, fitted jointly, the bond crystal field of
    ``HamiltonianConfig.bond_env_k`` (linear in its coefficients, like the rest).

    With ``onsite_mean`` (``[n_species, no, no]``, the species-mean on-site blocks), the on-site
    deviations ``H_ii − mean`` are fitted too, by the crystal-field sum
    ``Σ_{j ≠ i, r_ij < r_c} Σ_q g_{ab,q}(r_ij) C^{l1 l2 L_q} Y^{L_q}(r̂_ij)`` (both shells on atom i).

    Returns:
        dict with coefficient lists ``H``, ``S`` (and ``onsite``) of shape ``[n_species², n_paths, K]``,
        ``bond_env`` (``[n_species², n_paths, 2, bond_env_k, bond_env_kb]``, with the bond crystal
        field), and ``rms_H_residual`` (``rms_onsite_residual``) [eV]: the RMS of the entries the
        baseline does not explain.
    """
    from difcrys.nn.hamiltonian import _layout, two_centre_path_blocks, two_centre_radial

    lay = _layout(cfg)
    species = np.asarray(lay.species)
    nS, nP, K, no, nG = len(species), len(lay.edge_paths), int(cfg.two_centre_k), lay.no, lay.nG
    Ka, Kb = int(cfg.bond_env_k), int(cfg.bond_env_kb)
    nE = 2 * Ka * Kb if Ka else 0  # bond crystal-field columns per path
    rc = float(cfg.cutoff)
    groups = {"H": {}, "S": {}}  # (pair, slot a, slot b, paths) -> [ATA, ATy, yTy, count]
    ogroups = {}  # on-site: (species i, slot a, slot b) -> [ATA, ATy, yTy, count]
    for op in ops:
        d = op.bond_vectors()
        r = np.linalg.norm(d, axis=1)
        onsite = (op.pairs[:, 0] == op.pairs[:, 1]) & ~np.any(op.shifts, axis=1)
        sel = np.nonzero(~onsite & (r > 1e-8) & (r < rc))[0]
        if len(sel) == 0:
            continue
        sp = np.searchsorted(species, np.asarray(op.crystal.numbers))
        a, b = sp[op.pairs[sel, 0]], sp[op.pairs[sel, 1]]
        with jax.default_device(jax.devices("cpu")[0]):  # difcrys runs with jax_enable_x64
            T = {q: np.asarray(v) for q, v in two_centre_path_blocks(lay, jnp.asarray(d[sel], jnp.float64),
                                                                      jnp.float64).items()}
            phi = np.asarray(two_centre_radial(jnp.asarray(r[sel], jnp.float64), cfg))
            env = _bond_env_features(lay, cfg, op, sel, d, r) if Ka else None
        E = len(sel)
        if onsite_mean is not None:
            _accumulate_onsite(lay, op, sel, a, b, T, phi, np.asarray(onsite_mean, float), ogroups, K)
        tg = {}
        for name, blocks in (("H", op.H), ("S", op.S)):
            B = np.zeros((E, no, no))
            k = min(no, blocks.shape[1])
            B[:, :k, :k] = blocks[sel][:, :k, :k]
            G = np.zeros((E, nG + 1, nG + 1))
            ia, ib = lay.select[a], lay.select[b]
            G[np.arange(E)[:, None, None], ia[:, :, None], ib[:, None, :]] = B
            tg[name] = G
        for pa in range(nS):
            for pb in range(nS):
                m = (a == pa) & (b == pb)
                if not np.any(m):
                    continue
                for sa, sb, ra, rb, qs in _slot_pairs(lay, pa, pb):
                    X = np.concatenate([T[q][m][:, ra[:, None], rb[None, :], None] * phi[m][:, None, None, :]
                                        for q in qs], axis=-1).reshape(-1, len(qs) * K)
                    key = (pa * nS + pb, sa, sb, qs)
                    _accumulate(groups["S"], key, X, tg["S"][m][:, ra[:, None], rb[None, :]].reshape(-1, 1))
                    if Ka:
                        la, lb = lay.slots[sa], lay.slots[sb]
                        cols = []
                        for q in qs:
                            L = lay.edge_paths[q][2]
                            cg = np.asarray(e3nn.clebsch_gordan(la, lb, L)) * np.sqrt(2 * L + 1)
                            for side in (0, 1):
                                cols.append(np.einsum("ijc,eac,eb->eijab", cg, env[0][side][L][m],
                                                      env[1][m]).reshape(int(m.sum()) * len(ra) * len(rb), Ka * Kb))
                        X = np.concatenate([X] + cols, axis=1)
                    _accumulate(groups["H"], key, X, tg["H"][m][:, ra[:, None], rb[None, :]].reshape(-1, 1))
    cH, cS = np.zeros((nS * nS, nP, K)), np.zeros((nS * nS, nP, K))
    cE = np.zeros((nS * nS, nP, 2, Ka, Kb))
    for (pair, _, _, qs), g in groups["S"].items():
        c, _ = _ridge_solve(g, ridge)
        for t, q in enumerate(qs):
            cS[pair, q] = c[t * K:(t + 1) * K, 0]
    sse, cnt = 0.0, 0
    for (pair, _, _, qs), g in groups["H"].items():
        c, sse_g = _ridge_solve(g, ridge)
        for t, q in enumerate(qs):
            cH[pair, q] = c[t * K:(t + 1) * K, 0]
            if Ka:
                o = len(qs) * K + t * nE
                cE[pair, q] = c[o:o + nE, 0].reshape(2, Ka, Kb)
        sse += sse_g[0]  # the rms sets the scale of the learned H corrections
        cnt += g[3]
    out = {"H": cH.tolist(), "S": cS.tolist(), "rms_H_residual": float(np.sqrt(sse / max(cnt, 1)))}
    if Ka:
        out["bond_env"] = cE.tolist()
    if onsite_mean is not None:
        cO = np.zeros((nS * nS, nP, K))
        sse, cnt = 0.0, 0
        for (si, _, _, qs), g in ogroups.items():
            c, sse_g = _ridge_solve(g, ridge)
            for sj in range(nS):
                for t, q in enumerate(qs):
                    o = (sj * len(qs) + t) * K
                    cO[si * nS + sj, q] = c[o:o + K, 0]
            sse += sse_g[0]
            cnt += g[3]
        out["onsite"] = cO.tolist()
        out["rms_onsite_residual"] = float(np.sqrt(sse / max(cnt, 1)))
    return out


def _bond_env_features(lay, cfg, op, sel, d, r):
    """``([{L: [E, Ka, 2L+1]}, same for the bond's second atom], ψ [E, Kb])`` of the edges ``sel``
    of one operator: the environment sums of the bond crystal field, computed by the model's own
    functions (so that fit and prediction agree)."""
    from difcrys.nn.hamiltonian import bond_env_radial, bond_env_sums

    n = op.n_atoms
    snd = op.pairs[sel, 0]
    near = r[sel] < float(cfg.three_body_cutoff)
    worst = int(np.bincount(snd[near], minlength=1).max()) if near.any() else 0
    if worst > int(cfg.three_body_max):
        raise ConfigError(f"an atom has {worst} neighbours within three_body_cutoff = {cfg.three_body_cutoff} Å, "
                          f"more than model.three_body_max = {cfg.three_body_max}")
    key = {(int(i), int(j), tuple(int(x) for x in R)): e for e, ((i, j), R) in enumerate(zip(op.pairs[sel], op.shifts[sel]))}
    try:
        rev = np.array([key[(int(j), int(i), tuple(-int(x) for x in R))] for (i, j), R in zip(op.pairs[sel], op.shifts[sel])])
    except KeyError as err:
        raise ConfigError(f"block {err.args[0]} (the reverse of an edge within the cutoff) is missing") from None
    lay_vec = jnp.asarray(d[sel], jnp.float64)
    valid = jnp.ones(len(sel), bool)
    env1 = bond_env_sums(lay, cfg, lay_vec, valid, jnp.asarray(snd), n)
    env1 = {L: np.asarray(x) for L, x in env1.items()}
    env2 = {L: x[rev] for L, x in env1.items()}
    psi = np.asarray(bond_env_radial(jnp.asarray(r[sel], jnp.float64), cfg))
    return [env1, env2], psi


def _accumulate_onsite(lay, op, sel, a, b, T, phi, mean, groups, K):
    """Normal equations of the crystal-field fit of one structure's on-site blocks."""
    nS, nG, no = len(lay.species), lay.nG, lay.no
    n = op.n_atoms
    species = np.asarray(lay.species)
    sp = np.searchsorted(species, np.asarray(op.crystal.numbers))
    snd = op.pairs[sel, 0]
    key = {(int(i), int(j), tuple(int(x) for x in R)): p for p, ((i, j), R) in enumerate(zip(op.pairs, op.shifts))}
    D = np.zeros((n, nG + 1, nG + 1))  # on-site deviations, global layout
    for i in range(n):
        p = key.get((i, i, (0, 0, 0)))
        if p is None:
            continue
        B = np.zeros((no, no))
        k = min(no, op.H.shape[1])
        B[:k, :k] = op.H[p][:k, :k] - mean[sp[i]][:k, :k]
        D[i][lay.select[sp[i]][:, None], lay.select[sp[i]][None, :]] = B
    for pa in range(nS):
        atoms = np.nonzero(sp == pa)[0]
        if len(atoms) == 0:
            continue
        for sa, sb, ra, rb, qs in _slot_pairs(lay, pa, pa):  # both shells on atom i
            # X[i, sub_a, sub_b, (species j, q, k)] = Σ_{edges i→j} T_q φ_k
            X = np.zeros((n, len(ra), len(rb), nS, len(qs), K))
            for t, q in enumerate(qs):
                contrib = T[q][:, ra[:, None], rb[None, :], None] * phi[:, None, None, :]  # [E, ra, rb, K]
                for pb in range(nS):
                    m = (a == pa) & (b == pb)
                    np.add.at(X[:, :, :, pb, t, :], snd[m], contrib[m])
            X = X[atoms].reshape(len(atoms) * len(ra) * len(rb), -1)
            Y = D[atoms][:, ra[:, None], rb[None, :]].reshape(-1, 1)
            _accumulate(groups, (pa, sa, sb, qs), X, Y)


def _slot_pairs(lay, pa, pb):
    """``(slot a, slot b, rows, cols, parity-allowed paths)`` for the shell pairs that species
    ``pa`` (rows) and ``pb`` (columns) both have, in the global orbital layout."""
    for sa, la in enumerate(lay.slots):
        for sb, lb in enumerate(lay.slots):
            oa, ob = lay.slot_off[sa], lay.slot_off[sb]
            ra, rb = np.arange(oa, oa + 2 * la + 1), np.arange(ob, ob + 2 * lb + 1)
            if np.isin(ra, lay.select[pa]).all() and np.isin(rb, lay.select[pb]).all():
                yield sa, sb, ra, rb, tuple(q for q in lay.s_paths if lay.edge_paths[q][:2] == (sa, sb))


def _accumulate(groups, key, X, Y):
    """Add one design block to the normal equations ``[XᵀX, XᵀY, Σ Y², rows]`` of ``key``."""
    g = groups.setdefault(key, [0.0, 0.0, 0.0, 0])
    g[0] = g[0] + X.T @ X
    g[1] = g[1] + X.T @ Y
    g[2] = g[2] + np.sum(Y ** 2, axis=0)
    g[3] += Y.shape[0]


def _ridge_solve(g, ridge):
    """Ridge solution of accumulated normal equations and the residual sum of squares per column."""
    ATA, ATy, yy, _ = g
    c = np.linalg.solve(ATA + ridge * np.mean(np.diag(ATA)) * np.eye(ATA.shape[0]), ATy)
    sse = yy - 2 * np.sum(c * ATy, axis=0) + np.sum(c * (ATA @ c), axis=0)
    return c, np.maximum(sse, 0.0)


def fit_statistics(cfg: HamiltonianConfig, ops) -> HamiltonianConfig:
    """On-site means per species, the RMS spread of the on-site blocks about them, the RMS of the
    edge H blocks (of their residual after the two-centre baseline, which is fitted here when
    ``two_centre_k > 0``) and the mean neighbour count."""
    model = HamiltonianModel(cfg)
    lay = model.layout
    nS, no = len(lay.species), lay.no
    sumH, sumS, cnt = np.zeros((nS, no, no)), np.zeros((nS, no, no)), np.zeros(nS)
    sq, nsq, nn, natoms = 0.0, 0, 0, 0
    for op in ops:
        sp = np.searchsorted(np.asarray(lay.species), np.asarray(op.crystal.numbers))
        d = np.linalg.norm(op.bond_vectors(), axis=1)
        for p, ((i, j), R) in enumerate(zip(op.pairs, op.shifts)):
            if i == j and not np.any(R):
                sumH[sp[i]] += op.H[p][:no, :no]
                sumS[sp[i]] += op.S[p][:no, :no] if op.S is not None else np.eye(no)
                cnt[sp[i]] += 1
            elif d[p] < cfg.cutoff:
                sq += float(np.sum(op.H[p] ** 2))
                nsq += int(op.orbitals[i] * op.orbitals[j])
                nn += 1
        natoms += op.n_atoms
    cnt = np.maximum(cnt, 1)[:, None, None]
    scale = float(np.sqrt(sq / max(nsq, 1))) if nsq else 1.0
    # spread of the on-site blocks about their species mean: the scale of the on-site corrections
    # (without it the on-site head inherits the edge scale, which after the two-centre baseline
    # is ~10x smaller than the on-site variation, and learns it only very slowly)
    mean = sumH / cnt
    osq, on_n = 0.0, 0
    for op in ops:
        sp = np.searchsorted(np.asarray(lay.species), np.asarray(op.crystal.numbers))
        for p, ((i, j), R) in enumerate(zip(op.pairs, op.shifts)):
            if i == j and not np.any(R):
                k = op.orbitals[i]
                osq += float(np.sum((op.H[p][:k, :k] - mean[sp[i]][:k, :k]) ** 2))
                on_n += int(k * k)
    onsite_scale = float(np.sqrt(osq / on_n)) if on_n and osq > 0 else None
    extra = {}
    if cfg.two_centre_k:
        tc = fit_two_centre(cfg, ops, onsite_mean=mean)
        extra = {"two_centre_H": tc["H"], "two_centre_S": tc["S"], "two_centre_onsite": tc["onsite"]}
        if cfg.bond_env_k:
            extra["bond_env_H"] = tc["bond_env"]
        scale = tc["rms_H_residual"] if tc["rms_H_residual"] > 0 else scale
        if tc["rms_onsite_residual"] > 0:
            onsite_scale = tc["rms_onsite_residual"]
    return dataclasses.replace(cfg, onsite_H=(sumH / cnt).tolist(), onsite_S=(sumS / cnt).tolist(), scale=scale,
                               onsite_scale=onsite_scale,
                               avg_num_neighbors=float(nn / max(natoms, 1)) if nn else cfg.avg_num_neighbors, **extra)


# ------------------------------------------------------------------------------------ metrics
def block_errors(model: HamiltonianModel, params, ops) -> dict:
    """Block MAE/max [meV] of H and MAE of S on the model's edges and on-site blocks; also the H
    MAE with each structure's best constant potential offset ``c·S`` removed (``*_gauge``, see
    :class:`HLossConfig`) and those offsets [meV]."""
    n_max = max(op.n_atoms for op in ops)
    items = [_targets(model, op, n_max, None) for op in ops]
    tot = {"sae_H": 0.0, "sae_S": 0.0, "count": 0.0, "max_H": 0.0, "sae_H_gauge": 0.0}
    per, per_g, offs = [], [], []
    for it in items:
        b = {k: jnp.asarray(v)[None] for k, v in it.items()}
        pred = jax.vmap(lambda x: model.blocks(params, x["numbers"], x["positions"], x["lattice"], x["mask"],
                                               _hgraph(x)))(b)
        e = HamiltonianTask._errors(pred, b)
        cnt = max(float(e["count"]), 1.0)
        per.append(1000.0 * float(e["sae_H"]) / cnt)
        per_g.append(1000.0 * float(e["sae_H_gauge"]) / cnt)
        offs.append(1000.0 * float(e["offset_H"][0]))
        for k in ("sae_H", "sae_S", "count", "sae_H_gauge"):
            tot[k] += float(e[k])
        tot["max_H"] = max(tot["max_H"], float(e["max_H"]))
    c = max(tot["count"], 1.0)
    return {"mae_H_meV": 1000.0 * tot["sae_H"] / c, "max_H_meV": 1000.0 * tot["max_H"], "mae_S": tot["sae_S"] / c,
            "mae_H_gauge_meV": 1000.0 * tot["sae_H_gauge"] / c, "per_structure_mae_H_meV": per,
            "per_structure_mae_H_gauge_meV": per_g, "per_structure_offset_meV": offs, "n_structures": len(ops)}


def truncate(op: TBOperator, cutoff: float) -> TBOperator:
    """The operator with blocks of bond length ≥ ``cutoff`` removed (on-site kept)."""
    d = np.linalg.norm(op.bond_vectors(), axis=1)
    keep = (d < cutoff) | ((op.pairs[:, 0] == op.pairs[:, 1]) & ~np.any(op.shifts, axis=1))
    return TBOperator(crystal=op.crystal, basis=op.basis, pairs=op.pairs[keep], shifts=op.shifts[keep],
                      H=op.H[keep], S=None if op.S is None else op.S[keep], meta=op.meta)


def band_errors(pred: TBOperator, ref: TBOperator, window_ev: float = 1.0, cutoff: float | None = None) -> dict:
    """Band energies of the predicted operator against the DFT reference [meV].

    Reference eigenvalues: the DFT eigenvalues stored with the structure (``eig_mesh`` at the
    SCF k-mesh, ``eig_extra`` at off-mesh k-points, Fermi level ``mu_ev``) when present, else
    the eigenvalues of ``ref``'s own H and S. Compared are all bands within ``window_ev`` of the
    Fermi level (of the reference). With ``cutoff``, the reference operator truncated at the model
    cutoff is compared too (the error the cutoff alone causes).

    Besides the raw differences (``*_mae_meV``) two offset-free comparisons are reported, since the
    zero of a periodic DFT potential is a cell average that a local model cannot know (see
    :class:`HLossConfig` ``gauge``):

    * ``*_ef_mae_meV``: energies relative to each side's own Fermi level, ``(ε − E_F) − (ε_DFT −
      E_F^DFT)``. Both Fermi levels come from the SCF-mesh eigenvalues by the same rule (Fermi–
      Dirac occupations of the DFT smearing width, ``smearing_fermi_ha`` of the data, else the
      mid-gap rule), so this is the usual "bands aligned at E_F" comparison.
    * ``*_shift_mae_meV``: with the mean difference over the window removed (the best rigid shift,
      a lower bound of the E_F-aligned error).
    """
    from difcrys.tb.solve import eigenvalues, fermi_level

    out = {}
    sets = []
    if "eig_mesh" in ref.meta:
        sets.append(("mesh", np.asarray(ref.meta["kpts_mesh"]), np.asarray(ref.meta["eig_mesh"])))
        if "eig_extra" in ref.meta and np.size(ref.meta["eig_extra"]):
            sets.append(("off_mesh", np.asarray(ref.meta["kpts_extra"]), np.asarray(ref.meta["eig_extra"])))
        mu = float(ref.meta.get("mu_ev", np.nan))
        if not np.isfinite(mu):
            mu = fermi_level(np.asarray(ref.meta["eig_mesh"]), float(ref.meta["n_electrons"]))
    else:
        kp = ref.meta.get("kpoints")
        kp = np.zeros((1, 3)) if kp is None else np.asarray(kp)
        e_ref = eigenvalues(ref, kp)
        sets.append(("kpoints", kp, e_ref))
        nel = ref.meta.get("n_electrons")
        mu = fermi_level(e_ref, float(nel)) if nel is not None else float(np.median(e_ref))
    out["fermi_level_ev"] = mu
    ops = {"model": pred}
    if cutoff is not None:
        ops["dft_truncated"] = truncate(ref, cutoff)
    nel = ref.meta.get("n_electrons")
    width = 27.211386 * float(ref.meta.get("smearing_fermi_ha") or 0.0)  # Ha -> eV
    ef_ref = {label: fermi_level(eigenvalues(op, sets[0][1]), float(nel), width=width) if nel is not None else None
              for label, op in ops.items()}
    ef_dft = fermi_level(sets[0][2], float(nel), width=width) if nel is not None else None
    for name, kp, e_ref in sets:
        for label, op in ops.items():
            e = eigenvalues(op, kp)
            nb = min(e.shape[1], e_ref.shape[1])
            win = np.abs(e_ref[:, :nb] - mu) < window_ev
            diff = (e[:, :nb] - e_ref[:, :nb])[win]
            d = np.abs(diff)
            out[f"{label}_{name}_mae_meV"] = 1000.0 * float(d.mean()) if d.size else None
            out[f"{label}_{name}_max_meV"] = 1000.0 * float(d.max()) if d.size else None
            out[f"{label}_{name}_n"] = int(d.size)
            if d.size:
                out[f"{label}_{name}_shift_mae_meV"] = 1000.0 * float(np.abs(diff - diff.mean()).mean())
            if d.size and ef_dft is not None:
                de = np.abs(diff - (ef_ref[label] - ef_dft))
                out[f"{label}_{name}_ef_mae_meV"] = 1000.0 * float(de.mean())
                out[f"{label}_{name}_ef_max_meV"] = 1000.0 * float(de.max())
    if ef_dft is not None:
        out["fermi_level_dft_rule_ev"] = ef_dft
        out["fermi_level_model_ev"] = ef_ref["model"]
    out["window_ev"] = window_ev
    return out


def pool_band_errors(per_structure: list[dict]) -> dict:
    """Band MAEs [meV] of a set of structures, pooled over all their compared eigenvalues (each
    structure's ``band_errors`` MAE weighted by its count); structures with an ``error`` are
    counted in ``n_failed``."""
    out = {"n_failed": sum("error" in b for b in per_structure)}
    ok = [b for b in per_structure if "error" not in b]
    keys = sorted({k for b in ok for k in b if k.endswith("mae_meV") and b[k] is not None})
    for k in keys:
        label = k[: k.index("_mae_meV")]
        label = label.replace("_shift", "").replace("_ef", "")
        w = [(b[k], b.get(f"{label}_n", 0)) for b in ok if b.get(k) is not None]
        n = sum(c for _, c in w)
        if n:
            out[k] = float(sum(v * c for v, c in w) / n)
            out[f"{label}_n"] = int(n)
    return out


def _safe_band_errors(model, params, op, window):
    from difcrys.errors import DifcrysError

    try:
        return band_errors(model.predict_operator(params, op.crystal), op, window, cutoff=model.config.cutoff)
    except DifcrysError as e:  # e.g. an untrained model's S is not positive definite
        return {"error": f"{type(e).__name__}: {e}"}


# ------------------------------------------------------------------------------------ driver
def _split(ops, fraction, seed):
    n = len(ops)
    n_val = max(1, int(round(fraction * n))) if n > 1 else 0
    idx = np.random.default_rng(seed).permutation(n)
    if n_val == 0:
        return list(ops), list(ops)  # single structure (overfit/fit test): validate on itself
    return [ops[i] for i in idx[n_val:]], [ops[i] for i in idx[:n_val]]


def train_hamiltonian(config_path, run_dir, *, variant: str | None = None, resume: bool = True) -> dict:
    """Train a Hamiltonian network from a YAML config into ``run_dir``.

    Writes ``config.yaml`` (resolved, ``task: hamiltonian``), ``model.json``, ``metrics.jsonl``,
    orbax checkpoints (``checkpoints/``, ``best/``) and ``summary.json`` (validation and test block errors, band
    errors near the Fermi level).

    Returns:
        the summary dict.
    """
    cfg = load_yaml(config_path, variant) if isinstance(config_path, (str, os.PathLike)) else dict(config_path)
    unknown = set(cfg) - {"name", "task", "data", "model", "loss", "train", "variant", "description", "finetune"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}")
    base = os.path.dirname(os.path.abspath(config_path)) if isinstance(config_path, (str, os.PathLike)) else None
    repo = os.path.dirname(base) if base else None
    data = dict(cfg.get("data") or {})
    if "train" not in data:
        raise ConfigError("config needs data.train")
    tcfg = dataclass_from_dict(TrainConfig, cfg.get("train"), "train")
    lcfg = dataclass_from_dict(HLossConfig, cfg.get("loss"), "loss")
    ops = load_operators(data["train"], repo)
    if "val" in data:
        train_ops, val_ops = ops, load_operators(data["val"], repo)
    else:
        train_ops, val_ops = _split(ops, float(data.get("val_fraction", 0.15)), tcfg.seed)
    os.makedirs(run_dir, exist_ok=True)
    model_path = os.path.join(run_dir, "model.json")
    ft = dict(cfg.get("finetune") or {})
    if set(ft) - {"from_run"}:
        raise ConfigError(f"unknown option(s) {sorted(set(ft) - {'from_run'})} in section finetune")
    init_params = None
    if ft.get("from_run"):
        # start from a trained run: its architecture, fitted statistics and best parameters (the
        # model section of this config is not used); a new loss, data or schedule may be given
        base_model, init_params = load_run(_resolve(ft["from_run"], repo))
    if resume and os.path.isfile(model_path):
        with open(model_path) as fh:
            model = HamiltonianModel.from_json(fh.read())
    elif init_params is not None:
        model = base_model
        with open(model_path, "w") as fh:
            fh.write(model.to_json())
    else:
        mcfg = HamiltonianConfig.from_dict(dict(cfg.get("model") or {}))
        model = HamiltonianModel(fit_statistics(mcfg, train_ops))
        with open(model_path, "w") as fh:
            fh.write(model.to_json())
    resolved = dict(cfg)
    resolved["task"] = "hamiltonian"
    resolved["model"] = model.config.to_dict()
    resolved["train"] = dataclasses.asdict(tcfg)
    resolved["loss"] = dataclasses.asdict(lcfg)
    resolved["data"] = dict(data, train_files=[op.meta.get("file") for op in train_ops],
                            val_files=[op.meta.get("file") for op in val_ops])
    dump_yaml(resolved, os.path.join(run_dir, "config.yaml"))
    task = HamiltonianTask(model, train_ops, val_ops, lcfg, tcfg)
    task.init_params = init_params
    t0 = time.time()
    result = fit(task, tcfg, run_dir, resume=resume)
    summary = {"name": cfg.get("name"), "epochs": result.epoch, "stopped": result.stopped,
               "train_time_s": time.time() - t0, "n_train": len(train_ops), "n_val": len(val_ops),
               "val": task.evaluate(result.params, task.val_batches()), "test": {}}
    window = float(data.get("band_window_ev", 1.0))
    for name, spec in (data.get("test") or {}).items():
        tops = load_operators(spec, repo)
        res = block_errors(model, result.params, tops)
        res["bands"] = [_safe_band_errors(model, result.params, op, window) for op in tops]
        res["bands_pooled"] = pool_band_errors(res["bands"])
        summary["test"][name] = res
    with open(os.path.join(run_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2, default=float)
    return summary


def load_run(run_dir: str, which: str = "best"):
    """``(HamiltonianModel, params)`` from a run folder (``which``: ``"best"`` or ``"last"``)."""
    from difcrys.errors import FileFormatError

    model_path = os.path.join(run_dir, "model.json")
    if not os.path.isfile(model_path):
        raise FileFormatError(f"{run_dir}: no model.json (not a Hamiltonian run folder)")
    with open(model_path) as fh:
        model = HamiltonianModel.from_json(fh.read())
    template = model.init(jax.random.PRNGKey(0))
    kind = ckpt.BEST if which == "best" else ckpt.CHECKPOINT
    if not ckpt.exists(run_dir, kind):
        raise FileFormatError(f"{run_dir}: no {kind} checkpoint")
    return model, ckpt.restore(run_dir, kind, template, key=None if which == "best" else "ema")
