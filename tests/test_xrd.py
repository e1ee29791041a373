"""Powder XRD patterns: agreement with pymatgen, physics, gradients, bad input."""

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import require_data
from difcrys.crystal import Crystal
from difcrys.errors import ConfigError, ElementError, FileFormatError, StructureError
from difcrys.xrd import pattern as xp
from difcrys.xrd import radiation
from difcrys.xrd.api import crystal_from_pymatgen, simulate_profile, xrd_peaks, xrd_peaks_batch
from difcrys.xrd.patterns_io import read_pattern
from difcrys.xrd.reflections import batch_reflections, reflections
from difcrys.xrd.scattering import form_factor


def _structures(csv, n, seed=0):
    import pandas as pd
    from pymatgen.core import Structure

    df = pd.read_csv(csv)
    idx = np.random.default_rng(seed).permutation(len(df))[:n] if n < len(df) else np.arange(len(df))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(df.cif.iloc[i], fmt="cif") for i in idx]


def compare_with_pymatgen(structures, wavelength="CuKa", two_theta_range=(0, 90)):
    """Max position error, max intensity error, and list of unmatched strong peaks."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator(wavelength=wavelength)
    ours = xrd_peaks_batch(structures, wavelength, two_theta_range)
    dx = di = 0.0
    unmatched = []
    mult_mismatch = 0
    for k, (s, q) in enumerate(zip(structures, ours)):
        p = calc.get_pattern(s, two_theta_range=two_theta_range)
        px, py = np.asarray(p.x), np.asarray(p.y)
        # match every peak of each side to the nearest one of the other side
        for a, ai, b, bi in ((px, py, q.two_theta, q.intensity), (q.two_theta, q.intensity, px, py)):
            for t, i in zip(a, ai):
                j = np.argmin(np.abs(b - t)) if len(b) else None
                if j is None or abs(b[j] - t) > 1e-4:
                    if i > 0.5:
                        unmatched.append((k, t, i))
                    continue
                dx = max(dx, abs(b[j] - t))
                di = max(di, abs(bi[j] - i))
        if len(px) == len(q.two_theta):
            mp = [sum(f["multiplicity"] for f in fam) for fam in p.hkls]
            mq = [sum(m for _, m in fam) for fam in q.hkls]
            mult_mismatch += int(mp != mq)
    return dx, di, unmatched, mult_mismatch


def test_matches_pymatgen_mp20_subset():
    structures = _structures(require_data("mp_20_xrd_subset", "test_subset.csv"), 40)
    dx, di, unmatched, mm = compare_with_pymatgen(structures)
    assert dx < 1e-4 and di < 0.05 and not unmatched and mm == 0, (dx, di, unmatched[:5], mm)


def test_matches_pymatgen_perov5_other_wavelength_and_window():
    structures = _structures(require_data("perov_5", "test.csv"), 30)
    dx, di, unmatched, mm = compare_with_pymatgen(structures, "MoKa", (10, 60))
    assert dx < 1e-4 and di < 0.05 and not unmatched and mm == 0, (dx, di, unmatched[:5], mm)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", [("mp_20_xrd_subset", "test_subset.csv"), ("perov_5", "test.csv")])
def test_matches_pymatgen_every_structure(dataset):
    structures = _structures(require_data(*dataset), 10**9)
    for start in range(0, len(structures), 500):
        dx, di, unmatched, mm = compare_with_pymatgen(structures[start:start + 500])
        assert dx < 1e-4 and di < 0.05 and not unmatched and mm == 0, (start, dx, di, unmatched[:5], mm)


def _cubic(symbols, frac, a):
    return Crystal.create(symbols, frac, np.eye(3) * a)


def test_bragg_law_and_fcc_extinctions():
    a = 3.615  # Cu, conventional fcc cell
    cu = _cubic(["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], a)
    pk = xrd_peaks(cu, "CuKa1", (10, 120))
    lam = radiation.WAVELENGTHS["CuKa1"]
    allowed = [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2), (4, 0, 0)]
    expected = [2 * math.degrees(math.asin(lam * math.sqrt(h * h + k * k + l * l) / (2 * a))) for h, k, l in allowed]
    assert len(pk.two_theta) == len(allowed)  # (100), (110), (210)... are extinct for fcc
    np.testing.assert_allclose(pk.two_theta, expected, atol=1e-9)
    # multiplicities of the cubic families: {111}: 8, {200}: 6, {220}: 12, {311}: 24, {222}: 8, {400}: 6
    assert [sum(m for _, m in fam) for fam in pk.hkls] == [8, 6, 12, 24, 8, 6]
    np.testing.assert_allclose(pk.d_spacing, [a / math.sqrt(sum(v * v for v in h)) for h in allowed])


def test_supercell_and_translation_invariance():
    s = _structures(require_data("mp_20_xrd_subset", "test_subset.csv"), 1, seed=3)[0]
    c, _ = crystal_from_pymatgen(s)
    from difcrys.crystal import supercell

    p1 = xrd_peaks(c, "CuKa", (5, 70))
    p2 = xrd_peaks(supercell(c, [2, 1, 1]), "CuKa", (5, 70))
    shifted = c.replace(frac=c.frac + jnp.asarray([0.123, -0.31, 0.07]))
    p3 = xrd_peaks(shifted, "CuKa", (5, 70))
    for q in (p2, p3):
        np.testing.assert_allclose(q.two_theta, p1.two_theta, atol=1e-8)
        np.testing.assert_allclose(q.intensity, p1.intensity, atol=1e-8)


def test_debye_waller_monatomic():
    cu = _cubic(["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], 3.615)
    refl = reflections(cu, 1.54056, (10, 120))
    f = jax.jit(lambda B: xp.reflection_intensities(cu, refl, 1.54056, B=B)[1])
    I0, IB = f(0.0), f(0.8)
    s = np.linalg.norm(np.asarray(refl.hkl) / 3.615, axis=1) / 2
    on = np.asarray(I0) > 1e-8 * float(np.max(I0))
    np.testing.assert_allclose(np.asarray(IB)[on] / np.asarray(I0)[on], np.exp(-2 * 0.8 * s[on] ** 2), rtol=1e-12)


def test_form_factor_tables_agree():
    z = np.array([8, 14, 26, 56, 79])
    wk0 = np.asarray(form_factor(z, jnp.zeros(1), "waasmaier_kirfel"))[0]
    dt0 = np.asarray(form_factor(z, jnp.zeros(1), "doyle_turner"))[0]
    np.testing.assert_allclose(wk0, z, atol=0.05)  # f0(0) = Z electrons for neutral atoms (fit accuracy)
    np.testing.assert_allclose(dt0, z, atol=1e-12)
    s = jnp.array([0.1, 0.3, 0.5])
    wk = np.asarray(form_factor(z, s, "waasmaier_kirfel"))
    dt = np.asarray(form_factor(z, s, "doyle_turner"))
    np.testing.assert_allclose(dt, wk, rtol=0.03)  # two independent published fits
    with pytest.raises(ConfigError):
        form_factor(z, s, "nope")


def _triclinic():
    lat = np.array([[5.1, 0.2, -0.1], [0.4, 6.3, 0.3], [-0.5, 0.6, 7.2]])
    frac = [[0.1, 0.2, 0.3], [0.61, 0.15, 0.42], [0.33, 0.71, 0.88], [0.8, 0.45, 0.12]]
    return Crystal.create(["Ti", "O", "O", "Sr"], frac, lat)


def test_gradients_of_intensities_match_finite_differences():
    c = _triclinic()
    refl = reflections(c, 1.54184, (10, 60))
    B0 = jnp.array([0.3, 0.5, 0.7, 0.4])
    w = jnp.asarray(np.random.default_rng(0).normal(size=refl.capacity))

    def f(lat, frac, B):
        _, I = xp.reflection_intensities(c.replace(lattice=lat, frac=frac), refl, 1.54184, B=B)
        return jnp.sum(w * I) / 1e4

    args = (c.lattice, c.frac, B0)
    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args)
    f = jax.jit(f)
    rng = np.random.default_rng(1)
    for k in range(3):
        d = jnp.asarray(rng.normal(size=args[k].shape))
        h = 1e-5
        plus = list(args)
        minus = list(args)
        plus[k] = args[k] + h * d
        minus[k] = args[k] - h * d
        fd = (f(*plus) - f(*minus)) / (2 * h)
        an = jnp.sum(grads[k] * d)
        np.testing.assert_allclose(float(an), float(fd), rtol=1e-6, atol=1e-9)


def test_gradients_of_profile_pattern_match_finite_differences():
    c = _triclinic()
    tt = jnp.linspace(15, 50, 700)
    refl = reflections(c, 1.54056, (0, 55), margin=0.05)
    lams, wts = radiation.kalpha_doublet("Cu")
    w = jnp.asarray(np.random.default_rng(2).normal(size=tt.shape))

    def f(theta):
        lat, frac, B, prof = theta
        y = xp.powder_pattern(c.replace(lattice=lat, frac=frac), refl, tt, lams, wts, profile=prof, B=B,
                              table="waasmaier_kirfel", background=jnp.array([1.0, 0.1]))
        return jnp.sum(w * y) / 1e3

    theta = (c.lattice, c.frac, jnp.array([0.3, 0.5, 0.7, 0.4]),
             xp.Profile(U=0.02, V=-0.01, W=0.02, eta0=0.4, eta1=0.003, zero=0.05))
    g = jax.jit(jax.grad(f))(theta)
    f = jax.jit(f)
    rng = np.random.default_rng(3)
    d = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=np.shape(x))), theta)
    h = 1e-6
    tp = jax.tree_util.tree_map(lambda x, y: x + h * y, theta, d)
    tm = jax.tree_util.tree_map(lambda x, y: x - h * y, theta, d)
    fd = (f(tp) - f(tm)) / (2 * h)
    an = sum(jnp.sum(a * b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(d)))
    np.testing.assert_allclose(float(an), float(fd), rtol=1e-5)


def test_stick_pattern_jit_vmap_and_profile_area():
    structures = _structures(require_data("mp_20_xrd_subset", "test_subset.csv"), 3, seed=5)
    cs = [crystal_from_pymatgen(s)[0] for s in structures]
    refls = [reflections(c, 1.54184, (5, 80)) for c in cs]
    from difcrys.crystal import batch

    cb, rb = batch(cs), batch_reflections(refls)
    sb = jax.jit(jax.vmap(lambda c, r: xp.stick_pattern(c, r, 1.54184, (5.0, 80.0))))(cb, rb)
    for i, s in enumerate(structures):
        ref = xrd_peaks(s, 1.54184, (5, 80), min_intensity=0.0)
        m = np.asarray(sb.mask[i])
        got = np.asarray(sb.intensity[i])[m]
        keep = got > 0
        np.testing.assert_allclose(np.asarray(sb.two_theta[i])[m][keep], ref.two_theta, atol=1e-9)
        np.testing.assert_allclose(got[keep], ref.intensity, atol=1e-8)
    # unit-area shapes: the integral of the profile equals the summed integrated intensities
    c, r = cs[0], reflections(cs[0], 1.54184, (0, 100))
    tt = jnp.linspace(0.5, 100, 8000)
    _, I = jax.jit(lambda c: xp.reflection_intensities(c, r, 1.54184, two_theta_range=(10.0, 80.0)))(c)
    import dataclasses

    r_in = dataclasses.replace(r, mask=np.asarray(r.mask) & (np.asarray(I) > 0))
    for shape in xp.PROFILES:
        prof = xp.Profile(W=0.04 if shape != "lorentzian" else 0.0025)
        y = jax.jit(lambda c, p: xp.powder_pattern(c, r_in, tt, (1.54184,), (1.0,), shape=shape, profile=p))(c, prof)
        area = float(jnp.trapezoid(y, tt))
        tol = 2e-3 if shape == "gaussian" else 2e-2  # Lorentzian tails leave the window
        assert abs(area / float(jnp.sum(I)) - 1) < tol, shape


def test_kalpha_doublet_positions_and_ratio():
    cu = _cubic(["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], 3.615)
    (l1, l2), _ = radiation.kalpha_doublet("Cu")
    t1 = 2 * math.degrees(math.asin(l1 * math.sqrt(3) / (2 * 3.615)))
    t2 = 2 * math.degrees(math.asin(l2 * math.sqrt(3) / (2 * 3.615)))
    prof = xp.Profile(W=1e-4, eta0=0.0)  # FWHM 0.01°, well separated lines
    y1, ymid, y2 = simulate_profile(cu, [t1, 0.5 * (t1 + t2), t2], "CuKa", doublet=True, profile=prof,
                                    shape="gaussian")
    # line heights: weight 0.5 x LP(θ2)/LP(θ1) (|F|² identical, same FWHM); nothing between the lines
    lp = lambda t: float(xp.lorentz_polarization(math.radians(t) / 2))  # noqa: E731
    assert abs(y2 / y1 - 0.5 * lp(t2) / lp(t1)) < 1e-6
    assert ymid < 1e-12 * y1


def test_json_output_of_peaks():
    d = json.loads(xrd_peaks("NaCl", "CuKa", (20, 80)).to_json())
    assert max(d["intensity"]) == pytest.approx(100.0)
    assert len(d["two_theta"]) == len(d["intensity"]) == len(d["hkl"]) == len(d["peaks"])
    assert all(set(p) >= {"two_theta", "intensity", "hkl"} for p in d["peaks"])


def test_bad_inputs_raise_clear_errors(tmp_path):
    si = "Si"
    with pytest.raises(ConfigError, match="positive"):
        xrd_peaks(si, 0.0)
    with pytest.raises(ConfigError, match="positive"):
        xrd_peaks(si, -1.5)
    with pytest.raises(ConfigError, match="unknown radiation"):
        xrd_peaks(si, "XyKa")
    with pytest.raises(ConfigError, match="empty or inverted"):
        xrd_peaks(si, "CuKa", (40, 40))
    with pytest.raises(ConfigError, match="empty or inverted"):
        xrd_peaks(si, "CuKa", (60, 20))
    with pytest.raises(ConfigError, match="below 180"):
        xrd_peaks(si, "CuKa", (10, 185))
    with pytest.raises(ElementError, match="Es"):
        xrd_peaks(Crystal.create(["Es"], [[0, 0, 0]], np.eye(3) * 4))
    with pytest.raises(StructureError, match="occupancy"):
        xrd_peaks(si, occupancy=[1.0, float("nan")])
    with pytest.raises(FileFormatError):
        xrd_peaks(str(tmp_path / "missing.cif"))
    with pytest.raises(ConfigError, match="increasing"):
        simulate_profile(si, [30.0, 20.0, 40.0])


@pytest.mark.parametrize("content, match", [
    ("10 1 2 3\n11 1 2 3\n12 1 2 3\n13 1 2 3\n14 1 2 3\n15 1 2 3\n", "column"),
    ("10\n11\n12\n13\n14\n15\n", "column"),
    ("10 1\n11 nan\n12 3\n13 3\n14 3\n15 3\n", "NaN"),
    ("10 1\n11 inf\n12 3\n13 3\n14 3\n15 3\n", "NaN"),
    ("10 1\n11 1 5\n12 3\n13 3\n14 3\n15 3\n", "inconsistent"),
    ("10 1\n9 1\n12 3\n13 3\n14 3\n15 3\n", "increasing"),
    ("10 1\n11 x\n12 3\n13 3\n14 3\n15 3\n", "non-numeric"),
    ("5 0.5 7\n1\n2\n3\n", "implies 5"),
    ("", "no data"),
    ("10 1\n11 2\n", "only 2 points"),
])
def test_pattern_file_errors(tmp_path, content, match):
    p = tmp_path / "bad.xy"
    p.write_text(content)
    with pytest.raises(FileFormatError, match=match):
        read_pattern(p)


def test_reads_measured_start_step_end_format():
    pat = read_pattern(require_data("xrd_measured", "mattergen_TaCr2O6", "xrd_measurement_TaCr2O6.dat"))
    assert pat.two_theta[0] == 5.0 and abs(pat.two_theta[-1] - 90.0) < 1e-9 and len(pat.two_theta) == 4251
    np.testing.assert_allclose(np.diff(pat.two_theta), 0.02)


def test_windowed_profile_equals_full_grid_evaluation():
    c = _triclinic()
    tt = jnp.linspace(20, 50, 1501)  # uniform, step 0.02°
    refl = reflections(c, 1.54056, (0, 55))
    prof = xp.Profile(U=0.01, V=-0.005, W=0.01, eta0=0.0)

    def f(lat, window):
        return xp.powder_pattern(c.replace(lattice=lat), refl, tt, (1.54056,), (1.0,), profile=prof,
                                 shape="gaussian", window=window)

    full = jax.jit(lambda L: f(L, None))
    win = jax.jit(lambda L: f(L, 60))  # ±1.2°, > 10 FWHM
    np.testing.assert_allclose(win(c.lattice), full(c.lattice), rtol=1e-9, atol=1e-9 * float(full(c.lattice).max()))
    w = jnp.asarray(np.random.default_rng(0).normal(size=tt.shape))
    g1 = jax.grad(lambda L: jnp.sum(w * full(L)))(c.lattice)
    g2 = jax.grad(lambda L: jnp.sum(w * win(L)))(c.lattice)
    np.testing.assert_allclose(g2, g1, rtol=1e-7, atol=1e-9 * float(jnp.abs(g1).max()))


def test_gradients_finite_with_padded_atoms_and_reflections():
    from difcrys.crystal import pad
    from difcrys.xrd.reflections import pad_reflections

    c = Crystal.create(["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], (np.ones((3, 3)) - np.eye(3)) * 2.82)
    r = pad_reflections(reflections(c, 1.54, (10, 80), margin=0.05), 200, 30)
    cp = pad(c, 4)

    def f(lat, frac, B):
        s = xp.stick_pattern(cp.replace(lattice=lat, frac=frac), r, 1.54, (10.0, 80.0), B=B)
        y = xp.powder_pattern(cp.replace(lattice=lat, frac=frac), r, jnp.linspace(10, 80, 500), B=B, window=20)
        return jnp.sum(s.intensity * s.two_theta) + jnp.sum(y)

    g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(cp.lattice, cp.frac, jnp.full(4, 0.3))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)
    assert float(jnp.abs(g[0]).max()) > 0
