"""Training and inference of structure → scalar property models (CGCNN, equivariant head).

A self-contained optax loop (the property models carry batch-norm state, which the generic loop
of :mod:`difcrys.train.loop` does not thread through):

* **target normalisation**: the model predicts ``(y - mean) / std`` of the training targets;
  ``mean``/``std`` are stored in the run folder and undone at prediction time;
* **optimiser**: AdamW (``optax.inject_hyperparams``) with plateau LR decay (×``lr_factor`` after
  ``lr_patience`` epochs without a better validation MAE) and early stopping (``patience``);
* **run folder** (``run_dir``)::

      config.json          task: property, resolved PropertyConfig, model class, target normalisation
                           (and, from a YAML config, the resolved YAML as ``source``)
      metrics.jsonl        one JSON line per epoch (epoch, lr, train loss/MAE, val MAE, seconds)
      checkpoints/<epoch>/ orbax: last complete epoch (params, BN state, optimiser state,
                           counters): resume
      best/<epoch>/        orbax: parameters and BN state with the best validation MAE
      results.json         final MAEs (val, test) in target units
      predictions_<split>.csv, parity_<split>.png

* **baselines** on the same split: :func:`mean_baseline` (training-set mean) and
  :func:`composition_ridge` (element-fraction features + ridge regression, the regularisation
  strength chosen on the validation set), so that what structure adds is visible.

YAML configs (``task: property``, ``configs/property_*.yaml``) are trained by
:func:`train_property_config` — the function ``difcrys train CONFIG.yaml`` dispatches to — whose
``data`` section names shared sets / CSV files, a saved id split or a held-out fraction, and the
target (:func:`property_datasets`). ``difcrys evaluate RUN_DIR [DATA]`` calls
:func:`evaluate_property_run`; ``difcrys predict RUN_DIR STRUCTURES...`` (:mod:`difcrys.cli_property`)
uses :func:`load_predictor`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from difcrys.train import checkpoint as ckpt_io

from difcrys.errors import ConfigError, DifcrysError, StructureError
from difcrys.graph import Graph
from difcrys.crystal import Crystal
from difcrys.nn.cgcnn import MAX_Z, CGCNN, CGCNNConfig, GraphData, check_elements, featurize

__all__ = [
    "PropertyConfig",
    "build_model",
    "train_property",
    "train_property_config",
    "property_config_from_dict",
    "property_datasets",
    "load_property_data",
    "evaluate_property_run",
    "load_predictor",
    "Predictor",
    "predict_batched",
    "composition_features",
    "mean_baseline",
    "composition_ridge",
    "mae",
    "parity_plot",
]


@dataclasses.dataclass(frozen=True)
class PropertyConfig:
    """Settings of a property-model run.

    Attributes:
        model: ``"cgcnn"`` or ``"equivariant"``.
        model_kwargs: hyper-parameters of the model config (CGCNNConfig / EquivariantConfig).
        target: name of the label in ``Dataset.properties`` (e.g. ``"heat_ref"``).
        k, graph_mode, shell_tol: neighbour graph (:func:`difcrys.nn.cgcnn.property_graph`).
        batch_size: structures per step.
        epochs: maximum epochs.
        lr, weight_decay: AdamW settings.
        loss: ``"mse"`` (CGCNN) or ``"l1"`` on normalised targets.
        patience: early-stopping patience [epochs].
        lr_patience, lr_factor, min_lr: plateau LR decay.
        max_time_s: stop after this wall time [s] (None: no limit); the best model is kept.
        seed: initialisation and shuffling seed.
        n_buckets: training batches are drawn within ``n_buckets`` groups of structures of similar
            edge count, each padded only to its own largest structure (one compilation per group);
            1 (default) pads every batch to the largest structure of the training set. Saves work
            when sizes vary (mp_20: 1–20 atoms); up to ``n_buckets * (batch_size - 1)`` random
            structures are left out of each epoch.
    """

    model: str = "cgcnn"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    target: str = "heat_ref"
    k: int = 12
    graph_mode: str = "knn_shell"
    shell_tol: float = 1e-3
    batch_size: int = 64
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "mse"
    patience: int = 40
    lr_patience: int = 12
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    max_time_s: float | None = None
    seed: int = 0
    n_buckets: int = 1

    def __post_init__(self):
        if self.model not in ("cgcnn", "equivariant"):
            raise ConfigError(f"model must be 'cgcnn' or 'equivariant', got {self.model!r}")
        if self.loss not in ("mse", "l1"):
            raise ConfigError(f"loss must be 'mse' or 'l1', got {self.loss!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"epochs must be a non-negative integer, got {self.epochs!r}")
        if not (self.lr > 0):
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        if not isinstance(self.n_buckets, int) or self.n_buckets < 1:
            raise ConfigError(f"n_buckets must be a positive integer, got {self.n_buckets!r}")


def build_model(name: str, model_kwargs: dict | None = None):
    """The model object (``init``/``apply``) for ``name`` ∈ {"cgcnn", "equivariant"}."""
    kw = dict(model_kwargs or {})
    if name == "cgcnn":
        return CGCNN(CGCNNConfig(**kw))
    if name == "equivariant":
        from difcrys.nn.property_head import EquivariantConfig, EquivariantPropertyNet

        return EquivariantPropertyNet(EquivariantConfig(**kw))
    raise ConfigError(f"unknown property model {name!r} (choose 'cgcnn' or 'equivariant')")


# ------------------------------------------------------------------------------------ helpers
def mae(a, b) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(a, float) - np.asarray(b, float))))


def _targets(ds, target: str) -> np.ndarray:
    if target not in ds.properties:
        raise ConfigError(f"target {target!r} not in data set {ds.name or ''} (labels: {sorted(ds.properties)})")
    y = np.asarray(ds.properties[target], float).reshape(-1)
    if not np.all(np.isfinite(y)):
        raise ConfigError(f"target {target!r} has NaN/inf values")
    return y


def _pad_graphdata(gd: GraphData, n_max: int, e_max: int) -> GraphData:
    c, g = gd.crystal, gd.graph
    N, n = np.shape(c.numbers)
    E = np.shape(g.mask)[1]
    if (n, E) == (n_max, e_max):
        return gd
    dn, de = n_max - n, e_max - E
    padn = lambda x, v=0: np.pad(np.asarray(x), [(0, 0), (0, dn)] + [(0, 0)] * (np.ndim(x) - 2), constant_values=v)
    pade = lambda x, v=0: np.pad(np.asarray(x), [(0, 0), (0, de)] + [(0, 0)] * (np.ndim(x) - 2), constant_values=v)
    snd = np.where(np.asarray(g.mask), np.asarray(g.senders), n_max)
    rcv = np.where(np.asarray(g.mask), np.asarray(g.receivers), n_max)
    crystal = Crystal(numbers=padn(c.numbers), frac=padn(c.frac), lattice=np.asarray(c.lattice), mask=padn(c.mask, False))
    graph = Graph(senders=pade(snd, n_max), receivers=pade(rcv, n_max), shifts=pade(g.shifts), mask=pade(g.mask, False),
                  n_edges=np.asarray(g.n_edges), overflow=np.asarray(g.overflow))
    return GraphData(crystal=crystal, graph=graph)


def _bucket_plan(gd: GraphData, n_buckets: int, batch_size: int):
    """``[(indices, n_atoms_max, n_edges_max)]``: structures grouped by edge count (equal-count
    quantile groups, merged so that each holds at least one batch)."""
    ne = np.asarray(gd.graph.n_edges)
    na = np.asarray(gd.crystal.mask).sum(1)
    order = np.argsort(ne, kind="stable")
    n_b = max(1, min(n_buckets, len(order) // batch_size))
    return [(np.sort(g), int(na[g].max()), int(ne[g].max())) for g in np.array_split(order, n_b)]


def _take_trimmed(gd: GraphData, idx, n_atoms: int, n_edges: int):
    """Rows ``idx`` of ``gd`` with the atom / edge padding cut to ``n_atoms`` / ``n_edges`` (real atoms
    and edges come first in every row, see :func:`featurize`)."""
    c, g = gd.take(idx)
    c = Crystal(numbers=c.numbers[:, :n_atoms], frac=c.frac[:, :n_atoms], lattice=c.lattice,
                mask=c.mask[:, :n_atoms])
    g = Graph(senders=g.senders[:, :n_edges], receivers=g.receivers[:, :n_edges], shifts=g.shifts[:, :n_edges],
              mask=g.mask[:, :n_edges], n_edges=g.n_edges, overflow=g.overflow)
    return c, g


def _common(gds):
    n_max = max(np.shape(g.crystal.numbers)[1] for g in gds)
    e_max = max(np.shape(g.graph.mask)[1] for g in gds)
    return [_pad_graphdata(g, n_max, e_max) for g in gds]


def predict_batched(model, variables, gd: GraphData, batch_size: int = 64, type_probs=None) -> np.ndarray:
    """Eval-mode predictions (normalised units) of all structures of ``gd``, in fixed-size batches."""
    N = len(gd)
    if N == 0:
        raise StructureError("empty batch: no structures to predict")
    fn = _eval_fn(model)
    out = []
    for s in range(0, N, batch_size):
        idx = np.arange(s, s + batch_size)
        valid = idx < N
        idx = np.where(valid, idx, 0)
        c, g = gd.take(idx)
        out.append(np.asarray(fn(variables, c, g))[valid])
    return np.concatenate(out)


_EVAL_CACHE = {}


def _eval_fn(model):
    key = id(model)
    if key not in _EVAL_CACHE:
        _EVAL_CACHE[key] = (model, jax.jit(lambda v, c, g: model.apply(v, c, g, train=False)[0]))
    return _EVAL_CACHE[key][1]


def parity_plot(y_true, y_pred, path, title: str = "", unit: str = "") -> None:
    """Scatter of predictions vs targets with the diagonal, saved to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(y_true, y_pred, s=3, alpha=0.4)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"target {unit}")
    ax.set_ylabel(f"prediction {unit}")
    ax.set_title(f"{title}  MAE = {mae(y_true, y_pred):.4f} {unit}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=float)
    os.replace(tmp, path)




def _cached_featurize(ds, config: PropertyConfig, cache_dir) -> GraphData:
    if cache_dir is None:
        return featurize(ds.crystals, config.k, config.graph_mode, config.shell_tol)
    import hashlib

    h = hashlib.sha1(json.dumps([list(ds.ids), config.k, config.graph_mode, config.shell_tol,
                                 [float(np.asarray(c.frac).sum()) for c in ds.crystals]]).encode()).hexdigest()[:16]
    path = pathlib.Path(cache_dir) / f"graphs_{h}.npz"
    names = ["numbers", "frac", "lattice", "mask", "senders", "receivers", "shifts", "emask", "n_edges", "overflow"]
    if path.exists():
        z = np.load(path)
        crystal = Crystal(numbers=z["numbers"], frac=z["frac"], lattice=z["lattice"], mask=z["mask"])
        graph = Graph(senders=z["senders"], receivers=z["receivers"], shifts=z["shifts"], mask=z["emask"],
                      n_edges=z["n_edges"], overflow=z["overflow"])
        return GraphData(crystal=crystal, graph=graph)
    gd = featurize(ds.crystals, config.k, config.graph_mode, config.shell_tol)
    path.parent.mkdir(parents=True, exist_ok=True)
    c, g = gd.crystal, gd.graph
    vals = [c.numbers, c.frac, c.lattice, c.mask, g.senders, g.receivers, g.shifts, g.mask, g.n_edges, g.overflow]
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in zip(names, vals)})
    os.replace(tmp, path)
    return gd


# ------------------------------------------------------------------------------------ training
def train_property(config: PropertyConfig, train_ds, val_ds, run_dir, test_ds=None, *, resume: bool = True,
                   log=print, cache_dir=None, source: dict | None = None) -> dict:
    """Train a property model; early stopping and model selection on ``val_ds``.

    Args:
        config: :class:`PropertyConfig`.
        train_ds, val_ds: :class:`~difcrys.data.Dataset` with ``properties[config.target]``.
        run_dir: run folder (created; an existing checkpoint with the same config is resumed).
        test_ds: optional held-out set, evaluated once with the best model.
        resume: resume from the run folder's checkpoint if present.
        log: progress printer (``None`` to silence).
        cache_dir: optional folder where the featurised graphs of each data set are stored
            (``.npz``, keyed by the structures' ids, count and the graph settings) and reused.
        source: the resolved YAML config (with its ``data`` section) when called from
            :func:`train_property_config`; stored in ``config.json`` so that ``difcrys evaluate``
            can rebuild the test split.

    Returns:
        dict with ``val_mae``, ``test_mae`` (target units), ``epochs``, ``best_epoch``,
        ``train_seconds``, ``n_train``, ``n_val``, ``n_test``, ``n_params``.
    """
    log = log or (lambda *a, **k: None)
    y_tr, y_va = _targets(train_ds, config.target), _targets(val_ds, config.target)
    y_te = _targets(test_ds, config.target) if test_ds is not None else None
    run = pathlib.Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    mean, std = float(y_tr.mean()), float(y_tr.std() or 1.0)
    t0 = time.time()
    feat = lambda ds: _cached_featurize(ds, config, cache_dir)
    gds = [feat(train_ds), feat(val_ds)] + ([feat(test_ds)] if test_ds is not None else [])
    gds = _common(gds)
    gd_tr, gd_va = gds[0], gds[1]
    gd_te = gds[2] if test_ds is not None else None
    log(f"featurised {len(gd_tr)}+{len(gd_va)}+{len(gd_te) if gd_te else 0} structures in {time.time() - t0:.1f} s")

    model = build_model(config.model, config.model_kwargs)
    resolved = {"task": "property", "config": dataclasses.asdict(config), "target_mean": mean, "target_std": std,
                "model_class": type(model).__name__, "units": (train_ds.units or {}).get(config.target, "")}
    if source is not None:
        resolved["source"] = source
    cfg_path = run / "config.json"
    key = jax.random.PRNGKey(config.seed)
    ex_c, ex_g = gd_tr.take(np.arange(min(config.batch_size, len(gd_tr))))
    variables = model.init(key, ex_c, ex_g)
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=config.lr, weight_decay=config.weight_decay)
    opt_state = tx.init(variables["params"])
    ckpt = {"variables": variables, "opt_state": opt_state, "epoch": 0, "best_val": float("inf"),
            "best_epoch": -1, "bad": 0, "bad_lr": 0, "lr": config.lr, "seconds": 0.0}
    if resume and ckpt_io.exists(str(run), ckpt_io.CHECKPOINT) and cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        free = ("epochs", "max_time_s", "patience", "n_buckets")  # may change between resumed sessions
        strip = lambda d: {k: v for k, v in (d or {}).items() if k not in free}
        if strip(old.get("config")) != strip(resolved["config"]):
            raise ConfigError(f"{run} holds a run with a different config; use another run_dir or resume=False")
        ckpt = ckpt_io.restore(str(run), ckpt_io.CHECKPOINT, ckpt)
        log(f"resumed from epoch {ckpt['epoch']}")
    else:
        (run / "metrics.jsonl").unlink(missing_ok=True)
        ckpt_io.clear(str(run))
    _write_json(cfg_path, resolved)
    n_params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(ckpt["variables"]["params"])))

    yn_tr = jnp.asarray((y_tr - mean) / std)

    def loss_fn(params, state, c, g, y):
        pred, new_state = model.apply({"params": params, "state": state}, c, g, train=True)
        pred = pred.astype(jnp.float32)
        r = pred - y.astype(pred.dtype)
        loss = jnp.mean(r**2) if config.loss == "mse" else jnp.mean(jnp.abs(r))
        return loss, (new_state, jnp.mean(jnp.abs(r)))

    @jax.jit
    def step(variables, opt_state, c, g, y):
        (loss, (new_state, m)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"], variables["state"], c, g, y)
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        return {"params": params, "state": new_state}, opt_state, loss, m

    variables, opt_state = ckpt["variables"], ckpt["opt_state"]
    B = min(config.batch_size, len(gd_tr))
    n_steps = len(gd_tr) // B
    plan = _bucket_plan(gd_tr, config.n_buckets, B) if config.n_buckets > 1 else None
    t_start = time.time() - float(ckpt["seconds"])
    epoch = int(ckpt["epoch"])
    while epoch < config.epochs:
        if config.max_time_s is not None and time.time() - t_start > config.max_time_s:
            log(f"time budget {config.max_time_s} s reached at epoch {epoch}")
            break
        te = time.time()
        rng = np.random.default_rng([config.seed, epoch])
        if plan is None:
            perm = rng.permutation(len(gd_tr))
            batches = [(perm[s * B:(s + 1) * B], None) for s in range(n_steps)]
        else:
            batches = []
            for idx_b, n_b, e_b in plan:
                p_b = rng.permutation(idx_b)
                batches += [(p_b[s * B:(s + 1) * B], (n_b, e_b)) for s in range(len(p_b) // B)]
            batches = [batches[k] for k in rng.permutation(len(batches))]
        opt_state.hyperparams["learning_rate"] = jnp.asarray(ckpt["lr"], jnp.float32)
        losses, maes = [], []
        for idx, size in batches:
            c, g = gd_tr.take(idx) if size is None else _take_trimmed(gd_tr, idx, *size)
            variables, opt_state, loss, m = step(variables, opt_state, c, g, yn_tr[idx])
            losses.append(loss)
            maes.append(m)
        train_loss = float(np.mean(jax.device_get(losses)))
        if not math.isfinite(train_loss):
            raise DifcrysError(f"training diverged at epoch {epoch} (loss {train_loss}); lower lr")
        val_mae = mae(predict_batched(model, variables, gd_va, B) * std + mean, y_va)
        epoch += 1
        improved = val_mae < ckpt["best_val"]
        if improved:
            ckpt.update(best_val=val_mae, best_epoch=epoch, bad=0, bad_lr=0)
            ckpt_io.save(str(run), ckpt_io.BEST, variables, epoch)
        else:
            ckpt["bad"] += 1
            ckpt["bad_lr"] += 1
            if ckpt["bad_lr"] >= config.lr_patience:
                ckpt["lr"] = max(ckpt["lr"] * config.lr_factor, config.min_lr)
                ckpt["bad_lr"] = 0
        rec = {"epoch": epoch, "lr": ckpt["lr"], "train_loss": train_loss,
               "train_mae": float(np.mean(jax.device_get(maes))) * std, "val_mae": val_mae,
               "seconds": time.time() - te}
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        log(f"epoch {epoch}: loss {train_loss:.4f} val MAE {val_mae:.4f} lr {ckpt['lr']:.2e} "
            f"({rec['seconds']:.1f} s){' *' if improved else ''}")
        ckpt.update(variables=variables, opt_state=opt_state, epoch=epoch, seconds=time.time() - t_start)
        ckpt_io.save(str(run), ckpt_io.CHECKPOINT, ckpt, epoch)
        if ckpt["bad"] >= config.patience:
            log(f"early stop at epoch {epoch} (best {ckpt['best_epoch']})")
            break

    best = ckpt_io.restore(str(run), ckpt_io.BEST, variables) if ckpt_io.exists(str(run), ckpt_io.BEST) else variables
    unit = resolved["units"]
    res = {"model": config.model, "target": config.target, "units": unit, "n_params": n_params,
           "n_train": len(gd_tr), "n_val": len(gd_va), "n_test": len(gd_te) if gd_te else 0,
           "epochs": epoch, "best_epoch": int(ckpt["best_epoch"]),
           "train_seconds": float(time.time() - t_start)}
    splits = [("val", gd_va, y_va, val_ds)] + ([("test", gd_te, y_te, test_ds)] if gd_te is not None else [])
    for name, gd, y, ds in splits:
        p = predict_batched(model, best, gd, B) * std + mean
        res[f"{name}_mae"] = mae(p, y)
        with open(run / f"predictions_{name}.csv", "w") as f:
            f.write("id,target,prediction\n")
            for i, a, b in zip(ds.ids, y, p):
                f.write(f"{i},{a:.6g},{b:.6g}\n")
        parity_plot(y, p, run / f"parity_{name}.png", f"{config.model} {name}", unit)
    _write_json(run / "results.json", res)
    return res


# ----------------------------------------------------------------------------------- inference
class Predictor:
    """A trained model loaded from a run folder: ``predictor(crystals) -> [N]`` in target units."""

    def __init__(self, run_dir, which: str = "best"):
        run = pathlib.Path(run_dir)
        if which not in ("best", "last", "checkpoint"):
            raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
        cfg_path = run / "config.json"
        kind = ckpt_io.BEST if which == "best" else ckpt_io.CHECKPOINT
        if not cfg_path.exists() or not ckpt_io.exists(str(run), kind):
            raise ConfigError(f"{run} is not a property run folder (needs config.json and a {kind} checkpoint)")
        meta = json.loads(cfg_path.read_text())
        if "config" not in meta or "target_mean" not in meta:
            raise ConfigError(f"{run} is not a property run folder (config.json has no property config)")
        self.meta = meta
        self.run_dir = run
        self.config = PropertyConfig(**meta["config"])
        self.mean, self.std = float(meta["target_mean"]), float(meta["target_std"])
        self.units = meta.get("units", "")
        self.model = build_model(self.config.model, self.config.model_kwargs)
        template = self.model.init(jax.random.PRNGKey(0))
        # "last": the variables inside the resumable checkpoint of the last complete epoch
        self.variables = ckpt_io.restore(str(run), kind, template, key=None if which == "best" else "variables")

    def featurize(self, crystals) -> GraphData:
        return featurize(crystals, self.config.k, self.config.graph_mode, self.config.shell_tol)

    def __call__(self, crystals) -> np.ndarray:
        """Predictions [target units] for a list of Crystals (raises on empty input/unknown elements)."""
        gd = self.featurize(crystals)
        return predict_batched(self.model, self.variables, gd, self.config.batch_size) * self.std + self.mean


def load_predictor(run_dir, which: str = "best") -> Predictor:
    """Load a run's weights with its config (see :class:`Predictor`).

    Args:
        run_dir: a property run folder.
        which: ``"best"`` (best validation MAE, ``best/``) or ``"last"`` (last complete
            epoch, from ``checkpoints/``; ``"checkpoint"`` is an alias).
    """
    return Predictor(run_dir, which)


# ----------------------------------------------------------------------------------- baselines
def composition_features(crystals) -> np.ndarray:
    """``[N, MAX_Z]`` element fractions (column ``Z - 1``): the composition-only representation.

    Raises:
        StructureError: empty list. ElementError: Z outside 1 … MAX_Z.
    """
    cl = list(crystals)
    if not cl:
        raise StructureError("empty batch: no structures")
    X = np.zeros((len(cl), MAX_Z))
    for r, c in enumerate(cl):
        z = np.asarray(c.numbers)[np.asarray(c.mask, bool)]
        check_elements(z)
        np.add.at(X[r], z - 1, 1.0)
        X[r] /= max(len(z), 1)
    return X


def mean_baseline(y_train, y_eval) -> float:
    """MAE of predicting the training-set mean."""
    return mae(np.full(len(y_eval), np.mean(y_train)), y_eval)


def composition_ridge(train_crystals, y_train, val_crystals, y_val, test_crystals=None, y_test=None,
                      alphas=tuple(10.0 ** np.arange(-6, 3))) -> dict:
    """Ridge regression on element fractions plus their pairwise products (composition only).

    Features: fractions ``f`` (``[MAX_Z]``) and the upper triangle of ``f f^T`` restricted to the
    elements present in the training set (a quadratic composition model: it can represent
    pairwise element interactions, which a linear model on fractions cannot). ``alpha`` is chosen
    by validation MAE.

    Returns:
        dict with ``alpha``, ``val_mae`` and (if given) ``test_mae``.
    """
    Ftr, Fva = composition_features(train_crystals), composition_features(val_crystals)
    used = np.flatnonzero(Ftr.sum(0) > 0)
    iu = np.triu_indices(len(used))

    def phi(F):
        f = F[:, used]
        q = (f[:, :, None] * f[:, None, :])[:, iu[0], iu[1]]
        return np.concatenate([np.ones((len(f), 1)), f, q], axis=1)

    Xtr, Xva = phi(Ftr), phi(Fva)
    ytr = np.asarray(y_train, float)
    mu = ytr.mean()
    best = None
    G = Xtr.T @ Xtr
    for a in alphas:
        w = np.linalg.solve(G + a * np.eye(len(G)), Xtr.T @ (ytr - mu))
        m = mae(Xva @ w + mu, y_val)
        if best is None or m < best[1]:
            best = (a, m, w)
    out = {"alpha": float(best[0]), "val_mae": best[1], "n_features": int(Xtr.shape[1])}
    if test_crystals is not None:
        out["test_mae"] = mae(phi(composition_features(test_crystals)) @ best[2] + mu, y_test)
    return out


# ------------------------------------------------------------------------- YAML-driven training
#: keys of the ``train:`` section of a property YAML config (the remaining PropertyConfig fields)
_TRAIN_KEYS = ("batch_size", "epochs", "lr", "weight_decay", "loss", "patience", "lr_patience", "lr_factor",
               "min_lr", "max_time_s", "seed", "n_buckets")
#: graph settings accepted in the ``model:`` section next to the model's own hyper-parameters
_GRAPH_KEYS = ("k", "graph_mode", "shell_tol")


def _resolve_path(path, base_dir) -> str:
    """``path`` as given if it exists, else relative to ``base_dir`` (the config file's folder)."""
    p = pathlib.Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists() or base_dir is None:
        return str(p)
    return str((pathlib.Path(base_dir) / p).resolve())


def load_property_data(spec, base_dir=None):
    """A :class:`~difcrys.data.Dataset` from one entry of a property config's ``data`` section.

    Forms (``max_structures: N`` keeps the first N of any of them):

    * ``{set: NAME, part: PART}``: a shared data set (:func:`difcrys.data.load_shared`);
      ``"NAME:PART"`` is the same as a string;
    * ``{path: FILE.csv}`` or ``"FILE.csv"``: a CDVAE-style CIF-in-CSV file with label columns;
    * ``ids_file: SPLIT.json, ids_key: train`` (with either of the above): keep only the structures
      whose ``material_id`` is listed under ``ids_key`` in the JSON file (a saved split), in the
      file's order;
    * a list of entries: their concatenation.

    Relative paths are taken as given if they exist, else relative to ``base_dir``.

    Raises:
        ConfigError: malformed entry, unknown ids, missing ids file.
    """
    from difcrys.data import Dataset, load_shared, read_cif_csv

    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError("an empty list is not a data entry")
        parts = [load_property_data(s, base_dir) for s in spec]
        return parts[0] if len(parts) == 1 else Dataset.concatenate(parts, name="+".join(p.name for p in parts))
    if isinstance(spec, str):
        path = _resolve_path(spec, base_dir)
        if not os.path.exists(path) and ":" in spec:
            name, part = spec.split(":", 1)
            spec = {"set": name, "part": part}
        else:
            spec = {"path": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"a data entry must be {{set, part}}, {{path}}, 'SET:PART' or a list, got {spec!r}")
    spec = dict(spec)
    n_max = spec.pop("max_structures", None)
    ids_file, ids_key = spec.pop("ids_file", None), spec.pop("ids_key", None)
    unknown = set(spec) - {"set", "part", "path"}
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in data entry; known: set, part, path, "
                          "max_structures, ids_file, ids_key")
    if "set" in spec:
        ds = load_shared(spec["set"], spec.get("part"))
    elif "path" in spec:
        path = _resolve_path(spec["path"], base_dir)
        if not os.path.isfile(path):
            raise ConfigError(f"data file not found: {spec['path']}")
        ds = read_cif_csv(path)
    else:
        raise ConfigError(f"a data entry needs 'set' (shared data) or 'path' (CSV), got {sorted(spec)}")
    if ids_file is not None:
        if ids_key is None:
            raise ConfigError("a data entry with ids_file also needs ids_key (e.g. train, val, test)")
        fpath = _resolve_path(ids_file, base_dir)
        if not os.path.isfile(fpath):
            raise ConfigError(f"split file not found: {ids_file}")
        split = json.loads(pathlib.Path(fpath).read_text())
        if ids_key not in split:
            raise ConfigError(f"{ids_file} has no key {ids_key!r} (keys: {sorted(split)})")
        where = {i: k for k, i in enumerate(ds.ids)}
        missing = [i for i in split[ids_key] if i not in where]
        if missing:
            raise ConfigError(f"{len(missing)} id(s) of {ids_file}[{ids_key}] are not in {ds.name}: {missing[:5]}")
        ds = ds.subset([where[i] for i in split[ids_key]])
        ds.name = f"{ds.name}[{ids_key}]"
    if n_max is not None:
        ds = ds[: int(n_max)]
    return ds


def property_datasets(cfg: dict, base_dir=None):
    """``(train, val, test | None)`` Datasets from the ``data`` section of a property config.

    ``data`` keys: ``target`` (label name), ``train`` (entry or list of entries, see
    :func:`load_property_data`), ``val`` (entry; if absent, ``val_fraction`` (default 0.1) of the
    training entries is held out with a fixed permutation of seed ``split_seed`` (default 0):
    ``perm = default_rng(split_seed).permutation(N)``, the first ``floor(val_fraction N)`` are the
    validation set, the rest, in that order, are fitted), ``test`` (entry, optional).

    Raises:
        ConfigError: missing ``target``/``train``, unknown keys, a split that leaves a part empty.
    """
    data = dict(cfg.get("data") or {})
    unknown = set(data) - {"target", "train", "val", "test", "val_fraction", "split_seed", "cache_dir"}
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in the data section")
    for k in ("target", "train"):
        if k not in data:
            raise ConfigError(f"a property config needs data.{k}")
    train = load_property_data(data["train"], base_dir)
    if data.get("val") is not None:
        val = load_property_data(data["val"], base_dir)
    else:
        frac = float(data.get("val_fraction", 0.1))
        n_val = int(len(train) * frac)
        if not 0 < n_val < len(train):
            raise ConfigError(f"val_fraction {frac} of {len(train)} training structures leaves an empty part")
        perm = np.random.default_rng(int(data.get("split_seed", 0))).permutation(len(train))
        name = train.name
        train, val = train.subset(perm[n_val:]), train.subset(perm[:n_val])
        train.name, val.name = f"{name}[fit]", f"{name}[holdout]"
    test = load_property_data(data["test"], base_dir) if data.get("test") is not None else None
    return train, val, test


def property_config_from_dict(cfg: dict) -> PropertyConfig:
    """The :class:`PropertyConfig` of a resolved YAML config (sections ``data``, ``model``, ``train``).

    ``model`` holds ``name`` (``cgcnn`` | ``equivariant``), the graph settings ``k``,
    ``graph_mode``, ``shell_tol`` and the model's hyper-parameters (CGCNNConfig /
    EquivariantConfig fields); ``train`` the optimisation settings of :class:`PropertyConfig`.
    """
    model = dict(cfg.get("model") or {})
    train = dict(cfg.get("train") or {})
    unknown = set(train) - set(_TRAIN_KEYS)
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} in section train; known: {sorted(_TRAIN_KEYS)}")
    name = model.pop("name", "cgcnn")
    graph = {k: model.pop(k) for k in _GRAPH_KEYS if k in model}
    target = (cfg.get("data") or {}).get("target")
    if target is None:
        raise ConfigError("a property config needs data.target")
    for k in ("lr", "weight_decay", "lr_factor", "min_lr", "max_time_s"):
        if train.get(k) is not None:
            try:
                train[k] = float(train[k])
            except (TypeError, ValueError):
                raise ConfigError(f"train.{k} must be a number, got {train[k]!r}") from None
    try:
        build_model(name, model)  # validates the model's hyper-parameters
    except TypeError as e:
        raise ConfigError(f"model section: {e}") from None
    return PropertyConfig(model=name, model_kwargs=model, target=str(target), **graph, **train)


def train_property_config(config_path, run_dir, *, variant: str | None = None, resume: bool = True,
                          overrides: dict | None = None, log=print, cache_dir=None) -> dict:
    """Train a property model from a YAML config (``task: property``): the ``difcrys train`` entry.

    A config has the sections ``data`` (see :func:`property_datasets`), ``model`` and ``train``
    (see :func:`property_config_from_dict`), optional ``name``/``description`` and ``variants``
    (e.g. a tiny ``test`` variant). Example (``configs/property_perov5_cgcnn.yaml``)::

        task: property
        data:
          target: heat_ref
          train: [{set: perov_5, part: train_subset_dev}, {set: perov_5, part: val}]
          val_fraction: 0.1
          test: {set: perov_5, part: test}
        model: {name: cgcnn}
        train: {epochs: 300, batch_size: 64, lr: 0.002, loss: l1}

    Writes the run folder of :func:`train_property`; its ``config.json`` holds ``task: property``
    and the resolved YAML (``source``), so ``difcrys evaluate RUN_DIR`` can rebuild the test split.

    Args:
        config_path: YAML file (or an already loaded dict).
        run_dir: run folder.
        variant: named variant of the config (``test``).
        resume: continue from the run folder's checkpoint if there is one.
        overrides: dict deep-merged onto the config (e.g. ``{"train": {"max_time_s": 600}}``).
        log: progress printer (None: silent).
        cache_dir: folder for featurised graphs (default: ``data.cache_dir`` or none).

    Returns:
        the summary of :func:`train_property` plus ``name`` and ``run_dir``.

    Raises:
        ConfigError: unknown sections/keys, wrong ``task``, missing data or target.
    """
    from difcrys.train.config import deep_merge, load_yaml

    if isinstance(config_path, dict):
        cfg, base_dir = dict(config_path), None
    else:
        cfg = load_yaml(config_path, variant)
        base_dir = os.path.dirname(os.path.abspath(config_path))
    if overrides:
        cfg = deep_merge(cfg, overrides)
    cfg.setdefault("task", "property")
    if cfg["task"] != "property":
        raise ConfigError(f"config task is {cfg['task']!r}, not 'property'")
    unknown = set(cfg) - {"name", "task", "description", "data", "model", "train", "variant"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; known: data, model, train "
                          "(and name, task, description, variants)")
    pcfg = property_config_from_dict(cfg)
    train_ds, val_ds, test_ds = property_datasets(cfg, base_dir)
    source = json.loads(json.dumps(cfg, default=str))
    source["base_dir"] = base_dir
    cache = cache_dir if cache_dir is not None else (cfg.get("data") or {}).get("cache_dir")
    res = train_property(pcfg, train_ds, val_ds, run_dir, test_ds, resume=resume, log=log, cache_dir=cache,
                         source=source)
    return {"name": cfg.get("name"), "run_dir": str(run_dir), **res}


def evaluate_property_run(run_dir, data=None, which: str = "best", plot=None) -> dict:
    """MAE of a trained property run on its own test split or on ``data``.

    Args:
        run_dir: run folder of :func:`train_property` / :func:`train_property_config`.
        data: None (the run's ``data.test`` entry, recorded in ``config.json``), a data entry of
            :func:`load_property_data` (``"SET:PART"``, a CSV path, a dict), or a Dataset.
        which: ``"best"`` or ``"last"`` weights.
        plot: optional PNG path for a parity plot.

    Returns:
        dict with ``n``, ``mae``, ``rmse``, ``max_abs_error``, ``mae_of_training_mean`` (the error of
        predicting the stored training-set mean, for scale), ``target``, ``units``, ``data``.

    Raises:
        ConfigError: not a property run, no recorded test split and no ``data``, missing target.
    """
    from difcrys.data import Dataset

    pred = load_predictor(run_dir, which)
    src = pred.meta.get("source")
    if data is None:
        if not src or not (src.get("data") or {}).get("test"):
            raise ConfigError(f"{run_dir} records no test split (trained without a YAML data.test); "
                              "give DATA (SET:PART or a CSV file)")
        spec, base = src["data"]["test"], src.get("base_dir")
        ds = load_property_data(spec, base)
        label = "test split of the run"
    elif isinstance(data, Dataset):
        ds, label = data, data.name
    else:
        ds, label = load_property_data(data, None), str(data)
    y = _targets(ds, pred.config.target)
    p = pred(ds.crystals)
    err = p - y
    out = {"run_dir": str(run_dir), "data": label, "target": pred.config.target, "units": pred.units,
           "which": which, "n": int(len(y)), "mae": float(np.mean(np.abs(err))),
           "rmse": float(np.sqrt(np.mean(err**2))), "max_abs_error": float(np.max(np.abs(err))),
           "mae_of_training_mean": mean_baseline([pred.mean], y)}
    if plot:
        parity_plot(y, p, plot, f"{pred.config.model} {label}", pred.units)
        out["parity_plot"] = str(plot)
    return out
