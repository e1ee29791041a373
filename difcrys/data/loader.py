"""Batching with static shapes: pad each batch to one of a few atom-count buckets.

``jax.jit`` compiles once per input shape. Padding every batch to the largest
structure wastes work; padding each batch to its own maximum recompiles for
almost every batch. :class:`BucketLoader` decides a few sizes on the host
(the *buckets*), puts every structure in the smallest bucket that holds it,
forms batches inside a bucket, and pads each batch to ``[batch_size, bucket]``:
there are at most ``len(buckets)`` distinct shapes, hence compilations.

Padding follows :func:`difcrys.crystal.batch`: padding atoms have
``numbers = 0``, ``frac = 0``, ``mask = False``. A last, partial batch of a
bucket (``drop_last=False``) is padded along the batch axis with empty
structures (all atoms masked, the lattice of the batch's first structure, so
that ``inv(lattice)`` stays finite) flagged by ``graph_mask = False``. Labels
are padded with zeros, so masked sums equal the unpadded sums.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from difcrys.crystal import Crystal
from difcrys.data._common import DatasetError
from difcrys.data.dataset import Dataset
from difcrys.errors import ConfigError


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """A padded batch (a pytree; pass it to jitted functions).

    Attributes:
        crystal: batched Crystal, leaves ``[B, n]``, ``[B, n, 3]``, ``[B, 3, 3]``, ``[B, n]``.
        energy: ``[B]`` [eV] or None.
        forces: ``[B, n, 3]`` [eV/Å] (0 on padding atoms) or None.
        stress: ``[B, 3, 3]`` [GPa] or None.
        properties: numeric per-structure labels, each ``[B, ...]``.
        pbc: ``[B, 3]`` bool.
        graph_mask: ``[B]`` bool, False for padding structures.
        n_atoms: ``[B]`` int, real atoms per structure (0 for padding structures).
        index: ``[B]`` int, dataset index of each structure (−1 for padding).
    """

    crystal: Crystal
    energy: jax.Array | None
    forces: jax.Array | None
    stress: jax.Array | None
    properties: dict
    pbc: jax.Array
    graph_mask: jax.Array
    n_atoms: jax.Array
    index: jax.Array

    @property
    def atom_mask(self):
        """``[B, n]`` bool, True for real atoms (``crystal.mask``)."""
        return self.crystal.mask


def choose_buckets(n_atoms: Sequence[int], n_buckets: int = 4, multiple: int = 1) -> tuple[int, ...]:
    """Bucket sizes from the atom-count distribution: its ``k/n_buckets`` quantiles, rounded up.

    If there are at most ``n_buckets`` distinct sizes, those sizes are used (rounded up
    to ``multiple``). The largest bucket always holds the largest structure.

    Args:
        n_atoms: atom counts of the structures.
        n_buckets: maximum number of buckets (distinct batch shapes).
        multiple: round bucket sizes up to a multiple of this (e.g. 8 for TPU-friendly shapes).
    """
    n = np.asarray(n_atoms, dtype=np.int64)
    if len(n) == 0:
        raise DatasetError("cannot choose buckets for an empty dataset")
    if n_buckets < 1 or multiple < 1:
        raise ConfigError(f"n_buckets and multiple must be >= 1, got {n_buckets}, {multiple}")

    def up(x):
        return int(-(-int(x) // multiple) * multiple)

    distinct = np.unique(n)
    if len(distinct) <= n_buckets:
        cand = distinct
    else:
        q = np.quantile(n, np.arange(1, n_buckets + 1) / n_buckets, method="higher")
        cand = np.unique(np.concatenate([q, [n.max()]]))
    return tuple(sorted({up(x) for x in cand}))


class BucketLoader:
    """Iterate over a :class:`Dataset` in padded batches of a few static shapes.

    Args:
        dataset: the data set.
        batch_size: structures per batch ``B`` (every batch has exactly ``B`` slots).
        buckets: atom-count sizes; default :func:`choose_buckets` ``(n_atoms, n_buckets)``.
        shuffle: shuffle structures inside buckets and the order of batches each epoch.
            Without shuffling batches come bucket by bucket, in dataset order inside a bucket.
        seed: random seed; epoch ``e`` (the ``e``-th ``iter()``) uses ``(seed, e)``, so
            two loaders with the same seed yield the same sequence of batches.
        drop_last: drop the partial last batch of each bucket instead of padding it.
        n_buckets: number of buckets when ``buckets`` is None.
        as_jax: yield ``jax.Array`` leaves (one ``device_put`` per batch) instead of NumPy.

    Raises:
        ConfigError: ``batch_size < 1`` or a structure larger than the largest bucket.
    """

    def __init__(self, dataset: Dataset, batch_size: int, buckets: Sequence[int] | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False, n_buckets: int = 4,
                 as_jax: bool = True):
        if not isinstance(dataset, Dataset):
            raise ConfigError(f"BucketLoader needs a Dataset, got {type(dataset).__name__}")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.sizes = dataset.n_atoms
        self.buckets = tuple(sorted(int(b) for b in buckets)) if buckets is not None \
            else choose_buckets(self.sizes, n_buckets)
        if len(self.buckets) == 0 or self.buckets[0] < 1:
            raise ConfigError(f"bucket sizes must be positive, got {self.buckets}")
        big = int(np.argmax(self.sizes))
        if self.sizes[big] > self.buckets[-1]:
            raise ConfigError(f"structure {big} ({dataset.ids[big]}) has {self.sizes[big]} atoms, more than "
                              f"the largest bucket {self.buckets[-1]}; add a larger bucket")
        self.bucket_of = np.searchsorted(np.asarray(self.buckets), self.sizes, side="left")
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.as_jax = as_jax
        self.epoch = 0

    # ------------------------------------------------------------ planning
    def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch])
        plan = []
        for b in range(len(self.buckets)):
            members = np.where(self.bucket_of == b)[0]
            if self.shuffle:
                members = rng.permutation(members)
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                if len(chunk) < self.batch_size and self.drop_last:
                    continue
                plan.append((b, chunk))
        if self.shuffle:
            order = rng.permutation(len(plan))
            plan = [plan[k] for k in order]
        return plan

    def __len__(self) -> int:
        counts = np.bincount(self.bucket_of, minlength=len(self.buckets))
        if self.drop_last:
            return int(np.sum(counts // self.batch_size))
        return int(np.sum(-(-counts // self.batch_size)))

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The static ``(batch_size, n_atoms)`` shapes this loader can yield."""
        used = sorted(set(self.bucket_of.tolist()))
        return [(self.batch_size, self.buckets[b]) for b in used]

    def __iter__(self):
        plan = self._plan(self.epoch)
        self.epoch += 1
        for b, chunk in plan:
            yield self.make_batch(chunk, self.buckets[b])

    # ------------------------------------------------------------ batching
    def make_batch(self, indices: Sequence[int], n_max: int) -> Batch:
        """Pad the structures ``indices`` into a :class:`Batch` of shape ``[batch_size, n_max]``."""
        ds = self.dataset
        idx = np.asarray(indices, dtype=np.int64)
        B = self.batch_size
        if len(idx) > B:
            raise ConfigError(f"{len(idx)} structures for a batch of size {B}")
        numbers = np.zeros((B, n_max), np.int32)
        frac = np.zeros((B, n_max, 3), np.float64)
        mask = np.zeros((B, n_max), bool)
        lattice = np.zeros((B, 3, 3), np.float64)
        forces = np.zeros((B, n_max, 3)) if ds.forces is not None else None
        graph_mask = np.zeros(B, bool)
        n_atoms = np.zeros(B, np.int64)
        index = np.full(B, -1, np.int64)
        for s, i in enumerate(idx):
            c = ds.crystals[i]
            m = np.asarray(c.mask)
            k = int(m.sum())
            if k > n_max:
                raise ConfigError(f"structure {i} has {k} atoms, more than the batch size n_max={n_max}")
            numbers[s, :k] = np.asarray(c.numbers)[m]
            frac[s, :k] = np.asarray(c.frac)[m]
            mask[s, :k] = True
            lattice[s] = np.asarray(c.lattice)
            if forces is not None:
                forces[s, :k] = ds.forces[i]
            graph_mask[s] = True
            n_atoms[s] = k
            index[s] = i
        if len(idx) < B:
            lattice[len(idx):] = lattice[0] if len(idx) else np.eye(3)
        pad = B - len(idx)

        def padded(a):
            a = np.asarray(a)[idx]
            return np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a

        energy = padded(ds.energy) if ds.energy is not None else None
        stress = padded(ds.stress) if ds.stress is not None else None
        properties = {k: padded(v) for k, v in ds.properties.items()}
        pbc = padded(ds.pbc)
        batch = Batch(crystal=Crystal(numbers=numbers, frac=frac, lattice=lattice, mask=mask),
                      energy=energy, forces=forces, stress=stress, properties=properties, pbc=pbc,
                      graph_mask=graph_mask, n_atoms=n_atoms, index=index)
        if self.as_jax:
            batch = jax.device_put(batch)
        return batch
