"""Training and evaluating interatomic potentials on energies, forces and virials.

Loss (DeePMD, Zhang et al., Phys. Rev. Lett. 120, 143001 (2018), Eq. 6, with energies per atom):

.. math::

    L = p_ε\\, Δε^2 + \\frac{p_f}{3N} \\sum_i |ΔF_i|^2 + \\frac{p_ξ}{9} \\|Δξ\\|^2 ,

with ``ε = E / N`` [eV/atom], forces [eV/Å] and the virial per atom ``ξ = −V σ / N`` [eV/atom]
(``σ`` in eV/Å³), averaged over the structures of a batch (the force term over all atoms of the
batch). Each weight follows a linear schedule ``p(t) = p_start + (p_end − p_start) t`` over the
epochs (``t = epoch / (epochs − 1)``); DeePMD couples it to the learning rate instead.

Config file (YAML, see ``configs/mlearn_Si.yaml``)::

    name: mlearn_Si
    data:
      train: {set: mlearn_zuo2020, part: Si_train}     # or {path: file.xyz}
      val_fraction: 0.1                                # random split of the training file
      test: {Si_test: {set: mlearn_zuo2020, part: Si_test}}
    model: {species: [Si], cutoff: 5.0, num_layers: 3, l_max: 2, channels: 32}
    loss: {energy: [10, 1000], forces: [100, 100], stress: [0, 0]}
    train: {epochs: 300, batch_size: 4, lr: 0.005}

Public functions: :func:`train_potential` (config → run folder), :func:`load_run`
(run folder → Potential + parameters, on any machine), :func:`evaluate_run` /
:func:`evaluate_dataset` (errors on a data set, parity plots).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.data import BucketLoader, Dataset, load_shared, read_extxyz
from difcrys.data._common import DatasetError
from difcrys.errors import ConfigError
from difcrys.graph import Graph, bucket_size, neighbor_graph
from difcrys.nn.potential import Potential, PotentialConfig, fit_statistics
from difcrys.train.config import dataclass_from_dict, dump_yaml, load_yaml
from difcrys.train import checkpoint as ckpt
from difcrys.train.loop import TrainConfig, fit
from difcrys.units import GPA_EV_PER_ANG3

__all__ = ["LossConfig", "PotentialTask", "GraphCache", "load_dataset", "train_potential", "load_run",
           "evaluate_dataset", "evaluate_run", "parity_plot"]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights ``[start, end]`` (or a single number) of the energy, force and virial terms."""

    energy: tuple | float = (10.0, 1000.0)
    forces: tuple | float = (100.0, 100.0)
    stress: tuple | float = (0.0, 0.0)

    def __post_init__(self):
        for name in ("energy", "forces", "stress"):
            v = getattr(self, name)
            v = (float(v), float(v)) if np.ndim(v) == 0 else tuple(float(x) for x in v)
            if len(v) != 2 or min(v) < 0:
                raise ConfigError(f"loss.{name} must be a non-negative weight or [start, end], got {getattr(self, name)}")
            object.__setattr__(self, name, v)

    def at(self, epoch: int, epochs: int) -> dict:
        t = 0.0 if epochs <= 1 else min(epoch / (epochs - 1), 1.0)
        return {k: getattr(self, k)[0] + (getattr(self, k)[1] - getattr(self, k)[0]) * t
                for k in ("energy", "forces", "stress")}


# ---------------------------------------------------------------------------------- data
def load_dataset(spec) -> Dataset:
    """A data set from a config entry: ``{set: NAME, part: PART}`` (shared data) or ``{path: FILE}``
    (extxyz), optionally ``max_structures: N`` (first N)."""
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"a data entry must be {{set, part}} or {{path}}, got {spec!r}")
    spec = dict(spec)
    n_max = spec.pop("max_structures", None)
    if "path" in spec:
        ds = read_extxyz(spec.pop("path"), **spec)
    elif "set" in spec:
        ds = load_shared(spec.pop("set"), spec.pop("part", None), **spec)
    else:
        raise ConfigError(f"a data entry needs 'set' (shared data) or 'path', got {sorted(spec)}")
    if n_max is not None:
        ds = ds[: int(n_max)]
    return ds


def _check_dataset(ds: Dataset, pot: Potential, need_forces: bool, need_stress: bool):
    if not isinstance(ds, Dataset) or len(ds) == 0:
        raise DatasetError("empty dataset: no structures to train or evaluate on")
    if ds.energy is None:
        raise DatasetError(f"{ds.name}: no energies: a potential needs energy labels")
    if need_forces and ds.forces is None:
        raise DatasetError(f"{ds.name}: the force weight is > 0 but the data set has no forces")
    if need_stress and ds.stress is None:
        raise DatasetError(f"{ds.name}: the stress weight is > 0 but the data set has no stresses")
    for k, c in enumerate(ds.crystals):
        try:
            pot.check_numbers(c.numbers, c.mask)
        except Exception as e:
            raise type(e)(f"{ds.name} frame {k}: {e}") from None


class GraphCache:
    """Neighbour graphs of a fixed data set, built once, assembled into padded batch graphs.

    Training structures do not move, so each structure's edge list is computed once on the host
    (:func:`difcrys.graph.neighbor_graph`) and batches get a :class:`~difcrys.graph.Graph` with a
    static edge capacity per atom-count bucket.
    """

    def __init__(self, dataset: Dataset, cutoff: float):
        self.edges = []
        for c in dataset.crystals:
            g = neighbor_graph(c, cutoff)
            self.edges.append(g.edges_numpy())

    def capacity(self, indices) -> int:
        return bucket_size(max([len(self.edges[i][0]) for i in indices] + [1]))

    def batch_graph(self, index: np.ndarray, n_max: int, capacity: int) -> Graph:
        B = len(index)
        send = np.full((B, capacity), n_max, np.int32)
        recv = np.full((B, capacity), n_max, np.int32)
        shifts = np.zeros((B, capacity, 3), np.int32)
        mask = np.zeros((B, capacity), bool)
        n_edges = np.zeros(B, np.int32)
        for b, i in enumerate(index):
            if i < 0:
                continue
            s, r, sh = self.edges[i]
            m = len(s)
            send[b, :m], recv[b, :m], shifts[b, :m], mask[b, :m] = s, r, sh, True
            n_edges[b] = m
        return Graph(senders=jnp.asarray(send), receivers=jnp.asarray(recv), shifts=jnp.asarray(shifts),
                     mask=jnp.asarray(mask), n_edges=jnp.asarray(n_edges), overflow=jnp.zeros(B, bool))


class _Batches:
    """Padded batches (data Batch + Graph) of a data set."""

    def __init__(self, ds: Dataset, batch_size: int, cutoff: float, n_buckets: int, shuffle: bool, seed: int):
        self.loader = BucketLoader(ds, batch_size, shuffle=shuffle, seed=seed, n_buckets=n_buckets)
        self.graphs = GraphCache(ds, cutoff)
        self.caps = {}
        for b in range(len(self.loader.buckets)):
            members = np.where(self.loader.bucket_of == b)[0]
            if len(members):
                self.caps[self.loader.buckets[b]] = self.graphs.capacity(members)

    def epoch(self, epoch: int):
        self.loader.epoch = epoch
        for batch in self.loader:
            n_max = batch.crystal.numbers.shape[1]
            g = self.graphs.batch_graph(np.asarray(batch.index), n_max, self.caps[n_max])
            yield {"data": batch, "graph": g}


class PotentialTask:
    """The :class:`~difcrys.train.loop.Task` of a potential: energies, forces, (stresses)."""

    val_metric = "loss"

    def __init__(self, potential: Potential, train: Dataset, val: Dataset, loss: LossConfig, cfg: TrainConfig):
        self.pot = potential
        self.loss_cfg = loss
        self.cfg = cfg
        w0 = loss.at(0, cfg.epochs)
        use_f = max(loss.forces) > 0
        use_s = max(loss.stress) > 0
        _check_dataset(train, potential, use_f, use_s)
        _check_dataset(val, potential, use_f, use_s)
        self.use_forces, self.use_stress = use_f, use_s
        self.train = _Batches(train, cfg.batch_size, potential.config.cutoff, cfg.n_buckets, True, cfg.seed)
        self.val = _Batches(val, cfg.batch_size, potential.config.cutoff, cfg.n_buckets, False, cfg.seed)
        self._eval_fn = jax.jit(self._predict)

    def init(self, key):
        return self.pot.init(key)

    def train_batches(self, epoch):
        return self.train.epoch(epoch)

    def val_batches(self):
        return self.val.epoch(0)

    def loss_weights(self, epoch):
        return self.loss_cfg.at(epoch, self.cfg.epochs)

    def _predict(self, params, b):
        data, graph = b["data"], b["graph"]
        return self.pot.energy_forces_stress(params, data.crystal, graph, stress=self.use_stress)

    def loss(self, params, b, weights):
        data = b["data"]
        pred = self._predict(params, b)
        gm = data.graph_mask
        nat = jnp.maximum(data.n_atoms, 1).astype(pred["energy"].dtype)
        n_graphs = jnp.maximum(jnp.sum(gm), 1)
        de = jnp.where(gm, (pred["energy"] - data.energy.astype(pred["energy"].dtype)) / nat, 0.0)
        le = jnp.sum(de ** 2) / n_graphs
        total = weights["energy"] * le
        metrics = {"energy_rmse_per_atom": jnp.sqrt(le)}
        if self.use_forces:
            am = data.crystal.mask
            df = jnp.where(am[..., None], pred["forces"] - data.forces.astype(pred["forces"].dtype), 0.0)
            lf = jnp.sum(df ** 2) / (3.0 * jnp.maximum(jnp.sum(am), 1))
            total = total + weights["forces"] * lf
            metrics["forces_rmse"] = jnp.sqrt(lf)
        if self.use_stress:
            vol = jnp.abs(jnp.linalg.det(data.crystal.lattice))
            dxi = (pred["stress"] - data.stress) * GPA_EV_PER_ANG3 * (vol / nat)[:, None, None]
            dxi = jnp.where(gm[:, None, None], dxi, 0.0)
            ls = jnp.sum(dxi ** 2) / 9.0 / n_graphs
            total = total + weights["stress"] * ls
            metrics["virial_rmse_per_atom"] = jnp.sqrt(ls)
        return total, metrics

    def evaluate(self, params, batches) -> dict:
        res = _collect(self._eval_fn, params, batches)
        m = _metrics(res)
        w = self.loss_cfg.at(self.cfg.epochs - 1, self.cfg.epochs)  # final weights: comparable epochs
        loss = w["energy"] * m["energy_rmse_per_atom_eV"] ** 2
        if "forces_rmse" in m:
            loss += w["forces"] * m["forces_rmse"] ** 2
        m["loss"] = float(loss)
        return m


def _collect(predict, params, batches) -> dict:
    """Run predictions over batches; return per-structure arrays (host)."""
    out = {"energy": [], "energy_ref": [], "n_atoms": [], "forces": [], "forces_ref": [], "stress": [],
           "stress_ref": []}
    for b in batches:
        data = b["data"]
        p = predict(params, b)
        gm = np.asarray(data.graph_mask)
        nat = np.asarray(data.n_atoms)
        e = np.asarray(p["energy"])
        out["energy"] += list(e[gm])
        out["energy_ref"] += list(np.asarray(data.energy)[gm])
        out["n_atoms"] += list(nat[gm])
        if data.forces is not None:
            am = np.asarray(data.crystal.mask)
            out["forces"].append(np.asarray(p["forces"])[am])
            out["forces_ref"].append(np.asarray(data.forces)[am])
        if data.stress is not None and "stress" in p:
            out["stress"].append(np.asarray(p["stress"])[gm])
            out["stress_ref"].append(np.asarray(data.stress)[gm])
    return {k: (np.concatenate(v) if v and isinstance(v[0], np.ndarray) and k.startswith(("forces", "stress"))
                else np.asarray(v)) for k, v in out.items()}


def _metrics(res: dict) -> dict:
    e, er, n = res["energy"], res["energy_ref"], res["n_atoms"].astype(float)
    d = (e - er) / n
    m = {"n_structures": int(len(e)),
         "energy_mae_per_atom_eV": float(np.mean(np.abs(d))),
         "energy_rmse_per_atom_eV": float(np.sqrt(np.mean(d ** 2))),
         "energy_mae_eV": float(np.mean(np.abs(e - er))),
         "energy_rmse_eV": float(np.sqrt(np.mean((e - er) ** 2)))}
    # training-loss names (used by the loop's validation metric)
    m["energy_rmse_per_atom"] = m["energy_rmse_per_atom_eV"]
    if len(res["forces"]):
        df = res["forces"] - res["forces_ref"]
        m["forces_mae"] = float(np.mean(np.abs(df)))
        m["forces_rmse"] = float(np.sqrt(np.mean(df ** 2)))
    if len(res["stress"]):
        ds = res["stress"] - res["stress_ref"]
        m["stress_mae_GPa"] = float(np.mean(np.abs(ds)))
    return m


# ---------------------------------------------------------------------------------- drivers
def _split(ds: Dataset, fraction: float, seed: int):
    n = len(ds)
    if n < 2:
        raise DatasetError(f"{ds.name}: need at least 2 structures to split off a validation set")
    k = min(max(1, int(round(fraction * n))), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return ds[np.sort(perm[k:])], ds[np.sort(perm[:k])]


def train_potential(config, run_dir: str, *, variant: str | None = None, resume: bool = True,
                    overrides: dict | None = None, callback=None) -> dict:
    """Train a potential from a YAML config (path) or dict into ``run_dir``.

    Writes ``config.yaml`` (resolved, with the fitted shift/scale), ``model.json``,
    ``metrics.jsonl``, orbax checkpoints (``checkpoints/``, ``best/``) and, at the end, ``summary.json`` with the
    validation and test errors and ``parity_*.png``.

    Returns:
        the summary dict.
    """
    from difcrys.train.config import deep_merge

    cfg = load_yaml(config, variant) if isinstance(config, (str, os.PathLike)) else dict(config)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    unknown = set(cfg) - {"name", "task", "data", "model", "loss", "train", "variant", "description"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}")
    data = dict(cfg.get("data") or {})
    if "train" not in data:
        raise ConfigError("config needs data.train")
    tcfg = dataclass_from_dict(TrainConfig, cfg.get("train"), "train")
    lcfg = dataclass_from_dict(LossConfig, cfg.get("loss"), "loss")
    os.makedirs(run_dir, exist_ok=True)
    model_path = os.path.join(run_dir, "model.json")
    train_ds = load_dataset(data["train"])
    if "val" in data:
        val_ds = load_dataset(data["val"])
    else:
        train_ds, val_ds = _split(train_ds, float(data.get("val_fraction", 0.1)), tcfg.seed)
    if resume and os.path.isfile(model_path):
        with open(model_path) as fh:
            pot = Potential.from_json(fh.read())
    else:
        mcfg = PotentialConfig.from_dict(dict(cfg.get("model") or {}))
        if len(train_ds) == 0:
            raise DatasetError("empty training set")
        pot = Potential(fit_statistics(mcfg, train_ds))
        with open(model_path, "w") as fh:
            fh.write(pot.to_json())
    resolved = dict(cfg)
    resolved["model"] = pot.config.to_dict()
    resolved["train"] = dataclasses.asdict(tcfg)
    resolved["loss"] = {k: list(v) for k, v in dataclasses.asdict(lcfg).items()}
    dump_yaml(resolved, os.path.join(run_dir, "config.yaml"))
    task = PotentialTask(pot, train_ds, val_ds, lcfg, tcfg)
    t0 = time.time()
    result = fit(task, tcfg, run_dir, resume=resume, callback=callback)
    summary = {"name": cfg.get("name"), "epochs": result.epoch, "stopped": result.stopped,
               "train_time_s": time.time() - t0, "n_train": len(train_ds), "n_val": len(val_ds),
               "val": task.evaluate(result.params, task.val_batches()), "test": {}}
    for name, spec in (data.get("test") or {}).items():
        summary["test"][name] = evaluate_dataset(pot, result.params, load_dataset(spec),
                                                 plot=os.path.join(run_dir, f"parity_{name}.png"))
    with open(os.path.join(run_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def load_run(run_dir: str, which: str = "best"):
    """Load ``(Potential, params)`` from a run folder (portable: JSON model card + orbax arrays).

    Args:
        which: ``"best"`` (best validation EMA weights) or ``"last"`` (last checkpoint's EMA weights).
    """
    model_path = os.path.join(run_dir, "model.json")
    if not os.path.isfile(model_path):
        raise ConfigError(f"{run_dir} is not a potential run folder (no model.json)")
    with open(model_path) as fh:
        pot = Potential.from_json(fh.read())
    target = pot.init(jax.random.PRNGKey(0))
    if which == "best" and ckpt.exists(run_dir, ckpt.BEST):
        return pot, ckpt.restore(run_dir, ckpt.BEST, target)
    if not ckpt.exists(run_dir, ckpt.CHECKPOINT):
        raise ConfigError(f"{run_dir}: no checkpoint found (best/ or checkpoints/)")
    return pot, ckpt.restore(run_dir, ckpt.CHECKPOINT, target, key="ema")


def evaluate_dataset(pot: Potential, params, ds: Dataset, batch_size: int = 4, plot: str | None = None) -> dict:
    """Errors of a potential on a data set (energies per atom, forces per component, stresses).

    Returns:
        dict with ``energy_mae_per_atom_eV``, ``energy_rmse_per_atom_eV``, ``energy_mae_eV``,
        ``energy_rmse_eV``, ``forces_mae``, ``forces_rmse`` [eV/Å] (component-wise), ``stress_mae_GPa``.
    """
    _check_dataset(ds, pot, False, False)
    batches = _Batches(ds, batch_size, pot.config.cutoff, 3, False, 0)
    stress = ds.stress is not None
    fn = jax.jit(lambda p, b: pot.energy_forces_stress(p, b["data"].crystal, b["graph"], stress=stress))
    res = _collect(fn, params, batches.epoch(0))
    m = _metrics(res)
    if plot:
        parity_plot(res, plot)
    return m


def evaluate_run(run_dir: str, data, which: str = "best", plot: bool = True) -> dict:
    """Load a run and evaluate it on a data set (a Dataset, an extxyz path or a ``{set, part}`` spec)."""
    pot, params = load_run(run_dir, which)
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    name = os.path.splitext(os.path.basename(ds.name or "data"))[0].replace("/", "_")
    return evaluate_dataset(pot, params, ds, plot=os.path.join(run_dir, f"parity_{name}.png") if plot else None)


def parity_plot(res: dict, path: str) -> None:
    """Predicted vs reference energies per atom and force components (PNG); skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    n = 2 if len(res["forces"]) else 1
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4.2))
    axes = np.atleast_1d(axes)
    e, er = res["energy"] / res["n_atoms"], res["energy_ref"] / res["n_atoms"]
    axes[0].scatter(er, e, s=6)
    lo, hi = min(er.min(), e.min()), max(er.max(), e.max())
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[0].set(xlabel="reference energy [eV/atom]", ylabel="predicted [eV/atom]")
    if n == 2:
        f, fr = res["forces"].ravel(), res["forces_ref"].ravel()
        axes[1].scatter(fr, f, s=2)
        lo, hi = min(fr.min(), f.min()), max(fr.max(), f.max())
        axes[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
        axes[1].set(xlabel="reference force [eV/Å]", ylabel="predicted [eV/Å]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
