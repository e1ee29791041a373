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
      train: {glob: experiments/deeph/data/graphene_0*.npz}      # or {deeptb: PATH} / {files: [...]}
      val_fraction: 0.15                                         # or val: {...}
      test: {held_out: {glob: ...}}                              # optional named test sets
      band_window_ev: 1.0                                        # |E − E_F| window of band metrics
    model: {basis: {C: [0, 1]}, cutoff: 6.0, ...}                # HamiltonianConfig
    loss: {H: 1.0, S: 1.0}
    train: {...}                                                 # TrainConfig
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import json
import os
import time

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
           "block_errors", "band_errors"]


@dataclasses.dataclass(frozen=True)
class HLossConfig:
    """Loss weights: ``H`` on Hamiltonian blocks [1/eV^2], ``S`` on overlap blocks."""

    H: float = 1.0
    S: float = 1.0


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
    """Read a data spec: ``{glob: PATTERN}``, ``{files: [...]}``, ``{deeptb: FOLDER}`` or a path.

    Raises:
        ConfigError: unknown spec or nothing matched.
    """
    if isinstance(spec, str):
        spec = {"deeptb": spec} if os.path.isdir(_resolve(spec, base)) else {"files": [spec]}
    if not isinstance(spec, dict):
        raise ConfigError(f"data spec must be a mapping or a path, got {spec!r}")
    if "deeptb" in spec:
        from difcrys.data.hamiltonian import read_hamiltonian_h5

        hd = read_hamiltonian_h5(_resolve(spec["deeptb"], base))
        return [TBOperator.from_hamiltonian_data(hd, p_order=spec.get("p_order", "yzx"))]
    if "glob" in spec:
        files = sorted(_glob.glob(_resolve(spec["glob"], base)))
        if not files and base:
            files = sorted(_glob.glob(os.path.join(base, spec["glob"])))
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


class HamiltonianTask:
    """:class:`difcrys.train.loop.Task` for block regression."""

    val_metric = "mae_H_meV"

    def __init__(self, model: HamiltonianModel, train, val, loss: HLossConfig, cfg: TrainConfig):
        self.model, self.loss_cfg, self.cfg = model, loss, cfg
        ops = list(train) + list(val)
        self.n_max = max(op.n_atoms for op in ops)
        self.e_max = max(int(np.asarray(model.graph(op.crystal).mask).sum()) for op in ops)
        self.train = [_targets(model, op, self.n_max, self.e_max) for op in train]
        self.val = [_targets(model, op, self.n_max, self.e_max) for op in val]
        self._eval_fn = jax.jit(lambda p, b: self._errors(self._predict(p, b), b))

    def init(self, key):
        return self.model.init(key)

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
                                      target_mask=np.zeros_like(items[0]["target_mask"]))]
            yield self._stack(items)

    def loss_weights(self, epoch):
        return {"H": self.loss_cfg.H, "S": self.loss_cfg.S}

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
            out[f"sae_{name}"] = jnp.sum(jnp.abs(de)) + jnp.sum(jnp.abs(do))
            out[f"max_{name}"] = jnp.maximum(jnp.max(jnp.abs(de)), jnp.max(jnp.abs(do)))
            out["count"] = cnt
        return out

    def loss(self, params, b, weights):
        pred = self._predict(params, b)
        e = self._errors(pred, b)
        c = jnp.maximum(e["count"], 1.0)
        loss = weights["H"] * e["sse_H"] / c + weights["S"] * e["sse_S"] / c
        return loss, {"mae_H_meV": 1000.0 * e["sae_H"] / c, "mae_S": e["sae_S"] / c}

    def evaluate(self, params, batches) -> dict:
        tot = {"sae_H": 0.0, "sae_S": 0.0, "count": 0.0, "sse_H": 0.0, "max_H": 0.0, "max_S": 0.0}
        for b in batches:
            e = self._eval_fn(params, b)
            for k in tot:
                tot[k] = max(tot[k], float(e[k])) if k.startswith("max") else tot[k] + float(e[k])
        c = max(tot["count"], 1.0)
        return {"mae_H_meV": 1000.0 * tot["sae_H"] / c, "rmse_H_meV": 1000.0 * (tot["sse_H"] / c) ** 0.5,
                "max_H_meV": 1000.0 * tot["max_H"], "mae_S": tot["sae_S"] / c, "max_S": tot["max_S"],
                "n_entries": c}


# ------------------------------------------------------------------------------------ statistics
def fit_statistics(cfg: HamiltonianConfig, ops) -> HamiltonianConfig:
    """On-site means per species, the RMS of the edge H blocks and the mean neighbour count."""
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
    return dataclasses.replace(cfg, onsite_H=(sumH / cnt).tolist(), onsite_S=(sumS / cnt).tolist(),
                               scale=float(np.sqrt(sq / max(nsq, 1))) if nsq else 1.0,
                               avg_num_neighbors=float(nn / max(natoms, 1)) if nn else cfg.avg_num_neighbors)


# ------------------------------------------------------------------------------------ metrics
def block_errors(model: HamiltonianModel, params, ops) -> dict:
    """Block MAE/max [meV] of H and MAE of S on the model's edges and on-site blocks."""
    task = HamiltonianTask.__new__(HamiltonianTask)
    task.model = model
    n_max = max(op.n_atoms for op in ops)
    items = [_targets(model, op, n_max, None) for op in ops]
    tot = {"sae_H": 0.0, "sae_S": 0.0, "count": 0.0, "max_H": 0.0}
    per = []
    for it in items:
        b = {k: jnp.asarray(v)[None] for k, v in it.items()}
        pred = jax.vmap(lambda x: model.blocks(params, x["numbers"], x["positions"], x["lattice"], x["mask"],
                                               _hgraph(x)))(b)
        e = HamiltonianTask._errors(pred, b)
        per.append(1000.0 * float(e["sae_H"]) / max(float(e["count"]), 1.0))
        for k in ("sae_H", "sae_S", "count"):
            tot[k] += float(e[k])
        tot["max_H"] = max(tot["max_H"], float(e["max_H"]))
    c = max(tot["count"], 1.0)
    return {"mae_H_meV": 1000.0 * tot["sae_H"] / c, "max_H_meV": 1000.0 * tot["max_H"], "mae_S": tot["sae_S"] / c,
            "per_structure_mae_H_meV": per, "n_structures": len(ops)}


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
    for name, kp, e_ref in sets:
        for label, op in ops.items():
            e = eigenvalues(op, kp)
            nb = min(e.shape[1], e_ref.shape[1])
            win = np.abs(e_ref[:, :nb] - mu) < window_ev
            d = np.abs(e[:, :nb] - e_ref[:, :nb])[win]
            out[f"{label}_{name}_mae_meV"] = 1000.0 * float(d.mean()) if d.size else None
            out[f"{label}_{name}_max_meV"] = 1000.0 * float(d.max()) if d.size else None
            out[f"{label}_{name}_n"] = int(d.size)
    out["window_ev"] = window_ev
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
    unknown = set(cfg) - {"name", "task", "data", "model", "loss", "train", "variant", "description"}
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
    if resume and os.path.isfile(model_path):
        with open(model_path) as fh:
            model = HamiltonianModel.from_json(fh.read())
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
