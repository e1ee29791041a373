"""The xrd / refine / identify subcommands through a small argparse harness."""

import argparse
import json
import sys

import numpy as np
import pytest

from difcrys import cli_xrd
from difcrys.errors import DifcrysError


def run(argv, capsys):
    """Parse with a fresh argparse harness built by ``register`` and run the handler."""
    parser = argparse.ArgumentParser(prog="difcrys")
    cli_xrd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except DifcrysError as e:
        print(f"difcrys: error: {e}", file=sys.stderr)
        rc = 2
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_xrd_json_and_plot(tmp_path, capsys):
    png = tmp_path / "xrd.png"
    rc, out, _ = run(["xrd", "NaCl", "--two-theta", "20", "80", "--json", "--plot", str(png)], capsys)
    assert rc == 0
    d = json.loads(out)
    assert max(d["intensity"]) == pytest.approx(100.0)
    assert all(20 <= t <= 80 for t in d["two_theta"])
    assert len(d["hkl"]) == len(d["two_theta"]) and all(len(h[0]) == 3 for h in d["hkl"])
    # rock salt conventional or primitive: the strongest line is {200} at d = a/2
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    from difcrys import io

    ref = XRDCalculator().get_pattern(io.to_pymatgen(io.read("NaCl")), two_theta_range=(20, 80))
    np.testing.assert_allclose(d["two_theta"], ref.x, atol=1e-6)
    np.testing.assert_allclose(d["intensity"], ref.y, atol=1e-6)
    assert png.stat().st_size > 1000


def test_xrd_text_output_and_errors(capsys):
    rc, out, _ = run(["xrd", "Si", "--wavelength", "MoKa"], capsys)
    assert rc == 0 and "0.71073" in out
    rc, _, err = run(["xrd", "Si", "--wavelength", "0"], capsys)
    assert rc == 2 and "wavelength" in err
    rc, _, err = run(["xrd", "Si", "--two-theta", "50", "50"], capsys)
    assert rc == 2 and "empty" in err
    rc, _, err = run(["xrd", "no_such_file.cif"], capsys)
    assert rc == 2


def test_refine_and_identify_report_bad_pattern_files(tmp_path, capsys):
    bad = tmp_path / "bad.xy"
    bad.write_text("10 1 2 3\n11 1 2 3\n12 1 2 3\n13 1 2 3\n14 1 2 3\n15 1 2 3\n")
    rc, _, err = run(["refine", "Si", str(bad)], capsys)
    assert rc == 2 and "column" in err
    nan = tmp_path / "nan.xy"
    nan.write_text("\n".join(f"{10 + i} {'nan' if i == 3 else 1}" for i in range(10)))
    rc, _, err = run(["identify", str(nan), "--model", str(tmp_path)], capsys)
    assert rc == 2 and "NaN" in err
    good = tmp_path / "good.xy"
    good.write_text("\n".join(f"{10 + i} 1" for i in range(10)))
    rc, _, err = run(["identify", str(good), "--model", str(tmp_path / "nothing")], capsys)
    assert rc == 2 and "no trained classifier" in err


def test_identify_with_shipped_model_ranks_rock_salt(tmp_path, capsys):
    from difcrys.xrd import identify as idf

    if not (idf.SHIPPED_MODEL / "model.json").exists():
        pytest.skip("no shipped classifier checkpoint")
    from difcrys.xrd.api import simulate_profile
    from difcrys.xrd.patterns_io import write_xy

    tt = np.arange(10, 90, 0.02)
    y = simulate_profile("NaCl", tt, "CuKa", doublet=True)
    path = tmp_path / "nacl.xy"
    write_xy(path, tt, 1000 * y / y.max() + 50)
    rc, out, _ = run(["identify", str(path), "--json", "--top", "5"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["label_kind"] == "spacegroup" and len(d["candidates"]) == 5
    assert "225" in [c["label"] for c in d["candidates"]]  # Fm-3m
    assert sum(c["probability"] for c in d["candidates"]) <= 1 + 1e-9


@pytest.mark.slow
def test_refine_command_fits_lattice_of_simulated_pattern(tmp_path, capsys):
    from difcrys import io
    from difcrys.xrd.api import simulate_profile
    from difcrys.xrd.patterns_io import write_xy

    nacl = io.read("NaCl")
    true = nacl.replace(lattice=nacl.lattice * 1.01)  # the "measured" sample has a 1 % larger cell
    tt = np.arange(25, 60, 0.05)
    y = simulate_profile(true, tt, "CuKa", doublet=True, table="waasmaier_kirfel")
    path = tmp_path / "p.xy"
    write_xy(path, tt, 2000 * y / y.max() + 100)
    rc, out, _ = run(["refine", "NaCl", str(path), "--refine", "scale,lattice", "--background", "3", "--json"],
                     capsys)
    d = json.loads(out)
    a_true = float(np.linalg.norm(np.asarray(true.lattice)[0]))
    assert rc == 0 and d["rwp"] < 0.01
    assert abs(d["parameters"]["phase0.a"]["value"] - a_true) < 1e-4
