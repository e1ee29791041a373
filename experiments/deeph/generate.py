"""Ground-truth localized-basis Hamiltonians from PySCF periodic DFT (run once; needs ``pip install pyscf``).

For each structure this runs a k-point Kohn–Sham calculation (LDA Slater+VWN, GTH-PADE
pseudopotentials, GTH-SZV basis: C 2s2p, 4 orbitals/atom; PySCF multigrid integration with
``ke_cutoff`` below), then obtains the real-space blocks

    H_{iα,jβ}(R) = (1/N_k) Σ_k F_{iα,jβ}(k) exp(−i k·T_R)

by the inverse Bloch transform of the converged Kohn–Sham (Fock) matrices on the unshifted
Monkhorst–Pack mesh (PySCF's Bloch convention F(k) = Σ_T e^{ik·T} <φ_0|F|φ_T>, so block
``(i, j, R)`` couples orbital α of atom i in the home cell with β of atom j in cell R, the
convention of :mod:`difcrys.tb`). For each pair and each alias class of the mesh the image of
smallest bond length is kept (exact for bonds shorter than half the mesh super-period), and
blocks with bond length ≤ ``--store-cutoff`` are written. The overlap S(R) is computed
directly in real space (``intor_cross`` between the cell and its translate), so it has no
aliasing. The DFT eigenvalues at the mesh k-points and at extra off-mesh k-points
(non-self-consistent ``get_bands``) are stored for band comparisons.

Orbital order: PySCF's spherical p shell is (p_x, p_y, p_z), which is the e3nn-jax l = 1
order used by :mod:`difcrys.tb` (``orbital_order = "xyz"``), so no permutation is applied.

Data sets (``--set``):
    graphene: rattled 2×2 graphene supercells (8 atoms), Gaussian displacements σ_xy, σ_z
        (independent per atom: a stand-in for MD snapshots), 3×3×1 k-mesh.
    graphene3: a rattled 3×3 supercell (18 atoms), 3×3×1 k-mesh: the unseen larger structure.
    graphene4: a rattled 4×4 supercell (32 atoms), 3×3×1 k-mesh: a still larger unseen structure
        (test only).
    bilayer: AB-type bilayer graphene primitive cells (4 atoms) with random in-plane shift and
        spacing 3.2–3.7 Å, 5×5×1 k-mesh.

Usage::

    nice -n 10 python experiments/deeph/generate.py --set graphene --n 24 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

HARTREE_EV = 27.211386245988
BOHR_ANG = 0.529177210903
A_CC = 2.46  # graphene lattice constant [Å]
VACUUM = 10.0  # cell height [Å] (slab + vacuum)


def graphene_supercell(n, rng, sxy, sz):
    a1 = np.array([A_CC, 0.0, 0.0])
    a2 = np.array([A_CC / 2, A_CC * np.sqrt(3) / 2, 0.0])
    lat = np.array([n * a1, n * a2, [0.0, 0.0, VACUUM]])
    frac = []
    for i in range(n):
        for j in range(n):
            for b in ((0.0, 0.0), (1 / 3, 1 / 3)):
                frac.append([(b[0] + i) / n, (b[1] + j) / n, 0.5])
    cart = np.array(frac) @ lat
    cart += rng.normal(0.0, 1.0, cart.shape) * np.array([sxy, sxy, sz])
    return np.full(len(cart), 6), cart, lat


def bilayer_cell(rng):
    a1 = np.array([A_CC, 0.0, 0.0])
    a2 = np.array([A_CC / 2, A_CC * np.sqrt(3) / 2, 0.0])
    d = rng.uniform(3.2, 3.7)
    shift = rng.uniform(0.0, 1.0, 2)
    lat = np.array([a1, a2, [0.0, 0.0, VACUUM + d]])
    frac = [[0, 0, 0], [1 / 3, 1 / 3, 0], [shift[0], shift[1], 0], [shift[0] + 1 / 3, shift[1] + 1 / 3, 0]]
    cart = np.array(frac) @ lat
    cart[:2, 2] = 0.5 * (VACUUM + d) - d / 2
    cart[2:, 2] = 0.5 * (VACUUM + d) + d / 2
    return np.full(4, 6), cart, lat, {"spacing_ang": float(d), "shift_frac": shift.tolist()}


def run_dft(numbers, cart, lat, mesh, ke_cutoff, store_cutoff, n_extra_k, rng, smearing):
    from pyscf.pbc import gto, dft, scf

    cell = gto.Cell()
    cell.a = lat
    cell.atom = [("C", p) for p in cart]
    cell.basis = "gth-szv"
    cell.pseudo = "gth-pade"
    cell.unit = "A"
    cell.ke_cutoff = ke_cutoff
    cell.verbose = 0
    cell.build()
    labels = cell.ao_labels()
    assert cell.nao == 4 * len(numbers), labels
    assert [lab.split()[2] for lab in labels[:4]] == ["2s", "2px", "2py", "2pz"], labels[:4]
    kpts = cell.make_kpts(mesh)
    mf = dft.KRKS(cell, kpts)
    mf.xc = "lda,vwn"
    mf = mf.multigrid_numint()
    if smearing:
        mf = scf.addons.smearing_(mf, sigma=smearing, method="fermi")
    mf.conv_tol = 1e-9
    t0 = time.time()
    mf.kernel()
    t_scf = time.time() - t0
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    fock = np.asarray(mf.get_fock())  # [K, nao, nao] Ha
    eig_mesh = np.asarray(mf.mo_energy) * HARTREE_EV
    nelec = cell.nelectron
    mu = float(getattr(mf, "mu", np.nan)) * HARTREE_EV
    # extra off-mesh k-points (fractional), non-self-consistent
    kfrac_extra = np.zeros((n_extra_k, 3))
    kfrac_extra[:, :2] = rng.uniform(0, 1, (n_extra_k, 2))
    kcart_extra = cell.get_abs_kpts(kfrac_extra)
    eig_extra = np.asarray(mf.get_bands(kcart_extra)[0]) * HARTREE_EV
    # inverse Bloch transform on the mesh
    nat = len(numbers)
    kfrac_mesh = cell.get_scaled_kpts(kpts)
    mesh = np.asarray(mesh)
    pos = np.asarray(cart)
    pairs, shifts, Hb, Sb, imag_max = [], [], [], [], 0.0
    span = [range(-1, 2) if m > 1 else range(1) for m in mesh]
    classes = np.array(np.meshgrid(*[np.arange(m) for m in mesh], indexing="ij")).reshape(3, -1).T
    for i in range(nat):
        for j in range(nat):
            for c in classes:
                best = None
                for m0 in span[0]:
                    for m1 in span[1]:
                        for m2 in span[2]:
                            R = c + mesh * np.array([m0, m1, m2])
                            R = np.where(mesh > 1, R, 0)
                            d = pos[j] + R @ lat - pos[i]
                            dn = np.linalg.norm(d)
                            if best is None or dn < best[0] - 1e-9:
                                best = (dn, R)
                dn, R = best
                if dn > store_cutoff:
                    continue
                ph = np.exp(-2j * np.pi * kfrac_mesh @ R)
                blk = np.einsum("k,kab->ab", ph, fock[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4]) / len(kpts)
                imag_max = max(imag_max, float(np.abs(blk.imag).max()))
                pairs.append((i, j))
                shifts.append(R)
                Hb.append(blk.real * HARTREE_EV)
    # exact real-space overlap
    shifts = np.array(shifts, np.int64)
    uniq = {tuple(r) for r in shifts}
    for R in sorted(uniq):
        tcell = cell.copy()
        tcell.atom = [("C", p + np.asarray(R) @ lat) for p in cart]
        tcell.build()
        from pyscf import gto as molgto  # molecular integral: no lattice sum

        s = molgto.intor_cross("int1e_ovlp", cell, tcell)
        for p, ((i, j), RR) in enumerate(zip(pairs, shifts)):
            if tuple(RR) == R:
                Sb.append((p, s[4 * i:4 * i + 4, 4 * j:4 * j + 4]))
    S = np.zeros((len(pairs), 4, 4))
    for p, s in Sb:
        S[p] = s
    return dict(pairs=np.array(pairs, np.int64), shifts=shifts, H=np.array(Hb), S=S,
                kpts_mesh=kfrac_mesh, eig_mesh=eig_mesh, kpts_extra=kfrac_extra, eig_extra=eig_extra,
                mu_ev=mu, n_electrons=nelec, energy_ha=float(mf.e_tot), t_scf_s=t_scf, imag_max_ev=imag_max * HARTREE_EV,
                n_cycles=int(getattr(mf, "cycles", -1)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=["graphene", "graphene3", "graphene4", "bilayer"], required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--ke-cutoff", type=float, default=50.0, help="Ha (multigrid density cutoff)")
    ap.add_argument("--store-cutoff", type=float, default=7.0, help="Å")
    ap.add_argument("--sigma-xy", type=float, default=0.05, help="Å")
    ap.add_argument("--sigma-z", type=float, default=0.10, help="Å")
    ap.add_argument("--smearing", type=float, default=0.005, help="Fermi smearing [Ha] (0: none)")
    ap.add_argument("--extra-k", type=int, default=4)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for idx in range(args.start, args.start + args.n):
        name = f"{args.set}_{idx:03d}"
        path = os.path.join(args.out, name + ".npz")
        if os.path.exists(path):
            continue
        rng = np.random.default_rng([args.seed, idx, {"graphene": 0, "graphene3": 1, "bilayer": 2, "graphene4": 3}[args.set]])
        extra = {}
        if args.set == "graphene":
            numbers, cart, lat = graphene_supercell(2, rng, args.sigma_xy, args.sigma_z)
            mesh = (3, 3, 1)
        elif args.set == "graphene3":
            numbers, cart, lat = graphene_supercell(3, rng, args.sigma_xy, args.sigma_z)
            mesh = (3, 3, 1)
        elif args.set == "graphene4":
            numbers, cart, lat = graphene_supercell(4, rng, args.sigma_xy, args.sigma_z)
            mesh = (3, 3, 1)
        else:
            numbers, cart, lat, extra = bilayer_cell(rng)
            mesh = (5, 5, 1)
        t0 = time.time()
        res = run_dft(numbers, cart, lat, mesh, args.ke_cutoff, args.store_cutoff, args.extra_k, rng,
                      args.smearing)
        wall = time.time() - t0
        settings = {"code": "PySCF", "xc": "lda,vwn", "basis": "gth-szv", "pseudo": "gth-pade",
                    "ke_cutoff_ha": args.ke_cutoff, "kmesh": list(mesh), "smearing_fermi_ha": args.smearing,
                    "conv_tol_ha": 1e-9, "numint": "multigrid", "store_cutoff_ang": args.store_cutoff,
                    "sigma_xy_ang": args.sigma_xy, "sigma_z_ang": args.sigma_z, "orbital_order": "xyz",
                    "energy_unit": "eV", "wall_s": wall, **extra}
        np.savez_compressed(path, numbers=numbers, cart=cart, lattice=lat, orbitals_l=np.array([0, 1]),
                            settings=json.dumps(settings), **res)
        print(f"{name}: {len(numbers)} atoms, {len(res['pairs'])} blocks, E={res['energy_ha']:.6f} Ha, "
              f"SCF {res['t_scf_s']:.0f} s, total {wall:.0f} s, imag {res['imag_max_ev']:.1e} eV", flush=True)


if __name__ == "__main__":
    main()
