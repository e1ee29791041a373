"""CLI subcommands for learned interatomic potentials: ``train``, ``evaluate``, ``md``.

Wired into ``difcrys`` by :func:`register`. ``difcrys relax`` is shared with the DFT relaxation;
its model branch is :func:`relax_with_model`.

Examples::

    difcrys train configs/mlearn_Si.yaml --run-dir runs/si [--variant test]
    difcrys evaluate runs/si ../shared/data/mlearn_zuo2020/Si_test.xyz
    difcrys md runs/si Si --supercell 3 --ensemble nvt --temperature 300 --steps 1000 --dt 1 --out traj.extxyz
"""

from __future__ import annotations

import json
import os

import numpy as np

from difcrys.errors import ConfigError

__all__ = ["register", "cmd_train", "cmd_evaluate", "cmd_md", "relax_with_model"]


def _structure(path_or_name, supercell=None):
    from difcrys import io
    from difcrys.crystal import supercell as make_supercell

    c = io.read(path_or_name)
    if supercell:
        reps = [int(x) for x in str(supercell).replace(",", " ").replace("x", " ").split()]
        if len(reps) == 1:
            reps = reps * 3
        if len(reps) != 3 or min(reps) < 1:
            raise ConfigError(f"--supercell takes N or NxMxK, got {supercell!r}")
        c = make_supercell(c, np.diag(reps))
    return c


# ``task:`` key of a training config -> (module, function). Each trainer is called as
# ``fn(config_path, run_dir, variant=..., resume=...)`` and returns a JSON-able summary; it writes
# the resolved config (with its ``task``) into ``run_dir/config.yaml`` so that ``evaluate`` and the
# inference commands can tell what a run folder holds.
TRAINERS = {
    "potential": ("difcrys.train.potential", "train_potential"),
    "property": ("difcrys.train.property", "train_property_config"),
    "diffusion": ("difcrys.train.diffusion", "train_diffusion"),
    "hamiltonian": ("difcrys.train.hamiltonian", "train_hamiltonian"),
}

# run-folder task -> (module, function) implementing ``difcrys evaluate`` for it.
EVALUATORS = {
    "diffusion": ("difcrys.cli_diffusion", "cmd_evaluate"),
    "hamiltonian": ("difcrys.cli_hamiltonian", "cmd_evaluate"),
    "property": ("difcrys.cli_property", "cmd_evaluate"),
}


def _resolve(table, task, what):
    import importlib

    if task not in table:
        raise ConfigError(f"unknown {what} task {task!r}; known: {sorted(table)}")
    mod, fn = table[task]
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:  # pragma: no cover - optional component missing
        raise ConfigError(f"{what} for task {task!r} is unavailable ({e})") from e


def config_task(config_path, variant=None) -> str:
    """The ``task:`` of a YAML training config (``potential`` when absent)."""
    from difcrys.train.config import load_yaml

    if not os.path.exists(config_path):
        raise ConfigError(f"config not found: {config_path}")
    return str(load_yaml(config_path, variant).get("task", "potential"))


def run_task(run_dir) -> str:
    """The task a run folder was trained for, from its ``config.yaml`` / ``config.json``
    (``potential`` for folders that do not record one)."""
    import yaml

    if not os.path.isdir(run_dir):
        raise ConfigError(f"run folder not found: {run_dir}")
    for name in ("config.yaml", "config.json"):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                cfg = yaml.safe_load(f) if name.endswith("yaml") else json.load(f)
            if isinstance(cfg, dict) and cfg.get("task"):
                return str(cfg["task"])
    return "potential"


def cmd_train(args) -> int:
    task = config_task(args.config, args.variant)
    trainer = _resolve(TRAINERS, task, "trainer")
    run_dir = args.run_dir or os.path.join(
        "runs", os.path.splitext(os.path.basename(args.config))[0] + (f"_{args.variant}" if args.variant else ""))
    summary = trainer(args.config, run_dir, variant=args.variant, resume=not args.no_resume)
    print(json.dumps(summary, indent=2, default=float))
    print(f"run folder: {run_dir}")
    return 0


def cmd_evaluate(args) -> int:
    task = run_task(args.run_dir)
    if task != "potential":
        return _resolve(EVALUATORS, task, "evaluator")(args)
    from difcrys.train.potential import evaluate_run

    if args.data is None:
        raise ConfigError("difcrys evaluate RUN_DIR DATA: a potential run needs a DATA file or SET:PART")
    data = args.data
    if not os.path.exists(data) and ":" in data:  # shared set, e.g. mlearn_zuo2020:Si_test
        name, part = data.split(":", 1)
        data = {"set": name, "part": part}
    elif not os.path.exists(data):
        raise ConfigError(f"data not found: {args.data} (an extxyz file or SET:PART of the shared data)")
    m = evaluate_run(args.run_dir, data, which=args.which)
    if args.json:
        print(json.dumps(m))
    else:
        print(f"structures              {m['n_structures']}")
        print(f"energy MAE  [meV/atom]  {1000 * m['energy_mae_per_atom_eV']:.3f}")
        print(f"energy RMSE [meV/atom]  {1000 * m['energy_rmse_per_atom_eV']:.3f}")
        print(f"energy RMSE [meV]       {1000 * m['energy_rmse_eV']:.3f}")
        if "forces_mae" in m:
            print(f"force MAE   [eV/Å]      {m['forces_mae']:.4f}")
            print(f"force RMSE  [eV/Å]      {m['forces_rmse']:.4f}")
        if "stress_mae_GPa" in m:
            print(f"stress MAE  [GPa]       {m['stress_mae_GPa']:.4f}")
    return 0


def cmd_md(args) -> int:
    from difcrys.md.dynamics import run_md
    from difcrys.train.potential import load_run

    pot, params = load_run(args.run_dir)
    crystal = _structure(args.structure, args.supercell)
    r = run_md(pot, params, crystal, ensemble=args.ensemble, temperature=args.temperature, steps=args.steps,
               dt=args.dt, log_every=args.log_every, seed=args.seed, trajectory=args.out, progress=True,
               pressure=args.pressure)
    n = crystal.n_atoms
    print(f"{'t [fs]':>10} {'E_pot [eV]':>14} {'E_tot [eV]':>14} {'T [K]':>9} {'P [GPa]':>9} {'V [Å^3]':>11}")
    for k in range(len(r.time_fs)):
        print(f"{r.time_fs[k]:10.1f} {r.potential_energy[k]:14.6f} {r.total_energy[k]:14.6f} "
              f"{r.temperature[k]:9.2f} {r.pressure_GPa[k]:9.3f} {r.volume[k]:11.3f}")
    if args.ensemble == "nve":
        print(f"energy drift: {r.drift_meV_per_atom_per_ns(n):.3f} meV/atom/ns")
    if args.out:
        print(f"trajectory: {args.out}")
    return 0


def relax_with_model(run_dir: str, structure_path, *, fmax: float = 1e-3, max_steps: int = 2000,
                     relax_cell: bool = False, pressure_gpa: float = 0.0, out: str | None = None):
    """Relax a structure with a trained potential (the model branch of ``difcrys relax``).

    Args:
        run_dir: a potential run folder (``model.json`` + checkpoint).
        structure_path: structure file or example name.
        fmax: force threshold [eV/Å]; max_steps: FIRE iteration cap.
        relax_cell: also relax the lattice; pressure_gpa: external pressure [GPa].
        out: write the relaxed structure here (format from the extension) if given.

    Returns:
        :class:`difcrys.md.relax.RelaxResult`.
    """
    from difcrys import io
    from difcrys.md.relax import fire_relax
    from difcrys.train.potential import load_run

    pot, params = load_run(run_dir)
    crystal = io.read(structure_path) if not hasattr(structure_path, "frac") else structure_path
    res = fire_relax(pot, params, crystal, fmax=fmax, max_steps=max_steps, relax_cell=relax_cell,
                     pressure_gpa=pressure_gpa)
    if out:
        io.write(out, res.crystal)
    return res


def register(subparsers) -> None:
    """Add ``train``, ``evaluate`` and ``md`` to the ``difcrys`` argument parser."""
    p = subparsers.add_parser("train", help="train a model from a YAML config (its task: potential, property, "
                                            "diffusion or hamiltonian)")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--variant", default=None, help="named variant of the config (e.g. test)")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser("evaluate", help="evaluate a trained run (potential: errors on DATA; diffusion: "
                                               "--task csp|gen; hamiltonian / property: on its test split)")
    e.add_argument("run_dir")
    e.add_argument("data", nargs="?", default=None,
                   help="potential runs: extxyz file, or SET:PART of the shared data (mlearn_zuo2020:Si_test); "
                        "hamiltonian runs: an .npz file, a DeePTB folder or a quoted glob of .npz files "
                        "(one pooled set)")
    e.add_argument("--task", default=None, help="diffusion runs: csp (structure prediction) or gen (de novo)")
    e.add_argument("--n-samples", type=int, default=None, help="diffusion runs: number of test structures/samples")
    e.add_argument("--out", default=None, help="write the evaluation JSON here")
    e.add_argument("--which", choices=["best", "last"], default="best")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    m = subparsers.add_parser("md", help="molecular dynamics with a trained potential")
    m.add_argument("run_dir")
    m.add_argument("structure", help="structure file or example name")
    m.add_argument("--supercell", default=None, help="N or NxMxK repetition")
    m.add_argument("--ensemble", default="nve",
                   choices=["nve", "nvt", "nvt_nose_hoover", "nvt_langevin", "npt", "npt_nose_hoover"])
    m.add_argument("--temperature", type=float, default=300.0, help="K")
    m.add_argument("--pressure", type=float, default=0.0, help="NPT target pressure [GPa]")
    m.add_argument("--steps", type=int, default=1000)
    m.add_argument("--dt", type=float, default=1.0, help="time step [fs]")
    m.add_argument("--log-every", type=int, default=10)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", default=None, help="extxyz trajectory")
    m.set_defaults(func=cmd_md)
