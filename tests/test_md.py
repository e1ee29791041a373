"""MD bridge: NVE conserves energy, Nosé–Hoover conserves its invariant, FIRE relaxes, extxyz output,
ASE calculator = numerical derivatives, bad input."""

import jax
import numpy as np
import pytest

from difcrys import io
from difcrys.crystal import Crystal, supercell
from difcrys.errors import ConfigError, ElementError
from difcrys.md.dynamics import run_md
from difcrys.md.relax import fire_relax
from difcrys.nn.potential import Potential, PotentialConfig


@pytest.fixture(scope="module")
def model():
    # a small random float64 model: a smooth many-body PES (the physics tested here holds for any E)
    cfg = PotentialConfig(species=["Si"], cutoff=3.0, num_layers=1, l_max=1, channels=4, n_radial=4,
                          radial_hidden=8, dtype="float64", scale=0.5, shift=(-5.0,), avg_num_neighbors=4.0)
    pot = Potential(cfg)
    return pot, pot.init(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def si8():
    si = io.example("Si")
    return supercell(si, np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]]))  # 8-atom cubic cell


def test_nve_conserves_energy_and_writes_extxyz(model, si8, tmp_path):
    import ase.io

    pot, params = model
    traj = str(tmp_path / "nve.extxyz")
    r = run_md(pot, params, si8, ensemble="nve", temperature=600.0, steps=100, dt=1.0, log_every=25,
               trajectory=traj, seed=1)
    # the atoms move (PE changes by much more than the total energy does)
    swing = np.ptp(r.potential_energy)
    assert swing > 1e-3
    assert np.max(np.abs(r.total_energy - r.total_energy[0])) < 2e-3 * swing
    frames = ase.io.read(traj, index=":")
    assert len(frames) == 5
    last = frames[-1]
    np.testing.assert_allclose(last.get_positions(), r.positions, atol=1e-6)
    ref = pot.compute(params, Crystal.from_cartesian(last.numbers, last.get_positions(), last.cell[:]))
    assert last.get_potential_energy() == pytest.approx(float(ref["energy"]), abs=1e-6)
    np.testing.assert_allclose(last.get_forces(), ref["forces"], atol=1e-6)
    assert last.info["temperature_K"] == pytest.approx(r.temperature[-1])
    # momentum conservation: total momentum stays zero
    from difcrys.md.dynamics import masses_of
    p = (masses_of(si8.numbers)[:, None] * r.velocities).sum(0)
    assert np.abs(p).max() < 1e-8


@pytest.mark.slow
def test_nose_hoover_invariant(model, si8):
    pot, params = model
    r = run_md(pot, params, si8, ensemble="nvt", temperature=500.0, steps=200, dt=1.0, log_every=50,
               tau_fs=20.0, seed=2)
    swing = np.ptp(r.total_energy)
    assert swing > 1e-3  # the thermostat exchanges energy with the atoms...
    assert np.ptp(r.conserved) < 0.05 * swing  # ...but the extended-system energy is conserved


@pytest.mark.slow
def test_langevin_holds_temperature(model, si8):
    pot, params = model
    big = supercell(si8, 2 * np.eye(3))  # 64 atoms
    T = 400.0
    r = run_md(pot, params, big, ensemble="nvt_langevin", temperature=T, steps=3000, dt=1.0, log_every=10,
               friction=0.02, seed=3)
    t_mean = r.temperature[100:].mean()
    n = 64
    # canonical fluctuation of the kinetic temperature: T sqrt(2 / (3 N)); frames are correlated,
    # so allow several standard errors
    assert abs(t_mean - T) < 4 * T * np.sqrt(2 / (3 * n)) / np.sqrt(20)


def test_fire_relaxes_rattled_cell(model, si8):
    pot, params = model
    rng = np.random.default_rng(0)
    rat = Crystal.create(si8.numbers, np.asarray(si8.frac) + 0.01 * rng.standard_normal((8, 3)), si8.lattice)
    f0 = np.abs(pot.compute(params, rat)["forces"]).max()
    res = fire_relax(pot, params, rat, fmax=1e-3, max_steps=1500)
    assert res.converged and res.fmax < 1e-3 < f0
    assert res.energy < res.energies[0]
    # the ideal diamond structure is a stationary point by symmetry: converged immediately
    res0 = fire_relax(pot, params, si8, fmax=1e-3)
    assert res0.converged and res0.n_steps == 1


@pytest.mark.slow
def test_ase_calculator_numerical_derivatives(model, si8):
    from difcrys.md.calculator import DifcrysCalculator

    pot, params = model
    atoms = io.to_ase(si8)
    atoms.rattle(0.03, seed=4)
    atoms.calc = DifcrysCalculator(pot, params)
    f = atoms.get_forces()
    fn = atoms.calc.calculate_numerical_forces(atoms, d=1e-4)
    np.testing.assert_allclose(f, fn, atol=1e-6)
    s = atoms.get_stress()
    sn = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    np.testing.assert_allclose(s, sn, atol=1e-6)


def test_bad_input(model, si8):
    pot, params = model
    with pytest.raises(ConfigError, match="ensemble"):
        run_md(pot, params, si8, ensemble="npt_berendsen", steps=1)
    ge = Crystal.create([32] * 8, si8.frac, si8.lattice)
    with pytest.raises(ElementError, match="Ge"):
        run_md(pot, params, ge, steps=1)
    with pytest.raises(ConfigError):
        fire_relax(pot, params, si8, fmax=-1)


@pytest.mark.slow
def test_cli_md_evaluate_and_relax(model, si8, tmp_path, capsys):
    """``difcrys md`` / ``evaluate`` / relax_with_model on a run folder (model.json + orbax best/)."""
    import argparse

    import ase.io

    from difcrys import cli_potential
    from difcrys.train import checkpoint

    pot, params = model
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text(pot.to_json())
    checkpoint.save(str(run), checkpoint.BEST, params, 0)
    struct = tmp_path / "si8.cif"
    io.write(str(struct), si8)
    parser = argparse.ArgumentParser()
    cli_potential.register(parser.add_subparsers())
    out = str(tmp_path / "traj.extxyz")
    args = parser.parse_args(["md", str(run), str(struct), "--ensemble", "nvt_langevin", "--temperature", "300",
                              "--steps", "20", "--dt", "1", "--log-every", "10", "--out", out])
    assert args.func(args) == 0
    frames = ase.io.read(out, index=":")
    assert len(frames) == 3 and "temperature_K" in frames[-1].info
    # evaluate the run on its own trajectory: the labels are the model's own predictions
    args = parser.parse_args(["evaluate", str(run), out, "--json"])
    capsys.readouterr()
    assert args.func(args) == 0
    import json

    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["energy_mae_per_atom_eV"] < 1e-6 and m["forces_mae"] < 1e-6
    with pytest.raises(ConfigError, match="data not found"):
        args = parser.parse_args(["evaluate", str(run), str(tmp_path / "missing.xyz")])
        args.func(args)
    rng = np.random.default_rng(5)
    rat = Crystal.create(si8.numbers, np.asarray(si8.frac) + 0.005 * rng.standard_normal((8, 3)), si8.lattice)
    res = cli_potential.relax_with_model(str(run), rat, fmax=1e-3, out=str(tmp_path / "relaxed.cif"))
    assert res.converged and res.fmax < 1e-3
    assert (tmp_path / "relaxed.cif").exists()


@pytest.mark.slow
def test_neighbour_list_reallocation(model, si8, monkeypatch):
    """A too-small neighbour capacity is grown outside jit and the trajectory is unchanged."""
    import difcrys.md.dynamics as dyn

    pot, params = model
    ref = run_md(pot, params, si8, ensemble="nve", temperature=600.0, steps=40, dt=1.0, log_every=20, seed=1)
    real = dyn.plan_graph
    monkeypatch.setattr(dyn, "plan_graph", lambda *a, **k: real(*a, **k)._replace(max_edges=8))
    small = run_md(pot, params, si8, ensemble="nve", temperature=600.0, steps=40, dt=1.0, log_every=20, seed=1)
    assert small.n_rebuild_growths >= 1
    np.testing.assert_allclose(small.positions, ref.positions, atol=1e-10)


@pytest.mark.slow
def test_npt_nose_hoover_invariant_and_cell_fluctuations(model, si8, tmp_path):
    """Isotropic NPT (jax-md): the extended Hamiltonian is conserved while the volume and the
    thermostat exchange energy with the atoms; the logged pressure is the virial + kinetic
    pressure of the frame's own cell."""
    import ase.io

    from difcrys.units import EV_PER_ANG3_GPA, KB_EV_PER_K

    pot, params = model
    traj = str(tmp_path / "npt.extxyz")
    # fast barostat: the cell must breathe (this random model is soft: ~0.2 GPa at the start)
    r = run_md(pot, params, si8, ensemble="npt", temperature=500.0, pressure=0.3, steps=200, dt=1.0, log_every=50,
               tau_fs=20.0, tau_p_fs=100.0, seed=2, trajectory=traj)
    assert np.ptp(r.volume) > 1e-3 * r.volume[0]
    swing = np.ptp(r.total_energy)
    assert swing > 1e-3
    assert np.ptp(r.conserved) < 0.05 * swing
    frames = ase.io.read(traj, index=":")
    last = frames[-1]
    np.testing.assert_allclose(last.cell[:], r.lattice, atol=1e-8)
    assert last.info["volume_A3"] == pytest.approx(abs(np.linalg.det(r.lattice)), rel=1e-10)
    ref = pot.compute(params, Crystal.from_cartesian(last.numbers, last.get_positions(), last.cell[:]))
    kin = 8 * KB_EV_PER_K * r.temperature[-1] / last.get_volume() * EV_PER_ANG3_GPA
    assert r.pressure_GPa[-1] == pytest.approx(kin - np.trace(ref["stress"]) / 3, abs=1e-8)
