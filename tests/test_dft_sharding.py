"""k-points sharded across (forced host) devices give the same SCF as a single device."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent("""
    import json, numpy as np, jax
    from difcrys.crystal import Crystal
    from difcrys.units import BOHR_ANG
    from difcrys.dft.scf import run_scf
    from difcrys.dft import derivatives
    assert len(jax.devices()) == 2, jax.devices()
    fcc = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * 10.26 * BOHR_ANG
    si = Crystal.create([14, 14], [[0.01, 0, 0], [0.25, 0.26, 0.25]], fcc)
    out = {}
    for dev, solver in ((None, "auto"), (2, "auto"), (2, "lobpcg")):
        r = run_scf(si, 5.0, (2, 2, 2), devices=dev, eigensolver=solver, tol=1e-11, rho_tol=1e-9, progress=False)
        out[f"{dev}-{solver}"] = {"e": r.energy, "nk": len(r.setup.basis.kpts), "nk_real": r.n_kpoints,
                         "eig": np.asarray(r.eigenvalues).tolist(),
                         "f": np.asarray(derivatives.forces_au(r)).tolist(),
                         "s": np.asarray(derivatives.stress_au(r)).tolist()}
    print(json.dumps(out))
""")


def test_kpoint_sharding_on_two_host_devices():
    """Dense and LOBPCG eigensolvers on 2 forced host devices (irreducible k-points padded to a
    multiple of 2 with zero weights) give the single-device SCF: energy, eigenvalues, forces, stress.

    With as many devices as intra-op threads this once deadlocked (batched LAPACK kernels blocking
    every pool thread, see ``terms.kmap``): the subprocess timeout turns a regression into a failure."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    one = out["None-auto"]
    for key, nb in (("2-auto", None), ("2-lobpcg", 5)):  # LOBPCG converges occupied + 1 bands only
        two = out[key]
        assert two["nk"] % 2 == 0 and two["nk_real"] == one["nk"], key
        assert abs(one["e"] - two["e"]) < 1e-9, key
        assert np.allclose(np.asarray(one["eig"])[..., :nb], np.asarray(two["eig"])[..., :nb], atol=1e-8), key
        assert np.allclose(one["f"], two["f"], atol=1e-8), key
        assert np.allclose(one["s"], two["s"], atol=1e-10), key
