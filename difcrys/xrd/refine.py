"""Rietveld-like refinement of crystal structures against a measured powder pattern.

The calculated pattern (:func:`~difcrys.xrd.pattern.powder_pattern`, summed over
phases, plus a Chebyshev background) is a differentiable function of a flat
parameter vector: per phase the scale, the symmetry-free metric parameters,
free fractional coordinates and per-orbit isotropic B factors
(:mod:`.symmetry_params`, via spglib), the Caglioti U, V, W and pseudo-Voigt η0,
η1; globally the zero shift and background coefficients. The weighted residual

    r_i = (y_calc,i - y_obs,i) / σ_i,    σ_i² = max(y_obs,i, 1)  (Poisson)

is minimised by Levenberg–Marquardt (Marquardt, J. SIAM 11, 431 (1963)) with the
exact Jacobian from ``jax.jacfwd``. As in Rietveld practice (Young, *The
Rietveld Method*, 1993, ch. 1), reported agreement indices are

    Rwp = sqrt(Σ w (y_obs - y_calc)² / Σ w y_obs²),   Rexp = sqrt((N - P) / Σ w y_obs²),
    χ² = (Rwp / Rexp)²,

and standard uncertainties are ``sqrt(diag((Jᵀ J)^{-1}) χ²)``, propagated to
lattice parameters and coordinates through their Jacobians.

Starting far from the minimum (a 2 % lattice error moves high-angle peaks by more
than their width) is handled by continuation: both patterns are first broadened
by an extra Gaussian FWHM (default 1.5°, 0.8°, 0.4°, 0.2°, 0.1°, then 0), and only
scale, lattice, zero and background refine while the extra width is large.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal, lattice_parameters
from difcrys.errors import ConfigError, ConvergenceError, StructureError
from difcrys.xrd import radiation
from difcrys.xrd.pattern import Profile, chebyshev_background, powder_pattern
from difcrys.xrd.patterns_io import MeasuredPattern
from difcrys.xrd.reflections import reflections
from difcrys.xrd.scattering import check_elements, table_name
from difcrys.xrd.symmetry_params import SymmetryParams, lattice_from_metric, symmetry_params

PHASE_GROUPS = ("scale", "lattice", "positions", "B", "profile")
DEFAULT_SCHEDULE = (1.5, 0.8, 0.4, 0.2, 0.1, 0.0)


@dataclasses.dataclass
class Phase:
    """One crystalline phase to refine.

    Attributes:
        crystal: starting structure.
        occupancy: ``[n]`` site occupancies (None: 1).
        name: label used in the report.
        refine: which parameter groups refine: subset of
            ``("scale", "lattice", "positions", "B", "profile")``.
        profile: starting :class:`~difcrys.xrd.pattern.Profile` (its ``zero`` is ignored:
            the zero shift is global).
        B: starting isotropic B [Å²] for every orbit.
        scale: starting scale (None: matched to the data).
        use_symmetry: refine only symmetry-free parameters (spglib); False = P1.
        symprec: spglib tolerance [Å].
    """

    crystal: Crystal
    occupancy: np.ndarray | None = None
    name: str = ""
    refine: tuple = PHASE_GROUPS
    profile: Profile = dataclasses.field(default_factory=lambda: Profile(U=0.0, V=0.0, W=0.01, eta0=0.5, eta1=0.0))
    B: float = 0.5
    scale: float | None = None
    use_symmetry: bool = True
    symprec: float = 1e-3


@dataclasses.dataclass
class RefinementResult:
    """Outcome of :func:`refine`.

    Attributes:
        rwp, rp, rexp, chi2: agreement indices (fractions, not %).
        parameters: ``{name: (value, esd)}`` for every refined quantity, including
            derived lattice parameters ``phase.a`` … ``phase.gamma`` and coordinates.
        crystals: refined crystals (one per phase, original orientation).
        two_theta, observed, calculated, background: ``[N]`` arrays.
        n_iter: LM iterations; converged: final stage reached its tolerance.
        spacegroups: space group of each phase used for the constraints.
    """

    rwp: float
    rp: float
    rexp: float
    chi2: float
    parameters: dict
    crystals: list
    two_theta: np.ndarray
    observed: np.ndarray
    calculated: np.ndarray
    background: np.ndarray
    n_iter: int
    converged: bool
    spacegroups: list

    def summary(self) -> str:
        lines = [f"Rwp = {100 * self.rwp:.2f} %  Rp = {100 * self.rp:.2f} %  Rexp = {100 * self.rexp:.2f} %  "
                 f"chi2 = {self.chi2:.3f}  ({self.n_iter} LM iterations)"]
        for k, (v, e) in self.parameters.items():
            lines.append(f"  {k:<24s} {v: .6g} ± {e:.2g}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"rwp": self.rwp, "rp": self.rp, "rexp": self.rexp, "chi2": self.chi2, "n_iter": self.n_iter,
                "converged": self.converged, "spacegroups": self.spacegroups,
                "parameters": {k: {"value": float(v), "esd": float(e)} for k, (v, e) in self.parameters.items()}}


def _smooth(y: np.ndarray, step: float, fwhm: float) -> np.ndarray:
    """Convolve with a unit-area Gaussian of FWHM [deg] on a uniform grid (edge-normalised)."""
    if fwhm <= 0:
        return y
    sig = fwhm / (2 * math.sqrt(2 * math.log(2))) / step
    half = int(math.ceil(4 * sig))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sig) ** 2)
    num = np.convolve(y, k, mode="same")
    den = np.convolve(np.ones_like(y), k, mode="same")
    return num / den


class _Model:
    """Flat-parameter model of the calculated pattern (host-side bookkeeping + pure JAX core)."""

    def __init__(self, phases, grid, lams, wts, shape, n_bkg, table, cthm, margin):
        self.phases = phases
        self.grid = np.asarray(grid, float)
        self.lams, self.wts = tuple(lams), tuple(wts)
        self.shape, self.table, self.cthm = shape, table, cthm
        self.names: list[str] = []
        self.groups: list[str] = []
        init: list[float] = []
        self.sym: list[SymmetryParams] = []
        self.refl = []
        self.layout = []
        hi = min(self.grid[-1] + 3.0, 179.0)
        for i, ph in enumerate(phases):
            c = ph.crystal.unpadded()
            sp = symmetry_params(c, ph.occupancy, ph.symprec, ph.use_symmetry)
            self.sym.append(sp)
            self.refl.append(reflections(c, min(lams), (0.0, hi), margin=margin))
            label = ph.name or f"phase{i}"
            lay = {}

            def add(key, names, vals, group):
                lay[key] = slice(len(init), len(init) + len(vals))
                self.names.extend(f"{label}.{nm}" for nm in names)
                self.groups.extend([group] * len(vals))
                init.extend(float(v) for v in vals)

            add("scale", ["scale"], [1.0], "scale")
            add("metric", [f"G{k}" for k in range(sp.n_metric)], sp.p0, "lattice")
            add("q", sp.q_labels, np.zeros(sp.n_free_coords), "positions")
            add("B", [f"B({lab})" for lab in sp.orbit_labels], np.full(sp.n_orbits, ph.B), "B")
            pr = ph.profile
            add("profile", ["U", "V", "W", "eta0", "eta1"],
                [float(pr.U), float(pr.V), float(pr.W), float(pr.eta0), float(pr.eta1)], "profile")
            self.layout.append(lay)
        self.zero_sl = slice(len(init), len(init) + 1)
        self.names.append("zero")
        self.groups.append("zero")
        init.append(0.0)
        self.bkg_sl = slice(len(init), len(init) + n_bkg)
        self.names.extend(f"bkg{k}" for k in range(n_bkg))
        self.groups.extend(["background"] * n_bkg)
        init.extend([0.0] * n_bkg)
        self.x0 = np.array(init)
        # rotation from the Cholesky frame back to each input orientation
        self.R0 = []
        for ph, sp in zip(phases, self.sym):
            L0 = np.asarray(ph.crystal.unpadded().lattice, float)
            G = np.einsum("k,kij->ij", sp.p0, sp.metric_basis)
            self.R0.append(np.linalg.solve(np.linalg.cholesky(G), L0))

    def crystal(self, x, i):
        sp, lay, ph = self.sym[i], self.layout[i], self.phases[i]
        c = ph.crystal.unpadded()
        G = jnp.einsum("k,kij->ij", x[lay["metric"]], jnp.asarray(sp.metric_basis))
        L = lattice_from_metric(G)
        frac = jnp.asarray(sp.frac0) + jnp.einsum("nak,k->na", jnp.asarray(sp.pos_basis), x[lay["q"]])
        return Crystal(numbers=jnp.asarray(c.numbers), frac=frac, lattice=L, mask=jnp.asarray(c.mask))

    def calc(self, x, extra, background=True, window=None):
        grid = jnp.asarray(self.grid)
        y = jnp.zeros_like(grid)
        zero = x[self.zero_sl][0]
        for i, ph in enumerate(self.phases):
            lay, sp = self.layout[i], self.sym[i]
            pr = x[lay["profile"]]
            prof = Profile(U=pr[0], V=pr[1], W=pr[2], eta0=pr[3], eta1=pr[4], zero=zero)
            B = x[lay["B"]][jnp.asarray(sp.orbit)]
            occ = None if ph.occupancy is None else jnp.asarray(ph.occupancy)[: sp.frac0.shape[0]]
            y = y + powder_pattern(self.crystal(x, i), self.refl[i], grid, self.lams, self.wts, profile=prof,
                                   shape=self.shape, scale=x[lay["scale"]][0], B=B, occupancy=occ,
                                   table=self.table, cthm=self.cthm, extra_fwhm=extra, window=window)
        if background:
            y = y + chebyshev_background(grid, x[self.bkg_sl])
        return y

    def derived(self, x):
        """Derived quantities: lattice parameters and representative coordinates per phase."""
        out = []
        for i in range(len(self.phases)):
            L = self.crystal(x, i).lattice
            out.append(lattice_parameters(L))
            sp = self.sym[i]
            frac = self.crystal(x, i).frac
            reps = [int(np.where(sp.orbit == o)[0][0]) for o in range(sp.n_orbits)]
            out.append(frac[jnp.asarray(reps)].ravel())
        return jnp.concatenate(out)

    def derived_names(self):
        names = []
        for i, ph in enumerate(self.phases):
            label = ph.name or f"phase{i}"
            names += [f"{label}.{p}" for p in ("a", "b", "c", "alpha", "beta", "gamma")]
            sp = self.sym[i]
            for o in range(sp.n_orbits):
                names += [f"{label}.{sp.orbit_labels[o]}.{a}" for a in "xyz"]
        return names


def _levenberg_marquardt(res, jac, x0, max_iter, tol=1e-9):
    x = np.array(x0, float)
    r = np.asarray(res(x))
    cost = float(r @ r)
    lam = 1e-3
    J = np.asarray(jac(x))
    it = 0
    converged = False
    for it in range(1, max_iter + 1):
        A = J.T @ J
        g = J.T @ r
        D = np.maximum(np.diag(A), 1e-12 * max(np.diag(A).max(), 1e-30))
        improved = False
        for _ in range(12):
            try:
                dx = -np.linalg.solve(A + lam * np.diag(D), g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            xn = x + dx
            rn = np.asarray(res(xn))
            cn = float(rn @ rn)
            if np.isfinite(cn) and cn < cost:
                rel = (cost - cn) / max(cost, 1e-300)
                x, r, cost = xn, rn, cn
                lam = max(lam / 3, 1e-9)
                improved = True
                break
            lam *= 4
        if not improved:
            converged = True
            break
        J = np.asarray(jac(x))
        if rel < tol:
            converged = True
            break
    return x, cost, it, converged, J


def refine(pattern, phases, *, radiation_name: str | float = "CuKa", doublet: bool = True, ka2_ratio: float = 0.5,
           wavelengths=None, weights=None, n_background: int = 6, shape: str = "pseudo_voigt",
           table: str = "waasmaier_kirfel", cthm: float = 1.0, refine_zero: bool = True,
           schedule=DEFAULT_SCHEDULE, max_iter: int = 60, margin: float = 0.06,
           two_theta_range=None, window_deg: float | None = 3.0, log=None) -> RefinementResult:
    """Refine one or more phases against a measured powder pattern.

    Args:
        pattern: :class:`~difcrys.xrd.patterns_io.MeasuredPattern` or ``(two_theta, intensity)``.
        phases: a :class:`Phase`, a Crystal, or a list of them.
        radiation_name: anode/radiation (``"CuKa"``) or a single wavelength [Å].
        doublet: use the Kα1/Kα2 doublet of the anode (ratio ``ka2_ratio``).
        wavelengths, weights: explicit wavelengths [Å] and weights (override the above).
        n_background: number of Chebyshev background coefficients (>= 1).
        shape: profile shape (``"pseudo_voigt"``, ``"gaussian"``, ``"lorentzian"``).
        table: scattering-factor table.
        cthm: polarisation constant K (cos² 2θ_M of a monochromator; 1 = none).
        refine_zero: refine the zero shift.
        schedule: extra Gaussian FWHMs [deg] of the continuation stages (last should be 0).
        max_iter: LM iterations per stage.
        margin: relative |g| margin of the enumerated reflections (lattice may change this much).
        two_theta_range: restrict the fit to ``(lo, hi)`` [deg].
        window_deg: peaks are evaluated within ± this many degrees (plus 4× the extra
            continuation width) of their position on uniform grids; None = whole grid.
        log: optional callable receiving one progress line per stage.

    Returns:
        :class:`RefinementResult`.

    Raises:
        ConfigError: bad settings; StructureError: bad phase; ConvergenceError: non-finite residuals.
    """
    if isinstance(pattern, MeasuredPattern):
        tt, yo = pattern.two_theta, pattern.intensity
    else:
        try:
            tt, yo = (np.asarray(v, float) for v in pattern)
        except (TypeError, ValueError):
            raise ConfigError("pattern must be a MeasuredPattern or (two_theta, intensity)") from None
    if tt.shape != yo.shape or tt.ndim != 1 or len(tt) < 10:
        raise ConfigError("pattern needs matching 1-D two_theta and intensity arrays with >= 10 points")
    if not (np.all(np.isfinite(tt)) and np.all(np.isfinite(yo))):
        raise ConfigError("pattern contains NaN or infinite values")
    if two_theta_range is not None:
        lo, hi = radiation.two_theta_range(two_theta_range)
        keep = (tt >= lo) & (tt <= hi)
        tt, yo = tt[keep], yo[keep]
        if len(tt) < 10:
            raise ConfigError(f"fewer than 10 data points inside the 2θ range {two_theta_range}")
    if isinstance(phases, (Phase, Crystal)):
        phases = [phases]
    phases = [p if isinstance(p, Phase) else Phase(crystal=p) for p in phases]
    if not phases:
        raise ConfigError("refine needs at least one phase")
    for p in phases:
        bad = set(p.refine) - set(PHASE_GROUPS)
        if bad:
            raise ConfigError(f"unknown refinement group(s) {sorted(bad)}; choose from {PHASE_GROUPS}")
        check_elements(p.crystal.numbers, table)
    if n_background < 1:
        raise ConfigError("n_background must be >= 1")
    table = table_name(table)
    if wavelengths is not None:
        lams = tuple(radiation.wavelength(w) for w in np.atleast_1d(wavelengths))
        wts = tuple(float(w) for w in (weights if weights is not None else [1.0] * len(lams)))
        if len(wts) != len(lams):
            raise ConfigError("weights must match wavelengths")
    elif doublet:
        lams, wts = radiation.kalpha_doublet(str(radiation_name), ka2_ratio)
    else:
        lams, wts = (radiation.wavelength(radiation_name),), (1.0,)

    model = _Model(phases, tt, lams, wts, shape, n_background, table, cthm, margin)
    x = model.x0.copy()
    step = float(np.median(np.diff(tt)))
    # starting background: a low envelope; starting scales: match the strongest peak
    base = float(np.percentile(yo, 10))
    x[model.bkg_sl.start] = base
    calc_nobkg = jax.jit(lambda v: model.calc(v, 0.0, background=False))  # whole grid, once
    single = []
    for i, ph in enumerate(phases):
        xi = x.copy()
        for j in range(len(phases)):
            xi[model.layout[j]["scale"]] = 1.0 if j == i else 0.0
        single.append(np.asarray(calc_nobkg(xi)))
    for i, ph in enumerate(phases):
        peak = max(float(single[i].max()), 1e-300)
        target = max(float(yo.max()) - base, 1.0) * (1.0 if i == 0 else 0.05)
        x[model.layout[i]["scale"]] = ph.scale if ph.scale is not None else target / peak

    groups = np.array(model.groups)
    phase_of = np.full(len(x), -1)
    for i, lay in enumerate(model.layout):
        for sl in lay.values():
            phase_of[sl] = i

    def free_mask(stage_broad: bool):
        m = np.zeros(len(x), bool)
        m[groups == "background"] = True
        if refine_zero:
            m[groups == "zero"] = True
        for i, ph in enumerate(phases):
            allowed = set(ph.refine)
            if stage_broad:
                allowed &= {"scale", "lattice"}
            for gname in allowed:
                m[(phase_of == i) & (groups == gname)] = True
        return m

    calc_j = jax.jit(model.calc, static_argnames=("background", "window"))
    uniform = np.allclose(np.diff(tt), step, rtol=1e-6, atol=1e-9)
    cache: dict = {}

    def stage_functions(idx_t: tuple, window):
        """Residual and Jacobian w.r.t. the free parameters only (compiled once per free set)."""
        key = (idx_t, window)
        if key not in cache:
            idx_a = np.asarray(idx_t)

            def res_free(v, xfix, extra, yo_s, sw):
                full = xfix.at[idx_a].set(v)
                return sw * (model.calc(full, extra, window=window) - yo_s)

            cache[key] = (jax.jit(res_free), jax.jit(jax.jacfwd(res_free)))
        return cache[key]

    n_total = 0
    converged = False
    J = None
    for extra in schedule:
        yo_s = _smooth(yo, step, extra)
        sw = np.sqrt(1.0 / np.maximum(yo_s, 1.0))
        broad = extra >= 0.35
        mask = free_mask(broad)
        idx = np.where(mask)[0]
        window = None
        if uniform and window_deg is not None:
            window = int(math.ceil((window_deg + (4 * max(schedule) if broad else 4 * 0.35)) / step))
        res_j, jac_j = stage_functions(tuple(int(i) for i in idx), window)
        xfix = x.copy()
        res = lambda v, a=(xfix, float(extra), yo_s, sw): np.asarray(res_j(v, *a))  # noqa: E731
        jac = lambda v, a=(xfix, float(extra), yo_s, sw): np.asarray(jac_j(v, *a))  # noqa: E731
        if not np.all(np.isfinite(res(x[idx]))):
            raise ConvergenceError("non-finite calculated pattern at the starting parameters")
        v, cost, it, converged, J = _levenberg_marquardt(res, jac, x[idx], max_iter)
        x[idx] = v
        n_total += it
        if log is not None:
            log(f"stage extra FWHM {extra:.2f}°: {len(idx)} free parameters, {it} LM iterations, "
                f"chi2 {cost / max(len(yo) - len(idx), 1):.3f}")

    # final statistics on the unbroadened data
    yc = np.asarray(calc_j(jnp.asarray(x), 0.0, window=window))
    w = 1.0 / np.maximum(yo, 1.0)
    N, P = len(yo), len(idx)
    rwp = math.sqrt(float(np.sum(w * (yo - yc) ** 2) / np.sum(w * yo ** 2)))
    rp = float(np.sum(np.abs(yo - yc)) / np.sum(np.abs(yo)))
    rexp = math.sqrt(max(N - P, 1) / float(np.sum(w * yo ** 2)))
    chi2 = (rwp / rexp) ** 2
    if not np.all(np.isfinite(yc)):
        raise ConvergenceError("refinement produced a non-finite calculated pattern")
    # uncertainties
    cov = np.linalg.pinv(J.T @ J) * chi2
    esd = np.zeros(len(x))
    esd[idx] = np.sqrt(np.maximum(np.diag(cov), 0))
    params = {model.names[k]: (float(x[k]), float(esd[k])) for k in range(len(x)) if mask[k]}
    # derived: lattice parameters and coordinates
    der_fn = lambda v, xf: model.derived(xf.at[jnp.asarray(idx)].set(v))  # noqa: E731
    dvals = np.asarray(jax.jit(der_fn)(x[idx], x))
    D = np.asarray(jax.jit(jax.jacfwd(der_fn))(x[idx], x))
    desd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", D, cov, D), 0))
    for name, v, e in zip(model.derived_names(), dvals, desd):
        params[name] = (float(v), float(e))
    crystals = []
    for i in range(len(phases)):
        c = jax.jit(model.crystal, static_argnums=1)(x, i)
        L = np.asarray(c.lattice) @ model.R0[i]
        crystals.append(Crystal(numbers=np.asarray(c.numbers), frac=np.asarray(c.frac), lattice=L,
                                mask=np.asarray(c.mask)))
    bkg = np.asarray(jax.jit(chebyshev_background)(tt, x[model.bkg_sl]))
    return RefinementResult(rwp=rwp, rp=rp, rexp=rexp, chi2=chi2, parameters=params, crystals=crystals,
                            two_theta=tt, observed=yo, calculated=yc, background=bkg, n_iter=n_total,
                            converged=bool(converged), spacegroups=[s.spacegroup for s in model.sym])


def perturb(crystal: Crystal, key_or_seed=0, lattice: float = 0.02, frac: float = 0.02, occupancy=None,
            use_symmetry: bool = True, symprec: float = 1e-3) -> Crystal:
    """A symmetry-preserving random perturbation of a crystal (host-side).

    Each free metric parameter is scaled by ``1 ± 2·lattice`` (so lattice lengths change
    by about ``lattice``, angles of oblique cells by a similar relative amount), each free
    fractional coordinate moves by ``±frac`` (random sign).
    """
    rng = np.random.default_rng(key_or_seed)
    sp = symmetry_params(crystal, occupancy, symprec, use_symmetry)
    p = sp.p0 * (1 + 2 * lattice * rng.choice([-1.0, 1.0], size=len(sp.p0)))
    G = np.einsum("k,kij->ij", p, sp.metric_basis)
    try:
        L = np.linalg.cholesky(G)
    except np.linalg.LinAlgError:
        raise StructureError("perturbed metric is not positive definite; use a smaller perturbation") from None
    L0 = np.asarray(crystal.unpadded().lattice, float)
    G0 = np.einsum("k,kij->ij", sp.p0, sp.metric_basis)
    R0 = np.linalg.solve(np.linalg.cholesky(G0), L0)
    q = frac * rng.choice([-1.0, 1.0], size=sp.n_free_coords)
    f = sp.frac0 + np.einsum("nak,k->na", sp.pos_basis, q)
    c = crystal.unpadded()
    return Crystal(numbers=c.numbers, frac=jnp.asarray(f), lattice=jnp.asarray(L @ R0), mask=c.mask)
