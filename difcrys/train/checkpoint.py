"""Checkpoints of every trainer: orbax, one folder per kind, with resume and a legacy reader.

A run folder holds two orbax checkpoint directories managed by ``orbax.checkpoint.CheckpointManager``::

    checkpoints/<epoch>/   the resumable training state of the last complete epochs (two are kept)
    best/<epoch>/          the parameters with the best validation metric so far (one is kept)

Orbax writes each step into a temporary folder and renames it when complete, so a run killed while
saving keeps its previous checkpoint: an interrupted run resumes from the last complete epoch.
The stored tree is the ``flax.serialization`` state dict of the pytree (nested dicts of plain
arrays: optax states, named tuples and dataclasses included), so any machine with difcrys can
restore it into the structure of a freshly initialised model.

Run folders written before orbax was adopted hold ``checkpoint.msgpack`` / ``best.msgpack`` files
(``flax.serialization`` msgpack); :func:`restore` reads those when no orbax folder exists, so old
trained models keep loading.
"""

from __future__ import annotations

import os
import warnings

import jax
import numpy as np

from difcrys.errors import ConfigError

__all__ = ["save", "restore", "exists", "latest_step", "clear", "CHECKPOINT", "BEST"]

CHECKPOINT = "checkpoints"
BEST = "best"
_KEEP = {CHECKPOINT: 2, BEST: 1}
_LEGACY = {CHECKPOINT: "checkpoint.msgpack", BEST: "best.msgpack"}


def _manager(path: str, keep: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import orbax.checkpoint as ocp

        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                            enable_async_checkpointing=False)
        return ocp, ocp.CheckpointManager(os.path.abspath(path), options=opts)


def _to_storable(tree):
    """State dict of ``tree`` with every leaf a NumPy array (orbax stores arrays, not Python scalars);
    empty containers (e.g. optax's ``EmptyState``) are dropped and re-created from the template."""
    from flax import serialization

    def clean(d):
        if isinstance(d, dict):
            out = {str(k): clean(v) for k, v in d.items()}
            return {k: v for k, v in out.items() if not (isinstance(v, dict) and not v) and v is not None}
        return np.asarray(jax.device_get(d))

    return clean(serialization.to_state_dict(tree))


def _fill(template_sd, raw):
    """Restore the empty containers dropped by :func:`_to_storable` from the template's state dict."""
    if isinstance(template_sd, dict):
        raw = dict(raw or {})
        for k, v in template_sd.items():
            if k in raw:
                raw[k] = _fill(v, raw[k])
            elif isinstance(v, dict) and not v:
                raw[k] = {}
            elif v is None:
                raw[k] = None
        return raw
    return raw


def _retype(template, tree):
    """Give each restored leaf the type of the template's leaf (Python int/float stay Python scalars,
    NumPy scalars NumPy scalars, arrays arrays with the template's dtype)."""
    def one(t, x):
        if isinstance(t, bool):
            return bool(np.asarray(x))
        if isinstance(t, int):
            return int(np.asarray(x))
        if isinstance(t, float):
            return float(np.asarray(x))
        if isinstance(t, np.generic):
            return type(t)(np.asarray(x))
        dt = getattr(t, "dtype", None)
        arr = np.asarray(x)
        return jax.numpy.asarray(arr if dt is None else arr.astype(dt))

    return jax.tree_util.tree_map(one, template, tree)


def latest_step(run_dir: str, kind: str = CHECKPOINT) -> int | None:
    """Newest complete orbax step of ``run_dir/kind``, or None."""
    path = os.path.join(run_dir, kind)
    if not os.path.isdir(path):
        return None
    steps = [int(s) for s in os.listdir(path) if s.isdigit()
             and os.path.isfile(os.path.join(path, s, "_CHECKPOINT_METADATA"))]
    return max(steps) if steps else None


def exists(run_dir: str, kind: str = CHECKPOINT) -> bool:
    """True when ``run_dir`` holds a checkpoint of this kind (orbax, or a legacy msgpack file)."""
    return latest_step(run_dir, kind) is not None or os.path.isfile(os.path.join(run_dir, _LEGACY[kind]))


def clear(run_dir: str) -> None:
    """Remove every checkpoint of ``run_dir`` (orbax folders and legacy msgpack files).

    Called when a run starts from scratch in an existing folder: otherwise the old run's higher
    epoch numbers would stay the "latest" steps and be loaded instead of the new run's.
    """
    import shutil

    for kind in _KEEP:
        shutil.rmtree(os.path.join(run_dir, kind), ignore_errors=True)
        legacy = os.path.join(run_dir, _LEGACY[kind])
        if os.path.isfile(legacy):
            os.remove(legacy)


def save(run_dir: str, kind: str, tree, step: int) -> None:
    """Write ``tree`` as orbax step ``step`` of ``run_dir/kind`` (``"checkpoints"`` or ``"best"``);
    older steps beyond the kept number are deleted by orbax."""
    if kind not in _KEEP:
        raise ConfigError(f"unknown checkpoint kind {kind!r}; expected one of {sorted(_KEEP)}")
    ocp, mgr = _manager(os.path.join(run_dir, kind), _KEEP[kind])
    step = int(step)
    if step in mgr.all_steps():  # re-saving the same epoch (e.g. a resumed run that stops at once)
        mgr.delete(step)
    mgr.save(step, args=ocp.args.StandardSave(_to_storable(tree)))
    mgr.wait_until_finished()
    mgr.close()


def restore(run_dir: str, kind: str, template=None, key: str | None = None):
    """Read the newest checkpoint of ``run_dir/kind``.

    Args:
        template: a pytree with the structure to restore into (e.g. freshly initialised parameters
            or a training state); None returns the raw nested dict of NumPy arrays.
        key: restore only this top-level entry of the stored tree (e.g. ``"ema"`` of a training
            state), into ``template``.

    Raises:
        ConfigError: no checkpoint of this kind in ``run_dir``, or it does not fit the template.
    """
    from flax import serialization

    step = latest_step(run_dir, kind)
    if step is not None:
        ocp, mgr = _manager(os.path.join(run_dir, kind), _KEEP[kind])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = mgr.restore(step, args=ocp.args.StandardRestore())
        mgr.close()
    else:
        legacy = os.path.join(run_dir, _LEGACY[kind])
        if not os.path.isfile(legacy):
            raise ConfigError(f"{run_dir}: no {kind} checkpoint (neither {kind}/ nor {_LEGACY[kind]})")
        with open(legacy, "rb") as fh:
            raw = serialization.msgpack_restore(fh.read())
    if key is not None:
        if not isinstance(raw, dict) or key not in raw:
            raise ConfigError(f"{run_dir}/{kind}: checkpoint has no entry {key!r}")
        raw = raw[key]
    if template is None:
        return raw
    try:
        sd = _fill(serialization.to_state_dict(template), raw)
        tree = serialization.from_state_dict(template, sd)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{run_dir}/{kind}: checkpoint does not match the model ({exc})") from exc
    return _retype(template, tree)
