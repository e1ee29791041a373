"""A generic optax training loop: EMA, LR plateau decay or cosine anneal, early stopping, checkpoints with resume,
metrics JSONL, progress bars, and data parallelism with ``jax.sharding``.

The loop knows nothing about the model: a **task** object supplies it (duck-typed protocol,
see :class:`Task`). It is reused by the potential trainer (:mod:`difcrys.train.potential`) and is
meant for the property-model and Hamiltonian trainers too.

Run folder layout (``run_dir``)::

    config.yaml          resolved configuration (written by the task-specific driver)
    metrics.jsonl        one JSON line per epoch: epoch, lr, train loss/metrics, val metrics, time
    checkpoints/<epoch>/ orbax: last complete epoch(s): params, EMA params, optimiser state, counters
    best/<epoch>/        orbax: EMA parameters with the best validation metric so far

Checkpoints (:mod:`difcrys.train.checkpoint`, orbax ``CheckpointManager``) are written at the end of
every ``checkpoint_every`` epochs; orbax finalises a step by renaming its temporary folder, so a
kill while saving keeps the previous step, and the stored tree is the flax state dict of plain
arrays (portable between machines, no pickles). A run interrupted at any point resumes from the
last complete epoch (loses at most one epoch). Shuffling is seeded by ``(seed, epoch)``, so an interrupted and resumed run
follows the same trajectory as an uninterrupted one.

Data parallelism: with ``devices = d > 1`` the batch axis of every batch leaf is sharded over a
1-D ``jax.sharding.Mesh`` of ``d`` devices (``NamedSharding(mesh, P("batch"))``) and the
parameters are replicated; ``jit`` then partitions the step (GSPMD) and inserts the gradient
all-reduce. On a CPU, test it with ``XLA_FLAGS=--xla_force_host_platform_device_count=d``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Iterable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from difcrys.errors import ConfigError, ConvergenceError

__all__ = ["TrainConfig", "Task", "FitResult", "fit", "make_optimizer", "annealed_lr"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the ``train:`` section of a config).

    Attributes:
        epochs: maximum number of epochs.
        batch_size: structures per batch (a multiple of ``devices``).
        lr: initial learning rate.
        optimizer: ``"adam"``, ``"adamw"`` or ``"amsgrad"``.
        weight_decay: decoupled weight decay (adamw).
        grad_clip: global-norm gradient clipping (None: off).
        ema_decay: decay of the exponential moving average of the weights used for validation and
            the saved model (None: no EMA).
        plateau_patience: epochs without validation improvement before the LR is multiplied by
            ``plateau_factor``.
        plateau_factor: LR decay factor on a plateau.
        min_lr: the LR is not decayed below this; training stops when it would be.
        anneal_epochs: if set, a cosine anneal replaces the plateau decay from epoch
            ``anneal_start_epoch`` on: the LR of (0-based) epoch e is
            ``f + (lr - f) (1 + cos(pi t)) / 2`` with ``t = min((e - anneal_start_epoch) / anneal_epochs, 1)``
            and ``f = anneal_final_lr``; before ``anneal_start_epoch`` the plateau decay applies. Set
            ``anneal_start_epoch`` to the epoch a resumed run stopped at to anneal its tail.
        anneal_start_epoch: first epoch of the anneal (0: from the start).
        anneal_final_lr: LR at the end of the anneal (kept afterwards).
        early_stopping_patience: stop after this many epochs without improvement (None: never).
        seed: random seed (initialisation and shuffling).
        n_buckets: atom-count buckets of the loader (distinct compiled shapes).
        devices: number of devices for data parallelism.
        progress: show tqdm progress bars.
        time_limit_s: stop (after checkpointing) once this wall time is exceeded.
        checkpoint_every: write the checkpoint every this many epochs.
        verbose: print one summary line per epoch.
    """

    epochs: int = 100
    batch_size: int = 4
    lr: float = 5e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    grad_clip: float | None = 10.0
    ema_decay: float | None = 0.99
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    anneal_epochs: int | None = None
    anneal_start_epoch: int = 0
    anneal_final_lr: float = 1e-5
    early_stopping_patience: int | None = 40
    seed: int = 0
    n_buckets: int = 3
    devices: int = 1
    progress: bool = True
    time_limit_s: float | None = None
    checkpoint_every: int = 1
    verbose: bool = True

    def __post_init__(self):
        if int(self.epochs) < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not (float(self.lr) > 0):
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "adamw", "amsgrad"):
            raise ConfigError(f"train.optimizer must be adam, adamw or amsgrad, got {self.optimizer!r}")
        if self.ema_decay is not None and not (0.0 <= float(self.ema_decay) < 1.0):
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (0 < float(self.plateau_factor) <= 1):
            raise ConfigError(f"train.plateau_factor must be in (0, 1], got {self.plateau_factor}")
        if self.anneal_epochs is not None and int(self.anneal_epochs) < 1:
            raise ConfigError(f"train.anneal_epochs must be >= 1 (or null), got {self.anneal_epochs}")
        if int(self.anneal_start_epoch) < 0:
            raise ConfigError(f"train.anneal_start_epoch must be >= 0, got {self.anneal_start_epoch}")
        if self.anneal_epochs is not None and not (0 < float(self.anneal_final_lr) <= float(self.lr)):
            raise ConfigError(f"train.anneal_final_lr must be in (0, lr], got {self.anneal_final_lr}")
        if int(self.devices) < 1 or int(self.batch_size) % int(self.devices):
            raise ConfigError(f"train.batch_size ({self.batch_size}) must be a multiple of train.devices "
                              f"({self.devices}) >= 1")


class Task(Protocol):
    """What :func:`fit` needs from a model/data pairing (duck-typed).

    * ``init(key) -> params``
    * ``train_batches(epoch) -> iterable`` of batch pytrees (leading axis = batch size), shuffled
      deterministically from the epoch number;
    * ``val_batches() -> iterable`` of batch pytrees;
    * ``loss(params, batch, weights) -> (loss, metrics)`` — jittable; ``metrics`` a dict of
      scalars averaged over batches for logging;
    * ``loss_weights(epoch) -> dict`` of floats (schedules), passed to ``loss`` as ``weights``;
    * ``evaluate(params, batches) -> dict`` of floats (host) — validation metrics;
    * ``val_metric``: the key of ``evaluate``'s output to minimise.
    """

    val_metric: str

    def init(self, key): ...
    def train_batches(self, epoch: int) -> Iterable: ...
    def val_batches(self) -> Iterable: ...
    def loss(self, params, batch, weights): ...
    def loss_weights(self, epoch: int) -> dict: ...
    def evaluate(self, params, batches) -> dict: ...


@dataclasses.dataclass
class FitResult:
    """Outcome of :func:`fit`: best (EMA) parameters, last parameters, per-epoch history."""

    params: Any
    last_params: Any
    history: list
    epoch: int
    best_metric: float
    stopped: str


# ---------------------------------------------------------------------------------- utilities
def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """optax chain: optional clipping, then Adam/AdamW/AMSGrad with an injectable learning rate."""
    def base(learning_rate):
        if cfg.optimizer == "adamw":
            opt = optax.adamw(learning_rate, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "amsgrad":
            opt = optax.amsgrad(learning_rate)
        else:
            opt = optax.adam(learning_rate)
        if cfg.grad_clip:
            opt = optax.chain(optax.clip_by_global_norm(float(cfg.grad_clip)), opt)
        return opt

    return optax.inject_hyperparams(base)(learning_rate=float(cfg.lr))


def annealed_lr(cfg: TrainConfig, epoch: int) -> float | None:
    """The cosine-annealed LR of (0-based) ``epoch``, or None outside an anneal (plateau decay applies)."""
    if cfg.anneal_epochs is None or epoch < int(cfg.anneal_start_epoch):
        return None
    t = min((epoch - int(cfg.anneal_start_epoch)) / int(cfg.anneal_epochs), 1.0)
    lo, hi = float(cfg.anneal_final_lr), float(cfg.lr)
    return lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * t))


def _set_lr(opt_state, lr: float) -> None:
    """Set the injected learning rate of an ``optax.inject_hyperparams`` state in place."""
    opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, opt_state.hyperparams["learning_rate"].dtype)


def _ema_update(ema, params, decay):
    return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def _mesh(n: int):
    from jax.sharding import Mesh

    devs = jax.devices()
    if len(devs) < n:
        raise ConfigError(f"train.devices={n} but only {len(devs)} JAX device(s) are available "
                          "(on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax)")
    return Mesh(np.asarray(devs[:n]), ("batch",))


def _progress(it, total, desc, enabled):
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return it
    return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------------- the loop
def fit(task, cfg: TrainConfig, run_dir, *, resume: bool = True,
        callback: Callable[[int, int], None] | None = None) -> FitResult:
    """Train ``task`` with the settings ``cfg``, writing checkpoints and metrics to ``run_dir``.

    Args:
        task: a :class:`Task`.
        cfg: :class:`TrainConfig`.
        run_dir: the run folder (created).
        resume: continue from the checkpoint in ``run_dir`` if there is one.
        callback: called as ``callback(epoch, step)`` after every optimisation step (tests use it
            to interrupt a run).

    Returns:
        :class:`FitResult` with the best EMA parameters.

    Raises:
        ConvergenceError: the loss became NaN or infinite.
    """
    os.makedirs(run_dir, exist_ok=True)
    from difcrys.train import checkpoint as ck

    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    t_start = time.time()

    opt = make_optimizer(cfg)
    params = task.init(jax.random.PRNGKey(cfg.seed))
    state = {
        "params": params,
        "ema": params,
        "opt_state": opt.init(params),
        "epoch": np.int64(0),          # number of completed epochs
        "best_metric": np.float64(np.inf),
        "best_params": params,
        "bad_epochs": np.int64(0),
        "lr": np.float64(cfg.lr),
        "step": np.int64(0),
    }
    if resume and ck.exists(run_dir, ck.CHECKPOINT):
        state = ck.restore(run_dir, ck.CHECKPOINT, state)
    else:  # a fresh run: drop an earlier run's checkpoints and log from this folder
        ck.clear(run_dir)
        if os.path.isfile(metrics_path):
            os.remove(metrics_path)
    _set_lr(state["opt_state"], float(state["lr"]))

    sharded = cfg.devices > 1
    if sharded:
        from jax.sharding import NamedSharding, PartitionSpec as P

        mesh = _mesh(cfg.devices)
        repl = NamedSharding(mesh, P())
        split = NamedSharding(mesh, P("batch"))

        def put_batch(b):
            return jax.tree_util.tree_map(
                lambda x: jax.device_put(x, split if (np.ndim(x) >= 1 and np.shape(x)[0] == cfg.batch_size)
                                         else repl), b)
        for k in ("params", "ema", "opt_state", "best_params"):
            state[k] = jax.device_put(state[k], repl)
    else:
        def put_batch(b):
            return b

    ema_decay = None if cfg.ema_decay is None else float(cfg.ema_decay)

    @jax.jit
    def train_step(params, ema, opt_state, batch, weights):
        (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, weights)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = params if ema_decay is None else _ema_update(ema, params, ema_decay)
        return params, ema, opt_state, loss, metrics

    history = []
    stopped = "epochs"
    params, ema, opt_state = state["params"], state["ema"], state["opt_state"]
    start_epoch = int(state["epoch"])
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        annealed = annealed_lr(cfg, epoch)
        if annealed is not None:
            state["lr"] = np.float64(annealed)
            _set_lr(opt_state, annealed)
        weights = {k: jnp.asarray(v, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
                   for k, v in task.loss_weights(epoch).items()}
        batches = list(task.train_batches(epoch))
        sums, count = {}, 0
        for batch in _progress(batches, len(batches), f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress):
            params, ema, opt_state, loss, metrics = train_step(params, ema, opt_state, put_batch(batch), weights)
            loss = float(loss)
            if not math.isfinite(loss):
                raise ConvergenceError(f"training loss became {loss} at epoch {epoch + 1}; lower train.lr "
                                       "or check the data for outliers")
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
            state["step"] = np.int64(int(state["step"]) + 1)
            if callback is not None:
                callback(epoch, int(state["step"]))
        train_metrics = {k: v / max(count, 1) for k, v in sums.items()}
        eval_params = ema
        val = task.evaluate(eval_params, task.val_batches())
        metric = float(val[task.val_metric])
        lr = float(state["lr"])
        improved = metric < float(state["best_metric"])
        if improved:
            state["best_metric"] = np.float64(metric)
            state["best_params"] = eval_params
            state["bad_epochs"] = np.int64(0)
            ck.save(run_dir, ck.BEST, eval_params, epoch + 1)
        else:
            state["bad_epochs"] = np.int64(int(state["bad_epochs"]) + 1)
        plateau = (not improved) and int(state["bad_epochs"]) > 0 and int(state["bad_epochs"]) % cfg.plateau_patience == 0
        if plateau and annealed is None:
            lr = lr * cfg.plateau_factor
            state["lr"] = np.float64(lr)
            _set_lr(opt_state, lr)
        record = {"epoch": epoch + 1, "lr": lr, "time_s": time.time() - t0,
                  **{f"train_{k}": v for k, v in train_metrics.items()},
                  **{f"val_{k}": v for k, v in val.items()}, "best": improved}
        history.append(record)
        with open(metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        state.update(params=params, ema=ema, opt_state=opt_state, epoch=np.int64(epoch + 1))
        last = epoch + 1 == cfg.epochs
        stop = None
        if cfg.early_stopping_patience is not None and int(state["bad_epochs"]) >= cfg.early_stopping_patience:
            stop = "early_stopping"
        elif annealed is None and lr < cfg.min_lr:
            stop = "min_lr"
        elif cfg.time_limit_s is not None and time.time() - t_start > cfg.time_limit_s:
            stop = "time_limit"
        if (epoch + 1) % cfg.checkpoint_every == 0 or last or stop:
            ck.save(run_dir, ck.CHECKPOINT, state, epoch + 1)
        if cfg.verbose:
            print(f"epoch {epoch + 1}: loss {train_metrics.get('loss', float('nan')):.4g} "
                  f"val {task.val_metric} {metric:.4g} lr {lr:.3g} ({record['time_s']:.1f} s)", flush=True)
        if stop:
            stopped = stop
            break
    return FitResult(params=state["best_params"], last_params=state["params"], history=history,
                     epoch=int(state["epoch"]), best_metric=float(state["best_metric"]), stopped=stopped)
