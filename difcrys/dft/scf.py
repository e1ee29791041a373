"""Self-consistent field: the Kohn–Sham fixed point ρ = F(ρ) with density mixing.

The seed's loop — initial density from superposed atomic densities → ``v_KS =
v_ext + v_H + v_xc`` → solve ``H_KS φ = ε φ`` → new density → mix until
self-consistent — as pure jitted functions (:func:`make_scf_map`) driven by a
host loop that prints progress and raises on failure (:func:`run_scf`).

Units: inputs to :func:`prepare`/:func:`run_scf` are a :class:`~difcrys.crystal.Crystal`
in Å; everything inside (and the fields of :class:`SCFResult`) is in Hartree atomic
units (Bohr, Ha) unless the name says otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal, chemical_symbol
from difcrys.dft import eigensolvers, mixing as mixing_mod, pseudo, terms as T
from difcrys.dft.basis import build_basis
from difcrys.dft.ewald import ewald_setup
from difcrys.dft.gth_table import load_gth
from difcrys.dft.kpoints import reduce_kpoints
from difcrys.dft.smearing import SMEARINGS
from difcrys.dft.xc import get_functional
from difcrys.errors import ConfigError, ConvergenceError, PseudopotentialError, StructureError
from difcrys.units import ANG_BOHR

jax.config.update("jax_enable_x64", True)


@dataclasses.dataclass
class SCFResult:
    """Converged Kohn–Sham state (Hartree atomic units).

    Attributes:
        setup: the static problem description.
        params: traced inputs ``{"lattice" [3,3] Bohr, "frac" [n,3], "psp", "xc"}``.
        rho: density on the FFT grid ``[N1,N2,N3]`` [Bohr⁻³].
        coeffs: plane-wave coefficients ``[nk, nb, npw]``.
        eigenvalues: ``[nk, nb]`` [Ha] (ABINIT convention: without the psp_core shift).
        occupations: ``[nk, nb]`` in [0, 2] (like ``coeffs``, including the zero-weight k-points
            that pad a sharded k-set to a multiple of the device count).
        fermi_level: [Ha] (the highest occupied level for insulators).
        energy: total free energy [Ha].
        terms: energy terms [Ha].
        converged, n_iter: convergence flag and number of SCF iterations.
        history: per-iteration ``(energy, density residual)``.
        wall_time_s: wall time of the SCF [s].
    """

    setup: T.Setup
    params: dict
    rho: Any
    coeffs: Any
    eigenvalues: np.ndarray
    occupations: np.ndarray
    fermi_level: float
    energy: float
    terms: dict
    converged: bool
    n_iter: int
    history: list
    wall_time_s: float

    @property
    def n_kpoints(self) -> int:
        """Number of physical k-points (without the zero-weight padding used for sharding)."""
        return self.setup.n_kpoints_real or len(self.setup.basis.kpts)

    @property
    def kpoints(self) -> np.ndarray:
        return self.setup.basis.kpts[: self.n_kpoints]

    @property
    def weights(self) -> np.ndarray:
        return self.setup.basis.weights[: self.n_kpoints]

    def gap(self):
        """Band gap information (Ha), see :func:`difcrys.dft.bands.band_gap`."""
        from difcrys.dft.bands import band_gap

        return band_gap(self.eigenvalues, self.setup.n_electrons, self.kpoints)


def _symmetry_ops(crystal: Crystal, symprec: float = 1e-5):
    """Space-group operations ``(rotations [nsym,3,3], translations [nsym,3])`` (fractional, x' = R x + t)."""
    from difcrys import symmetry

    try:
        ds = symmetry.symmetry_dataset(crystal.unpadded(), symprec=symprec)
    except StructureError:
        return np.eye(3, dtype=int)[None], np.zeros((1, 3))
    return np.asarray(ds.rotations), np.asarray(ds.translations)


def prepare(crystal: Crystal, ecut: float, kgrid=(1, 1, 1), shift=(0.0, 0.0, 0.0), smearing: str = "none",
            width: float = 0.0, xc: str = "lda-teter", n_bands: int | None = None, fft_shape=None,
            symmetry: bool = True, pseudopotentials: dict | None = None, kpoints=None, devices=None):
    """Validate inputs and build the static setup and traced parameters of a KS problem.

    Args:
        crystal: the structure (Å).
        ecut: kinetic cutoff [Ha] (> 0).
        kgrid: Monkhorst–Pack grid ``(N1, N2, N3)`` (> 0).
        shift: grid shift in units of the spacing.
        smearing: ``none``, ``fermi-dirac``, ``gaussian`` or ``cold``.
        width: smearing width [Ha] (> 0 unless ``none``).
        xc: functional name (``lda-teter``, ``lda-pw92``, ``gga-pbe``).
        n_bands: bands per k-point (default: N_el/2 + max(4, 20%)).
        fft_shape: explicit FFT grid.
        symmetry: reduce k-points and symmetrise the density with the space group.
        pseudopotentials: optional ``{symbol: variant key}`` (e.g. ``{"Ga": "Ga-q13"}``).
        kpoints: optional explicit ``(kpts [nk,3], weights [nk])`` replacing the grid.
        devices: shard the k-points over devices: an int (the first n of ``jax.devices()``),
            ``"all"``, or None (no sharding).

    Returns:
        ``(setup, params)``.
    """
    crystal = crystal.unpadded()
    crystal.validate()
    if not (isinstance(ecut, (int, float)) and ecut > 0 and math.isfinite(ecut)):
        raise ConfigError(f"ecut must be a positive number of Hartree, got {ecut!r}")
    kgrid = tuple(int(k) for k in np.asarray(kgrid).reshape(-1))
    if len(kgrid) != 3 or any(k <= 0 for k in kgrid):
        raise ConfigError(f"k-point grid must be three positive integers, got {kgrid}")
    smearing = smearing.lower()
    if smearing not in SMEARINGS:
        raise ConfigError(f"unknown smearing {smearing!r}; choose one of {SMEARINGS}")
    if smearing != "none" and not width > 0:
        raise ConfigError(f"smearing {smearing!r} needs a positive width (Ha), got {width}")
    functional = get_functional(xc)

    numbers = np.asarray(crystal.numbers)
    species_z = sorted(set(int(z) for z in numbers), key=lambda z: list(numbers).index(z))
    psp_list = []
    for z in species_z:
        sym = chemical_symbol(z)
        key = (pseudopotentials or {}).get(sym)
        try:
            psp_list.append(load_gth(key or sym))
        except PseudopotentialError:
            raise
        except Exception as e:  # pragma: no cover - defensive
            raise PseudopotentialError(f"cannot load a GTH pseudopotential for {sym}: {e}") from e
    species_of_atom = np.array([species_z.index(int(z)) for z in numbers], np.int32)
    onehot = np.zeros((len(species_z), len(numbers)))
    onehot[species_of_atom, np.arange(len(numbers))] = 1.0
    n_el = float(sum(psp_list[s].zion for s in species_of_atom))
    if smearing == "none" and abs(n_el / 2 - round(n_el / 2)) > 1e-8:
        raise ConfigError(
            f"{crystal.formula} has an odd number of valence electrons ({n_el:g}); an insulator "
            "calculation needs an even count: use smearing (e.g. --smearing fermi-dirac:0.01)")
    n_occ = int(math.ceil(n_el / 2 - 1e-8))
    if n_bands is None:
        n_bands = n_occ + max(4, int(math.ceil(0.2 * n_occ)))
    if n_bands < n_occ or (smearing == "none" and n_bands < n_occ):
        raise ConfigError(f"too few bands: {n_bands} bands cannot hold {n_el:g} electrons "
                          f"(need at least {n_occ})")

    lattice = np.asarray(crystal.lattice) * ANG_BOHR
    frac = np.asarray(crystal.frac)
    if kpoints is not None:
        # explicit (irreducible) k-points, e.g. another code's; the density is symmetrised with the full group
        kpts, weights = np.asarray(kpoints[0], float).reshape(-1, 3), np.asarray(kpoints[1], float).reshape(-1)
        symops = _symmetry_ops(crystal) if symmetry else None
    elif symmetry:
        rots, trans = _symmetry_ops(crystal)
        kpts, weights, used = reduce_kpoints(kgrid, shift, rots, time_reversal=True)
        symops = (rots[used], trans[used])
    else:
        kpts, weights, _ = reduce_kpoints(kgrid, shift, None, time_reversal=True)
        symops = None
    mesh, n_real = None, len(kpts)
    if devices is not None:
        devs = jax.devices() if devices == "all" else jax.devices()[: int(devices)]
        from jax.sharding import AxisType, Mesh

        mesh = Mesh(np.array(devs), ("k",), axis_types=(AxisType.Auto,))
        pad = (-len(kpts)) % len(devs)
        if pad:  # zero-weight copies of the first k-point: no contribution to any sum
            kpts = np.concatenate([kpts, np.repeat(kpts[:1], pad, 0)])
            weights = np.concatenate([np.asarray(weights, float) / np.sum(weights), np.zeros(pad)])
    basis = build_basis(lattice, ecut, kpts, weights, fft_shape=fft_shape, symops=symops)
    if n_bands > int(basis.npw.min()):
        raise ConfigError(f"{n_bands} bands requested but the smallest plane-wave basis has only "
                          f"{int(basis.npw.min())} functions: raise ecut")
    layout = pseudo.projector_layout(species_of_atom, psp_list)
    setup = T.Setup(basis=basis, species_of_atom=species_of_atom, species_onehot=onehot, layout=layout,
                    n_electrons=n_el, n_bands=int(n_bands), xc=functional, smearing=smearing,
                    width=float(width), ewald=ewald_setup(lattice), symops=symops, psp_list=tuple(psp_list),
                    mesh=mesh, n_kpoints_real=n_real)
    params = {"lattice": jnp.asarray(lattice), "frac": jnp.asarray(frac),
              "psp": pseudo.stack_species(psp_list), "xc": functional.params}
    return setup, params


def initial_density(setup: T.Setup, params):
    """Superposition of atomic Gaussian valence densities (width ``σ = 1.2 r_loc + 0.6`` Bohr)."""
    lattice, frac, psp = params["lattice"], params["frac"], params["psp"]
    g2, _ = T.grid_g2(setup, lattice)
    sigma = 1.2 * psp["rloc"] + 0.6
    ff = psp["zion"][:, None] * jnp.exp(-0.5 * g2[None, :] * sigma[:, None] ** 2)
    rho_g = jnp.sum(ff * T.structure_factors(setup, frac), 0) / T.volume(lattice)
    rho = jnp.maximum(T.to_r(setup, rho_g), 1e-10)
    dv = T.volume(lattice) / setup.basis.n_grid
    return rho * setup.n_electrons / (jnp.sum(rho) * dv)


def make_scf_map(setup: T.Setup, eigensolver: str = "dense"):
    """The Kohn–Sham map ``F``: ``(params, rho_in, X0) -> dict(rho_out, eigenvalues, coeffs, occ, fermi, ts)``.

    ``X0`` ``[nk, nb, npw]`` warm-starts the iterative eigensolver and ``diag_tol`` [Ha] is its
    residual-norm target (both ignored by ``dense``).
    """
    solve = eigensolvers.get(eigensolver)

    def diagonalize(params, rho_in, X0, diag_tol=None):
        lattice, frac, psp = params["lattice"], params["frac"], params["psp"]
        veff_r, _ = T.effective_potential(setup, lattice, frac, psp, params["xc"], rho_in)
        return solve(setup, lattice, frac, psp, veff_r, X0, diag_tol)

    def new_density(params, eigs, coeffs):
        occ, mu, ts = T.occupations(setup, eigs)
        rho_out = T.density(setup, params["lattice"], coeffs, occ)
        return {"rho": rho_out, "eigenvalues": eigs, "coeffs": coeffs, "occ": occ, "fermi": mu, "ts": ts}

    def F(params, rho_in, X0, diag_tol=None):
        return new_density(params, *diagonalize(params, rho_in, X0, diag_tol))

    F.diagonalize, F.new_density = diagonalize, new_density
    return F


def _jit_scf_map(setup: T.Setup, eigensolver: str):
    """``jax.jit`` of the KS map. With a device mesh it is two programs, the k-sharded diagonalisation
    and the k-summed density, and the input density enters the first as a host array: a density
    that already carries the mesh's (auto) sharding cannot be closed over inside the manual
    (``shard_map``) region of the k-point work."""
    F = make_scf_map(setup, eigensolver)
    if setup.mesh is None:
        return jax.jit(F)
    diag, dens = jax.jit(F.diagonalize), jax.jit(F.new_density)

    def F_split(params, rho_in, X0, diag_tol=None):
        # the density enters as a plain (uncommitted) array: a mesh-sharded input would be closed over
        # inside the k-sharded region with a sharding of its own, which shard_map rejects
        return dens(params, *diag(params, jnp.asarray(np.asarray(rho_in)), X0, diag_tol))

    return F_split


def make_mixer(setup: T.Setup, params, method: str = "anderson", alpha: float | None = None,
               kerker: float | None = None, history: int = 8) -> mixing_mod.Mixer:
    """Density mixer. Defaults: Anderson, α = 0.8, Kerker k₀ = 0.8 Bohr⁻¹ for metals (smearing) only."""
    if kerker is None:
        kerker = 0.8 if setup.smearing != "none" else 0.0
    if alpha is None:
        alpha = 0.8 if method == "anderson" else 0.3
    g2, _ = T.grid_g2(setup, params["lattice"])
    pre = mixing_mod.kerker_preconditioner(g2, kerker, lambda r: T.to_g(setup, r), lambda g: T.to_r(setup, g))
    if method == "anderson":
        return mixing_mod.anderson_mixing(alpha, history, pre)
    if method in ("simple", "linear", "kerker"):
        return mixing_mod.simple_mixing(alpha, pre)
    raise ConfigError(f"unknown mixing {method!r}; choose anderson or simple")


DIAG_TOL_MIN, DIAG_TOL_MAX = 1e-9, 1e-2  # Ha, bounds of the iterative eigensolver's residual target
DIAG_TOL_RATIO = 0.1  # residual target / density residual
DENSE_MAX_NPW = 300  # "auto" eigensolver: dense eigh up to this many plane waves, LOBPCG above

_JIT_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled(setup, params, eigensolver, mixing, alpha, kerker):
    """Jitted SCF map, mixer and energy for a setup, cached so repeated runs (finite differences,
    relaxations, E(V) scans at fixed basis) do not recompile."""
    per_setup = _JIT_CACHE.setdefault(setup, {})
    key = (eigensolver, mixing, alpha, kerker)
    if key not in per_setup:
        F = _jit_scf_map(setup, eigensolver)
        mixer = make_mixer(setup, params, mixing, alpha, kerker)

        @jax.jit
        def energy_fn(params, coeffs, occ, ts, rho):
            return T.energy_terms(setup, params["lattice"], params["frac"], params["psp"], params["xc"],
                                  coeffs, occ, ts, rho_r=rho)

        per_setup[key] = (F, mixer, jax.jit(mixer.step), energy_fn)
    return per_setup[key]


def run_scf(crystal: Crystal | None = None, ecut: float | None = None, kgrid=(1, 1, 1), *, setup=None, params=None,
            tol: float = 1e-8, rho_tol: float = 1e-6, maxiter: int = 100, mixing: str = "anderson",
            alpha: float | None = None, kerker: float | None = None, eigensolver: str = "auto",
            progress: bool = True, raise_on_failure: bool = True, rho0=None, **prepare_kw) -> SCFResult:
    """Run the SCF to self-consistency.

    Converged when the total energy changes by less than ``tol`` [Ha] between two
    iterations and the density residual ``‖F(ρ)−ρ‖₂ = (∫|Δρ|²)^{1/2}`` is below ``rho_tol``.

    Raises:
        ConvergenceError: not converged within ``maxiter`` (when ``raise_on_failure``).
        ConfigError / StructureError / PseudopotentialError: invalid input (see :func:`prepare`).
    """
    t0 = time.perf_counter()
    if setup is None:
        if crystal is None or ecut is None:
            raise ConfigError("run_scf needs a crystal and ecut (or a prepared setup and params)")
        setup, params = prepare(crystal, ecut, kgrid, **prepare_kw)
    if eigensolver == "auto":
        eigensolver = "dense" if int(setup.basis.miller.shape[1]) <= DENSE_MAX_NPW else "lobpcg"
    F, mixer, mix_step, energy_fn = _compiled(setup, params, eigensolver, mixing, alpha, kerker)

    rho = initial_density(setup, params) if rho0 is None else rho0
    state = mixer.init(rho)
    nk, npw = setup.basis.miller.shape[:2]
    X = eigensolvers.initial_guess(setup, params["lattice"])
    dv = float(T.volume(params["lattice"])) / setup.basis.n_grid
    e_old, history, converged, out = None, [], False, None
    res = 1.0
    for it in range(1, maxiter + 1):
        # iterative eigensolver accuracy follows the SCF: loose while the density is far from
        # self-consistent, tight near the end (residual norms 1/10 of the density residual)
        out = F(params, rho, X, min(max(DIAG_TOL_RATIO * res, DIAG_TOL_MIN), DIAG_TOL_MAX))
        X = out["coeffs"]
        res = float(jnp.sqrt(jnp.sum((out["rho"] - rho) ** 2) * dv))
        if not math.isfinite(res):
            raise ConvergenceError(f"SCF produced NaN in the density at iteration {it}")
        terms = energy_fn(params, out["coeffs"], out["occ"], out["ts"], out["rho"])
        e = float(sum(terms.values()))
        de = math.inf if e_old is None else e - e_old
        history.append((e, res))
        if progress:
            print(f"SCF {it:3d}  E = {e:+.10f} Ha  dE = {de:+.2e}  |drho| = {res:.2e}", file=sys.stderr, flush=True)
        if abs(de) < tol and res < rho_tol:
            converged = True
            break
        e_old = e
        rho, state = mix_step(state, rho, out["rho"])
    # the reported state is F(ρ_last): coefficients, occupations and ρ_out of the last diagonalisation
    result = SCFResult(
        setup=setup, params=params, rho=out["rho"], coeffs=out["coeffs"],
        eigenvalues=np.asarray(out["eigenvalues"])[: setup.n_kpoints_real or None],
        occupations=np.asarray(out["occ"]),
        fermi_level=float(out["fermi"]), energy=e, terms={k: float(v) for k, v in terms.items()},
        converged=converged, n_iter=it, history=history, wall_time_s=time.perf_counter() - t0)
    if not converged and raise_on_failure:
        raise ConvergenceError(
            f"SCF not converged after {maxiter} iterations (last dE = {de:.2e} Ha, |drho| = {res:.2e}); "
            "try more iterations, a smaller mixing alpha, or smearing for metals")
    return result
