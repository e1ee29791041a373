"""jax-md bridge: a learned potential as a jax-md energy function, NVE / NVT molecular dynamics.

Units: Å, eV, amu; time in fs at the API. jax-md is unit-agnostic, so its natural time unit here
is ``Å √(amu/eV) ≈ 10.18 fs`` (:data:`difcrys.units.FS` converts), ``kT`` in eV.

Neighbour list: the potential's :class:`~difcrys.graph.Graph` built at ``cutoff + skin`` is the
neighbour list (Verlet list). Inside the jitted step loop the graph is rebuilt (jittable
:func:`~difcrys.graph.build_graph` with a static plan) whenever an atom has moved more than
``skin / 2`` since the last build; a too-small capacity sets the graph's overflow flag, which the
host checks after every chunk of steps: it then grows the plan (outside jit) and redoes the chunk
from its saved starting state (jax-md's reallocation pattern). The difcrys graph is used instead
of ``jax_md.partition`` because it handles triclinic cells smaller than twice the cutoff (periodic
images of the same atom), exactly as in training. Positions are kept unwrapped (no wrapping in the
shift function), so the graph's integer image shifts stay valid between rebuilds.

Integrators (``jax_md.simulate``): velocity Verlet (``nve``), Nosé–Hoover chains
(``nvt_nose_hoover``; Martyna, Klein, Tuckerman, J. Chem. Phys. 97, 2635 (1992)) and Langevin
(``nvt_langevin``, BAOAB; Leimkuhler & Matthews, Appl. Math. Res. Express 2013, 34), and isotropic
NPT with two Nosé–Hoover chains (``npt_nose_hoover``; Martyna, Tobias, Klein, J. Chem. Phys. 101,
4177 (1994); Tuckerman et al., J. Phys. A 39, 5629 (2006)). jax-md's NPT integrator keeps fractional
coordinates (``space.periodic_general``); the energy it gets maps them to cartesian positions
with ``jax_md.space.transform`` (whose custom JVP makes ``−∂E/∂s`` the cartesian force) and accepts
the box and the isotropic strain ``perturbation = 1 + ε`` that the barostat differentiates.

Trajectories are written as extended XYZ with energies, forces, stress, time, temperature and
pressure per frame (:func:`run_md`).
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal
from difcrys.errors import CapacityError, ConfigError
from difcrys.graph import Graph, build_graph, plan_graph
from difcrys.units import EV_PER_ANG3_GPA, FS, GPA_EV_PER_ANG3, KB_EV_PER_K

__all__ = ["ModelEnergy", "MDResult", "run_md", "masses_of", "write_frame"]


def masses_of(numbers) -> np.ndarray:
    """Atomic masses [amu] (ASE's table)."""
    from ase.data import atomic_masses

    return np.asarray(atomic_masses)[np.asarray(numbers)]


class ModelEnergy:
    """A trained potential bound to one structure's species, mask and (fixed) lattice.

    Args:
        potential: :class:`~difcrys.nn.potential.Potential`.
        params: its parameters.
        crystal: the structure (checked: known elements, no overlapping atoms).
        skin: Verlet skin [Å]; the neighbour graph is built at ``cutoff + skin``.

    Attributes:
        plan: static :class:`~difcrys.graph.GraphPlan` of the neighbour graph (grown on overflow).
    """

    def __init__(self, potential, params, crystal: Crystal, skin: float = 1.0):
        crystal.validate()
        potential.check_numbers(crystal.numbers, crystal.mask)
        self.pot, self.params = potential, params
        self.numbers = jnp.asarray(crystal.numbers)
        self.mask = jnp.asarray(crystal.mask)
        self.lattice = jnp.asarray(crystal.lattice, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
        self.inv_lattice = jnp.linalg.inv(self.lattice)
        self.skin = float(skin)
        self.cutoff = potential.config.cutoff + self.skin
        self.plan = plan_graph(crystal, self.cutoff, headroom=1.6, bin_headroom=2.0)

    def crystal_at(self, positions) -> Crystal:
        return Crystal(numbers=self.numbers, frac=positions @ self.inv_lattice, lattice=self.lattice, mask=self.mask)

    def build(self, positions, plan=None) -> Graph:
        """Jittable neighbour graph at ``cutoff + skin`` (check ``overflow``)."""
        return build_graph(self.crystal_at(positions), self.cutoff, plan or self.plan)

    def grow(self, graph: Graph) -> None:
        """Host: enlarge the plan after an overflow."""
        need = int(np.max(np.asarray(graph.n_edges)))
        cap = int(self.plan.bin_capacity or self.numbers.shape[0])
        self.plan = self.plan._replace(max_edges=max(int(need * 1.3), int(self.plan.max_edges * 1.5)),
                                       bin_capacity=min(self.numbers.shape[0], 2 * cap))

    def energy(self, positions, graph: Graph, **unused):
        """Total energy [eV] of cartesian ``positions [n, 3]`` (jax-md energy_fn signature)."""
        return self.pot.energy_from_positions(self.params, self.numbers, positions, self.lattice, self.mask, graph)

    def energy_forces_stress(self, positions, graph: Graph, lattice=None):
        """``(E [eV], F [n,3] eV/Å, σ [3,3] GPa)`` at the lattice (default: the fixed one; virial
        stress, no kinetic part)."""
        lat = self.lattice if lattice is None else lattice

        def e_of(p, eps):
            d = jnp.eye(3, dtype=p.dtype) + eps
            return self.pot.energy_from_positions(self.params, self.numbers, p @ d, lat @ d, self.mask, graph)
        e, (gp, ge) = jax.value_and_grad(e_of, argnums=(0, 1))(positions, jnp.zeros((3, 3), positions.dtype))
        vol = jnp.abs(jnp.linalg.det(lat))
        return e, -gp, 0.5 * (ge + ge.T) / vol * EV_PER_ANG3_GPA

    # ---------------------------------------------------------------- NPT (fractional coordinates)
    def replan(self, frac, box, graph: Graph | None = None) -> None:
        """Host: a new plan for the current (changed) cell, e.g. after an overflow under NPT; the
        periodic-image reach is planned for a 10 % larger radius so that the cell may shrink."""
        c = Crystal(numbers=np.asarray(self.numbers), frac=np.asarray(frac), lattice=np.asarray(box).T,
                    mask=np.asarray(self.mask))
        need = 0 if graph is None else int(np.max(np.asarray(graph.n_edges)))
        plan = plan_graph(c, 1.1 * self.cutoff, headroom=1.6, bin_headroom=2.0)
        self.plan = plan._replace(max_edges=max(plan.max_edges, int(1.3 * need), int(1.5 * self.plan.max_edges)))

    def build_frac(self, frac, box, plan=None) -> Graph:
        """Jittable graph of fractional positions ``frac [n,3]`` in the jax-md ``box`` (columns =
        lattice vectors, i.e. ``box = L^T``)."""
        c = Crystal(numbers=self.numbers, frac=frac, lattice=box.T, mask=self.mask)
        return build_graph(c, self.cutoff, plan or self.plan)

    def energy_frac(self, frac, box=None, graph: Graph = None, perturbation=None, **unused):
        """Energy [eV] of fractional positions in the jax-md ``box`` (default: the initial one) under
        the isotropic strain ``perturbation`` (jax-md's NPT energy signature)."""
        from jax_md import space

        b = self.lattice.T if box is None else box
        cart = space.transform(b, frac)
        lat = b.T
        if perturbation is not None:
            cart, lat = cart * perturbation, lat * perturbation
        return self.pot.energy_from_positions(self.params, self.numbers, cart, lat, self.mask, graph)


@dataclasses.dataclass
class MDResult:
    """Per-frame logs of :func:`run_md` (NumPy arrays) and the final positions/velocities."""

    time_fs: np.ndarray
    potential_energy: np.ndarray
    kinetic_energy: np.ndarray
    total_energy: np.ndarray
    temperature: np.ndarray
    pressure_GPa: np.ndarray
    conserved: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    n_rebuild_growths: int
    chunk_seconds: np.ndarray = None  # wall time of each chunk of ``log_every`` steps (first one compiles)
    volume: np.ndarray = None  # cell volume [Å^3] per logged frame
    lattice: np.ndarray = None  # final lattice rows [Å] (changes under NPT)

    def drift_meV_per_atom_per_ns(self, n_atoms: int) -> float:
        """Linear-fit slope of the conserved quantity, meV/atom/ns."""
        t = self.time_fs * 1e-6  # ns
        if len(t) < 2:
            return 0.0
        slope = np.polyfit(t, self.conserved, 1)[0]
        return float(1000 * slope / n_atoms)


def write_frame(path, crystal_numbers, positions, lattice, energy, forces, stress_gpa, info: dict,
                velocities=None, append=True) -> None:
    """Append one extxyz frame with energy [eV], forces [eV/Å], stress [GPa→eV/Å³ in ASE]."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = ase.Atoms(numbers=np.asarray(crystal_numbers), positions=np.asarray(positions),
                      cell=np.asarray(lattice), pbc=True)
    if velocities is not None:
        from ase.units import fs as ase_fs

        atoms.set_velocities(np.asarray(velocities) / ase_fs)  # Å/fs -> Å per ASE time unit
    atoms.info.update(info)
    s = np.asarray(stress_gpa) / EV_PER_ANG3_GPA
    voigt = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    atoms.calc = SinglePointCalculator(atoms, energy=float(energy), forces=np.asarray(forces), stress=voigt)
    ase.io.write(path, atoms, format="extxyz", append=append)


def _first_graph(model, build, max_growths: int = 6):
    """The initial neighbour graph, reallocating (outside jit) until nothing overflows; returns
    ``(graph, number of reallocations)``."""
    graph = build()
    for growths in range(max_growths + 1):
        if not bool(graph.overflow):
            return graph, growths
        model.grow(graph)
        graph = build()
    raise CapacityError("MD neighbour list still overflowing after reallocation")


def run_md(potential, params, crystal: Crystal, *, ensemble: str = "nve", temperature: float = 300.0,
           steps: int = 1000, dt: float = 1.0, log_every: int = 10, seed: int = 0,
           tau_fs: float | None = None, friction: float = 0.01, skin: float = 1.0,
           trajectory: str | None = None, velocities=None, progress: bool = False,
           pressure: float = 0.0, tau_p_fs: float | None = None, callback=None) -> MDResult:
    """Molecular dynamics with a trained potential (jax-md integrators).

    Args:
        potential, params: the model.
        crystal: initial structure (an unpadded Crystal).
        ensemble: ``"nve"``, ``"nvt"`` / ``"nvt_nose_hoover"``, ``"nvt_langevin"`` or ``"npt"`` /
            ``"npt_nose_hoover"`` (isotropic cell fluctuations).
        temperature: initial (Maxwell–Boltzmann) and thermostat temperature [K].
        steps: number of time steps.
        dt: time step [fs].
        log_every: steps between logged / written frames.
        seed: random seed (initial velocities, Langevin noise).
        tau_fs: Nosé–Hoover thermostat time constant [fs] (default ``100 dt``).
        friction: Langevin friction [1/fs].
        skin: Verlet skin [Å].
        trajectory: extxyz output path (overwritten) or None.
        velocities: initial velocities [Å/fs] ``[n, 3]`` instead of Maxwell–Boltzmann.
        pressure: NPT target pressure [GPa].
        tau_p_fs: NPT barostat time constant [fs] (default ``1000 dt``, jax-md's default).
        callback: called on the host after every logged frame as ``callback(step, frame)`` with
            ``frame`` a dict of that frame's ``time_fs``, ``potential_energy``, ``kinetic_energy``,
            ``temperature``, ``pressure_GPa``, ``conserved`` (and ``volume``); if it returns True the
            run stops there (e.g. a wall-time limit) and the result holds the frames so far.

    Returns:
        :class:`MDResult`.

    Raises:
        ConfigError: unknown ensemble or invalid numbers; CapacityError: the neighbour list could
        not be grown.
    """
    from jax_md import quantity, simulate

    if int(steps) < 0 or int(log_every) < 1 or not (float(dt) > 0):
        raise ConfigError(f"invalid MD settings: steps={steps}, log_every={log_every}, dt={dt}")
    if float(temperature) < 0:
        raise ConfigError(f"temperature must be >= 0 K, got {temperature}")
    ens = {"nvt": "nvt_nose_hoover", "npt": "npt_nose_hoover"}.get(ensemble, ensemble)
    if ens not in ("nve", "nvt_nose_hoover", "nvt_langevin", "npt_nose_hoover"):
        raise ConfigError(f"unknown ensemble {ensemble!r}; use nve, nvt (Nosé–Hoover), nvt_langevin or "
                          "npt (Nosé–Hoover, isotropic)")
    if not math.isfinite(float(pressure)):
        raise ConfigError(f"pressure must be a finite number in GPa, got {pressure}")
    if ens == "npt_nose_hoover":
        return _run_npt(potential, params, crystal, temperature=temperature, pressure=pressure, steps=steps,
                        dt=dt, log_every=log_every, seed=seed, tau_fs=tau_fs, tau_p_fs=tau_p_fs, skin=skin,
                        trajectory=trajectory, velocities=velocities, progress=progress, callback=callback)
    model = ModelEnergy(potential, params, crystal, skin)
    n = int(np.asarray(crystal.mask).sum())
    dtype = model.lattice.dtype
    dt_u = float(dt) * FS
    kT = KB_EV_PER_K * float(temperature)
    mass = jnp.asarray(masses_of(crystal.numbers), dtype)

    def shift_fn(R, dR, **kw):
        return R + dR

    energy_fn = model.energy
    if ens == "nve":
        init, apply = simulate.nve(energy_fn, shift_fn, dt_u)
    elif ens == "nvt_nose_hoover":
        tau = (tau_fs if tau_fs is not None else 100.0 * float(dt)) * FS
        init, apply = simulate.nvt_nose_hoover(energy_fn, shift_fn, dt_u, kT, tau=tau)
    else:
        init, apply = simulate.nvt_langevin(energy_fn, shift_fn, dt_u, kT, gamma=float(friction) / FS)

    R0 = jnp.asarray(crystal.positions, dtype)
    key = jax.random.PRNGKey(seed)
    graph, growths = _first_graph(model, lambda: model.build(R0))
    momenta = None if velocities is None else jnp.asarray(velocities, dtype) / FS * mass[:, None]
    if ens == "nve":
        state = init(key, R0, kT, mass=mass, momenta=momenta, graph=graph)
    else:
        state = init(key, R0, mass=mass, momenta=momenta, graph=graph)

    half_skin = 0.5 * model.skin

    def make_chunk(plan):
        @jax.jit
        def chunk(state, graph, R_ref):
            def body(_, carry):
                state, graph, R_ref, over = carry
                disp = jnp.max(jnp.sum((state.position - R_ref) ** 2, axis=-1))
                need = disp > half_skin ** 2
                graph, R_ref = jax.lax.cond(need, lambda: (model.build(state.position, plan), state.position),
                                            lambda: (graph, R_ref))
                over = over | graph.overflow
                state = apply(state, graph=graph)
                return state, graph, R_ref, over
            return jax.lax.fori_loop(0, log_every, body, (state, graph, R_ref, jnp.asarray(False)))
        return chunk

    chunk = make_chunk(model.plan)
    efs = jax.jit(model.energy_forces_stress)
    vol = float(abs(np.linalg.det(np.asarray(model.lattice))))

    logs = {k: [] for k in ("t", "pe", "ke", "T", "P", "cons")}
    if trajectory and os.path.exists(trajectory):
        os.remove(trajectory)

    def log(step, state, graph):
        e, f, s = efs(state.position, graph)
        ke = float(quantity.kinetic_energy(momentum=state.momentum, mass=state.mass))
        kt = float(quantity.temperature(momentum=state.momentum, mass=state.mass))
        T = kt / KB_EV_PER_K
        # pressure: kinetic + virial, P = N kT / V - tr(σ)/3
        P = n * kt / vol * EV_PER_ANG3_GPA - float(np.trace(np.asarray(s))) / 3.0
        cons = float(e) + ke
        if ens == "nvt_nose_hoover":
            cons = float(simulate.nvt_nose_hoover_invariant(energy_fn, state, kT, graph=graph))
        logs["t"].append(step * float(dt))
        logs["pe"].append(float(e))
        logs["ke"].append(ke)
        logs["T"].append(T)
        logs["P"].append(P)
        logs["cons"].append(cons)
        if trajectory:
            v = np.asarray(state.momentum / state.mass) * FS  # Å/fs
            write_frame(trajectory, crystal.numbers, state.position, model.lattice, e, f, s,
                        {"time_fs": step * float(dt), "temperature_K": T, "pressure_GPa": P,
                         "kinetic_energy": ke, "total_energy": float(e) + ke, "ensemble": ens},
                        velocities=v)

    log(0, state, graph)
    R_ref = state.position
    n_chunks = int(math.ceil(int(steps) / log_every))
    it = range(n_chunks)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"MD {ens}", dynamic_ncols=True)
    import time as _time

    chunk_s = []
    for c in it:
        for attempt in range(6):
            t0 = _time.perf_counter()
            new_state, new_graph, new_ref, over = chunk(state, graph, R_ref)
            jax.block_until_ready(new_state.position)
            chunk_s.append(_time.perf_counter() - t0)
            if not bool(over):
                break
            model.grow(new_graph)
            growths += 1
            chunk = make_chunk(model.plan)
            graph = model.build(state.position)
            R_ref = state.position
        else:
            raise CapacityError("MD neighbour list still overflowing after reallocation")
        state, graph, R_ref = new_state, new_graph, new_ref
        log((c + 1) * log_every, state, graph)
        if callback is not None and callback((c + 1) * log_every, _frame(logs)):
            break
    v = np.asarray(state.momentum / state.mass) * FS
    return MDResult(time_fs=np.asarray(logs["t"]), potential_energy=np.asarray(logs["pe"]),
                    kinetic_energy=np.asarray(logs["ke"]), total_energy=np.asarray(logs["pe"]) + np.asarray(logs["ke"]),
                    temperature=np.asarray(logs["T"]), pressure_GPa=np.asarray(logs["P"]),
                    conserved=np.asarray(logs["cons"]), positions=np.asarray(state.position), velocities=v,
                    n_rebuild_growths=growths, chunk_seconds=np.asarray(chunk_s),
                    volume=np.full(len(logs["t"]), vol), lattice=np.asarray(model.lattice))


def _run_npt(potential, params, crystal, *, temperature, pressure, steps, dt, log_every, seed, tau_fs, tau_p_fs,
             skin, trajectory, velocities, progress, callback) -> MDResult:
    """Isotropic NPT (jax-md ``npt_nose_hoover``) in fractional coordinates; see :func:`run_md`.

    The neighbour graph is rebuilt when an atom has moved by more than ``skin / 2`` (measured in the
    current cell) or the cell has been scaled enough that a pair could enter the cutoff
    (``|s − 1| (r_c + skin) + max displacement > skin / 2``).
    """
    import time as _time

    from jax_md import quantity, simulate, space

    model = ModelEnergy(potential, params, crystal, skin)
    n = int(np.asarray(crystal.mask).sum())
    dtype = model.lattice.dtype
    dt_u = float(dt) * FS
    kT = KB_EV_PER_K * float(temperature)
    p_ev = float(pressure) * GPA_EV_PER_ANG3
    mass = jnp.asarray(masses_of(crystal.numbers), dtype)
    box0 = model.lattice.T
    _, shift_fn = space.periodic_general(box0, fractional_coordinates=True, wrapped=False)
    tau_t = (tau_fs if tau_fs is not None else 100.0 * float(dt)) * FS
    tau_p = (tau_p_fs if tau_p_fs is not None else 1000.0 * float(dt)) * FS
    energy_fn = model.energy_frac
    init, apply = simulate.npt_nose_hoover(energy_fn, shift_fn, dt_u, p_ev, kT,
                                           barostat_kwargs={"tau": tau_p}, thermostat_kwargs={"tau": tau_t})
    S0 = jnp.asarray(crystal.frac, dtype)
    graph, growths = _first_graph(model, lambda: model.build_frac(S0, box0))
    momenta = None if velocities is None else jnp.asarray(velocities, dtype) / FS * mass[:, None]
    state = init(jax.random.PRNGKey(seed), S0, box0, mass=mass, momenta=momenta, graph=graph)
    half_skin = 0.5 * model.skin
    reach = model.cutoff

    def make_chunk(plan):
        @jax.jit
        def chunk(state, graph, S_ref, box_ref):
            def body(_, carry):
                state, graph, S_ref, box_ref, over = carry
                box = simulate.npt_box(state)
                disp = jnp.sqrt(jnp.max(jnp.sum(((state.position - S_ref) @ box.T) ** 2, axis=-1)))
                scale = (jnp.abs(jnp.linalg.det(box)) / jnp.abs(jnp.linalg.det(box_ref))) ** (1.0 / 3.0)
                need = disp + jnp.abs(scale - 1.0) * reach > half_skin
                graph, S_ref, box_ref = jax.lax.cond(
                    need, lambda: (model.build_frac(state.position, box, plan), state.position, box),
                    lambda: (graph, S_ref, box_ref))
                over = over | graph.overflow
                state = apply(state, graph=graph)
                return state, graph, S_ref, box_ref, over
            return jax.lax.fori_loop(0, log_every, body, (state, graph, S_ref, box_ref, jnp.asarray(False)))
        return chunk

    chunk = make_chunk(model.plan)
    efs = jax.jit(model.energy_forces_stress)
    inv = jax.jit(lambda st, g: simulate.npt_nose_hoover_invariant(energy_fn, st, p_ev, kT, graph=g))
    logs = {k: [] for k in ("t", "pe", "ke", "T", "P", "cons", "V")}
    if trajectory and os.path.exists(trajectory):
        os.remove(trajectory)

    def log(step, state, graph):
        box = simulate.npt_box(state)
        lat = box.T
        cart = state.position @ lat
        e, f, s = efs(cart, graph, lat)
        ke = float(quantity.kinetic_energy(momentum=state.momentum, mass=state.mass))
        kt = float(quantity.temperature(momentum=state.momentum, mass=state.mass))
        vol = float(abs(np.linalg.det(np.asarray(lat))))
        T = kt / KB_EV_PER_K
        P = n * kt / vol * EV_PER_ANG3_GPA - float(np.trace(np.asarray(s))) / 3.0
        logs["t"].append(step * float(dt))
        logs["pe"].append(float(e))
        logs["ke"].append(ke)
        logs["T"].append(T)
        logs["P"].append(P)
        logs["V"].append(vol)
        logs["cons"].append(float(inv(state, graph)))
        if trajectory:
            v = np.asarray(state.momentum / state.mass) * FS
            write_frame(trajectory, crystal.numbers, cart, lat, e, f, s,
                        {"time_fs": step * float(dt), "temperature_K": T, "pressure_GPa": P, "volume_A3": vol,
                         "kinetic_energy": ke, "total_energy": float(e) + ke, "ensemble": "npt_nose_hoover"},
                        velocities=v)

    log(0, state, graph)
    S_ref, box_ref = state.position, simulate.npt_box(state)
    it = range(int(math.ceil(int(steps) / log_every)))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="MD npt_nose_hoover", dynamic_ncols=True)
    chunk_s = []
    for c in it:
        for _attempt in range(6):
            t0 = _time.perf_counter()
            new = chunk(state, graph, S_ref, box_ref)
            jax.block_until_ready(new[0].position)
            chunk_s.append(_time.perf_counter() - t0)
            if not bool(new[-1]):
                break
            growths += 1
            box_ref = simulate.npt_box(state)
            model.replan(state.position, box_ref, new[1])
            chunk = make_chunk(model.plan)
            graph, S_ref = model.build_frac(state.position, box_ref), state.position
        else:
            raise CapacityError("MD neighbour list still overflowing after reallocation")
        state, graph, S_ref, box_ref = new[:4]
        log((c + 1) * log_every, state, graph)
        if callback is not None and callback((c + 1) * log_every, _frame(logs)):
            break
    lat = np.asarray(simulate.npt_box(state)).T
    v = np.asarray(state.momentum / state.mass) * FS
    pe, ke = np.asarray(logs["pe"]), np.asarray(logs["ke"])
    return MDResult(time_fs=np.asarray(logs["t"]), potential_energy=pe, kinetic_energy=ke, total_energy=pe + ke,
                    temperature=np.asarray(logs["T"]), pressure_GPa=np.asarray(logs["P"]),
                    conserved=np.asarray(logs["cons"]), positions=np.asarray(state.position) @ lat, velocities=v,
                    n_rebuild_growths=growths, chunk_seconds=np.asarray(chunk_s), volume=np.asarray(logs["V"]),
                    lattice=lat)


def _frame(logs: dict) -> dict:
    names = {"t": "time_fs", "pe": "potential_energy", "ke": "kinetic_energy", "T": "temperature",
             "P": "pressure_GPa", "cons": "conserved", "V": "volume"}
    return {names[k]: v[-1] for k, v in logs.items() if v}
