"""Training driver of the crystal diffusion model (``task: diffusion`` configs).

``difcrys train configs/diffusion_perov5.yaml [--variant test]`` calls :func:`train_diffusion`, which
loads the data, builds the :class:`~difcrys.diffusion.model.DiffusionSpec` and the
:class:`~difcrys.nn.denoiser.CSPNet`, and runs :func:`difcrys.train.loop.fit` (EMA, plateau LR decay,
orbax checkpoints every epoch — a killed run resumes losing at most one epoch — ``metrics.jsonl``,
tqdm progress bars). The run folder gets ``config.yaml`` (resolved, with ``task: diffusion``),
``spec.json``, ``checkpoints/`` and ``best/`` (orbax; EMA weights with the lowest validation loss)
and ``summary.json``.

Config sections::

    task: diffusion
    data:      {set, train_parts, test_part, val_fraction, max_train, condition, v_scale}
    diffusion: {task: csp|gen, T, sigma_min, sigma_max, w_coord, w_lattice, w_type, p_uncond}
    model:     {hidden, n_layers, n_freq, time_dim}
    train:     difcrys.train.loop.TrainConfig fields
    sample:    {n_steps, corrector_steps, step_lr, guidance_scale}
    eval:      {n_samples, batch_size}
    finetune:  {from_run, adapter_only}   # MatterGen-style adapter fine-tuning of a frozen base model

The validation split is a seeded ``val_fraction`` of the training pool (the shared data have no
separate validation part when ``val`` is used for training); the test part is never seen.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.errors import ConfigError

__all__ = ["DataConfig", "DiffusionConfig", "train_diffusion", "load_run", "load_data"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``data:`` section. ``train_parts`` are parts of the shared set ``set`` (or CSV paths)."""

    set: str = "perov_5"
    train_parts: tuple = ("train_subset_dev", "val")
    test_part: str = "test"
    val_fraction: float = 0.05
    max_train: int | None = None
    condition: tuple = ()
    v_scale: float | None = None


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """``diffusion:`` section (see :mod:`difcrys.diffusion.model`)."""

    task: str = "csp"
    T: int = 1000
    sigma_min: float = 0.005
    sigma_max: float = 0.5
    w_coord: float = 1.0
    w_lattice: float = 1.0
    w_type: float = 1.0
    p_uncond: float = 0.1


def _read_part(set_name, part):
    from difcrys.data import load_shared, read_cif_csv

    if str(part).endswith(".csv") and os.path.exists(part):
        return read_cif_csv(part)
    return load_shared(set_name, part)


def load_data(dcfg: DataConfig, which: str = "train"):
    """Crystals and labels of the training pool (``which='train'``) or the test part.

    Returns:
        ``(crystals, properties dict)``.
    """
    parts = list(dcfg.train_parts) if which == "train" else [dcfg.test_part]
    crystals, props = [], {}
    for p in parts:
        ds = _read_part(dcfg.set, p)
        crystals += list(ds.crystals)
        for k, v in ds.properties.items():
            props.setdefault(k, []).append(np.asarray(v))
    props = {k: np.concatenate(v) for k, v in props.items() if len(v) == len(parts)}
    for name in dcfg.condition:
        if name not in props:
            raise ConfigError(f"condition property {name!r} not in the data; available: {sorted(props)}")
    return crystals, props


def _configs(cfg: dict):
    from difcrys.nn.denoiser import DenoiserConfig
    from difcrys.train.config import dataclass_from_dict
    from difcrys.train.loop import TrainConfig

    d = dict(cfg.get("data") or {})
    for k in ("train_parts", "condition"):
        if k in d and d[k] is not None:
            d[k] = tuple(d[k]) if isinstance(d[k], (list, tuple)) else (d[k],)
    data = dataclass_from_dict(DataConfig, d, "data")
    diff = dataclass_from_dict(DiffusionConfig, cfg.get("diffusion"), "diffusion")
    model_kw = dict(cfg.get("model") or {})
    for k in ("n_types", "n_cond"):
        if k in model_kw:
            raise ConfigError(f"model.{k} is set from the data; remove it from the config")
    DenoiserConfig(n_types=1, **model_kw)  # validate keys and values early
    train = dataclass_from_dict(TrainConfig, cfg.get("train"), "train")
    return data, diff, model_kw, train


class _Task:
    """:class:`difcrys.train.loop.Task` for the diffusion loss (random keys travel in the batch)."""

    val_metric = "loss"

    def __init__(self, spec, net, arrays, train_idx, val_idx, loss_fn, batch_size, seed, base=None):
        self.spec, self.net, self.arrays = spec, net, arrays
        self.train_idx, self.val_idx = train_idx, val_idx
        self.loss_fn, self.B, self.seed = loss_fn, batch_size, seed
        self.base = base  # (base params, adapter mask) for adapter fine-tuning

    def _batch(self, idx, key):
        b = {k: jnp.asarray(v[idx]) for k, v in self.arrays.items()}
        b["key"] = key
        return b

    def init(self, key):
        a = self.arrays
        B = min(2, len(a["n"]))
        spec = self.spec
        args = (jnp.asarray(a["types"][:B]), jnp.asarray(a["frac"][:B], jnp.float32),
                jnp.asarray(a["lattice"][:B], jnp.float32), jnp.asarray(a["mask"][:B]), jnp.zeros(B),
                jnp.ones(B))
        kw = {"cond": jnp.asarray(a["cond"][:B]), "cond_mask": jnp.asarray(a["has_cond"][:B])} if spec.n_cond else {}
        params = self.net.init(key, *args, **kw)
        if self.base is not None:
            params = _merge(params, self.base[0])
        return params

    def train_batches(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        idx = rng.permutation(self.train_idx)
        nb = max(len(idx) // self.B, 1)
        for i in range(nb):
            sel = idx[i * self.B:(i + 1) * self.B]
            if len(sel) < self.B:
                sel = np.resize(sel, self.B)
            yield self._batch(sel, jax.random.PRNGKey(hash((self.seed, epoch, i)) % (2**31)))

    def val_batches(self):
        idx = self.val_idx
        for i in range(max(int(np.ceil(len(idx) / self.B)), 1)):
            sel = np.resize(idx[i * self.B:(i + 1) * self.B], self.B)
            yield self._batch(sel, jax.random.PRNGKey(1000 + i))

    def loss(self, params, batch, weights):
        if self.base is not None:
            mask = self.base[1]
            params = jax.tree_util.tree_map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)
        b = {k: v for k, v in batch.items() if k != "key"}
        return self.loss_fn(params, b, batch["key"])

    def loss_weights(self, epoch):
        return {}

    def evaluate(self, params, batches):
        if not hasattr(self, "_eval"):
            self._eval = jax.jit(lambda p, b: self.loss(p, b, {}))
        tot, parts, n = 0.0, {}, 0
        for b in batches:
            l, m = self._eval(params, b)
            tot += float(l)
            for k, v in m.items():
                parts[k] = parts.get(k, 0.0) + float(v)
            n += 1
        return {"loss": tot / n, **{k: v / n for k, v in parts.items()}}


def _merge(params, base):
    """Copy every base-model parameter whose path exists in ``params`` (adapter fine-tuning)."""
    flat_b = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(base)[0]}
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for p, v in leaves:
        k = jax.tree_util.keystr(p)
        out.append(flat_b[k] if k in flat_b and np.shape(flat_b[k]) == np.shape(v) else v)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), out)


def build_net(spec, model_kw):
    from difcrys.nn.denoiser import CSPNet, DenoiserConfig

    return CSPNet(DenoiserConfig(n_types=spec.K, n_cond=spec.n_cond, **model_kw))


def train_diffusion(config_path, run_dir, *, variant=None, resume: bool = True) -> dict:
    """Train a diffusion model from a YAML config (module docstring); returns a JSON-able summary."""
    from difcrys.diffusion import model as dm
    from difcrys.train.config import dump_yaml, load_yaml
    from difcrys.train.loop import fit

    cfg = load_yaml(config_path, variant)
    if cfg.get("task", "diffusion") != "diffusion":
        raise ConfigError(f"{config_path}: task is {cfg.get('task')!r}, expected 'diffusion'")
    cfg["task"] = "diffusion"
    data, diff, model_kw, train = _configs(cfg)
    os.makedirs(run_dir, exist_ok=True)
    t0 = time.time()
    crystals, props = load_data(data, "train")
    rng = np.random.default_rng(train.seed)
    order = rng.permutation(len(crystals))
    if data.max_train:
        order = order[: int(data.max_train)]
    n_val = max(1, int(round(data.val_fraction * len(order))))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    cond = {k: props[k] for k in data.condition}
    spec_path = os.path.join(run_dir, "spec.json")
    if resume and os.path.exists(spec_path):
        spec = dm.DiffusionSpec.from_json(spec_path)
    else:
        # vocabulary, counts, c, v and condition statistics from the whole pool (train + validation)
        pool = np.concatenate([train_idx, val_idx])
        spec = dm.spec_from_data([crystals[i] for i in pool], diff.task, T=diff.T, sigma_min=diff.sigma_min,
                                 sigma_max=diff.sigma_max, v_scale=data.v_scale,
                                 cond={k: v[pool] for k, v in cond.items()})
    used = np.concatenate([train_idx, val_idx])
    keep = np.zeros(len(crystals), bool)
    keep[used] = True
    cond_arr = np.stack([cond[k] for k in data.condition], 1) if data.condition else None
    arrays_sel = dm.prepare_batch(spec, [crystals[i] for i in used],
                                  None if cond_arr is None else cond_arr[used])
    remap = {int(g): i for i, g in enumerate(used)}
    tr = np.array([remap[int(i)] for i in train_idx])
    va = np.array([remap[int(i)] for i in val_idx])
    net = build_net(spec, model_kw)
    loss_fn = dm.make_loss(spec, net, w_coord=diff.w_coord, w_lattice=diff.w_lattice, w_type=diff.w_type,
                           p_uncond=diff.p_uncond)
    base = None
    ft = cfg.get("finetune") or {}
    unknown = set(ft) - {"from_run", "adapter_only"}
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} in section finetune")
    if ft.get("from_run"):
        from difcrys.nn.denoiser import adapter_mask

        bspec, bnet, bparams, _ = load_run(ft["from_run"])
        if tuple(bspec.elements) != tuple(spec.elements) or bspec.task != spec.task:
            raise ConfigError("finetune.from_run: the base model's task/element vocabulary differ from this data")
        if not spec.n_cond:
            raise ConfigError("finetune needs data.condition (the property the adapters learn)")
        task0 = _Task(spec, net, arrays_sel, tr, va, loss_fn, train.batch_size, train.seed)
        template = task0.init(jax.random.PRNGKey(0))
        amask = adapter_mask(template) if ft.get("adapter_only", True) else \
            jax.tree_util.tree_map(lambda _: True, template)
        base = (bparams, amask)
    task = _Task(spec, net, arrays_sel, tr, va, loss_fn, train.batch_size, train.seed, base)
    spec.to_json(spec_path)
    dump_yaml(cfg, os.path.join(run_dir, "config.yaml"))
    print(f"diffusion ({spec.task}): {len(tr)} train / {len(va)} val structures, {spec.K} elements, "
          f"n_max {spec.n_max}, c = {spec.c:.3f} Å³/atom, v = {spec.v:.3f} Å³ (data {time.time() - t0:.1f} s)",
          flush=True)
    res = fit(task, train, run_dir, resume=resume)
    summary = {"run_dir": str(run_dir), "task": spec.task, "epochs": res.epoch, "best_val_loss": res.best_metric,
               "stopped": res.stopped, "n_train": int(len(tr)), "n_val": int(len(va)), "elements": len(spec.elements),
               "wall_time_s": time.time() - t0}
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def load_run(run_dir, which: str = "best"):
    """``(spec, net, params, config dict)`` of a diffusion run folder.

    Raises:
        ConfigError: not a diffusion run folder or no checkpoint.
    """
    import yaml

    from difcrys.diffusion import model as dm
    from difcrys.train import checkpoint as ckpt

    cpath, spath = os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "spec.json")
    if not (os.path.exists(cpath) and os.path.exists(spath)):
        raise ConfigError(f"{run_dir} is not a diffusion run folder (needs config.yaml and spec.json)")
    with open(cpath) as f:
        cfg = yaml.safe_load(f)
    if cfg.get("task") != "diffusion":
        raise ConfigError(f"{run_dir} holds a {cfg.get('task')!r} run, not a diffusion model")
    spec = dm.DiffusionSpec.from_json(spath)
    _, _, model_kw, train = _configs(cfg)
    net = build_net(spec, model_kw)
    task = _Task(spec, net, _dummy_arrays(spec), np.arange(1), np.arange(1), None, 1, 0)
    template = task.init(jax.random.PRNGKey(0))
    if which == "last" and ckpt.exists(run_dir, ckpt.CHECKPOINT):
        params = ckpt.restore(run_dir, ckpt.CHECKPOINT, template, key="ema")
    elif ckpt.exists(run_dir, ckpt.BEST):
        params = ckpt.restore(run_dir, ckpt.BEST, template)
    else:
        raise ConfigError(f"{run_dir}: no checkpoint ({which}) yet")
    return spec, net, params, cfg


def _dummy_arrays(spec):
    n = spec.n_max
    mask = np.zeros((2, n), bool)
    mask[:, 0] = True
    return {"types": np.zeros((2, n), np.int32), "frac": np.zeros((2, n, 3)), "lattice": np.stack([np.eye(3) * 4] * 2),
            "mask": mask, "n": np.ones(2, np.int32), "cond": np.zeros((2, max(spec.n_cond, 1))),
            "has_cond": np.zeros(2, bool)}
