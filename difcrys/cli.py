"""The ``difcrys`` command.

Subcommands: ``info`` (structure summary), ``scf`` (plane-wave Kohn–Sham DFT), and,
where their modules are present, ``xrd``/``refine``/``identify``. Every structure
argument is a file (CIF, POSCAR, extxyz) or a built-in example name (``Si``,
``NaCl``, …; see ``difcrys info --list-examples``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from difcrys.errors import ConfigError, DifcrysError


def _read(structure):
    from difcrys import io

    return io.read(structure)


# ----------------------------------------------------------------------------- info
def structure_info(crystal, cutoff: float = 5.0) -> dict:
    """Summary of a structure: the keys of ``difcrys info --json``."""
    from difcrys import graph, symmetry
    from difcrys.crystal import bravais_lattice, crystal_system

    number, symbol = symmetry.spacegroup(crystal)
    g = graph.neighbor_graph(crystal, cutoff)
    n_edges = int(np.asarray(g.n_edges))
    a, b, c, al, be, ga = (float(x) for x in np.asarray(crystal.lattice_parameters()))
    return {
        "formula": crystal.formula,
        "n_atoms": int(np.asarray(crystal.mask).sum()),
        "lattice_parameters": {"a": a, "b": b, "c": c, "alpha": al, "beta": be, "gamma": ga},
        "volume": float(abs(np.linalg.det(np.asarray(crystal.lattice)))),
        "density": crystal.density(),
        "spacegroup_number": int(number),
        "spacegroup_symbol": symbol,
        "crystal_system": crystal_system(number),
        "bravais_lattice": bravais_lattice(number, symbol),
        "cutoff": cutoff,
        "n_pairs": n_edges // 2,
    }


def cmd_info(args) -> int:
    if args.list_examples:
        from difcrys import io

        print(" ".join(io.EXAMPLES))
        return 0
    if not args.structure:
        raise DifcrysError("info needs a STRUCTURE (file or example name)")
    info = structure_info(_read(args.structure), args.cutoff)
    if args.json:
        print(json.dumps(info))
        return 0
    lp = info["lattice_parameters"]
    print(f"formula            {info['formula']}")
    print(f"atoms              {info['n_atoms']}")
    print(f"a, b, c [Å]        {lp['a']:.5f} {lp['b']:.5f} {lp['c']:.5f}")
    print(f"α, β, γ [deg]      {lp['alpha']:.4f} {lp['beta']:.4f} {lp['gamma']:.4f}")
    print(f"volume [Å^3]       {info['volume']:.5f}")
    print(f"density [g/cm^3]   {info['density']:.5f}")
    print(f"space group        {info['spacegroup_symbol']} ({info['spacegroup_number']})")
    print(f"crystal system     {info['crystal_system']}")
    print(f"Bravais lattice    {info['bravais_lattice']}")
    print(f"pairs within {info['cutoff']:g} Å  {info['n_pairs']}")
    return 0


# ----------------------------------------------------------------------------- scf
def _parse_smearing(text: str | None):
    from difcrys.errors import ConfigError

    if not text or text.lower() == "none":
        return "none", 0.0
    try:
        kind, width = text.split(":")
        return kind.lower(), float(width)
    except ValueError:
        raise ConfigError(f"--smearing must be KIND:WIDTH_HA (e.g. fermi-dirac:0.01), got {text!r}") from None


def scf_results_dict(res, crystal, extra: dict | None = None) -> dict:
    """The JSON document of ``difcrys scf --json``."""
    from difcrys.dft.bands import band_gap
    from difcrys.units import HARTREE_EV

    gap = band_gap(res.eigenvalues, res.setup.n_electrons) if res.setup.smearing == "none" else None
    out = {
        "formula": crystal.formula,
        "energy_ha": res.energy,
        "energy_ev": res.energy * HARTREE_EV,
        "energy_terms_ha": res.terms,
        "fermi_level_ha": res.fermi_level,
        "eigenvalues_ha": np.asarray(res.eigenvalues).tolist(),
        "kpoints_frac": np.asarray(res.kpoints).tolist(),
        "kpoint_weights": np.asarray(res.weights).tolist(),
        "gap_ev": None if gap is None else gap["gap"] * HARTREE_EV,
        "direct_gap_ev": None if gap is None else gap["direct_gap"] * HARTREE_EV,
        "n_iter": res.n_iter,
        "converged": res.converged,
        "wall_time_s": res.wall_time_s,
        "settings": {
            "ecut_ha": res.setup.basis.ecut, "fft_shape": list(res.setup.basis.fft_shape),
            "n_bands": res.setup.n_bands, "smearing": res.setup.smearing, "width_ha": res.setup.width,
            "xc": res.setup.xc.name, "n_electrons": res.setup.n_electrons,
        },
    }
    out.update(extra or {})
    return out


def _parse_devices(spec):
    """``--devices``: None (one device), ``all`` or a count of ``jax.devices()`` to shard k-points over."""
    if spec is None or spec == "all":
        return spec
    import jax

    try:
        n = int(spec)
    except ValueError:
        raise ConfigError(f"--devices must be a positive integer or 'all', got {spec!r}") from None
    if not 1 <= n <= len(jax.devices()):
        raise ConfigError(f"--devices {n}: {len(jax.devices())} JAX device(s) available "
                          "(on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)")
    return n


def cmd_scf(args) -> int:
    import time

    from difcrys.dft.scf import run_scf

    t0 = time.perf_counter()
    crystal = _read(args.structure)
    kind, width = _parse_smearing(args.smearing)
    res = run_scf(crystal, args.ecut, tuple(args.kpts), shift=tuple(args.shift), smearing=kind, width=width,
                  xc=args.xc, n_bands=args.bands_count, fft_shape=args.fft_shape, tol=args.tol,
                  maxiter=args.maxiter, progress=not args.quiet, devices=_parse_devices(args.devices))
    extra = {}
    if args.forces or args.stress:
        from difcrys.dft import derivatives

        if args.forces and args.stress:
            f, s = derivatives.forces_and_stress(res)
            extra["forces_ev_per_ang"], extra["stress_gpa"] = np.asarray(f).tolist(), np.asarray(s).tolist()
        elif args.forces:
            extra["forces_ev_per_ang"] = np.asarray(derivatives.forces(res)).tolist()
        else:
            extra["stress_gpa"] = np.asarray(derivatives.stress(res)).tolist()
    out = scf_results_dict(res, crystal, extra)
    if args.bands or args.plot:
        from difcrys.dft import bandstructure

        bs = bandstructure.band_structure(res, n_points=args.path_points, progress=not args.quiet)
        out["band_structure"] = {"x": bs["x"].tolist(), "labels": bs["labels"],
                                 "label_x": bs["label_x"], "eigenvalues_ha": bs["eigenvalues"].tolist()}
        out["band_gap_path_ev"] = bs["gap_ev"]
        if args.plot:
            bandstructure.plot_bands_dos(res, bs, args.plot)
    out["wall_time_s"] = time.perf_counter() - t0
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(out, f, indent=1)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['formula']}: E = {out['energy_ha']:.10f} Ha = {out['energy_ev']:.6f} eV "
              f"({'converged' if out['converged'] else 'NOT converged'} in {out['n_iter']} iterations)")
        for k, v in out["energy_terms_ha"].items():
            print(f"  {k:10s} {v:+.10f} Ha")
        if out["gap_ev"] is not None:
            print(f"  gap {out['gap_ev']:.4f} eV (direct {out['direct_gap_ev']:.4f} eV)")
        else:
            print(f"  Fermi level {out['fermi_level_ha']:.6f} Ha")
        for key in ("forces_ev_per_ang", "stress_gpa"):
            if key in out:
                print(f"  {key}: {np.array2string(np.asarray(out[key]), precision=6)}")
    return 0


# ----------------------------------------------------------------------------- relax
def cmd_relax(args) -> int:
    from difcrys import io

    if len(args.inputs) == 2:
        try:
            from difcrys.cli_potential import relax_with_model
        except ImportError as e:
            raise DifcrysError(f"relaxing with a trained model needs the potential module: {e}") from None
        r = relax_with_model(args.inputs[0], args.inputs[1], fmax=args.fmax, max_steps=args.steps,
                             relax_cell=not args.fixed_cell, out=args.out)
        info = {"formula": r.crystal.formula, "energy_ev": float(r.energy), "max_force_ev_per_ang": float(r.fmax),
                "stress_gpa": np.asarray(r.stress).tolist(), "steps": int(r.n_steps), "converged": bool(r.converged),
                "lattice": np.asarray(r.crystal.lattice).tolist(), "frac": np.asarray(r.crystal.frac).tolist()}
        print(json.dumps(info) if args.json else
              f"relaxed {info['formula']} in {info['steps']} steps: E = {info['energy_ev']:.6f} eV, "
              f"max force {info['max_force_ev_per_ang']:.2e} eV/Å")
        return 0 if r.converged else 1
    if args.ecut is None:
        raise DifcrysError("relax STRUCTURE uses DFT and needs --ecut (or give RUN_DIR STRUCTURE for a trained model)")
    from difcrys.dft.calculator import relax

    crystal = _read(args.inputs[0])
    relaxed, info = relax(crystal, ecut=args.ecut, kpts=tuple(args.kpts), cell=not args.fixed_cell, fmax=args.fmax,
                          steps=args.steps, log=None if args.json else "-")
    a, b, c, al, be, ga = (float(x) for x in np.asarray(relaxed.lattice_parameters()))
    info.update({"formula": relaxed.formula, "lattice_parameters": {"a": a, "b": b, "c": c, "alpha": al,
                                                                   "beta": be, "gamma": ga},
                 "frac": np.asarray(relaxed.frac).tolist(), "lattice": np.asarray(relaxed.lattice).tolist()})
    if args.out:
        io.write(args.out, relaxed)
        info["out"] = args.out
    if args.json:
        print(json.dumps(info))
    else:
        print(f"relaxed {relaxed.formula} in {info['steps']} steps: E = {info['energy_ev']:.6f} eV, "
              f"max force {info['max_force_ev_per_ang']:.2e} eV/Å, a b c = {a:.5f} {b:.5f} {c:.5f} Å")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="difcrys", description="Differentiable physics of crystals (JAX).")
    sub = p.add_subparsers(dest="command", required=True)

    pi = sub.add_parser("info", help="structure summary: formula, lattice, space group, neighbours")
    pi.add_argument("structure", nargs="?", help="file (CIF, POSCAR, extxyz) or example name (Si, NaCl, ...)")
    pi.add_argument("--cutoff", type=float, default=5.0, help="neighbour cutoff [Å] for n_pairs (default 5)")
    pi.add_argument("--json", action="store_true", help="print one JSON object")
    pi.add_argument("--list-examples", action="store_true", help="list the built-in example structures")
    pi.set_defaults(func=cmd_info)

    ps = sub.add_parser("scf", help="plane-wave Kohn-Sham DFT (GTH pseudopotentials, LDA)")
    ps.add_argument("structure", help="file or example name")
    ps.add_argument("--ecut", type=float, required=True, help="kinetic cutoff [Ha]")
    ps.add_argument("--kpts", type=int, nargs=3, default=[1, 1, 1], metavar="N", help="Monkhorst-Pack grid")
    ps.add_argument("--shift", type=float, nargs=3, default=[0.0, 0.0, 0.0], metavar="S",
                    help="grid shift in units of the spacing (0.5 0.5 0.5 = Monkhorst-Pack for even N)")
    ps.add_argument("--smearing", default=None, help="KIND:WIDTH_HA, KIND = fermi-dirac|gaussian|cold")
    ps.add_argument("--xc", default="lda-teter", help="lda-teter (default), lda-pw92, gga-pbe")
    ps.add_argument("--bands-count", type=int, default=None, help="number of bands per k-point")
    ps.add_argument("--fft-shape", type=int, nargs=3, default=None, metavar="N", help="explicit FFT grid")
    ps.add_argument("--tol", type=float, default=1e-8, help="energy convergence [Ha] (default 1e-8)")
    ps.add_argument("--maxiter", type=int, default=100, help="SCF iteration cap")
    ps.add_argument("--bands", action="store_true", help="band structure along the standard path")
    ps.add_argument("--path-points", type=int, default=60, help="k-points along the band path")
    ps.add_argument("--plot", default=None, help="write a bands + DOS plot (PNG/PDF)")
    ps.add_argument("--devices", default=None, metavar="N|all",
                    help="shard the k-points over N JAX devices (or all); default one device")
    ps.add_argument("--forces", action="store_true", help="add forces_ev_per_ang")
    ps.add_argument("--stress", action="store_true", help="add stress_gpa")
    ps.add_argument("--out", default=None, help="folder for results.json")
    ps.add_argument("--json", action="store_true", help="print one JSON object")
    ps.add_argument("--quiet", action="store_true", help="no per-iteration progress on stderr")
    ps.set_defaults(func=cmd_scf)

    pr = sub.add_parser("relax", help="relax positions and cell: DFT (STRUCTURE) or a trained model (RUN_DIR STRUCTURE)")
    pr.add_argument("inputs", nargs="+", metavar="[RUN_DIR] STRUCTURE")
    pr.add_argument("--ecut", type=float, default=None, help="DFT kinetic cutoff [Ha]")
    pr.add_argument("--kpts", type=int, nargs=3, default=[4, 4, 4], metavar="N")
    pr.add_argument("--fmax", type=float, default=1e-3, help="force tolerance [eV/Å]")
    pr.add_argument("--steps", type=int, default=100, help="maximum optimiser steps")
    pr.add_argument("--fixed-cell", action="store_true", help="relax positions only")
    pr.add_argument("--out", default=None, help="write the relaxed structure (CIF/POSCAR/extxyz)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_relax)

    for mod in ("cli_potential", "cli_property", "cli_diffusion", "cli_hamiltonian"):
        try:
            m = __import__(f"difcrys.{mod}", fromlist=["register"])
        except ModuleNotFoundError as e:  # optional component not present in this install
            if e.name == f"difcrys.{mod}":
                continue
            raise
        if hasattr(m, "register"):
            m.register(sub)

    try:
        from difcrys import cli_xrd
    except ImportError:
        cli_xrd = None
    if cli_xrd is not None and hasattr(cli_xrd, "register"):
        cli_xrd.register(sub)
    return p


def _enable_compilation_cache():
    """Persistent XLA compilation cache (``~/.cache/difcrys/jax``; ``DIFCRYS_JAX_CACHE`` overrides, ``off``
    disables): a repeated command with the same shapes skips most JIT compilation."""
    path = os.environ.get("DIFCRYS_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "difcrys", "jax"))
    if path.lower() == "off":
        return
    import jax

    try:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    except Exception:  # pragma: no cover - cache is an optimisation only
        pass


def main(argv=None) -> int:
    _enable_compilation_cache()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DifcrysError as e:
        print(f"difcrys: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
