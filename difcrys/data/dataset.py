"""Host-side data sets: a list of crystals with aligned labels.

A :class:`Dataset` holds ``N`` :class:`difcrys.crystal.Crystal` objects (NumPy
leaves, unpadded) and their labels in difcrys units:

========================  ==============  ==========================================
field                     shape           units / meaning
========================  ==============  ==========================================
``energy``                ``[N]``         total energy [eV]
``forces``                N × ``[n_i,3]`` forces ``F = −∂E/∂r`` [eV/Å]
``stress``                ``[N, 3, 3]``   ``σ = (1/V) ∂E/∂ε`` [GPa] (see below)
``properties[name]``      ``[N, ...]``    numeric per-structure labels (units in ``units``)
``pbc``                   ``[N, 3]``      periodic directions (False for molecules in a box)
``ids``                   N strings       identifiers (material id, frame description)
``metadata[name]``        N values        non-numeric per-structure columns (formula, group ...)
========================  ==============  ==========================================

Stress sign convention (the one of ASE, jax-md and DESIGN.md): ``σ = (1/V) ∂E/∂ε``
at fixed fractional coordinates. A cell compressed below its equilibrium volume
has ``∂E/∂ε < 0``, hence **negative** diagonal stress and positive pressure
``P = −tr(σ)/3``; a stretched cell has positive (tensile) stress. VASP's
``in kB`` line and the mlearn ``virial_stress`` have the opposite sign.

Missing labels are ``None`` for the whole set (a set either has forces for all
frames or for none). NaN/inf in any label, a forces array whose shape differs
from its structure, or an empty set raise :class:`DatasetError` naming the
frame and field.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np

from difcrys.crystal import Crystal
from difcrys.data._common import DatasetError


@dataclasses.dataclass(frozen=True)
class Sample:
    """One structure of a :class:`Dataset` and its labels (``None`` when absent)."""

    crystal: Crystal
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    properties: dict[str, Any]
    pbc: np.ndarray
    id: str


@dataclasses.dataclass
class Dataset:
    """A list of crystals with aligned labels (host-side). See the module docstring.

    Attributes:
        crystals: N unpadded Crystals with NumPy leaves.
        energy: ``[N]`` total energies [eV] or None.
        forces: list of N ``[n_i, 3]`` arrays [eV/Å] or None.
        stress: ``[N, 3, 3]`` stresses [GPa], ``σ = (1/V) ∂E/∂ε``, or None.
        properties: numeric per-structure labels, each ``[N, ...]``.
        pbc: ``[N, 3]`` bool; default all True.
        ids: N identifiers; default ``"0"``, ``"1"``, ...
        metadata: non-numeric per-structure columns (lists of length N).
        units: units of the labels, e.g. ``{"energy": "eV", "heat_ref": "eV/atom"}``.
        name: a short name (source file), used in messages.
    """

    crystals: list
    energy: np.ndarray | None = None
    forces: list | None = None
    stress: np.ndarray | None = None
    properties: dict = dataclasses.field(default_factory=dict)
    pbc: np.ndarray | None = None
    ids: list | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    units: dict = dataclasses.field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        self.crystals = list(self.crystals)
        n = len(self.crystals)
        where = self.name or "dataset"
        if n == 0:
            raise DatasetError(f"{where}: empty dataset (no structures)")
        for k, c in enumerate(self.crystals):
            if not isinstance(c, Crystal):
                raise DatasetError(f"{where}: item {k} is a {type(c).__name__}, not a Crystal")
        if self.ids is None:
            self.ids = [str(k) for k in range(n)]
        self.ids = [str(s) for s in self.ids]
        self._check_len("ids", self.ids)
        if self.pbc is None:
            self.pbc = np.ones((n, 3), dtype=bool)
        self.pbc = np.asarray(self.pbc, dtype=bool)
        if self.pbc.shape == (3,):
            self.pbc = np.tile(self.pbc, (n, 1))
        if self.pbc.shape != (n, 3):
            raise DatasetError(f"{where}: pbc must have shape ({n}, 3), got {self.pbc.shape}")
        if self.energy is not None:
            self.energy = np.asarray(self.energy, dtype=np.float64).reshape(-1)
            self._check_len("energy", self.energy)
            self._check_finite("energy", self.energy)
        if self.forces is not None:
            self.forces = [np.asarray(f, dtype=np.float64) for f in self.forces]
            self._check_len("forces", self.forces)
            for k, (f, c) in enumerate(zip(self.forces, self.crystals)):
                na = int(np.asarray(c.mask).sum())
                if f.shape != (na, 3):
                    raise DatasetError(f"{where}: frame {k} ({self.ids[k]}): forces have shape {f.shape} "
                                       f"but the structure has {na} atoms (expected ({na}, 3))")
                if not np.all(np.isfinite(f)):
                    atom = int(np.argwhere(~np.isfinite(f))[0][0])
                    raise DatasetError(f"{where}: frame {k} ({self.ids[k]}): NaN or infinite value in "
                                       f"field 'forces' (atom {atom})")
        if self.stress is not None:
            s = np.asarray(self.stress, dtype=np.float64)
            if s.ndim != 3 or s.shape[1:] != (3, 3):
                raise DatasetError(f"{where}: stress must have shape (N, 3, 3), got {s.shape}")
            self.stress = s
            self._check_len("stress", s)
            self._check_finite("stress", s)
        props = {}
        for key, v in dict(self.properties).items():
            a = np.asarray(v)
            if a.dtype.kind not in "biuf":
                raise DatasetError(f"{where}: property '{key}' is not numeric (dtype {a.dtype}); "
                                   "put non-numeric columns in metadata")
            self._check_len(f"properties['{key}']", a)
            self._check_finite(key, a)
            props[key] = a
        self.properties = props
        meta = {}
        for key, v in dict(self.metadata).items():
            v = list(v)
            self._check_len(f"metadata['{key}']", v)
            meta[key] = v
        self.metadata = meta
        self.units = dict(self.units)

    # ---------------------------------------------------------------- checks
    def _check_len(self, field: str, values) -> None:
        if len(values) != len(self.crystals):
            raise DatasetError(f"{self.name or 'dataset'}: field '{field}' has {len(values)} entries "
                               f"for {len(self.crystals)} structures")

    def _check_finite(self, field: str, values: np.ndarray) -> None:
        v = np.asarray(values)
        if v.dtype.kind not in "fc":
            return
        bad = ~np.isfinite(v.reshape(len(v), -1))
        if np.any(bad):
            k = int(np.argwhere(bad.any(axis=1))[0][0])
            raise DatasetError(f"{self.name or 'dataset'}: frame {k} ({self.ids[k]}): NaN or infinite value "
                               f"in field '{field}'")

    # -------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.crystals)

    def __getitem__(self, idx):
        """``ds[i]`` → :class:`Sample`; ``ds[slice]`` or ``ds[[i, j, ...]]`` → Dataset."""
        if isinstance(idx, (int, np.integer)):
            i = int(idx)
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for a dataset of {n} structures")
            i %= n
            return Sample(
                crystal=self.crystals[i],
                energy=None if self.energy is None else float(self.energy[i]),
                forces=None if self.forces is None else self.forces[i],
                stress=None if self.stress is None else self.stress[i],
                properties={k: v[i] for k, v in self.properties.items()},
                pbc=self.pbc[i],
                id=self.ids[i],
            )
        if isinstance(idx, slice):
            return self.subset(np.arange(len(self))[idx])
        return self.subset(idx)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        labels = [k for k in ("energy", "forces", "stress") if getattr(self, k) is not None]
        labels += list(self.properties)
        na = self.n_atoms
        return (f"Dataset({self.name!r}, {len(self)} structures, {na.min()}–{na.max()} atoms, "
                f"labels={labels})")

    @property
    def n_atoms(self) -> np.ndarray:
        """``[N]`` number of atoms of each structure."""
        return np.array([int(np.asarray(c.mask).sum()) for c in self.crystals], dtype=np.int64)

    @property
    def energy_per_atom(self) -> np.ndarray:
        """``[N]`` energy per atom [eV/atom]; raises DatasetError when there are no energies."""
        if self.energy is None:
            raise DatasetError(f"{self.name or 'dataset'}: no energies in this dataset")
        return self.energy / self.n_atoms

    def species_counts(self, per: str = "atom") -> dict[int, int]:
        """Counts per atomic number: atoms (``per="atom"``) or structures containing it (``"structure"``)."""
        counts: Counter = Counter()
        for c in self.crystals:
            z = np.asarray(c.numbers)[np.asarray(c.mask)]
            if per == "atom":
                counts.update(z.tolist())
            elif per == "structure":
                counts.update(set(z.tolist()))
            else:
                raise ValueError(f"per must be 'atom' or 'structure', got {per!r}")
        return dict(sorted(counts.items()))

    # ------------------------------------------------------------ reshaping
    def subset(self, idx: Iterable[int]) -> "Dataset":
        """A new Dataset with the structures at positions ``idx`` (in that order)."""
        idx = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise DatasetError(f"boolean index of shape {idx.shape} for {len(self)} structures")
            idx = np.where(idx)[0]
        idx = idx.astype(np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for a dataset of {len(self)} structures")
        if len(idx) == 0:
            raise DatasetError(f"{self.name or 'dataset'}: subset would be empty")
        return Dataset(
            crystals=[self.crystals[i] for i in idx],
            energy=None if self.energy is None else self.energy[idx],
            forces=None if self.forces is None else [self.forces[i] for i in idx],
            stress=None if self.stress is None else self.stress[idx],
            properties={k: v[idx] for k, v in self.properties.items()},
            pbc=self.pbc[idx],
            ids=[self.ids[i] for i in idx],
            metadata={k: [v[i] for i in idx] for k, v in self.metadata.items()},
            units=self.units,
            name=self.name,
        )

    def split(self, fractions: Sequence[float], seed: int = 0, shuffle: bool = True) -> tuple["Dataset", ...]:
        """Random disjoint split into parts of the given fractions (deterministic for a seed).

        Sizes are ``floor(f_k N)``; when the fractions sum to 1 the remainder goes
        to the last part so that every structure is used.

        Raises:
            DatasetError: a fraction is not in (0, 1], they sum to more than 1, or a part is empty.
        """
        fr = np.asarray(fractions, dtype=float).reshape(-1)
        if len(fr) == 0 or np.any(fr <= 0) or np.any(fr > 1) or fr.sum() > 1 + 1e-9:
            raise DatasetError(f"split fractions must be in (0, 1] and sum to <= 1, got {fr.tolist()}")
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        sizes = np.floor(fr * n + 1e-9).astype(int)
        if abs(fr.sum() - 1) < 1e-9:
            sizes[-1] = n - sizes[:-1].sum()
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        parts = []
        for k in range(len(fr)):
            if sizes[k] == 0:
                raise DatasetError(f"split part {k} (fraction {fr[k]}) of {n} structures would be empty")
            parts.append(self.subset(order[bounds[k]:bounds[k + 1]]))
        return tuple(parts)

    @staticmethod
    def concatenate(datasets: Sequence["Dataset"], name: str = "") -> "Dataset":
        """Join data sets; a label must be present in all of them or is an error."""
        if len(datasets) == 0:
            raise DatasetError("cannot concatenate an empty list of datasets")

        def common(field):
            have = [getattr(d, field) is not None for d in datasets]
            if any(have) and not all(have):
                missing = [d.name or str(k) for k, d in enumerate(datasets) if getattr(d, field) is None]
                raise DatasetError(f"cannot concatenate: field '{field}' is missing in {missing}")
            return all(have)

        keys = set(datasets[0].properties)
        for d in datasets[1:]:
            if set(d.properties) != keys:
                raise DatasetError(f"cannot concatenate: different properties {sorted(keys)} vs "
                                   f"{sorted(d.properties)}")
        mkeys = set.intersection(*[set(d.metadata) for d in datasets])
        return Dataset(
            crystals=[c for d in datasets for c in d.crystals],
            energy=np.concatenate([d.energy for d in datasets]) if common("energy") else None,
            forces=[f for d in datasets for f in d.forces] if common("forces") else None,
            stress=np.concatenate([d.stress for d in datasets]) if common("stress") else None,
            properties={k: np.concatenate([d.properties[k] for d in datasets]) for k in keys},
            pbc=np.concatenate([d.pbc for d in datasets]),
            ids=[i for d in datasets for i in d.ids],
            metadata={k: [x for d in datasets for x in d.metadata[k]] for k in mkeys},
            units={k: v for d in datasets for k, v in d.units.items()},
            name=name or "+".join(d.name for d in datasets),
        )


__all__ = ["Dataset", "DatasetError", "Sample"]
