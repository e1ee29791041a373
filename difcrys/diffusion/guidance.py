"""Gradient guidance by differentiable property predictors, and latent optimisation.

**Objectives.** A target is a value, a range or an inequality on a predicted property ``f(M)``
(:func:`difcrys.diffusion.model.parse_condition`), turned into a penalty that is zero when the target
is met:

* value ``y``: ``((f − y)/s)^2``; range ``[a, b]``: ``(relu(a − f)^2 + relu(f − b)^2)/s^2``;
* ``f ≥ a``: ``relu(a − f)^2/s^2``; ``f ≤ b``: ``relu(f − b)^2/s^2``,

with ``s`` the predictor's target standard deviation; several objectives add up. During sampling
(:func:`difcrys.diffusion.model.make_sampler`, argument ``guidance``) the gradient of the total penalty
at the Tweedie estimate of the clean structure is subtracted from the coordinate score and added to
the lattice noise (classifier guidance, Dhariwal & Nichol 2021, Eq. 14 / universal guidance,
Bansal et al. 2023), types enter as probabilities.

**Predictors.** :func:`predictor_fn` wraps a property model of :mod:`difcrys.train.property` (CGCNN or
the e3nn network) as a pure, jit-able function of ``(frac, lattice, type_probs, mask)``: its 12-NN
graph is selected inside ``jit`` (:func:`difcrys.graph.knn_from_graph`) from all atom pairs within
``±images`` periodic images (the training graphs add the neighbours tied with the 12th — a strict
12-NN is used here, differing only for exactly tied shells).

**Latent optimisation** (:func:`optimise_latent`): the CDVAE property-optimisation recipe of the
seed (optimise a latent by back-propagation, decode structures along the way) with the latent being
the initial noise ``(X_T, L_T)`` of the deterministic probability-flow sampler (Song et al. 2021,
Eq. 13; DDIM for the lattice), differentiated through the unrolled sampler.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.errors import ConfigError

__all__ = ["Objective", "penalty", "predictor_fn", "guidance_fn", "check_target", "optimise_latent"]


@dataclasses.dataclass(frozen=True)
class Objective:
    """One target on one predicted property: ``kind`` in ``value|range|ge|le``, bounds ``lo, hi``, scale ``s``."""

    name: str
    kind: str
    lo: float
    hi: float
    scale: float = 1.0
    weight: float = 1.0


def penalty(f, obj: Objective):
    """Penalty ``[B]`` of predictions ``f`` ``[B]`` (module docstring); zero when the target is met."""
    s = obj.scale
    if obj.kind == "value":
        return ((f - obj.lo) / s) ** 2
    lo = jax.nn.relu(obj.lo - f) ** 2 if math.isfinite(obj.lo) else 0.0
    hi = jax.nn.relu(f - obj.hi) ** 2 if math.isfinite(obj.hi) else 0.0
    return (lo + hi) / s**2


def satisfied(f, obj: Objective, tol: float = 0.0) -> np.ndarray:
    """Whether each prediction meets the target (value: within ``tol``)."""
    f = np.asarray(f)
    if obj.kind == "value":
        return np.abs(f - obj.lo) <= tol
    return (f >= obj.lo - tol) & (f <= obj.hi + tol)


def check_target(obj: Objective, lo_data: float, hi_data: float, what: str = "") -> None:
    """Reject targets that cannot be met: entirely outside the observed range widened by 25 % of its span.

    Raises:
        ConfigError: naming the property, the target and the range seen in training.
    """
    span = hi_data - lo_data
    a, b = lo_data - 0.25 * span, hi_data + 0.25 * span
    if obj.hi < a or obj.lo > b:
        raise ConfigError(
            f"impossible target for {obj.name}: [{obj.lo}, {obj.hi}] lies outside the range seen in training "
            f"({lo_data:.4g} … {hi_data:.4g}){' ' + what if what else ''}")


def _dense_candidates(n: int, images: int):
    r = np.arange(-images, images + 1)
    S = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    i, j, s = np.meshgrid(np.arange(n), np.arange(n), np.arange(len(S)), indexing="ij")
    i, j, s = i.ravel(), j.ravel(), s.ravel()
    keep = ~((i == j) & np.all(S[s] == 0, axis=1))
    return i[keep].astype(np.int32), j[keep].astype(np.int32), S[s[keep]].astype(np.int32)


def predictor_fn(predictor, elements, n_max: int, images: int = 2):
    """Pure function ``f(frac [B,n,3], lattice [B,3,3], type_probs [B,n,K], mask [B,n]) -> [B]`` (target units).

    Args:
        predictor: :class:`difcrys.train.property.Predictor`.
        elements: the diffusion vocabulary (atomic numbers of the ``K`` type classes).
        n_max: atom slots.
        images: periodic images per direction searched for the 12 nearest neighbours.
    """
    from difcrys.crystal import Crystal
    from difcrys.graph import Graph, knn_from_graph
    from difcrys.nn.cgcnn import MAX_Z

    k = int(predictor.config.k)
    si, sj, sS = _dense_candidates(n_max, images)
    E = np.zeros((len(elements), MAX_Z))
    for a, z in enumerate(elements):
        if z > MAX_Z:
            raise ConfigError(f"element Z={z} is outside the property model's feature table (1 … {MAX_Z})")
        E[a, z - 1] = 1.0
    E = jnp.asarray(E)
    model, variables, mean, std = predictor.model, predictor.variables, predictor.mean, predictor.std

    def one_graph(frac, lattice, mask):
        emask = mask[si] & mask[sj]
        g = Graph(senders=jnp.where(emask, si, n_max), receivers=jnp.where(emask, sj, n_max), shifts=jnp.asarray(sS),
                  mask=emask, n_edges=jnp.sum(emask, dtype=jnp.int32), overflow=jnp.asarray(False))
        c = Crystal(numbers=jnp.where(mask, 1, 0).astype(jnp.int32), frac=frac, lattice=lattice, mask=mask)
        return knn_from_graph(c, jax.lax.stop_gradient(g), k)

    def f(frac, lattice, type_probs, mask):
        fr = jax.lax.stop_gradient(frac)
        lt = jax.lax.stop_gradient(lattice)
        g = jax.vmap(one_graph)(fr, lt, mask)
        numbers = jnp.where(mask, jnp.argmax(type_probs @ E, -1) + 1, 0).astype(jnp.int32)
        c = Crystal(numbers=numbers, frac=frac, lattice=lattice, mask=mask)
        tp = (type_probs @ E) * mask[..., None]
        y, _ = model.apply(variables, c, g, type_probs=tp)
        return y * std + mean

    return f


def guidance_fn(fns_objs):
    """Sum of penalties of several ``(predictor function, Objective)`` pairs: ``J(frac, L, probs, mask) -> [B]``."""
    def J(frac, lattice, probs, mask):
        tot = 0.0
        for fn, obj in fns_objs:
            tot = tot + obj.weight * penalty(fn(frac, lattice, probs, mask), obj)
        return tot

    return J


def optimise_latent(spec, net, params, sampler_cfg, composition_types, n_atoms, objective, *, steps: int = 100,
                    lr: float = 0.05, decode_every: int = 20, key=None, progress: bool = True, dtype=jnp.float32):
    """Optimise the initial noise of the deterministic sampler for a property objective (CSP setting).

    Args:
        spec, net, params: a trained model (:func:`difcrys.train.diffusion.load_run`).
        sampler_cfg: :class:`~difcrys.diffusion.model.SamplerConfig` (``deterministic`` is forced).
        composition_types: ``[B, n_max]`` type classes; n_atoms: ``[B]``.
        objective: ``J(frac, lattice, type_probs, mask) -> [B]`` (:func:`guidance_fn`).
        steps: Adam steps on the latent; decode_every: decode (run the sampler) every this many steps.

    Returns:
        dict: ``history`` (mean objective per step), ``decoded`` (list of ``(step, state)``), ``state``.
    """
    import optax

    from difcrys.diffusion import model as dm

    cfg = dataclasses.replace(sampler_cfg, deterministic=True, corrector_steps=0)
    init, step, grid = dm.make_sampler(spec, net, params, cfg, dtype=dtype)
    raw = step.raw
    st0 = init(key if key is not None else jax.random.PRNGKey(0), n_atoms, composition_types)
    pairs = jnp.asarray(np.stack([grid[:-1], grid[1:]], 1))
    from difcrys.diffusion import lattice as lat

    z0 = {"frac": st0["frac"], "Z": lat.to_normalised(st0["lattice"], st0["n"], spec.c, spec.v)}

    def rollout(z):
        st = dict(st0, frac=z["frac"] % 1.0, lattice=lat.from_normalised(0.5 * (z["Z"] + jnp.swapaxes(z["Z"], -1, -2)),
                                                                        st0["n"], spec.c, spec.v).astype(dtype))
        st, _ = jax.lax.scan(lambda s, ts: (raw(s, ts[0], ts[1]), None), st, pairs)
        return st

    K = spec.K

    def loss(z):
        st = rollout(z)
        probs = jax.nn.one_hot(jnp.clip(st["types"], 0, K - 1), K, dtype=dtype)
        return jnp.mean(objective(st["frac"], st["lattice"], probs, st["mask"])), st

    vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
    opt = optax.adam(lr)
    z = z0
    os_ = opt.init(z)
    hist, decoded = [], []
    it = range(steps + 1)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="latent optimisation", leave=False)
    for i in it:
        (val, st), g = vg(z)
        hist.append(float(val))
        if i % decode_every == 0 or i == steps:
            decoded.append((i, jax.device_get(st)))
        if i < steps:
            up, os_ = opt.update(g, os_, z)
            z = optax.apply_updates(z, up)
    return {"history": hist, "decoded": decoded, "state": decoded[-1][1]}
