"""ABINIT interoperability for the GTH/HGH plane-wave DFT (host-side, no JAX).

Write GTH/HGH pseudopotential files in ABINIT's ``pspcod = 10`` format ("HGH
with the full h_ij matrix", read by ABINIT's ``psp10in``), write ABINIT input
files at exactly specified settings, run ``abinit`` in a temporary folder and
parse its results (full-precision from the ``*_GSR.nc`` netCDF file, plus the
text output for what the netCDF file does not hold).

Units: Hartree atomic units throughout (Bohr, Ha, Ha/Bohr, Ha/Bohr^3).

Conventions of the numbers ABINIT reports (and :func:`run_abinit` returns):

* ``etotal`` is the (free) energy ``E = internal energy - kT S`` (``-kT*entropy``
  is the smearing term, zero for ``occopt 1``).
* ``PspCore energy`` is ``N_el * sum_atoms epsatm_a / Omega`` with
  ``epsatm = 4 pi int r^2 (V_loc(r) + Z_ion/r) dr = 2 pi Z_ion r_loc^2 +
  (2 pi)^{3/2} r_loc^3 (C1 + 3 C2 + 15 C3 + 105 C4)``. The G = 0 term of the
  local potential is *not* in the Kohn-Sham potential, so eigenvalues (and the
  Fermi level) exclude the constant ``sum_a epsatm_a / Omega``.
* Forces are cartesian ``-dE/dR`` [Ha/Bohr] from which ABINIT removes the mean
  force (``force_avg``, printed as ``frms,max,avg``); ``forces_raw`` is
  ``-dE/dR`` rebuilt from ABINIT's reduced gradients ``dE/dt`` without that
  removal.
* Stress is ``sigma_ij = (1/Omega) dE/d eps_ij`` [Ha/Bohr^3] (ABINIT's sign:
  negative when the cell wants to expand; pressure = -trace/3).
* Smearing (``occopt``): 3 Fermi-Dirac (tsmear = kT), 4 Marzari-Vanderbilt
  cold smearing with a = -0.5634, 5 cold smearing with a = -0.8165, 6
  Methfessel-Paxton order 1, 7 Gaussian (tsmear = sigma).

References:
    X. Gonze et al., Comput. Phys. Commun. 248, 107042 (2020) (ABINIT).
    ABINIT psp10in (src/64_psp/m_psp_hgh.F90) for the pspcod 10 layout.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np

from difcrys.errors import ConfigError, ConvergenceError, FileFormatError, StructureError
from difcrys.units import ANG_BOHR

from .gth_table import MAX_PROJ, N_L, GTHParams, load_gth
from .gth_table import SYMBOLS as _SYMBOLS

#: ABINIT occopt codes for named smearing functions.
SMEARING_OCCOPT = {
    "fermi-dirac": 3, "fd": 3, "fermi": 3,
    "marzari-vanderbilt": 4, "cold": 4, "marzari": 4, "mv": 4,
    "methfessel-paxton": 6, "mp": 6,
    "gaussian": 7, "gauss": 7,
}

#: ABINIT 9 YAML energy keys -> the classic names of ABINIT's
#: "Components of total free energy (in Hartree)" table.
ENERGY_NAMES = {
    "kinetic": "Kinetic energy",
    "hartree": "Hartree energy",
    "xc": "XC energy",
    "Ewald energy": "Ewald energy",
    "psp_core": "PspCore energy",
    "local_psp": "Loc. psp. energy",
    "non_local_psp": "NL   psp  energy",
    "internal": "Internal E",
    "-kT*entropy": "-kT*entropy",
    "total_energy": "Etotal",
    "band_energy": "Band energy",
}

#: GSR netCDF variable -> classic name.
_GSR_ENERGIES = {
    "e_kinetic": "Kinetic energy",
    "e_hartree": "Hartree energy",
    "e_xc": "XC energy",
    "e_ewald": "Ewald energy",
    "e_corepsp": "PspCore energy",
    "e_localpsp": "Loc. psp. energy",
    "e_nlpsp_vfock": "NL   psp  energy",
    "e_eigenvalues": "Band energy",
}


# --------------------------------------------------------------------------
# Pseudopotential files
# --------------------------------------------------------------------------
def write_psp10(params: GTHParams, path=None, pspxc: int = 1) -> str:
    """ABINIT ``pspcod = 10`` file text for one GTH/HGH species.

    Layout (ABINIT ``psp10in``): title; ``zatom zion pspdat``; ``pspcod pspxc
    lmax lloc mmax r2well``; ``rloc nloc C_1..C_nloc``; ``nnonloc`` (= lmax+1);
    then per l = 0..lmax: ``r_l nprj h_11 h_12 .. h_1n`` and one line per
    further row of the upper triangle of h^l; for l > 0 the same number of
    lines of the spin-orbit k^l matrix follows (written as zeros: the Padé
    table is scalar-relativistic and ABINIT ignores k without spin-orbit).

    Args:
        params: the species.
        path: if given, the text is also written there.
        pspxc: ABINIT's xc code of the psp (1 = Teter Padé LDA); ABINIT only
            comments when it differs from ``ixc``.

    Returns:
        The file text.
    """
    lmax = max(params.lmax, 0)
    ncoef = max((i + 1 for i in range(4) if params.c[i] != 0.0), default=0)
    f = lambda x: f"{float(x): .17e}"  # noqa: E731  exact round trip of float64
    out = [
        f"GTH/HGH pseudopotential {params.key} ({params.name}, Pade LDA) for {params.symbol}; "
        f"HGH form PRB 58, 3641 (1998); written by difcrys",
        f"{params.Z:d} {f(params.zion)} 010605   zatom,zion,pspdat",
        f"10 {pspxc:d} {lmax:d} 0 2001 0   pspcod,pspxc,lmax,lloc,mmax,r2well",
        " ".join([f(params.rloc), str(ncoef)] + [f(params.c[i]) for i in range(ncoef)])
        + "   rloc nloc c1..c" + str(ncoef),
        f"{lmax + 1:d}   nnonloc",
    ]
    for l in range(lmax + 1):
        n = int(params.nproj[l])
        r = params.r[l] if n else 0.0
        h = params.h[l]
        out.append(" ".join([f(r), str(n)] + [f(h[0, j]) for j in range(n)])
                   + f"   r_{'spdf'[l]} nprj h_1j")
        for i in range(1, n):
            out.append(" ".join(f(h[i, j]) for j in range(i, n)) + f"   h_{i + 1}j")
        if l > 0:
            for i in range(n):
                out.append(" ".join(f(0.0) for _ in range(i, n)) + f"   k_{i + 1}j")
    text = "\n".join(out) + "\n"
    if path is not None:
        pathlib.Path(path).write_text(text)
    return text


def read_psp10(text: str) -> dict:
    """Parse an ABINIT ``pspcod = 10`` file (the inverse of :func:`write_psp10`).

    Follows ABINIT's record structure: each ``read`` starts on a new line and
    takes as many numbers as it needs.

    Returns:
        dict with ``Z``, ``zion``, ``pspcod``, ``pspxc``, ``lmax``, ``rloc``,
        ``c`` [4], ``r`` [4], ``h`` [4,3,3], ``k`` [4,3,3], ``nproj`` [4].

    Raises:
        FileFormatError: not a pspcod 10 file, or truncated.
    """
    lines = [ln for ln in text.splitlines()]
    try:
        z, zion = (float(x) for x in lines[1].split()[:2])
        hdr = lines[2].split()
        pspcod, pspxc, lmax = int(hdr[0]), int(hdr[1]), int(hdr[2])
        if pspcod != 10:
            raise FileFormatError(f"not a pspcod=10 file (pspcod={pspcod})")
        toks = lines[3].split()
        rloc, nloc = float(toks[0]), int(toks[1])
        c = np.zeros(4)
        c[:nloc] = [float(x) for x in toks[2:2 + nloc]]
        nnonloc = int(lines[4].split()[0])
        if nnonloc != lmax + 1:
            raise FileFormatError(f"nnonloc={nnonloc} must equal lmax+1={lmax + 1}")
        r = np.zeros(N_L)
        h = np.zeros((N_L, MAX_PROJ, MAX_PROJ))
        k = np.zeros((N_L, MAX_PROJ, MAX_PROJ))
        nproj = np.zeros(N_L, dtype=int)
        li = 5
        for l in range(lmax + 1):
            toks = lines[li].split(); li += 1
            r[l], n = float(toks[0]), int(toks[1])
            nproj[l] = n
            for j in range(n):
                h[l, 0, j] = h[l, j, 0] = float(toks[2 + j])
            for i in range(1, n):
                toks = lines[li].split(); li += 1
                for j in range(i, n):
                    h[l, i, j] = h[l, j, i] = float(toks[j - i])
            if l > 0:
                for i in range(n):
                    toks = lines[li].split(); li += 1
                    for j in range(i, n):
                        k[l, i, j] = k[l, j, i] = float(toks[j - i])
    except (IndexError, ValueError) as exc:
        raise FileFormatError(f"malformed pspcod=10 pseudopotential file: {exc}") from exc
    return {"Z": z, "zion": zion, "pspcod": pspcod, "pspxc": pspxc, "lmax": lmax,
            "rloc": rloc, "c": c, "r": r, "h": h, "k": k, "nproj": nproj}


def epsatm(params: GTHParams) -> float:
    """ABINIT's ``epsatm = 4 pi int r^2 (V_loc(r) + Z_ion/r) dr`` [Ha Bohr^3] (psp2lo)."""
    c = params.c
    return float(2 * np.pi * params.rloc**2 * params.zion
                 + (2 * np.pi) ** 1.5 * params.rloc**3 * (c[0] + 3 * c[1] + 15 * c[2] + 105 * c[3]))


# --------------------------------------------------------------------------
# Input files
# --------------------------------------------------------------------------
def _fmt(x) -> str:
    return repr(float(x)) if np.isfinite(x) else str(x)


def _smearing(smearing):
    """(occopt, tsmear) from None / (name|occopt, tsmear) / dict."""
    if smearing is None:
        return 1, None
    if isinstance(smearing, dict):
        kind, width = smearing.get("occopt", smearing.get("kind")), smearing.get("tsmear", smearing.get("width"))
    else:
        try:
            kind, width = smearing
        except (TypeError, ValueError):
            raise ConfigError(f"smearing must be None, (kind, tsmear) or a dict, got {smearing!r}") from None
    if isinstance(kind, str):
        if kind.lower() not in SMEARING_OCCOPT:
            raise ConfigError(f"unknown smearing {kind!r}; known: {sorted(SMEARING_OCCOPT)}")
        occopt = SMEARING_OCCOPT[kind.lower()]
    else:
        occopt = int(kind)
    if occopt not in (3, 4, 5, 6, 7, 8):
        raise ConfigError(f"smearing occopt must be 3..8, got {occopt}")
    width = float(width)
    if not width > 0:
        raise ConfigError(f"smearing width tsmear must be > 0 Ha, got {width}")
    return occopt, width


def species_of(numbers) -> list[int]:
    """Distinct atomic numbers in order of first appearance (ABINIT's typat order)."""
    seen = []
    for z in np.asarray(numbers).tolist():
        if z not in seen:
            seen.append(int(z))
    return seen


def _validate_structure(lattice, numbers, frac):
    lattice = np.asarray(lattice, dtype=np.float64)
    frac = np.asarray(frac, dtype=np.float64)
    numbers = np.asarray(numbers)
    if lattice.shape != (3, 3):
        raise StructureError(f"lattice must be [3,3] (rows = vectors, Bohr), got shape {lattice.shape}")
    if frac.ndim != 2 or frac.shape[1] != 3 or frac.shape[0] != numbers.shape[0] or numbers.ndim != 1:
        raise StructureError(f"frac must be [n,3] and numbers [n]; got {frac.shape} and {numbers.shape}")
    if not (np.all(np.isfinite(lattice)) and np.all(np.isfinite(frac))):
        raise StructureError("lattice or fractional coordinates contain NaN/inf")
    det = np.linalg.det(lattice)
    if det <= 1e-8:
        raise StructureError(
            f"lattice determinant {det:.3g} Bohr^3: ABINIT needs a right-handed, non-singular cell")
    if numbers.size == 0:
        raise StructureError("no atoms")
    for z in numbers.tolist():
        if not 0 < int(z) < len(_SYMBOLS):
            raise StructureError(f"invalid atomic number {z}")
    return lattice, np.asarray(numbers, dtype=int), frac


def _to_bohr(lattice, length_unit):
    unit = str(length_unit).lower()
    if unit in ("bohr", "au", "a.u."):
        return np.asarray(lattice, dtype=np.float64)
    if unit in ("angstrom", "ang", "a"):
        return np.asarray(lattice, dtype=np.float64) * ANG_BOHR
    raise ConfigError(f"length_unit must be 'bohr' or 'angstrom', got {length_unit!r}")


def crystal_to_bohr(crystal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice [3,3] Bohr, numbers [n], frac [n,3]) of the real atoms of a :class:`difcrys.crystal.Crystal` (Å)."""
    c = crystal.numpy().unpadded()
    return (np.asarray(c.lattice, dtype=np.float64) * ANG_BOHR, np.asarray(c.numbers, dtype=int),
            np.asarray(c.frac, dtype=np.float64))


def write_input(lattice_bohr, numbers, frac, ecut, kgrid, shift=(0.0, 0.0, 0.0), ngfft=None,
                nband=None, smearing=None, ixc=1, psp_files=None, forces=False, stress=False,
                toldfe=1e-12, nstep=100, kptopt=1, diemac=None, extra=None, tolvrs=None,
                length_unit="bohr") -> str:
    """ABINIT input text (ABINIT >= 9 syntax with ``pseudos``).

    Args:
        lattice_bohr: [3,3] lattice vectors as rows [Bohr, or Å with
            ``length_unit="angstrom"``]; written as ``acell 3*1`` and ``rprim``
            = the rows in Bohr.
        numbers: [n] atomic numbers; ``typat`` follows first appearance.
        frac: [n,3] reduced coordinates (``xred``).
        ecut: plane-wave cutoff [Ha] (``ecutsm 0``).
        kgrid: (n1, n2, n3) Monkhorst-Pack ``ngkpt``.
        shift: a single ``shiftk`` (0 0 0 = Gamma-centred).
        ngfft: explicit FFT grid (n1, n2, n3), or None to let ABINIT choose.
        nband: number of bands (None: ABINIT's default).
        smearing: None (``occopt 1``) or (kind, tsmear [Ha]) with kind a name
            of :data:`SMEARING_OCCOPT` or an occopt number; also a dict with
            ``occopt``/``tsmear``.
        ixc: ABINIT xc code: 1 Teter Padé LDA, 7 PW92 (ABINIT), -1012 PW92 (libxc).
        psp_files: list of psp file names, one per species in typat order.
        forces, stress: request ``optforces 1`` / ``optstress 1`` (else 0).
        toldfe: SCF stopping criterion on the total energy [Ha] (met twice).
        tolvrs: if given, stop on the squared potential residual instead
            (ABINIT accepts one tolerance only); tolvrs ~1e-18 converges the
            energy components (not only etotal) to ~1e-11 Ha.
        nstep: maximum SCF steps.
        kptopt: ABINIT kptopt (1: use symmetry + time reversal).
        diemac: model dielectric constant for the preconditioner (convergence only).
        extra: further ``{name: value}`` input variables (values as strings or numbers).
        length_unit: ``"bohr"`` (default) or ``"angstrom"`` for ``lattice_bohr``.

    Returns:
        Input file text.
    """
    lattice_bohr = _to_bohr(lattice_bohr, length_unit)
    lattice, numbers, frac = _validate_structure(lattice_bohr, numbers, frac)
    species = species_of(numbers)
    typat = [species.index(int(z)) + 1 for z in numbers]
    occopt, tsmear = _smearing(smearing)
    kgrid = [int(k) for k in kgrid]
    if len(kgrid) != 3 or min(kgrid) < 1:
        raise ConfigError(f"kgrid must be three positive integers, got {kgrid}")
    shift = [float(s) for s in np.asarray(shift, dtype=float).reshape(-1)]
    if len(shift) != 3:
        raise ConfigError(f"shift must have 3 components, got {shift}")
    if not ecut > 0:
        raise ConfigError(f"ecut must be > 0 Ha, got {ecut}")
    lines = [
        "# written by difcrys.dft.abinit",
        "acell 3*1.0",
        "rprim " + "\n      ".join(" ".join(_fmt(x) for x in row) for row in lattice),
        f"natom {len(numbers)} ntypat {len(species)}",
        "znucl " + " ".join(str(z) for z in species),
        "typat " + " ".join(str(t) for t in typat),
        "xred " + "\n     ".join(" ".join(_fmt(x) for x in row) for row in frac),
        "chkprim 0 chksymbreak 0",
        f"ecut {_fmt(ecut)} ecutsm 0.0",
        f"kptopt {int(kptopt)} ngkpt {kgrid[0]} {kgrid[1]} {kgrid[2]} nshiftk 1 shiftk "
        + " ".join(_fmt(s) for s in shift),
        "istwfk *1",
        f"ixc {int(ixc)}",
        f"occopt {occopt}" + (f" tsmear {_fmt(tsmear)}" if tsmear is not None else ""),
        (f"tolvrs {tolvrs:.3e}" if tolvrs is not None else f"toldfe {toldfe:.3e}") + f" nstep {int(nstep)}",
        f"optforces {1 if forces else 0} optstress {1 if stress else 0}",
        "prtwf 0 prtden 0 prteig 0 prtebands 0 prtgsr 1",
    ]
    if nband is not None:
        lines.append(f"nband {int(nband)}")
    if ngfft is not None:
        ng = [int(n) for n in ngfft]
        if len(ng) != 3 or min(ng) < 1:
            raise ConfigError(f"ngfft must be three positive integers, got {ngfft}")
        lines.append(f"ngfft {ng[0]} {ng[1]} {ng[2]}")
    if diemac is not None:
        lines.append(f"diemac {_fmt(diemac)}")
    if psp_files is not None:
        if len(psp_files) != len(species):
            raise ConfigError(f"{len(species)} species but {len(psp_files)} psp files")
        lines.append('pseudos "' + ", ".join(str(p) for p in psp_files) + '"')
    for k, v in (extra or {}).items():
        lines.append(f"{k} {v}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Output parsing
# --------------------------------------------------------------------------
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][-+]?\d+)?"


def _float(s: str) -> float:
    return float(s.replace("D", "E").replace("d", "e"))


def _yaml_block(text: str, tag: str) -> list[str] | None:
    """Lines of the last ``--- !<tag>`` ... ``...`` document in ABINIT's output."""
    starts = [m.end() for m in re.finditer(rf"^--- !{tag}\s*$", text, flags=re.M)]
    if not starts:
        return None
    body = text[starts[-1]:]
    end = re.search(r"^\.\.\.\s*$", body, flags=re.M)
    return body[: end.start() if end else len(body)].splitlines()


def _outvars(text: str) -> dict:
    """Variables echoed after the computation (``-outvars: ... after computation``)."""
    m = re.search(r"-outvars: echo values of variables after computation.*?\n(.*?)(?:\n\s*\n|\n=+)", text, re.S)
    if not m:
        return {}
    out, name = {}, None
    for line in m.group(1).splitlines():
        mm = re.match(r"^[-P ]?\s*([a-zA-Z_][a-zA-Z_0-9]*)\s+(.*)$", line)
        if mm and not re.match(_NUM, mm.group(1)):
            name = mm.group(1)
            out[name] = []
            rest = mm.group(2)
        else:
            rest = line
        if name is None:
            continue
        out[name].extend(_float(t) for t in re.findall(_NUM, rest.split("Bohr")[0].split("Hartree")[0]))
    return out


def parse_output(text: str) -> dict:
    """Parse ABINIT's main text output (``.abo``; ABINIT 9.x layout).

    Values are those printed (the energy terms with 15 digits, forces and
    stress with ~9, eigenvalues and k-point weights with 5 decimals). Prefer
    :func:`read_gsr` for full precision.

    Returns:
        dict with (when present) ``abinit_version``, ``ngfft``, ``energies``
        (classic ABINIT names), ``energy_terms`` (ABINIT 9 YAML keys),
        ``etotal``, ``fermie``, ``stress`` [3,3], ``forces`` [n,3],
        ``force_avg`` [3], ``gred`` [n,3], ``epsatm`` (per species, in typat
        order), ``nstep_scf``, ``converged``, ``scf_history`` (list of (etot,
        deltaE)), ``kpoints``, ``kpoint_weights``, ``nsym``, ``space_group``,
        ``ucvol``, ``eigenvalues_first_k`` (as printed).

    Raises:
        FileFormatError: not an ABINIT output.
    """
    m = re.search(r"^\.Version\s+(\S+)\s+of ABINIT", text, flags=re.M)
    if not m:
        raise FileFormatError("not an ABINIT output file (no '.Version ... of ABINIT' header)")
    res: dict = {"abinit_version": m.group(1)}

    ng = re.findall(r"getcut: wavevector=.*?ngfft=\s*(\d+)\s+(\d+)\s+(\d+)", text)
    if ng:
        res["ngfft"] = [int(x) for x in ng[-1]]
    bc = re.findall(rf"boxcut\(ratio\)=\s*({_NUM})", text)
    if bc:
        res["boxcut"] = _float(bc[-1])

    res["epsatm"] = [_float(x) for x in re.findall(rf"pspatm\s*:\s*epsatm=\s*({_NUM})", text)]
    m = re.search(rf"Unit cell volume ucvol=\s*({_NUM})", text)
    if m:
        res["ucvol"] = _float(m.group(1))

    blk = _yaml_block(text, "EnergyTerms")
    if blk:
        terms = {}
        for line in blk:
            mm = re.match(rf"^\s*(.+?)\s*:\s*({_NUM})\s*$", line)
            if mm and mm.group(1) not in ("comment", "iteration_state"):
                terms[mm.group(1).strip("'\"")] = _float(mm.group(2))
        res["energy_terms"] = terms
        res["energies"] = {ENERGY_NAMES[k]: v for k, v in terms.items() if k in ENERGY_NAMES}
        if "total_energy" in terms:
            res["etotal"] = terms["total_energy"]

    blk = _yaml_block(text, "ResultsGS")
    if blk:
        joined = "\n".join(blk)
        mm = re.search(rf"^fermie\s*:\s*({_NUM})", joined, re.M)
        if mm:
            res["fermie"] = _float(mm.group(1))
        if "etotal" not in res:
            mm = re.search(rf"^etotal\s*:\s*({_NUM})", joined, re.M)
            if mm:
                res["etotal"] = _float(mm.group(1))
        for key, name in (("cartesian_stress_tensor", "stress"), ("cartesian_forces", "forces")):
            mm = re.search(rf"^{key}:.*?\n((?:- \[.*\]\s*\n?)+)", joined, re.M)
            if mm:
                rows = [[_float(x) for x in re.findall(_NUM, r)[:3]] for r in mm.group(1).strip().splitlines()]
                res[name] = rows

    # forces printed with 14 decimals (more than the YAML block)
    mm = re.search(r"cartesian forces \(hartree/bohr\) at end:\s*\n(.*?)\n\s*frms,max,avg=(.*?)h/b", text, re.S)
    if mm:
        rows = [ln.split() for ln in mm.group(1).strip().splitlines()]
        res["forces"] = [[_float(x) for x in r[1:4]] for r in rows]
        avg = re.findall(_NUM, mm.group(2))
        res["force_avg"] = [_float(x) for x in avg[2:5]]
    mm = re.search(r"dE/dt below \(all hartree\)\s*\n(.*?)\n\s*\n", text, re.S)
    if mm:
        rows = [ln.split() for ln in mm.group(1).strip().splitlines()]
        res["gred"] = [[_float(x) for x in r[1:4]] for r in rows if len(r) >= 4]

    etots = re.findall(rf"^ ETOT\s+(\d+)\s+({_NUM})\s+({_NUM})", text, flags=re.M)
    if etots:
        # the last SCF cycle: restart when the step counter goes back to 1
        cyc = []
        for step, e, de in etots:
            if int(step) == 1:
                cyc = []
            cyc.append((_float(e), _float(de)))
        res["scf_history"] = cyc
        res["nstep_scf"] = len(cyc)
    res["converged"] = bool(re.search(r"At SCF step\s+\d+.*converged", text)) and not re.search(
        r"not enough SCF cycles to converge", text)

    ov = _outvars(text)
    nkpt = int(ov["nkpt"][0]) if "nkpt" in ov else None
    # variables equal to their default are not echoed: kpt = 0 0 0, wtk = 1 (normalised)
    if "kpt" in ov:
        res["kpoints"] = np.asarray(ov["kpt"]).reshape(-1, 3).tolist()
    elif nkpt == 1:
        res["kpoints"] = [[0.0, 0.0, 0.0]]
    if "wtk" in ov:
        w = np.asarray(ov["wtk"])
        res["kpoint_weights"] = (w / w.sum()).tolist()
    elif nkpt is not None:
        res["kpoint_weights"] = [1.0 / nkpt] * nkpt
    if "nsym" in ov:
        res["nsym"] = int(ov["nsym"][0])
    if "spgroup" in ov:
        res["space_group"] = int(ov["spgroup"][0])
    if "ngfft" in ov and "ngfft" not in res:
        res["ngfft"] = [int(x) for x in ov["ngfft"]]

    mm = re.search(r"Eigenvalues \(hartree\) for nkpt=.*?\n kpt#\s+1,.*?\n(.*?)\n(?: kpt#| prteigrs|\s*\n)", text, re.S)
    if mm:
        res["eigenvalues_first_k"] = [_float(x) for x in re.findall(_NUM, mm.group(1))]
    return res


def read_gsr(path) -> dict:
    """Full-precision results from ABINIT's ``*_GSR.nc`` (netCDF4 = HDF5, read with h5py).

    Returns:
        dict with ``etotal``, ``energies`` (classic names; ``-kT*entropy``
        included), ``fermie``, ``kpoints`` [nk,3] reduced, ``kpoint_weights``
        [nk], ``eigenvalues`` [nspin][nk][nband] Ha, ``occupations``, ``npw``
        [nk], ``forces`` [n,3] Ha/Bohr, ``stress`` [3,3] Ha/Bohr^3,
        ``ngfft``, ``nsym``, ``space_group``, ``residm``, ``deltae``, ``res2``,
        ``lattice_bohr``, ``abinit_version``.

    Raises:
        FileFormatError: missing or unreadable file.
    """
    import h5py

    path = pathlib.Path(path)
    if not path.exists():
        raise FileFormatError(f"ABINIT GSR file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            g = lambda name: f[name][()]  # noqa: E731
            res = {
                "etotal": float(g("etotal")),
                "fermie": float(g("fermie")),
                "kpoints": np.asarray(g("reduced_coordinates_of_kpoints")).tolist(),
                "kpoint_weights": np.asarray(g("kpoint_weights")).tolist(),
                "eigenvalues": np.asarray(g("eigenvalues")).tolist(),
                "occupations": np.asarray(g("occupations")).tolist(),
                "npw": np.asarray(g("number_of_coefficients")).astype(int).tolist(),
                "ngfft": [int(f[f"number_of_grid_points_vector{i}"].shape[0]) for i in (1, 2, 3)],
                "nsym": int(f["reduced_symmetry_matrices"].shape[0]),
                "space_group": int(g("space_group")),
                "lattice_bohr": np.asarray(g("primitive_vectors")).tolist(),
                "residm": float(g("residm")),
                "deltae": float(g("deltae")),
                "res2": float(g("res2")),
                "abinit_version": bytes(np.asarray(g("codvsn")).tobytes()).decode().strip(),
            }
            en = {name: float(g(var)) for var, name in _GSR_ENERGIES.items() if var in f}
            if "e_entropy" in f:
                en["-kT*entropy"] = float(g("e_entropy"))
            en["Etotal"] = res["etotal"]
            res["energies"] = en
            if "cartesian_forces" in f:
                res["forces"] = np.asarray(g("cartesian_forces")).tolist()
            if "cartesian_stress_tensor" in f:
                v = np.asarray(g("cartesian_stress_tensor"))  # Voigt: 11 22 33 23 13 12
                s = np.array([[v[0], v[5], v[4]], [v[5], v[1], v[3]], [v[4], v[3], v[2]]])
                res["stress"] = s.tolist()
    except (OSError, KeyError) as exc:
        raise FileFormatError(f"cannot read ABINIT GSR file {path}: {exc}") from exc
    return res


# --------------------------------------------------------------------------
# Running ABINIT
# --------------------------------------------------------------------------
def find_abinit(executable: str | None = None) -> str | None:
    """Path of the ``abinit`` executable (``$DIFCRYS_ABINIT`` or PATH), or None."""
    exe = executable or os.environ.get("DIFCRYS_ABINIT", "abinit")
    return shutil.which(exe)


def abinit_version(executable: str | None = None) -> str:
    """ABINIT's version string (``abinit --version``)."""
    exe = find_abinit(executable)
    if exe is None:
        raise ConfigError("abinit executable not found (install it, e.g. apt-get install abinit)")
    return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()


def run_abinit(structure_lattice_bohr, numbers, frac, ecut, kgrid, shift=(0.0, 0.0, 0.0), ngfft=None,
               nband=None, smearing=None, ixc=1, forces=False, stress=False, workdir=None, *,
               variants=None, toldfe=1e-12, tolvrs=None, nstep=100, kptopt=1, diemac=None, extra=None,
               executable=None, timeout=3600, require_convergence=True, keep_files=False) -> dict:
    """Run ABINIT on one structure with GTH-PADE pseudopotentials from our table.

    Args:
        structure_lattice_bohr: [3,3] lattice vectors as rows [Bohr].
        numbers: [n] atomic numbers.
        frac: [n,3] reduced coordinates.
        ecut: plane-wave cutoff [Ha].
        kgrid: Monkhorst-Pack grid (n1, n2, n3).
        shift: one k shift (0,0,0 = Gamma-centred; 0.5,0.5,0.5 = MP for even n).
        ngfft: explicit FFT grid, or None for ABINIT's own choice (reported
            back as ``ngfft``).
        nband: number of bands (None: ABINIT default).
        smearing: None or (kind, tsmear [Ha]), see :func:`write_input`.
        ixc: ABINIT xc code (1 = Teter Padé LDA; 7 or -1012 = PW92).
        forces, stress: compute forces / stress.
        workdir: folder to run in (created); None = a temporary folder that
            is removed afterwards unless ``keep_files``.
        variants: {atomic number or symbol: variant} for :func:`load_gth`.
        toldfe, tolvrs, nstep, kptopt, diemac, extra: see :func:`write_input`.
        executable: ``abinit`` path (default: ``$DIFCRYS_ABINIT`` or PATH).
        timeout: seconds.
        require_convergence: raise ConvergenceError if ABINIT did not meet toldfe.
        keep_files: keep the temporary folder (its path is returned as ``workdir``).

    Returns:
        dict (JSON-serialisable) with the settings, the input text, the psp
        files (text + sha256), and the results: ``etotal`` [Ha], ``energies``
        (ABINIT's names: "Kinetic energy", "Hartree energy", "XC energy",
        "Ewald energy", "PspCore energy", "Loc. psp. energy", "NL   psp  energy",
        "-kT*entropy", "Etotal", "Band energy"), ``energy_terms`` (ABINIT 9 YAML
        keys, 15 digits), ``epsatm`` {symbol: Ha Bohr^3}, ``fermie`` [Ha],
        ``kpoints`` (reduced, ABINIT's irreducible set), ``kpoint_weights``
        (sum 1), ``eigenvalues`` [nspin][nk][nband] [Ha], ``occupations``,
        ``npw``, ``forces`` [n,3] [Ha/Bohr] (mean removed, see module doc),
        ``forces_raw``, ``force_avg``, ``stress`` [3,3] [Ha/Bohr^3], ``ngfft``,
        ``nstep_scf``, ``converged``, ``residm``, ``deltae``, ``nsym``,
        ``space_group``, ``abinit_version``, ``wall_time_s``.

    Raises:
        ConfigError: no abinit executable, or invalid settings.
        StructureError: invalid lattice / coordinates.
        PseudopotentialError: an element has no GTH-PADE entry.
        ConvergenceError: SCF did not converge (if ``require_convergence``).
        FileFormatError: ABINIT failed or its output cannot be parsed.
    """
    exe = find_abinit(executable)
    if exe is None:
        raise ConfigError(f"abinit executable {executable or os.environ.get('DIFCRYS_ABINIT', 'abinit')!r} "
                          "not found (install it, e.g. apt-get install abinit, or set DIFCRYS_ABINIT)")
    lattice, numbers, frac = _validate_structure(structure_lattice_bohr, numbers, frac)
    species = species_of(numbers)
    variants = {(_SYMBOLS[k] if isinstance(k, (int, np.integer)) else k): v for k, v in (variants or {}).items()}
    params = [load_gth(_SYMBOLS[z], variants.get(_SYMBOLS[z])) for z in species]

    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="difcrys_abinit_")
        wd = pathlib.Path(tmp)
    else:
        wd = pathlib.Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
    try:
        psp_info = {}
        names = []
        for p in params:
            name = f"{p.Z:02d}-{p.key}.psp10"
            # pspxc = 1: the table is the Padé LDA fit whatever ixc the run uses
            # (ABINIT only comments when ixc differs), so one psp file per entry.
            text = write_psp10(p, wd / name, pspxc=1)
            names.append(name)
            psp_info[p.symbol] = {"key": p.key, "file": name, "sha256": hashlib.sha256(text.encode()).hexdigest(),
                                  "text": text}
        inp = write_input(lattice, numbers, frac, ecut, kgrid, shift, ngfft, nband, smearing, ixc, names,
                          forces, stress, toldfe, nstep, kptopt, diemac, extra, tolvrs)
        (wd / "run.abi").write_text(inp)
        for old in wd.glob("run*"):
            if old.name != "run.abi":
                old.unlink()
        t0 = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        proc = subprocess.run([exe, "run.abi"], cwd=wd, capture_output=True, text=True, timeout=timeout, env=env)
        wall = time.perf_counter() - t0
        (wd / "run.log").write_text(proc.stdout + proc.stderr)
        abo = wd / "run.abo"
        if proc.returncode != 0 or not abo.exists():
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise FileFormatError(f"ABINIT failed (exit {proc.returncode}) in {wd}:\n{tail}")
        res = parse_output(abo.read_text())
        gsr = wd / "runo_GSR.nc"
        if gsr.exists():
            text_version = res.get("abinit_version")
            res.update(read_gsr(gsr))
            res["abinit_version"] = text_version or res.get("abinit_version")
            # the text keeps -kT*entropy with its ABINIT name; GSR energies complete it
        # epsatm per species symbol
        eps = res.get("epsatm", [])
        res["epsatm"] = {p.symbol: (eps[i] if i < len(eps) else epsatm(p)) for i, p in enumerate(params)}
        res["epsatm_exact"] = {p.symbol: epsatm(p) for p in params}
        if forces and "gred" in res:
            # forces_raw = -dE/dR = -(L^-1) dE/dxred   (rows of L = lattice vectors)
            gred = np.asarray(res["gred"])
            res["forces_raw"] = (-(np.linalg.inv(lattice) @ gred.T).T).tolist()
        if not forces:
            res.pop("forces", None)
        if not stress:
            res.pop("stress", None)
        res["wall_time_s"] = wall
        res["settings"] = {
            "lattice_bohr": lattice.tolist(), "numbers": numbers.tolist(), "frac": frac.tolist(),
            "ecut": float(ecut), "kgrid": [int(k) for k in kgrid], "shift": [float(s) for s in shift],
            "ngfft": None if ngfft is None else [int(n) for n in ngfft], "nband": nband,
            "smearing": None if smearing is None else dict(zip(("occopt", "tsmear"), _smearing(smearing))),
            "ixc": int(ixc), "toldfe": None if tolvrs is not None else toldfe, "tolvrs": tolvrs, "nstep": nstep, "kptopt": kptopt, "istwfk": 1, "ecutsm": 0.0,
            "psp": {p.symbol: p.key for p in params},
        }
        res["input"] = inp
        res["psp_files"] = psp_info
        if keep_files or workdir is not None:
            res["workdir"] = str(wd)
        if require_convergence and not res.get("converged", False):
            crit = f"tolvrs={tolvrs}" if tolvrs is not None else f"toldfe={toldfe}"
            raise ConvergenceError(f"ABINIT SCF did not converge to {crit} in {nstep} steps ({wd})")
        return res
    finally:
        if tmp is not None and not keep_files:
            shutil.rmtree(tmp, ignore_errors=True)
