"""Band structures and densities of states at a fixed (self-consistent) density.

Non-self-consistent: the converged effective potential ``v_eff[ρ]`` is kept and
``H_k ψ = ε ψ`` is solved on new k-points (a band path or a full grid) with the
same cutoff and FFT grid. Hartree atomic units inside; plots in eV relative to
the valence-band maximum (insulators) or Fermi level (metals).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.dft import eigensolvers
from difcrys.dft import terms as T
from difcrys.dft.basis import build_basis
from difcrys.dft.bands import band_gap
from difcrys.dft.kpoints import monkhorst_pack
from difcrys.errors import ConfigError
from difcrys.units import BOHR_ANG, HARTREE_EV


def nscf_eigenvalues(res, kpts, n_bands: int | None = None, eigensolver: str = "dense", chunk: int = 16,
                     progress: bool = False):
    """Eigenvalues ``[nk, nb]`` [Ha] at k-points ``kpts [nk, 3]`` (reciprocal fractional) for the SCF potential."""
    kpts = np.asarray(kpts, float).reshape(-1, 3)
    setup, p = res.setup, res.params
    lattice = np.asarray(p["lattice"])
    veff_r, _ = jax.jit(lambda rho: T.effective_potential(setup, p["lattice"], p["frac"], p["psp"], p["xc"], rho))(
        res.rho)
    nb = n_bands or setup.n_bands
    solve = eigensolvers.get(eigensolver)
    out = []
    for start in range(0, len(kpts), chunk):
        kk = kpts[start:start + chunk]
        basis = build_basis(lattice, setup.basis.ecut, kk, np.ones(len(kk)), fft_shape=setup.basis.fft_shape)
        sub = dataclasses.replace(setup, basis=basis, n_bands=nb)
        X0 = eigensolvers.initial_guess(sub, p["lattice"])
        eig, _ = jax.jit(lambda v, x: solve(sub, p["lattice"], p["frac"], p["psp"], v, x))(veff_r, X0)
        out.append(np.asarray(eig))
        if progress:
            print(f"bands: {min(start + chunk, len(kpts))}/{len(kpts)} k-points", file=sys.stderr, flush=True)
    return np.concatenate(out, 0)


def band_structure(res, n_points: int = 60, path: str | None = None, progress: bool = False) -> dict:
    """Bands along the standard high-symmetry path of the crystal's lattice.

    Returns a dict with ``kpts`` ``[nk,3]``, ``x`` (path coordinate [1/Å]), ``labels``,
    ``label_x``, ``eigenvalues`` ``[nk, nb]`` [Ha], ``gap_ev`` (indirect gap from the path
    and SCF k-points together; None for metals) and ``reference_ha`` (VBM or Fermi level).
    """
    from difcrys import symmetry
    from difcrys.crystal import Crystal

    p = res.params
    crystal = Crystal.create(_numbers(res), np.asarray(p["frac"]),
                             np.asarray(p["lattice"]) * BOHR_ANG, validate=False)
    bp = symmetry.band_path(crystal, npoints=n_points, path=path)
    eig = nscf_eigenvalues(res, bp.kpts, progress=progress)
    gap = None
    ref = res.fermi_level
    if res.setup.smearing == "none":
        allk = np.concatenate([eig, np.asarray(res.eigenvalues)], 0)
        g = band_gap(allk, res.setup.n_electrons)
        gap = g["gap"] * HARTREE_EV
        ref = g["vbm"]
    return {"kpts": bp.kpts, "x": np.asarray(bp.x), "labels": list(bp.labels),
            "label_x": [float(v) for v in bp.special_x], "eigenvalues": eig, "gap_ev": gap, "reference_ha": ref}


def _numbers(res):
    z = []
    for s in res.setup.species_of_atom:
        z.append(int(res.setup.psp_list[int(s)].Z))
    return z


# ----------------------------------------------------------------------------- DOS
def dos_gaussian(eigenvalues, weights, energies, width: float):
    """Gaussian-broadened DOS ``g(E) = 2 Σ_k w_k Σ_n δ_σ(E − ε_nk)`` [states/Ha/cell] (spin-degenerate)."""
    e = np.asarray(eigenvalues)[..., None]
    w = np.asarray(weights)[:, None, None]
    g = np.exp(-0.5 * ((np.asarray(energies) - e) / width) ** 2) / (math.sqrt(2 * math.pi) * width)
    return 2 * np.sum(w * g, axis=(0, 1))


def _tetrahedra(mesh):
    """Corner indices ``[6 N, 4]`` of the 6 tetrahedra per sub-cell of a periodic grid (shared main diagonal)."""
    n1, n2, n3 = mesh
    i, j, k = (a.reshape(-1) for a in np.meshgrid(np.arange(n1), np.arange(n2), np.arange(n3), indexing="ij"))
    corners = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
    c = np.stack([(((i + a) % n1) * n2 + (j + b) % n2) * n3 + (k + d) % n3 for a, b, d in corners], 1)
    tets_local = np.array([(0, 1, 3, 7), (0, 1, 5, 7), (0, 2, 3, 7), (0, 2, 6, 7), (0, 4, 5, 7), (0, 4, 6, 7)])
    return c[:, tets_local].reshape(-1, 4)


def dos_tetrahedron(eigenvalues_grid, mesh, energies):
    """Linear tetrahedron DOS [states/Ha/cell] from eigenvalues on a full Γ-centred grid.

    ``eigenvalues_grid`` ``[N1 N2 N3, nb]`` in the C order of the grid. Each sub-cell is
    cut into 6 tetrahedra; within a tetrahedron with sorted corner energies
    ``e1 ≤ e2 ≤ e3 ≤ e4`` the DOS is the piecewise quadratic of the linear tetrahedron
    method (G. Lehmann, M. Taut, phys. stat. sol. (b) 54, 469 (1972); P. E. Blöchl, O. Jepsen,
    O. K. Andersen, Phys. Rev. B 49, 16223 (1994), Appendix B, without the Blöchl correction).
    Integrates to 2 × (number of bands).
    """
    tets = _tetrahedra(mesh)
    ntet = len(tets)
    E = np.asarray(energies)[:, None, None]
    ev = np.sort(np.asarray(eigenvalues_grid)[tets], axis=1)  # [ntet, 4, nb]
    e1, e2, e3, e4 = (ev[:, i, :][None] for i in range(4))
    eps = 1e-12
    d21, d31, d41 = e2 - e1 + eps, e3 - e1 + eps, e4 - e1 + eps
    d32, d42, d43 = e3 - e2 + eps, e4 - e2 + eps, e4 - e3 + eps
    g = np.zeros(np.broadcast(E, e1).shape)
    m1 = (E >= e1) & (E < e2)
    m2 = (E >= e2) & (E < e3)
    m3 = (E >= e3) & (E < e4)
    g = np.where(m1, 3 * (E - e1) ** 2 / (d21 * d31 * d41), g)
    g = np.where(m2, (3 * d21 + 6 * (E - e2) - 3 * (d31 + d42) * (E - e2) ** 2 / (d32 * d42)) / (d31 * d41), g)
    g = np.where(m3, 3 * (e4 - E) ** 2 / (d41 * d42 * d43), g)
    return 2 * np.sum(g, axis=(1, 2)) / ntet


def dos(res, energies=None, method: str = "gaussian", width: float = 0.005, mesh=None):
    """DOS of a converged state [states/Ha/cell] on ``energies`` [Ha].

    ``method="gaussian"`` uses the SCF k-points; ``"tetrahedron"`` recomputes the
    eigenvalues on the full Γ-centred grid ``mesh`` (default: twice the SCF grid size).
    """
    eig = np.asarray(res.eigenvalues)
    if energies is None:
        energies = np.linspace(eig.min() - 0.05, eig.max() + 0.05, 800)
    if method == "gaussian":
        return np.asarray(energies), dos_gaussian(eig, res.weights, energies, width)
    if method == "tetrahedron":
        if mesh is None:
            nk = len(res.kpoints)
            mesh = (max(4, 2 * int(round(nk ** (1 / 3)))),) * 3
        kpts = monkhorst_pack(mesh)
        eg = nscf_eigenvalues(res, kpts)
        return np.asarray(energies), dos_tetrahedron(eg, mesh, energies)
    raise ConfigError(f"unknown DOS method {method!r}; choose gaussian or tetrahedron")


def draw_bands_dos(bs: dict, eig_ev, dos_e_ev, dos_g, filename: str, title: str = "", ref_eig_ev=None,
                   labels=("bands", "reference"), ylim=None) -> None:
    """Band structure + DOS figure: ``bs`` gives the path (``x``, ``label_x``, ``labels``),
    ``eig_ev`` ``[nk, nb]`` the bands and ``dos_e_ev``, ``dos_g`` [states/eV/cell] the DOS, all in
    eV relative to the reference energy (drawn dashed at 0). ``ref_eig_ev`` (optional) overlays
    reference bands (black, dashed). Shared by ``difcrys scf --plot`` (plane-wave bands) and
    ``difcrys bands --plot`` (localized-basis bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 5), gridspec_kw={"width_ratios": [3, 1]}, sharey=True)
    lines = ax.plot(bs["x"], np.asarray(eig_ev), color="tab:blue", lw=1.0)
    if ref_eig_ev is not None:
        rl = ax.plot(bs["x"], np.asarray(ref_eig_ev), color="k", lw=0.8, ls="--")
        ax.legend([lines[0], rl[0]], list(labels), loc="upper right", fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    for xv in bs["label_x"]:
        ax.axvline(xv, color="0.7", lw=0.6)
    ax.axhline(0.0, color="0.4", lw=0.6, ls="--")
    ax.set_xticks(bs["label_x"])
    ax.set_xticklabels(bs["labels"])
    ax.set_xlim(bs["x"][0], bs["x"][-1])
    ax.set_ylabel("E − E_ref (eV)")
    ax.set_title(title)
    ax2.plot(dos_g, dos_e_ev, color="tab:red")
    ax2.set_xlabel("DOS (states/eV/cell)")
    ax2.axhline(0.0, color="0.4", lw=0.6, ls="--")
    fig.tight_layout()
    fig.savefig(filename, dpi=120)
    plt.close(fig)


def plot_bands_dos(res, bs: dict, filename: str, dos_width_ev: float = 0.3):
    """Write a band-structure + DOS figure (energies in eV relative to the VBM / Fermi level)."""
    ref = bs["reference_ha"]
    eig = (bs["eigenvalues"] - ref) * HARTREE_EV
    title = f"{res.setup.xc.name}, ecut {res.setup.basis.ecut:g} Ha"
    if bs.get("gap_ev") is not None:
        title += f", gap {bs['gap_ev']:.3f} eV"
    e = np.linspace(eig.min() - 1, eig.max() + 1, 600)
    _, g = dos(res, energies=e / HARTREE_EV + ref, method="gaussian", width=dos_width_ev / HARTREE_EV)
    draw_bands_dos(bs, eig, e, g / HARTREE_EV, filename, title)
