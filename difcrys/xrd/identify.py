"""CrySTINet-style identification of powder patterns: simulated training data and a 1D-CNN ensemble.

Design (after CrySTINet: Chen et al., "Crystal structure assignment for unknown
compounds from X-ray diffraction patterns with deep learning", 2024):

* **Training data** are continuous patterns simulated with
  :func:`~difcrys.xrd.pattern.powder_pattern` (Cu Kα1/Kα2) under random, realistic
  perturbations (:class:`Augment`): homogeneous lattice strain, Caglioti peak
  broadening and pseudo-Voigt mixing, zero shift, Debye–Waller B, March–Dollase
  preferred orientation, impurity peaks, a smooth background and Poisson-like
  plus Gaussian noise. Patterns are min–max normalised on a fixed 2θ grid.
* **Sub-models.** The classes are split into ``K`` groups; sub-model ``k`` is a
  small 1D ResNet with two heads: logits over its own classes and a confidence
  logit that the pattern belongs to its group (trained with binary
  cross-entropy on every pattern). The ensemble probability of class ``c`` in
  group ``k`` is ``σ(conf_k) softmax_k(c)``, renormalised over all classes.
* **Cosine similarity.** Each class has a mean training pattern; the final score
  is ``log p(c) + β cos(x, mean_c)``, β chosen on validation patterns.

The run directory (or the shipped checkpoint) holds ``model.json``: the config,
class names, class-mean patterns, β and the float32 weights (base64).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal
from difcrys.errors import ConfigError, FileFormatError
from difcrys.xrd import radiation
from difcrys.xrd.pattern import Profile, powder_pattern
from difcrys.xrd.reflections import Reflections, batch_reflections, reflections

SHIPPED_MODEL = pathlib.Path(__file__).resolve().parent / "data" / "identify_mp20_spacegroup"


# ----------------------------------------------------------------------------- simulation
@dataclasses.dataclass(frozen=True)
class Augment:
    """Ranges of the random perturbations of simulated training patterns.

    Attributes:
        strain: max |ε_ij| of a random symmetric lattice strain.
        U, V, W, eta: uniform ranges of the Caglioti coefficients [deg²] and η.
        zero: max |zero shift| [deg].
        B: range of the isotropic B [Å²].
        po_prob, po_r: probability of preferred orientation and range of the March r.
        impurity_prob, impurity_max: probability of impurity peaks and their max height (of 1).
        n_impurity: number of impurity peaks when present.
        background: max amplitude of the smooth background (of the max peak).
        noise: range of the Gaussian noise std (of the max peak); counts: range of
            the peak count level for Poisson-like noise.
    """

    strain: float = 0.01
    U: tuple = (0.0, 0.05)
    V: tuple = (-0.02, 0.0)
    W: tuple = (0.005, 0.04)
    eta: tuple = (0.0, 1.0)
    zero: float = 0.1
    B: tuple = (0.0, 1.5)
    po_prob: float = 0.5
    po_r: tuple = (0.7, 1.3)
    impurity_prob: float = 0.5
    impurity_max: float = 0.15
    n_impurity: int = 3
    background: float = 0.2
    noise: tuple = (0.002, 0.02)
    counts: tuple = (300.0, 30000.0)


NO_AUGMENT = Augment(strain=0.0, U=(0.0, 0.0), V=(0.0, 0.0), W=(0.01, 0.01), eta=(0.5, 0.5), zero=0.0, B=(0.5, 0.5),
                     po_prob=0.0, impurity_prob=0.0, background=0.0, noise=(0.0, 0.0), counts=(1e12, 1e12))


@dataclasses.dataclass(frozen=True)
class Grid:
    """The input grid: ``n`` points from ``lo`` to ``hi`` [deg], averaged in pairs into ``n // pool`` bins."""

    lo: float = 5.0
    hi: float = 90.0
    n: int = 1024
    pool: int = 2

    @property
    def points(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.n)

    @property
    def n_bins(self) -> int:
        return self.n // self.pool


def _uniform(key, rng, shape=()):
    lo, hi = rng
    return jax.random.uniform(key, shape, minval=lo, maxval=hi)


def _normalise(y):
    y = y - jnp.min(y, axis=-1, keepdims=True)
    return y / jnp.maximum(jnp.max(y, axis=-1, keepdims=True), 1e-12)


def _simulate_one(key, crystal: Crystal, refl: Reflections, grid: Grid, aug: Augment):
    ks = jax.random.split(key, 16)
    tt = jnp.asarray(grid.points)
    eps = jax.random.uniform(ks[0], (3, 3), minval=-aug.strain, maxval=aug.strain)
    eps = 0.5 * (eps + eps.T)
    c = crystal.replace(lattice=crystal.lattice @ (jnp.eye(3) + eps))
    prof = Profile(U=_uniform(ks[1], aug.U), V=_uniform(ks[2], aug.V), W=_uniform(ks[3], aug.W),
                   eta0=_uniform(ks[4], aug.eta), eta1=0.0,
                   zero=jax.random.uniform(ks[5], minval=-aug.zero, maxval=aug.zero) if aug.zero else 0.0)
    B = _uniform(ks[6], aug.B)
    direction = jnp.asarray([[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 1, 1]], float)[
        jax.random.randint(ks[7], (), 0, 5)]
    r = jnp.where(jax.random.uniform(ks[8]) < aug.po_prob, _uniform(ks[9], aug.po_r), 1.0)
    (l1, l2), (w1, w2) = radiation.kalpha_doublet("Cu")
    y = powder_pattern(c, refl, tt, (l1, l2), (w1, w2), profile=prof, B=B, preferred_orientation=(direction, r))
    y = y / jnp.maximum(jnp.max(y), 1e-30)
    # impurity peaks: Gaussians at random positions
    has_imp = jax.random.uniform(ks[10]) < aug.impurity_prob
    pos = jax.random.uniform(ks[11], (aug.n_impurity,), minval=grid.lo, maxval=grid.hi)
    hgt = jax.random.uniform(ks[12], (aug.n_impurity,), maxval=aug.impurity_max) * has_imp
    wid = 0.1 + 0.2 * jax.random.uniform(ks[13], (aug.n_impurity,))
    y = y + jnp.sum(hgt[None] * jnp.exp(-4 * math.log(2) * ((tt[:, None] - pos[None]) / wid[None]) ** 2), -1)
    # smooth background: random quadratic + low-angle decay
    bc = jax.random.uniform(ks[14], (3,), maxval=aug.background)
    x = (tt - grid.lo) / (grid.hi - grid.lo)
    y = y + bc[0] + bc[1] * (1 - x) ** 2 + bc[2] * jnp.exp(-x * 8)
    # noise: Poisson-like (Gaussian with variance ∝ counts) + white
    kc, kn, kw = jax.random.split(ks[15], 3)
    counts = jnp.exp(_uniform(kc, (math.log(aug.counts[0]), math.log(aug.counts[1]))))
    y = y + jnp.sqrt(jnp.maximum(y, 0) / counts) * jax.random.normal(kn, y.shape)
    y = y + _uniform(kw, aug.noise) * jax.random.normal(jax.random.fold_in(kw, 1), y.shape)
    y = y.reshape(grid.n_bins, grid.pool).mean(-1)
    return _normalise(y)


@functools.partial(jax.jit, static_argnames=("grid", "aug"))
def simulate_batch(key, crystals: Crystal, refl: Reflections, grid: Grid, aug: Augment):
    """``[B, n_bins]`` normalised perturbed patterns of a batch of crystals (vmapped)."""
    keys = jax.random.split(key, crystals.numbers.shape[0])
    return jax.vmap(lambda k, c, r: _simulate_one(k, c, r, grid, aug))(keys, crystals, refl)


def prepare_crystals(crystals, grid: Grid, strain: float = 0.01):
    """Host-side: reflections of each crystal (with a margin for the strain), padded atoms (numpy)."""
    from difcrys.xrd.api import pad_numpy

    lam = radiation.kalpha_doublet("Cu")[0][0]
    hi = min(grid.hi + 2.0, 179.0)
    out = []
    for c in crystals:
        c = c.unpadded() if hasattr(c, "unpadded") else c
        out.append((c, reflections(c, lam, (0.0, hi), margin=2 * strain + 0.01)))
    na = max(c.n_atoms for c, _ in out)
    return [(pad_numpy(c, na), r) for c, r in out]


def simulate_dataset(prepared, labels, n_aug: int, grid: Grid, aug: Augment, seed: int = 0, batch: int = 32,
                     progress=None):
    """Simulate ``n_aug`` perturbed patterns per crystal. Returns ``(X [P, bins] float32, y [P] int)``.

    Crystals are processed in batches sorted by reflection count to limit padding.
    """
    order = np.argsort([r.capacity for _, r in prepared])
    key = jax.random.PRNGKey(seed)
    X, Y = [], []
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        cs = [prepared[i][0] for i in idx]
        rs = [prepared[i][1] for i in idx]
        cap = 256
        while cap < max(r.capacity for r in rs):
            cap *= 2  # few distinct shapes: few compilations
        from difcrys.xrd.reflections import pad_reflections

        rs = [pad_reflections(r, cap, 1 if r.n_groups == 0 else r.n_groups) for r in rs]
        rs = [dataclasses.replace(r, rep=np.zeros(1, np.int32), group_mask=np.zeros(1, bool),
                                  group=np.zeros(cap, np.int32)) for r in rs]
        nb = len(idx)
        pad_to = batch
        cs += [cs[0]] * (pad_to - nb)
        rs += [rs[0]] * (pad_to - nb)
        cb = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *cs)
        rb = batch_reflections(rs)
        for a in range(n_aug):
            key, sub = jax.random.split(key)
            X.append(np.asarray(simulate_batch(sub, cb, rb, grid, aug), np.float32)[:nb])
            Y.append(np.asarray(labels)[idx])
        if progress:
            progress(start + nb, len(order))
    return np.concatenate(X), np.concatenate(Y)


# ----------------------------------------------------------------------------- model
def _conv(x, w, stride=1):
    """1D convolution, ``x [B, L, Cin]``, ``w [k, Cin, Cout]``, 'SAME' padding."""
    return jax.lax.conv_general_dilated(x, w, (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))


def _norm(x):
    mu = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.var(x, axis=(1, 2), keepdims=True)
    return (x - mu) / jnp.sqrt(var + 1e-5)


@functools.partial(jax.jit, static_argnames=("n_classes", "widths", "hidden"))
def init_submodel(key, n_classes: int, widths=(16, 32, 48, 64), hidden: int = 64):
    """Parameters of one 1D-ResNet sub-model (He-normal init, float32)."""
    ks = iter(jax.random.split(key, 4 + 3 * len(widths)))

    def he(shape):
        fan_in = int(np.prod(shape[:-1]))
        return jax.random.normal(next(ks), shape, jnp.float32) * math.sqrt(2.0 / fan_in)

    p = {"stem": he((9, 1, widths[0])), "blocks": []}
    cin = widths[0]
    for w in widths:
        p["blocks"].append({"c1": he((5, cin, w)), "c2": he((5, w, w)) * 0.5, "skip": he((1, cin, w))})
        cin = w
    p["dense"] = he((2 * cin, hidden))
    p["dense_b"] = jnp.zeros(hidden, jnp.float32)
    p["cls"] = he((hidden, n_classes)) * 0.1
    p["cls_b"] = jnp.zeros(n_classes, jnp.float32)
    p["conf"] = he((hidden, 1)) * 0.1
    p["conf_b"] = jnp.zeros(1, jnp.float32)
    return p


def apply_submodel(p, x):
    """``x [B, L]`` → ``(logits [B, C], confidence logit [B])`` (computed in the parameters' dtype, float32)."""
    x = jnp.asarray(x, p["stem"].dtype)
    h = jax.nn.relu(_conv(x[..., None], p["stem"], 2))
    for b in p["blocks"]:
        y = jax.nn.relu(_norm(_conv(h, b["c1"], 2)))
        y = _norm(_conv(y, b["c2"]))
        h = jax.nn.relu(y + _conv(h, b["skip"], 2))
    feat = jnp.concatenate([jnp.mean(h, 1), jnp.max(h, 1)], -1)
    z = jax.nn.relu(feat @ p["dense"] + p["dense_b"])
    return z @ p["cls"] + p["cls_b"], (z @ p["conf"] + p["conf_b"])[..., 0]


@dataclasses.dataclass
class Classifier:
    """A trained ensemble.

    Attributes:
        params: sub-model parameters stacked on a leading ``K`` axis.
        groups: ``[K, Cmax]`` class index of each sub-model slot (-1: unused).
        class_names: label of each class.
        class_means: ``[C, bins]`` mean training pattern per class.
        beta: weight of the cosine similarity in the final score.
        grid: input :class:`Grid`; label_kind: e.g. ``"spacegroup"``.
    """

    params: dict
    groups: np.ndarray
    class_names: list
    class_means: np.ndarray
    beta: float
    grid: Grid
    label_kind: str = "spacegroup"
    meta: dict = dataclasses.field(default_factory=dict)


def ensemble_log_proba(params, groups, x):
    """``[B, C]`` log p(c) = log σ(conf_k) + log softmax_k(c), renormalised over classes."""
    logits, conf = jax.vmap(apply_submodel, in_axes=(0, None))(params, x)  # [K, B, Cm], [K, B]
    valid = jnp.asarray(groups >= 0)
    logits = jnp.where(valid[:, None, :], logits, -1e9)
    lp = jax.nn.log_softmax(logits, -1) + jax.nn.log_sigmoid(conf)[..., None]  # [K, B, Cm]
    C = int(groups.max()) + 1
    idx = jnp.asarray(np.where(groups >= 0, groups, C))
    out = jnp.full((x.shape[0], C + 1), -1e9, lp.dtype)
    K, Cm = groups.shape
    for k in range(K):
        out = out.at[:, idx[k]].set(jnp.where(valid[k][None], lp[k], out[:, idx[k]]))
    out = out[:, :C]
    return out - jax.scipy.special.logsumexp(out, -1, keepdims=True)


def cosine_scores(x, class_means):
    xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    mn = class_means / jnp.maximum(jnp.linalg.norm(class_means, axis=-1, keepdims=True), 1e-12)
    return xn @ mn.T


@functools.partial(jax.jit, static_argnames=("groups",))
def _scores(params, groups, class_means, beta, x):
    g = np.asarray(groups)
    return ensemble_log_proba(params, g, x) + beta * cosine_scores(x, class_means)


def predict_scores(clf: Classifier, X, beta=None, batch: int = 256) -> np.ndarray:
    """``[P, C]`` final scores (log p + β cos) for normalised input patterns ``X [P, bins]``."""
    beta = clf.beta if beta is None else beta
    groups = tuple(tuple(int(v) for v in row) for row in np.asarray(clf.groups))
    means = np.asarray(clf.class_means, np.float32)
    out = []
    for i in range(0, len(X), batch):
        xb = np.asarray(X[i:i + batch], np.float32)
        n = len(xb)
        if n < batch and len(X) > batch:  # keep one static batch shape
            xb = np.concatenate([xb, np.zeros((batch - n, xb.shape[1]), np.float32)])
        out.append(np.asarray(_scores(clf.params, groups, means, np.float32(beta), xb))[:n])
    return np.concatenate(out) if out else np.zeros((0, len(clf.class_names)))


def topk_accuracy(scores, y, ks=(1, 5)) -> dict:
    order = np.argsort(-scores, axis=1)
    return {f"top{k}": float(np.mean([y[i] in order[i, :k] for i in range(len(y))])) for k in ks}


def make_groups(n_classes: int, k: int) -> np.ndarray:
    """Split classes ``0..C-1`` (in label order) into ``k`` contiguous groups, ``[k, Cmax]`` padded with -1."""
    chunks = np.array_split(np.arange(n_classes), k)
    cm = max(len(c) for c in chunks)
    g = -np.ones((k, cm), int)
    for i, c in enumerate(chunks):
        g[i, : len(c)] = c
    return g


def train_classifier(X, y, Xval, yval, class_names, grid: Grid, *, n_submodels: int = 3, epochs: int = 10,
                     batch: int = 64, lr: float = 2e-3, seed: int = 0, widths=(16, 32, 48, 64),
                     betas=(0.0, 1.0, 2.0, 5.0, 10.0, 20.0), log=print) -> Classifier:
    """Train the ensemble with Adam (optax) and pick β on the validation set."""
    import optax

    C = len(class_names)
    groups = make_groups(C, n_submodels)
    cm = groups.shape[1]
    slot = -np.ones((n_submodels, C), int)  # class -> slot in sub-model k
    for k in range(n_submodels):
        for j, c in enumerate(groups[k]):
            if c >= 0:
                slot[k, c] = j
    slot = jnp.asarray(slot)
    keys = jax.random.split(jax.random.PRNGKey(seed), n_submodels)
    params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[init_submodel(k, cm, tuple(widths)) for k in keys])
    steps = epochs * max(1, len(X) // batch)
    opt = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=1e-4)
    state = opt.init(params)

    def loss_fn(p, xb, yb):
        logits, conf = jax.vmap(apply_submodel, in_axes=(0, None))(p, xb)  # [K, B, cm], [K, B]
        s = slot[:, yb]  # [K, B]
        member = s >= 0
        valid = jnp.asarray(groups >= 0)
        logits = jnp.where(valid[:, None, :], logits, -1e9)
        lsm = jax.nn.log_softmax(logits, -1)
        ce = -jnp.take_along_axis(lsm, jnp.maximum(s, 0)[..., None], -1)[..., 0]
        ce = jnp.sum(jnp.where(member, ce, 0.0)) / jnp.maximum(jnp.sum(member), 1)
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(conf, member.astype(conf.dtype)))
        return ce + bce

    @jax.jit
    def step(p, st, xb, yb):
        l, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        upd, st = opt.update(g, st, p)
        return optax.apply_updates(p, upd), st, l

    rng = np.random.default_rng(seed)
    Xj = np.asarray(X, np.float32)
    for ep in range(epochs):
        perm = rng.permutation(len(X))
        tot, nb = 0.0, 0
        for i in range(0, len(perm) - batch + 1, batch):
            b = perm[i:i + batch]
            params, state, l = step(params, state, Xj[b], np.asarray(y[b]))
            tot += float(l)
            nb += 1
        log(f"epoch {ep + 1}/{epochs}: loss {tot / max(nb, 1):.4f}")
    means = np.stack([X[y == c].mean(0) if np.any(y == c) else np.zeros(X.shape[1]) for c in range(C)]
                     ).astype(np.float32)
    clf = Classifier(params=params, groups=groups, class_names=list(class_names), class_means=means, beta=0.0,
                     grid=grid)
    best = (-1.0, 0.0)
    for b in betas:
        acc = topk_accuracy(predict_scores(clf, Xval, beta=b), yval)["top1"]
        log(f"beta {b}: validation top-1 {acc:.3f}")
        if acc > best[0]:
            best = (acc, b)
    clf.beta = best[1]
    return clf


# ----------------------------------------------------------------------------- persistence
def _encode(a) -> dict:
    a = np.asarray(a, np.float32)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def _decode(d) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["data"]), np.float32).reshape(d["shape"])


def save_model(clf: Classifier, run_dir) -> pathlib.Path:
    """Write ``model.json`` (config, classes, class means, β, base64 float32 weights)."""
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    leaves, treedef = jax.tree_util.tree_flatten(clf.params)
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(clf.params)[0]]
    doc = {"format": "difcrys.xrd.identify/1", "label_kind": clf.label_kind, "class_names": clf.class_names,
           "groups": np.asarray(clf.groups).tolist(), "beta": clf.beta, "grid": dataclasses.asdict(clf.grid),
           "class_means": _encode(clf.class_means), "meta": clf.meta,
           "widths": [int(b["c1"].shape[-1]) for b in clf.params["blocks"]],
           "weights": {p: _encode(v) for p, v in zip(paths, leaves)}}
    path = run_dir / "model.json"
    path.write_text(json.dumps(doc))
    return path


SHIPPED = ("spacegroup", "crystal_system")


def load_model(run_dir=None) -> Classifier:
    """Load a classifier from a run directory or ``model.json``.

    ``None`` or ``"spacegroup"`` gives the shipped space-group checkpoint,
    ``"crystal_system"`` the shipped crystal-system one (trained by
    ``experiments/xrd/identify.py --ship``).
    """
    if run_dir is None:
        run_dir = "spacegroup"
    if isinstance(run_dir, str) and run_dir in SHIPPED and not pathlib.Path(run_dir).exists():
        run_dir = SHIPPED_MODEL.parent / f"identify_mp20_{run_dir}"
    p = pathlib.Path(run_dir)
    if p.is_dir():
        p = p / "model.json"
    if not p.is_file():
        raise FileFormatError(f"no trained classifier at {p} (train one with experiments/xrd/identify.py)")
    try:
        doc = json.loads(p.read_text())
        groups = np.asarray(doc["groups"], int)
        K, cm = groups.shape
        template = jax.eval_shape(lambda k: init_submodel(k, cm, tuple(doc["widths"])), jax.random.PRNGKey(0))
        flat = jax.tree_util.tree_flatten_with_path(template)
        leaves = [_decode(doc["weights"][jax.tree_util.keystr(k)]) for k, _ in flat[0]]
        params = jax.tree_util.tree_unflatten(flat[1], leaves)
        return Classifier(params=params, groups=groups, class_names=doc["class_names"],
                          class_means=_decode(doc["class_means"]), beta=float(doc["beta"]), grid=Grid(**doc["grid"]),
                          label_kind=doc.get("label_kind", "spacegroup"), meta=doc.get("meta", {}))
    except (KeyError, ValueError, TypeError) as e:
        raise FileFormatError(f"{p}: not a difcrys classifier checkpoint ({e})") from None


def pattern_to_input(two_theta, intensity, grid: Grid) -> np.ndarray:
    """Interpolate a measured pattern onto the model grid, pool, min–max normalise. ``[bins]``."""
    tt = np.asarray(two_theta, float)
    y = np.asarray(intensity, float)
    if tt.ndim != 1 or tt.shape != y.shape or len(tt) < 2:
        raise ConfigError("pattern must be matching 1-D arrays")
    g = grid.points
    if tt[-1] < grid.lo or tt[0] > grid.hi:
        raise ConfigError(f"pattern range {tt[0]:.1f}-{tt[-1]:.1f}° does not overlap the model's "
                          f"{grid.lo}-{grid.hi}°")
    yi = np.interp(g, tt, y, left=np.nan, right=np.nan)
    fill = np.nanmin(yi)
    yi = np.where(np.isnan(yi), fill, yi)
    yi = yi.reshape(grid.n_bins, grid.pool).mean(-1)
    yi = yi - yi.min()
    return (yi / max(yi.max(), 1e-12)).astype(np.float32)


def identify(clf: Classifier, two_theta, intensity, top: int = 5) -> dict:
    """Top candidates for a pattern: label, probability (softmax of the final score) and cosine."""
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    x = pattern_to_input(two_theta, intensity, clf.grid)[None]
    s = predict_scores(clf, x)[0]
    p = np.exp(s - s.max())
    p /= p.sum()
    cos = np.asarray(cosine_scores(jnp.asarray(x), jnp.asarray(clf.class_means)))[0]
    order = np.argsort(-s)[:top]
    return {"label_kind": clf.label_kind,
            "candidates": [{"label": clf.class_names[i], "probability": float(p[i]), "cosine": float(cos[i])}
                           for i in order]}


def identify_file(path, run_dir=None, top: int = 5) -> dict:
    """Read a pattern file and :func:`identify` it with the classifier in ``run_dir`` (None: shipped)."""
    from difcrys.xrd.patterns_io import read_pattern

    pat = read_pattern(path)
    clf = load_model(run_dir)
    return identify(clf, pat.two_theta, pat.intensity, top)
