"""The joint diffusion model over M = (A, X, L): data preparation, training loss, samplers.

A :class:`DiffusionSpec` holds everything static about a trained model (task, element vocabulary,
atom-count distribution, lattice prior constants ``c`` and ``v``, schedules, conditioning
normalisation); it is saved as ``spec.json`` in the run folder. Tasks:

* ``csp`` — crystal structure prediction: the composition is given, ``X`` and ``L`` are generated
  (types are never corrupted; DiffCSP's CSP setting);
* ``gen`` — de novo generation of ``(A, X, L)``: the number of atoms is drawn from the training
  distribution, types start fully masked.

Corruptions: :mod:`~difcrys.diffusion.wrapped_normal` (X), :mod:`~difcrys.diffusion.masked` (A),
:mod:`~difcrys.diffusion.lattice` (L, symmetric representation). Training loss (per crystal,
``t ∼ U{1…T}``; DiffCSP Eq. 11 plus the MaskGIT type loss):

.. math::  \\mathcal L = w_L \\|\\hat ε_L − ε_L\\|^2
         + w_X \\frac{1}{3n} \\sum_i \\|\\hat s_i − ∇_{x_i}\\log q(x_t|x_0)/\\sqrt{λ_t}\\|^2
         + w_A\\, \\mathrm{CE}_{\\text{masked}}.

Samplers (:func:`make_sampler`): ancestral DDPM for ``L``, ancestral masked-diffusion for ``A``, and
for ``X`` the reverse-SDE predictor with an optional Langevin corrector (predictor–corrector,
Song et al., ICLR 2021, Alg. 2; DiffCSP Alg. 2), on any sub-sequence of the ``T`` training steps;
each step is one jit-compiled function of a whole batch. Classifier-free guidance (Ho & Salimans
2022, Eq. 6) and gradient guidance (:mod:`difcrys.diffusion.guidance`) enter the scores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal, atomic_number, chemical_symbol
from difcrys.diffusion import lattice as lat
from difcrys.diffusion import masked, wrapped_normal as wn
from difcrys.diffusion.schedules import Schedules, make_schedules
from difcrys.errors import ConfigError, ElementError, StructureError

__all__ = ["DiffusionSpec", "spec_from_data", "prepare_batch", "make_loss", "make_sampler",
           "parse_composition", "parse_condition", "to_crystals", "count_distribution"]


@dataclasses.dataclass(frozen=True)
class DiffusionSpec:
    """Static description of a diffusion model (saved with every run as ``spec.json``).

    Attributes:
        task: ``"csp"`` or ``"gen"``.
        elements: atomic numbers of the vocabulary (class ``k`` is ``elements[k]``; MASK is
            ``len(elements)``).
        n_max: largest atom count seen in training (padding size).
        n_probs: ``[n_max]`` empirical probability of ``n = 1 … n_max`` atoms.
        c: mean volume per atom of the training data [Å³].
        v: lattice-noise volume scale [Å³] (default: mean cell volume of the data, see
            :mod:`~difcrys.diffusion.lattice`).
        T, sigma_min, sigma_max: schedules (:func:`~difcrys.diffusion.schedules.make_schedules`).
        cond_names: conditioning properties (empty: unconditional).
        cond_mean, cond_std: their normalisation (training statistics).
        cond_min, cond_max: their training range (conditions outside are rejected).
        z_clip: bound of the predicted clean lattice in normalised units ``Z = (L − μ(n) I)/σ(n)``
            during sampling (1.5 × the largest ``|Z_0|`` of the training data + 0.05).
    """

    task: str
    elements: tuple
    n_max: int
    n_probs: tuple
    c: float
    v: float
    T: int = 1000
    sigma_min: float = 0.005
    sigma_max: float = 0.5
    cond_names: tuple = ()
    cond_mean: tuple = ()
    cond_std: tuple = ()
    cond_min: tuple = ()
    cond_max: tuple = ()
    z_clip: float = 1.0

    def __post_init__(self):
        if self.task not in ("csp", "gen"):
            raise ConfigError(f"diffusion task must be 'csp' or 'gen', got {self.task!r}")

    @property
    def K(self) -> int:
        return len(self.elements)

    @property
    def n_cond(self) -> int:
        return len(self.cond_names)

    def schedules(self) -> Schedules:
        return make_schedules(self.T, self.sigma_min, self.sigma_max)

    def to_json(self, path) -> None:
        with open(path, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=1)

    @classmethod
    def from_json(cls, path) -> "DiffusionSpec":
        with open(path) as f:
            d = json.load(f)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    # ------------------------------------------------------------------ input checks
    def class_of(self, numbers) -> np.ndarray:
        """Vocabulary classes of atomic numbers; raises ElementError for elements unseen in training."""
        lut = {z: k for k, z in enumerate(self.elements)}
        bad = sorted({int(z) for z in np.asarray(numbers).ravel() if int(z) not in lut})
        if bad:
            raise ElementError(
                f"element(s) {[chemical_symbol(z) for z in bad]} never seen in this model's training data; "
                f"known: {''.join(chemical_symbol(z) + ' ' for z in self.elements).strip()}")
        return np.asarray([lut[int(z)] for z in np.asarray(numbers).ravel()], np.int32)

    def check_n(self, n: int) -> None:
        if not 1 <= int(n) <= self.n_max:
            raise ConfigError(f"{n} atoms is outside the trained range 1 … {self.n_max} of this model")


def count_distribution(ns, n_max) -> tuple:
    h = np.bincount(np.asarray(ns), minlength=n_max + 1)[1:n_max + 1].astype(float)
    return tuple((h / h.sum()).tolist())


def spec_from_data(crystals, task: str, *, T: int = 1000, sigma_min: float = 0.005, sigma_max: float = 0.5,
                   v_scale: float | None = None, cond: dict | None = None) -> DiffusionSpec:
    """Build a :class:`DiffusionSpec` from training crystals (vocabulary, counts, ``c``, ``v``).

    Args:
        crystals: training Crystals.
        v_scale: lattice noise volume ``v`` [Å³]; default the mean cell volume.
        cond: ``{name: values [N]}`` conditioning properties.
    """
    ns = np.array([int(np.asarray(c.mask).sum()) for c in crystals])
    vols = np.array([abs(np.linalg.det(np.asarray(c.lattice))) for c in crystals])
    zs = sorted({int(z) for c in crystals for z, m in zip(np.asarray(c.numbers), np.asarray(c.mask)) if m})
    n_max = int(ns.max())
    S = np.asarray(lat.symmetric_lattice(jnp.asarray(np.stack([np.asarray(c.lattice, float) for c in crystals]))))
    c_ = float(np.mean(vols / ns))
    v_ = float(v_scale or np.mean(vols))
    z0 = np.asarray(lat.to_normalised(jnp.asarray(S), jnp.asarray(ns), c_, v_))
    cond = cond or {}
    names = tuple(cond)
    arr = [np.asarray(cond[k], float) for k in names]
    return DiffusionSpec(task=task, elements=tuple(zs), n_max=n_max, n_probs=count_distribution(ns, n_max),
                         c=float(np.mean(vols / ns)), v=float(v_scale or np.mean(vols)), T=int(T),
                         sigma_min=float(sigma_min), sigma_max=float(sigma_max), cond_names=names,
                         cond_mean=tuple(float(a.mean()) for a in arr),
                         cond_std=tuple(float(a.std() + 1e-12) for a in arr),
                         cond_min=tuple(float(a.min()) for a in arr), cond_max=tuple(float(a.max()) for a in arr),
                         z_clip=float(1.5 * np.abs(z0).max() + 0.05))


def prepare_batch(spec: DiffusionSpec, crystals, cond: np.ndarray | None = None, n_pad: int | None = None) -> dict:
    """Host-side arrays of a batch: classes, frac, symmetric lattice, mask, n, cond.

    Returns:
        dict of NumPy arrays ``types [B,n] int32``, ``frac [B,n,3]``, ``lattice [B,3,3]`` (symmetric
        polar factor), ``mask [B,n]``, ``n [B]``, ``cond [B,n_cond]``, ``has_cond [B]``.
    """
    n_pad = n_pad or spec.n_max
    B = len(crystals)
    types = np.zeros((B, n_pad), np.int32)
    frac = np.zeros((B, n_pad, 3))
    L = np.zeros((B, 3, 3))
    mask = np.zeros((B, n_pad), bool)
    for b, c in enumerate(crystals):
        m = np.asarray(c.mask)
        z = np.asarray(c.numbers)[m]
        if len(z) > n_pad:
            raise ConfigError(f"structure {b} has {len(z)} atoms, more than the model's maximum {n_pad}")
        types[b, :len(z)] = spec.class_of(z)
        f = np.asarray(c.frac)[m]
        frac[b, :len(z)] = f - np.floor(f)
        L[b] = np.asarray(c.lattice)
        mask[b, :len(z)] = True
    L = np.asarray(lat.symmetric_lattice(jnp.asarray(L)))
    nc = max(spec.n_cond, 1)
    cond_arr = np.zeros((B, nc)) if cond is None else \
        (np.asarray(cond, float).reshape(B, -1) - np.asarray(spec.cond_mean)) / np.asarray(spec.cond_std)
    has = np.zeros(B, bool) if cond is None else np.all(np.isfinite(cond_arr), axis=1)
    cond_arr = np.where(np.isfinite(cond_arr), cond_arr, 0.0)
    return {"types": types, "frac": frac, "lattice": L, "mask": mask, "n": mask.sum(1).astype(np.int32),
            "cond": cond_arr, "has_cond": has}


def _tables(spec: DiffusionSpec, dtype):
    sch = spec.schedules()
    lam = np.zeros(spec.T + 1)
    lam[1:] = wn.score_norm(sch.sigma[1:], n_grid=2001)
    return {"sigma": jnp.asarray(sch.sigma, dtype), "ab_L": jnp.asarray(sch.alpha_bar_lattice, dtype),
            "ab_A": jnp.asarray(sch.alpha_bar_types, dtype), "lam": jnp.asarray(lam, dtype)}


def _apply(net, params, spec, types, frac, L, mask, t, n, cond, has_cond):
    scale = lat.mu(n, spec.c)
    kw = {}
    if spec.n_cond:
        kw = {"cond": cond, "cond_mask": has_cond}
    return net.apply(params, types, frac, L, mask, t, scale, **kw)


def make_loss(spec: DiffusionSpec, net, *, w_coord: float = 1.0, w_lattice: float = 1.0, w_type: float = 1.0,
              p_uncond: float = 0.1, dtype=jnp.float32) -> Callable:
    """``loss(params, batch, key) -> (loss, metrics)`` (module docstring; jit-able).

    ``batch`` is :func:`prepare_batch`'s dict (as arrays). Conditions are dropped with probability
    ``p_uncond`` (classifier-free guidance training).
    """
    tab = _tables(spec, dtype)
    K = spec.K
    Kimg = wn.n_images(spec.sigma_max)

    def loss(params, batch, key):
        types, x0, L0, mask, n = batch["types"], batch["frac"].astype(dtype), batch["lattice"].astype(dtype), \
            batch["mask"], batch["n"]
        B = x0.shape[0]
        kt, kx, kl, ka, kc = jax.random.split(key, 5)
        t = jax.random.randint(kt, (B,), 1, spec.T + 1)
        sig = tab["sigma"][t][:, None, None]
        xt, _ = wn.sample(kx, x0, sig)
        target = wn.score(xt, x0, sig, Kimg) / jnp.sqrt(tab["lam"][t])[:, None, None]
        Lt, epsL = lat.sample(kl, L0, tab["ab_L"][t], n, spec.c, spec.v)
        if spec.task == "gen":
            at = masked.sample_marginal(ka, types, tab["ab_A"][t][:, None], K)
            at = jnp.where(mask, at, K)
        else:
            at = types
        has = batch["has_cond"] & (jax.random.uniform(kc, (B,)) >= p_uncond)
        out = _apply(net, params, spec, at, xt, Lt, mask, t.astype(dtype) / spec.T, n, batch["cond"].astype(dtype), has)
        mf = mask.astype(dtype)[..., None]
        lx = jnp.sum(((out["coord"] - target) ** 2) * mf, axis=(1, 2)) / (3 * jnp.maximum(n, 1))
        eh = 0.5 * (out["lattice"] + jnp.swapaxes(out["lattice"], -1, -2))
        ll = jnp.mean((eh - epsL) ** 2, axis=(1, 2))
        total = w_coord * jnp.mean(lx) + w_lattice * jnp.mean(ll)
        metrics = {"loss_coord": jnp.mean(lx), "loss_lattice": jnp.mean(ll)}
        if spec.task == "gen":
            la, _ = masked.masked_cross_entropy(out["type_logits"], types, at, mask)
            total = total + w_type * la
            metrics["loss_type"] = la
        return total, metrics

    return loss


# ------------------------------------------------------------------------------------ parsing
def parse_composition(text: str) -> list[int]:
    """``"Ba1Ti1O3"`` / ``"BaTiO3"`` → list of atomic numbers (one per atom).

    Raises:
        ConfigError: malformed formula. ElementError: unknown element symbol.
    """
    toks = re.findall(r"([A-Z][a-z]?)(\d*)", text or "")
    if not toks or "".join(s + c for s, c in toks) != text.strip():
        raise ConfigError(f"cannot parse composition {text!r}; write it like Ba1Ti1O3 or BaTiO3")
    out = []
    for sym, cnt in toks:
        k = int(cnt) if cnt else 1
        if k < 1:
            raise ConfigError(f"composition {text!r}: count of {sym} must be >= 1")
        out += [atomic_number(sym)] * k
    return out


def parse_condition(text: str) -> tuple[str, str, float, float]:
    """``"band_gap=1.5..2.5"`` (range), ``"band_gap=2"`` (value), ``"band_gap>1"`` / ``"<"`` (inequality).

    Returns:
        ``(name, kind, lo, hi)`` with kind in ``value|range|ge|le``.
    """
    num = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
    m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*(=|>=|<=|>|<)\s*" + num + r"(?:\.\." + num + r")?\s*", text or "")
    if not m:
        raise ConfigError(f"cannot parse condition {text!r}; use NAME=VALUE, NAME=LO..HI, NAME>VALUE or NAME<VALUE")
    name, op, a, b = m.groups()
    try:
        a = float(a)
        b = float(b) if b is not None else None
    except ValueError:
        raise ConfigError(f"condition {text!r}: not a number") from None
    if op == "=" and b is not None:
        if not a <= b:
            raise ConfigError(f"condition {text!r}: empty range (lower bound {a} > upper bound {b})")
        return name, "range", a, b
    if b is not None:
        raise ConfigError(f"condition {text!r}: a range needs '=' (NAME=LO..HI)")
    if op == "=":
        return name, "value", a, a
    if op in (">", ">="):
        return name, "ge", a, math.inf
    return name, "le", -math.inf, a


# ------------------------------------------------------------------------------------ sampling
@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Sampler settings.

    Attributes:
        n_steps: number of reverse steps (a strided sub-sequence of the ``T`` training steps).
        corrector_steps: Langevin corrector steps for X per step (0: ancestral predictor only).
        step_lr: corrector step size ``η = step_lr (σ_t/σ_1)^2`` (DiffCSP's form).
        guidance_scale: classifier-free guidance weight ``w`` (``ε = (1+w) ε_c − w ε_u``); 0: conditional only.
        temperature: softmax temperature of type sampling.
        deterministic: probability-flow ODE (X, L) instead of the SDE (no noise injected; types
            must be given, i.e. CSP).
    """

    n_steps: int = 1000
    corrector_steps: int = 1
    step_lr: float = 1e-5
    guidance_scale: float = 0.0
    temperature: float = 1.0
    deterministic: bool = False


def step_grid(T: int, n_steps: int) -> np.ndarray:
    """Decreasing integer times ``T = t_0 > t_1 > … > t_k = 0`` (``k = min(n_steps, T)``)."""
    n_steps = max(1, min(int(n_steps), T))
    g = np.unique(np.round(np.linspace(0, T, n_steps + 1)).astype(int))[::-1]
    return g


def make_sampler(spec: DiffusionSpec, net, params, cfg: SamplerConfig, *, guidance=None, dtype=jnp.float32):
    """Return ``(init, step, grid)`` for batched reverse diffusion.

    ``init(key, n [B], types [B, n_max] or None, cond [B, n_cond] or None) -> state``;
    ``step(state, t, s) -> state`` (jit-compiled; ``t > s`` integer steps);
    ``grid``: the step sequence. ``state`` is a dict with ``frac, lattice, types, mask, n, key, cond``.

    Args:
        guidance: optional ``(J, g_x, g_L)``: ``J(frac, lattice, type_probs, mask) -> [B]`` an objective to
            minimise (:mod:`difcrys.diffusion.guidance`), read as a negative log-likelihood
            ``−log p(y | M)``; at every step ``−g_x ∇_x J`` is added to the coordinate score,
            ``g_L √(1−ᾱ_t) ∇_Z J`` to the lattice noise and ``−g_x ∇_p J`` to the type logits, all
            evaluated at the Tweedie estimate of the clean structure (``g = 1``: Bayes' rule).
    """
    tab = _tables(spec, dtype)
    K = spec.K
    grid = step_grid(spec.T, cfg.n_steps)
    w = float(cfg.guidance_scale)

    def model(st, t):
        tt = jnp.full(st["n"].shape, t, dtype) / spec.T
        args = (st["types"], st["frac"], st["lattice"], st["mask"], tt, st["n"])
        if spec.n_cond and st["has_cond"] is not None:
            oc = _apply(net, params, spec, *args, st["cond"], st["has_cond"])
            if w != 0.0:
                ou = _apply(net, params, spec, *args, st["cond"], jnp.zeros_like(st["has_cond"]))
                oc = {"coord": (1 + w) * oc["coord"] - w * ou["coord"],
                      "lattice": (1 + w) * oc["lattice"] - w * ou["lattice"],
                      "type_logits": (1 + w) * jax.nn.log_softmax(oc["type_logits"])
                      - w * jax.nn.log_softmax(ou["type_logits"])}
            out = oc
        else:
            out = _apply(net, params, spec, *args, st["cond"], jnp.zeros(st["n"].shape, bool))
        eps_L = 0.5 * (out["lattice"] + jnp.swapaxes(out["lattice"], -1, -2))
        score_x = out["coord"] * jnp.sqrt(tab["lam"][t])
        logits = out["type_logits"]
        if guidance is not None:
            fn, gx, gL = guidance
            probs = jax.nn.softmax(logits, -1)
            probs = jnp.where((st["types"] < K)[..., None], jax.nn.one_hot(jnp.clip(st["types"], 0, K - 1), K), probs)
            sig2 = tab["sigma"][t] ** 2
            x0 = st["frac"] + sig2 * score_x  # Tweedie estimate of the clean coordinates
            ab = tab["ab_L"][t]
            sL = lat.sigma(st["n"], spec.v)[:, None, None]
            Z = lat.to_normalised(st["lattice"], st["n"], spec.c, spec.v)
            L0 = lat.from_normalised(lat.predict_clean(st["lattice"], eps_L, ab, st["n"], spec.c, spec.v, spec.z_clip),
                                     st["n"], spec.c, spec.v)
            gxa, gLa, gpa = jax.grad(lambda a, b, p: jnp.sum(fn(a, b, p, st["mask"])), argnums=(0, 1, 2))(x0, L0, probs)
            gLa = 0.5 * (gLa + jnp.swapaxes(gLa, -1, -2))
            score_x = score_x - gx * gxa * st["mask"][..., None]
            eps_L = eps_L + gL * jnp.sqrt(1 - ab) * gLa * sL
            logits = logits - gx * gpa  # first-order guidance of the type distribution (masked atoms only matter)
        return score_x, eps_L, logits

    def init(key, n, types=None, cond=None):
        n = jnp.asarray(n, jnp.int32)
        B = n.shape[0]
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0) if key is None else key, 3)
        mask = jnp.arange(spec.n_max)[None, :] < n[:, None]
        frac = jax.random.uniform(k1, (B, spec.n_max, 3), dtype)
        L = lat.prior_sample(k2, n, spec.c, spec.v, dtype).astype(dtype)
        if types is None:
            if spec.task == "csp":
                raise ConfigError("this is a CSP model: give the composition (types) to sample")
            types = jnp.full((B, spec.n_max), K, jnp.int32)
        types = jnp.where(mask, jnp.asarray(types, jnp.int32), K)
        has = None
        cnd = jnp.zeros((B, max(spec.n_cond, 1)), dtype)
        if cond is not None:
            cnd = (jnp.asarray(cond, dtype) - jnp.asarray(spec.cond_mean, dtype)) / jnp.asarray(spec.cond_std, dtype)
            has = jnp.ones((B,), bool)
        return {"frac": frac, "lattice": L, "types": types, "mask": mask, "n": n, "key": k3, "cond": cnd,
                "has_cond": has}

    @jax.jit
    def _step(st, t, s):
        key, kc, kp, kl, ka = jax.random.split(st["key"], 5)
        st = dict(st, key=key)
        sig_t, sig_s = tab["sigma"][t], tab["sigma"][s]
        mf = st["mask"][..., None]
        if not cfg.deterministic:
            for c in range(cfg.corrector_steps):
                sx, _, _ = model(st, t)
                eta = cfg.step_lr * (sig_t / tab["sigma"][1]) ** 2
                z = jax.random.normal(jax.random.fold_in(kc, c), st["frac"].shape, dtype)
                st = dict(st, frac=wn.wrap(st["frac"] + (eta * sx + jnp.sqrt(2 * eta) * z) * mf))
        sx, eps_L, logits = model(st, t)
        dv = sig_t**2 - sig_s**2
        if cfg.deterministic:
            frac = st["frac"] + 0.5 * dv * sx
            ab_t, ab_s = tab["ab_L"][t], tab["ab_L"][s]
            Z = lat.to_normalised(st["lattice"], st["n"], spec.c, spec.v)
            Z0 = lat.predict_clean(st["lattice"], eps_L, ab_t, st["n"], spec.c, spec.v, spec.z_clip)
            eps_c = (Z - jnp.sqrt(ab_t) * Z0) / jnp.sqrt(1 - ab_t)  # noise consistent with the clipped Ẑ_0 (DDIM)
            L = lat.from_normalised(jnp.sqrt(ab_s) * Z0 + jnp.sqrt(1 - ab_s) * eps_c, st["n"], spec.c, spec.v)
        else:
            std = jnp.sqrt(jnp.maximum(dv * sig_s**2 / sig_t**2, 0.0))
            frac = st["frac"] + dv * sx + std * jax.random.normal(kp, st["frac"].shape, dtype)
            L = lat.posterior_step(kl, st["lattice"], eps_L, tab["ab_L"][t], tab["ab_L"][s], st["n"], spec.c, spec.v,
                                   clip=spec.z_clip)
        types = st["types"]
        if spec.task == "gen":
            types = masked.sample_posterior(ka, types, logits, tab["ab_A"][t], tab["ab_A"][s], cfg.temperature)
            types = jnp.where(st["mask"], types, K)
        frac = jnp.where(mf, wn.wrap(frac), 0.0)
        return dict(st, frac=frac, lattice=L.astype(dtype), types=types)

    def step(st, t, s):
        return _step(st, jnp.asarray(int(t)), jnp.asarray(int(s)))

    step.raw = _step  # traceable (t, s) version, e.g. for lax.scan in latent optimisation
    return init, step, grid


def run_sampler(init, step, grid, key, n, types=None, cond=None, progress: bool = True, desc: str = "sampling"):
    """Run a sampler from :func:`make_sampler` over its grid (host loop with a tqdm progress bar)."""
    st = init(key, n, types, cond)
    it = range(len(grid) - 1)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=desc, leave=False, dynamic_ncols=True)
    for i in it:
        st = step(st, int(grid[i]), int(grid[i + 1]))
    return st


def to_crystals(spec: DiffusionSpec, st) -> tuple[list, list]:
    """Final sampler state → (list of Crystal or None, list of reasons) — every structure is validated
    with :meth:`Crystal.validate`; invalid ones are returned as ``None`` with the error message."""
    types = np.asarray(st["types"])
    frac = np.asarray(st["frac"], float)
    L = np.asarray(st["lattice"], float)
    mask = np.asarray(st["mask"])
    out, why = [], []
    for b in range(types.shape[0]):
        m = mask[b]
        ty = types[b][m]
        if np.any(ty >= spec.K):
            out.append(None)
            why.append("unresolved MASK type")
            continue
        z = np.asarray(spec.elements)[ty]
        try:
            c = Crystal.create(z, frac[b][m], L[b], validate=True)
            out.append(c)
            why.append("")
        except StructureError as e:
            out.append(None)
            why.append(str(e))
    return out, why
