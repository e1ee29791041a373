"""Generate ``tests/data/abinit_refs.json``: ABINIT reference results for the GTH-PADE DFT.

Runs ABINIT (Debian package 9.6.2: ``apt-get install abinit``) on a set of
small systems at exactly recorded settings, with pseudopotential files
written from ``difcrys/dft/data/gth_pade.json`` in ABINIT's pspcod=10 format,
and stores settings + full-precision results (from ABINIT's GSR netCDF file).

Usage::

    python tests/data/make_abinit_refs.py            # all systems (~1-2 min on 1 core)
    python tests/data/make_abinit_refs.py si2_ecut8_k222 al_cold  # a subset (merged into the file)

For every system the FFT grid is first chosen by ABINIT itself (a 1-step
probe run without ``ngfft``), then the reference run is made with that grid
given explicitly (``ngfft``), so the settings are complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from difcrys.dft import abinit as ab  # noqa: E402
from difcrys.dft import gth_table  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "abinit_refs.json"
#: Systems whose ABINIT text output is also kept (as tests/data/abinit_<name>.abo,
#: the citation block removed) to test the text parser without ABINIT installed.
EXCERPTS = ("si2_ecut8_k222", "si8_displaced_k111")

#: SCF stopping rule used for every reference: squared potential residual.
#: ABINIT accepts only one tol* variable; tolvrs 1e-20 converges etotal far
#: below 1e-12 Ha (|deltaE| is recorded and checked) and also the individual
#: energy components (which toldfe alone leaves uncertain at ~1e-9 Ha).
TOLVRS = 1e-20
NSTEP = 60

FCC = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
DIAMOND = [[0.0, 0.0, 0.0], [0.25, 0.25, 0.25]]
SI8_FRAC = [
    [0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0],
    [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75], [0.75, 0.75, 0.25],
]


def _graphene(a=4.65, c=15.0):
    lat = [[a, 0.0, 0.0], [-a / 2, a * np.sqrt(3) / 2, 0.0], [0.0, 0.0, c]]
    return lat, [6, 6], [[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.0]]


def systems() -> dict:
    """name -> (description, run_abinit keyword arguments)."""
    si2 = dict(structure_lattice_bohr=(FCC * 10.26).tolist(), numbers=[14, 14], frac=DIAMOND)
    si8 = dict(structure_lattice_bohr=(np.eye(3) * 10.26).tolist(), numbers=[14] * 8, frac=SI8_FRAC)
    frac_d = np.array(SI8_FRAC)
    frac_d[1] += [0.01, 0.02, -0.015]
    si8d = dict(structure_lattice_bohr=np.diag([10.26, 10.30, 10.22]).tolist(), numbers=[14] * 8,
                frac=frac_d.tolist())
    al = dict(structure_lattice_bohr=(FCC * 7.60).tolist(), numbers=[13], frac=[[0.0, 0.0, 0.0]])
    c2 = dict(structure_lattice_bohr=(FCC * 6.74).tolist(), numbers=[6, 6], frac=DIAMOND)
    glat, gnum, gfrac = _graphene()
    gr = dict(structure_lattice_bohr=glat, numbers=gnum, frac=gfrac)
    S = {}
    for ecut in (8, 12):
        for k in (2, 4):
            S[f"si2_ecut{ecut}_k{k}{k}{k}"] = (
                f"Si diamond primitive cell (fcc a=10.26 Bohr), ecut {ecut} Ha, {k}x{k}x{k} Gamma-centred, "
                "occopt 1 with 4 empty bands",
                dict(si2, ecut=ecut, kgrid=(k, k, k), shift=(0, 0, 0), nband=8, forces=True, stress=True,
                     diemac=12.0))
    S["si8_k111"] = ("Si8 conventional cubic cell a=10.26 Bohr, ecut 8, Gamma only",
                     dict(si8, ecut=8, kgrid=(1, 1, 1), shift=(0, 0, 0), nband=20, forces=True, stress=True,
                          diemac=12.0))
    S["si8_k222"] = ("Si8 conventional cubic cell a=10.26 Bohr, ecut 8, 2x2x2 Gamma-centred",
                     dict(si8, ecut=8, kgrid=(2, 2, 2), shift=(0, 0, 0), nband=20, forces=True, stress=True,
                          diemac=12.0))
    S["si8_displaced_k111"] = (
        "Si8, atom 2 displaced by (0.01, 0.02, -0.015) fractional, orthorhombic 10.26x10.30x10.22 Bohr, "
        "ecut 8, Gamma only: forces and stress",
        dict(si8d, ecut=8, kgrid=(1, 1, 1), shift=(0, 0, 0), nband=20, forces=True, stress=True, diemac=12.0))
    S["si8_displaced_k222"] = (
        "Si8, atom 2 displaced by (0.01, 0.02, -0.015) fractional, orthorhombic 10.26x10.30x10.22 Bohr, "
        "ecut 8, 2x2x2 Gamma-centred: forces and stress",
        dict(si8d, ecut=8, kgrid=(2, 2, 2), shift=(0, 0, 0), nband=20, forces=True, stress=True, diemac=12.0))
    si2d = dict(structure_lattice_bohr=(np.array([[0.05, 5.13, 5.13], [5.13, -0.03, 5.13], [5.13, 5.13, 0.1]])).tolist(),
                numbers=[14, 14], frac=[[0.01, -0.02, 0.0], [0.25, 0.27, 0.24]])
    S["si2_displaced_k222"] = (
        "Si2 with both atoms displaced and a strained triclinic cell, ecut 6, 2x2x2 Gamma-centred: "
        "forces and stress (chksymtnons 0: the inversion centre is off the FFT grid)",
        dict(si2d, ecut=6, kgrid=(2, 2, 2), shift=(0, 0, 0), nband=8, forces=True, stress=True, diemac=12.0,
             extra={"chksymtnons": 0}))
    S["c2_diamond_ecut15_k444"] = (
        "diamond C primitive cell (fcc a=6.74 Bohr), ecut 15, 4x4x4 Gamma-centred",
        dict(c2, ecut=15, kgrid=(4, 4, 4), shift=(0, 0, 0), nband=8, forces=True, stress=True, diemac=6.0))
    S["graphene_fd"] = (
        "graphene a=4.65 Bohr, c=15 Bohr vacuum, ecut 10, 6x6x1 Gamma-centred, Fermi-Dirac tsmear 0.01 Ha",
        dict(gr, ecut=10, kgrid=(6, 6, 1), shift=(0, 0, 0), nband=8, smearing=(3, 0.01), forces=True,
             stress=True))
    for name, occopt in (("al_cold", 4), ("al_fd", 3), ("al_gauss", 7)):
        S[name] = (
            f"Al fcc primitive a=7.60 Bohr, ecut 8, 6x6x6 Gamma-centred, occopt {occopt} tsmear 0.02 Ha",
            dict(al, ecut=8, kgrid=(6, 6, 6), shift=(0, 0, 0), nband=6, smearing=(occopt, 0.02), stress=True,
                 diemac=1e6))
    S["si2_pw92_libxc"] = (
        "Si2 as si2_ecut8_k222 with PW92 LDA from libxc (ixc -1012 = LDA_X + LDA_C_PW)",
        dict(si2, ecut=8, kgrid=(2, 2, 2), shift=(0, 0, 0), nband=8, ixc=-1012, forces=True, stress=True,
             diemac=12.0))
    S["si2_pw92_abinit"] = (
        "Si2 as si2_ecut8_k222 with ABINIT's own PW92 LDA (ixc 7)",
        dict(si2, ecut=8, kgrid=(2, 2, 2), shift=(0, 0, 0), nband=8, ixc=7, forces=True, stress=True,
             diemac=12.0))
    return S


CONVENTIONS = {
    "units": "Hartree atomic units: Bohr, Ha, Ha/Bohr, Ha/Bohr^3; k-points in reduced coordinates of the "
             "reciprocal lattice; lattice rows are the lattice vectors (ABINIT rprim with acell 3*1)",
    "etotal": "free energy E = internal - kT*S (Etotal); for occopt 1 the -kT*entropy term is 0",
    "psp_core": "PspCore energy = N_electrons * sum_atoms epsatm_a / Omega, epsatm = 2 pi zion rloc^2 + "
                "(2 pi)^1.5 rloc^3 (C1 + 3 C2 + 15 C3 + 105 C4) (ABINIT psp2lo)",
    "eigenvalues": "Kohn-Sham eigenvalues [Ha] with V_loc(G=0) = 0 and V_H(G=0) = 0: they EXCLUDE the constant "
                   "sum_a epsatm_a / Omega (which enters only PspCore energy); same for fermie. Verified on "
                   "si2_ecut8_k222 with ABINIT's density: Band energy = Kinetic + Loc. psp + NL psp + 2 Hartree + "
                   "int v_xc rho to 5e-12 Ha (no PspCore term)",
    "xc_grid": "E_xc = (Omega/N) sum over the ngfft grid of rho(r) eps_xc(rho(r)) with rho from the wavefunctions "
               "on that grid (intxc 0, no filtering): the Teter Pade formula of GTH96 on ABINIT's density "
               "reproduces XC energy of si2_ecut8_k222 to 3e-14 Ha",
    "eigenvalues_layout": "eigenvalues[spin][k][band], k in the order of kpoints; occupations likewise (0..2)",
    "kpoints": "ABINIT's irreducible k-points (kptopt 1: symmetry + time reversal) and weights (sum 1); "
               "evaluate at exactly these points to compare eigenvalues",
    "forces": "cartesian -dE/dR [Ha/Bohr] after ABINIT removed the mean force force_avg; forces_raw = -dE/dR "
              "rebuilt from ABINIT's reduced gradients (printed with 12 decimals), without that removal",
    "stress": "sigma_ij = (1/Omega) dE/d(eps_ij) [Ha/Bohr^3], 3x3; negative = cell wants to expand; "
              "pressure = -trace/3",
    "smearing": "occopt 3 Fermi-Dirac (tsmear = kT), 4 Marzari-Vanderbilt cold smearing with a = -0.5634, "
                "7 Gaussian (tsmear = sigma); spin-unpolarised occupations 2 f",
    "xc": "ixc 1 = Teter 1993 Pade LDA (GTH96 appendix); ixc 7 = PW92 (ABINIT); ixc -1012 = libxc LDA_X + "
          "LDA_C_PW",
    "basis": "plane waves |k+G|^2/2 <= ecut, ecutsm 0, istwfk 1 (no time-reversal storage); npw = number "
             "per irreducible k-point",
    "fft": "ngfft given explicitly = ABINIT's own choice at that ecut (boxcutmin 2: the density sphere "
           "2*sqrt(2 ecut) fits in the box); the density/potential live on the whole box",
    "convergence": "SCF stopped by tolvrs (squared potential residual); deltae = last energy change; residm "
                   "= max over all bands (incl. empty) of |(H - e)psi|^2, so eigenvalue errors <~ residm/gap",
    "psp": "GTH-PADE from difcrys/dft/data/gth_pade.json, written in ABINIT pspcod 10 format "
           "(difcrys.dft.abinit.write_psp10); the exact file text and sha256 are under psp",
    "pw92_note": "ixc -1012 (libxc) and ixc 7 (ABINIT) are both given; they agree to ~1e-13 Ha here",
}

RESULT_KEYS = [
    "etotal", "energies", "energy_terms", "epsatm", "epsatm_exact", "fermie", "kpoints", "kpoint_weights",
    "eigenvalues", "occupations", "npw", "forces", "forces_raw", "force_avg", "stress", "ngfft", "boxcut",
    "nstep_scf", "converged", "residm", "deltae", "res2", "nsym", "space_group", "ucvol", "wall_time_s",
]


def run_one(name, desc, kw) -> dict:
    kw = dict(kw)
    probe = ab.run_abinit(**kw, ngfft=None, tolvrs=TOLVRS, nstep=1, require_convergence=False)
    ngfft = probe["ngfft"]
    res = ab.run_abinit(**kw, ngfft=ngfft, tolvrs=TOLVRS, nstep=NSTEP, keep_files=name in EXCERPTS)
    if name in EXCERPTS:
        wd = pathlib.Path(res["workdir"])
        text = (wd / "run.abo").read_text()
        i, j = text.find(" Suggested references"), text.find(" Calculation completed.")
        if 0 <= i < j:
            text = text[:i] + " [citation block removed by make_abinit_refs.py]\n" + text[j:]
        (OUT.parent / f"abinit_{name}.abo").write_text(text)
        import shutil

        shutil.rmtree(wd, ignore_errors=True)
    assert res["ngfft"] == ngfft, (res["ngfft"], ngfft)
    assert res["converged"], name
    assert abs(res["deltae"]) < 1e-12, (name, res["deltae"])
    settings = dict(res["settings"])
    settings.update(forces=bool(kw.get("forces", False)), stress=bool(kw.get("stress", False)),
                    diemac=kw.get("diemac"))
    out = {
        "description": desc,
        "settings": settings,
        "abinit_input": res["input"],
        "results": {k: res.get(k) for k in RESULT_KEYS},
    }
    r = out["results"]
    print(f"{name:26s} E={r['etotal']:.12f} nk={len(r['kpoints'])} ngfft={ngfft} nscf={r['nstep_scf']} "
          f"dE={r['deltae']:.1e} residm={r['residm']:.1e} t={r['wall_time_s']:.1f}s", flush=True)
    return out, res["psp_files"]


def main(argv) -> None:
    S = systems()
    names = argv or list(S)
    unknown = [n for n in names if n not in S]
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; known: {list(S)}")
    data = json.loads(OUT.read_text()) if (OUT.exists() and argv) else {}
    data.setdefault("systems", {})
    data.setdefault("psp", {})
    version = ab.abinit_version()
    for n in names:
        entry, psp = run_one(n, *S[n])
        data["systems"][n] = entry
        for info in psp.values():
            data["psp"][info["key"]] = {"sha256": info["sha256"], "pspcod": 10, "text": info["text"]}
    table_hash = hashlib.sha256(gth_table.DATA_FILE.read_bytes()).hexdigest()
    data.update({
        "schema_version": 1,
        "generator": "tests/data/make_abinit_refs.py",
        "abinit_version": version,
        "created": datetime.date.today().isoformat(),
        "gth_table_sha256": table_hash,
        "conventions": CONVENTIONS,
    })
    order = ["schema_version", "generator", "abinit_version", "created", "gth_table_sha256", "conventions",
             "psp", "systems"]
    data = {k: data[k] for k in order}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT} ({len(data['systems'])} systems)")


if __name__ == "__main__":
    main(sys.argv[1:])
