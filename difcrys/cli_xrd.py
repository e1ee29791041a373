"""``difcrys xrd``, ``difcrys refine`` and ``difcrys identify`` subcommands.

:func:`register` adds the three subcommands to an argparse ``subparsers`` object;
each handler takes the parsed ``args`` and returns an exit code, raising
:class:`~difcrys.errors.DifcrysError` subclasses for bad input (the main CLI
prints them as ``difcrys: error: ...``). :func:`main` runs them standalone.
"""

from __future__ import annotations

import json
import sys

from difcrys.errors import ConfigError


def _enable_x64():
    import jax

    jax.config.update("jax_enable_x64", True)


def _savefig(fig, path):
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise ConfigError(f"cannot write plot {path}: {e}") from None


def cmd_xrd(args) -> int:
    """Print (or write as JSON / plot) the stick pattern of a structure."""
    _enable_x64()
    from difcrys.xrd.api import load_structure, xrd_peaks

    structure = args.structure
    if args.conventional:
        from difcrys import symmetry

        crystal, occ = load_structure(structure)
        if not all(abs(o - 1) < 1e-12 for o in occ):
            raise ConfigError("--conventional needs an ordered structure (no partial occupancies)")
        structure = symmetry.standardize(crystal, to_primitive=False, no_idealize=True)
    peaks = xrd_peaks(structure, args.wavelength, tuple(args.two_theta), table=args.table, B=args.b_factor)
    if args.json:
        print(peaks.to_json())
    else:
        print(f"# λ = {peaks.wavelength:.5f} Å, {len(peaks.two_theta)} peaks")
        print(f"# {'2theta':>10s} {'I':>8s} {'d (Å)':>9s}  hkl (multiplicity)")
        for t, i, d, fam in zip(peaks.two_theta, peaks.intensity, peaks.d_spacing, peaks.hkls):
            hk = ", ".join(f"({' '.join(str(v) for v in h)})×{m}" for h, m in fam)
            print(f"  {t:10.4f} {i:8.3f} {d:9.5f}  {hk}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        ax.vlines(peaks.two_theta, 0, peaks.intensity, color="k", lw=1.2)
        for t, i, fam in zip(peaks.two_theta, peaks.intensity, peaks.hkls):
            if i > 10:
                ax.annotate("".join(str(v) for v in fam[0][0]), (t, i), fontsize=7, rotation=90, va="bottom",
                            ha="center")
        ax.set_xlim(*args.two_theta)
        ax.set_ylim(0, 115)
        ax.set_xlabel("2θ (deg)")
        ax.set_ylabel("intensity (max 100)")
        fig.tight_layout()
        _savefig(fig, args.plot)
    return 0


def cmd_refine(args) -> int:
    """Refine a structure against a measured pattern and report Rwp and parameters."""
    _enable_x64()
    from difcrys.xrd.api import load_structure
    from difcrys.xrd.patterns_io import read_pattern
    from difcrys.xrd.refine import Phase, refine

    pattern = read_pattern(args.pattern)
    crystal, occ = load_structure(args.structure)
    groups = tuple(g.strip() for g in args.refine.split(",") if g.strip())
    phase = Phase(crystal, occ, name="phase0", refine=groups, use_symmetry=not args.p1)
    rng = tuple(args.two_theta) if args.two_theta else None
    res = refine(pattern, phase, radiation_name=args.wavelength, doublet=not args.no_doublet,
                 n_background=args.background, table=args.table, cthm=args.cthm, two_theta_range=rng)
    if args.json:
        out = res.to_dict()
        out["lattice"] = [list(map(float, row)) for row in __import__("numpy").asarray(res.crystals[0].lattice)]
        out["frac"] = __import__("numpy").asarray(res.crystals[0].frac).tolist()
        print(json.dumps(out))
    else:
        print(f"space group used for constraints: {', '.join(res.spacegroups)}")
        print(res.summary())
    if args.output:
        from difcrys import io as dio

        dio.write(args.output, res.crystals[0])
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 5))
        ax.plot(res.two_theta, res.observed, ".", ms=2, label="observed")
        ax.plot(res.two_theta, res.calculated, "-", lw=0.8, label=f"calculated (Rwp {100 * res.rwp:.2f} %)")
        ax.plot(res.two_theta, res.observed - res.calculated, "-", lw=0.5, label="difference")
        ax.set_xlabel("2θ (deg)")
        ax.legend()
        fig.tight_layout()
        _savefig(fig, args.plot)
    return 0


def cmd_identify(args) -> int:
    """Rank structure classes for a measured pattern with a trained classifier."""
    _enable_x64()
    from difcrys.xrd.identify import identify_file

    result = identify_file(args.pattern, args.model, top=args.top)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"# model: {args.model} (labels: {result['label_kind']})")
        for r in result["candidates"]:
            print(f"  {r['label']:<16s} p = {r['probability']:.3f}  cosine = {r['cosine']:.3f}")
    return 0


def _two_floats(parser):
    return dict(nargs=2, type=float, metavar=("MIN", "MAX"))


def register(subparsers) -> None:
    """Add ``xrd``, ``refine`` and ``identify`` to an argparse subparsers object."""
    p = subparsers.add_parser("xrd", help="powder X-ray stick pattern of a structure",
                              description="Powder XRD stick pattern (kinematic, pymatgen-compatible by default).")
    p.add_argument("structure", help="structure file (CIF, POSCAR, extxyz) or example name")
    p.add_argument("--wavelength", default="CuKa", help="Å or radiation name (CuKa, MoKa1, ...); default CuKa")
    p.add_argument("--two-theta", default=[0.0, 90.0], **_two_floats(p), help="2θ range in degrees (default 0 90)")
    p.add_argument("--table", default="doyle_turner", help="scattering factors: doyle_turner (pymatgen) or "
                   "waasmaier_kirfel")
    p.add_argument("--b-factor", type=float, default=None, help="isotropic B [Å²] for every atom (default none)")
    p.add_argument("--conventional", action="store_true",
                   help="index peaks in the conventional standard cell (spglib) instead of the input cell")
    p.add_argument("--json", action="store_true", help="print JSON with two_theta, intensity, hkl per peak")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a stick plot")
    p.set_defaults(func=cmd_xrd)

    r = subparsers.add_parser("refine", help="Rietveld-like refinement against a measured pattern",
                              description="Fit lattice, free positions, B, scale, profile and zero shift to a "
                              "measured pattern by least squares; only symmetry-free parameters refine.")
    r.add_argument("structure", help="starting structure (file or example name)")
    r.add_argument("pattern", help="measured pattern: 2 or 3 columns (2θ, I[, σ]) or 'start step end' + intensities")
    r.add_argument("--wavelength", default="CuKa", help="anode/radiation (CuKa) or wavelength in Å")
    r.add_argument("--no-doublet", action="store_true", help="single wavelength instead of the Kα1/Kα2 doublet")
    r.add_argument("--background", type=int, default=8, help="number of Chebyshev background terms (default 8)")
    r.add_argument("--table", default="waasmaier_kirfel", help="scattering-factor table")
    r.add_argument("--cthm", type=float, default=1.0, help="monochromator polarisation cos²2θ_M (default 1)")
    r.add_argument("--refine", default="scale,lattice,positions,B,profile",
                   help="comma list of parameter groups to refine")
    r.add_argument("--p1", action="store_true", help="ignore symmetry (refine every coordinate)")
    r.add_argument("--two-theta", default=None, **_two_floats(r), help="restrict the fit to this 2θ range")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.add_argument("--output", default=None, help="write the refined structure (CIF/POSCAR by extension)")
    r.add_argument("--plot", default=None, metavar="PNG", help="write the observed/calculated/difference plot")
    r.set_defaults(func=cmd_refine)

    i = subparsers.add_parser("identify", help="identify the structure type of a measured pattern",
                              description="Classify a powder pattern with a trained CrySTINet-style ensemble.")
    i.add_argument("pattern", help="pattern file (2θ, I)")
    i.add_argument("--model", default="spacegroup",
                   help="run directory of a trained classifier (experiments/xrd/identify.py writes one), or a "
                   "shipped one: 'spacegroup' (default) or 'crystal_system'")
    i.add_argument("--top", type=int, default=5, help="number of candidates (default 5)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_identify)


def main(argv=None) -> int:
    """Standalone entry point: ``python -m difcrys.cli_xrd xrd Si`` (the ``difcrys`` command's parser)."""
    from difcrys.cli import main as difcrys_main

    return difcrys_main(argv)


if __name__ == "__main__":
    sys.exit(main())
