"""Powder X-ray diffraction as pure JAX functions of a :class:`~difcrys.crystal.Crystal`.

Physics (kinematic theory, no absorption, no anomalous dispersion):

* Bragg's law in reciprocal space: ``g = |h B*|`` with ``B* = L^{-T}`` (no 2π),
  ``d = 1/g``, ``sin θ = λ g / 2`` and ``s = sin θ / λ = g / 2``.
* Structure factor (Warren, *X-ray Diffraction* (1969) eq. 4.9; International
  Tables C §6.1)::

      F(h) = Σ_j o_j f_j(s) exp(-B_j s²) exp(2πi h·x_j)

  with occupancy ``o_j``, atomic scattering factor ``f_j`` (:mod:`.scattering`),
  isotropic Debye–Waller factor ``exp(-B s²)`` (``B = 8π²<u²>`` [Å²]).
* Integrated intensity of one reflection (Friedel half-space, hence the factor 2)::

      I(h) = 2 |F(h)|² LP(θ) P(h),  LP(θ) = (1 + K cos² 2θ) / (sin² θ cos θ)

  the Lorentz–polarisation factor for an unpolarised beam (``K = 1``, De Graef &
  McHenry, *Structure of Materials* eq. 12.14, pymatgen's convention) or behind a
  monochromator with ``K = cos² 2θ_M`` (FullProf's ``Cthm``), and ``P`` the
  March–Dollase preferred-orientation factor ``(r² cos² α + sin² α / r)^{-3/2}``
  (Dollase, J. Appl. Cryst. 19, 267 (1986)). Multiplicities arise by themselves:
  every reflection of the limiting sphere is enumerated (:mod:`.reflections`).
* Profiles (unit area in 2θ degrees) with the Caglioti et al. (Nucl. Instrum. 3,
  223 (1958)) width ``H² = U tan² θ + V tan θ + W`` [deg²]: Gaussian
  ``G = (2/H) √(ln2/π) exp(-4 ln2 x²/H²)``, Lorentzian ``L = (2/(πH)) / (1 + 4x²/H²)``
  and pseudo-Voigt ``η L + (1-η) G`` with ``η = η0 + η1·2θ`` clipped to [0, 1]
  (FullProf ``Npr = 5``). Peaks sit at ``2θ_Bragg + zero``. Kα1/Kα2 doublets sum
  the pattern over wavelengths with weights. The background is a Chebyshev series
  in the 2θ grid mapped to [-1, 1].

Every function here is jit-able, vmap-able over a batch of crystals with batched
:class:`~difcrys.xrd.reflections.Reflections`, and differentiable with respect to
the lattice, fractional coordinates, B factors, occupancies and profile
parameters (no NaN gradients: unreachable reflections use double-``where``).
Host-side conveniences (input validation, peak tables, JSON) are in :mod:`.api`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from difcrys.crystal import Crystal
from difcrys.xrd.reflections import Reflections
from difcrys.xrd.scattering import form_factor

PROFILES = ("gaussian", "lorentzian", "pseudo_voigt")
_LN2 = 0.6931471805599453


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Profile:
    """Peak-profile parameters (all differentiable; units degrees of 2θ).

    Attributes:
        U, V, W: Caglioti coefficients [deg²] of ``H² = U tan²θ + V tanθ + W``.
        eta0, eta1: pseudo-Voigt mixing ``η = eta0 + eta1·2θ`` (eta1 per degree).
        zero: zero shift [deg] added to every Bragg angle.
    """

    U: jax.Array = 0.0
    V: jax.Array = 0.0
    W: jax.Array = 0.01
    eta0: jax.Array = 0.5
    eta1: jax.Array = 0.0
    zero: jax.Array = 0.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StickPattern:
    """Fixed-size stick pattern; entries with ``mask == False`` are padding.

    Attributes:
        two_theta: ``[G]`` peak positions [deg].
        intensity: ``[G]`` intensities (max 100 when normalised).
        d_spacing: ``[G]`` interplanar spacings [Å].
        mask: ``[G]`` bool.
    """

    two_theta: jax.Array
    intensity: jax.Array
    d_spacing: jax.Array
    mask: jax.Array


def reciprocal_norms(lattice, hkl):
    """|g_hkl| = |h L^{-T}| [1/Å] for ``hkl [M, 3]`` and lattice rows ``[3, 3]`` [Å]."""
    Bst = jnp.swapaxes(jnp.linalg.inv(lattice), -1, -2)
    G = hkl @ Bst
    g2 = jnp.sum(G * G, axis=-1)
    safe = jnp.where(g2 > 0, g2, 1.0)
    return jnp.where(g2 > 0, jnp.sqrt(safe), 0.0)


def bragg_two_theta(g, wavelength):
    """2θ [deg] and a reachability mask for reciprocal norms ``g`` [1/Å] at λ [Å]."""
    x = wavelength * g / 2
    ok = (x < 1.0) & (g > 0)
    xs = jnp.where(ok, x, 0.5)
    return jnp.where(ok, jnp.degrees(2 * jnp.arcsin(xs)), 180.0), ok


def structure_factor_sq(crystal: Crystal, hkl, *, B=None, occupancy=None, table: str = "doyle_turner"):
    """|F(h)|² [electrons²] for ``hkl [M, 3]``.

    Args:
        crystal: single crystal (padding atoms contribute nothing).
        hkl: ``[M, 3]`` Miller indices.
        B: isotropic Debye–Waller B [Å²], scalar or ``[n]``; None = 0.
        occupancy: ``[n]`` site occupancies; None = 1 for real atoms.
        table: scattering-factor table (see :mod:`.scattering`).

    Returns:
        ``[M]`` |F|², F = Σ_j o_j f_j(s) exp(-B_j s²) exp(2πi h·x_j), s = |g|/2.
    """
    g = reciprocal_norms(crystal.lattice, hkl)
    s = g / 2
    f = form_factor(crystal.numbers, s, table)  # [M, n]
    w = crystal.mask.astype(f.dtype)
    if occupancy is not None:
        w = w * jnp.asarray(occupancy, f.dtype)
    if B is not None:
        Bv = jnp.broadcast_to(jnp.asarray(B, f.dtype), crystal.numbers.shape)
        f = f * jnp.exp(-Bv[None, :] * (s * s)[:, None])
    amp = f * w[None, :]
    phase = 2 * jnp.pi * (hkl @ crystal.frac.T)  # [M, n]
    re = jnp.sum(amp * jnp.cos(phase), axis=-1)
    im = jnp.sum(amp * jnp.sin(phase), axis=-1)
    return re * re + im * im


def lorentz_polarization(theta, cthm=1.0):
    """LP(θ) = (1 + K cos² 2θ) / (sin² θ cos θ); K = 1 unpolarised (pymatgen), cos² 2θ_M with a monochromator."""
    c2 = jnp.cos(2 * theta)
    return (1 + cthm * c2 * c2) / (jnp.sin(theta) ** 2 * jnp.cos(theta))


def march_dollase(lattice, hkl, direction, r):
    """March–Dollase factor (r² cos²α + sin²α / r)^{-3/2}; α = angle(g_hkl, g_direction). ``[M]``."""
    Bst = jnp.swapaxes(jnp.linalg.inv(lattice), -1, -2)
    G = hkl @ Bst
    d = jnp.asarray(direction, G.dtype) @ Bst
    gn = jnp.sqrt(jnp.maximum(jnp.sum(G * G, -1), 1e-30))
    c = (G @ d) / (gn * jnp.linalg.norm(d))
    c2 = jnp.clip(c * c, 0.0, 1.0)
    return (r * r * c2 + (1 - c2) / r) ** -1.5


def reflection_intensities(crystal: Crystal, refl: Reflections, wavelength=1.54184, *, B=None, occupancy=None,
                           table: str = "doyle_turner", cthm=1.0, preferred_orientation=None,
                           two_theta_range=None):
    """Bragg angles and integrated intensities of every enumerated reflection.

    Args:
        crystal: single crystal.
        refl: :class:`Reflections` from :func:`~difcrys.xrd.reflections.reflections`.
        wavelength: λ [Å] (float or traced scalar).
        B, occupancy, table: see :func:`structure_factor_sq`.
        cthm: polarisation constant K of :func:`lorentz_polarization`.
        preferred_orientation: None or ``(direction [3] (hkl), r)`` March–Dollase.
        two_theta_range: None (keep every reachable reflection) or ``(lo, hi)`` [deg]
            window evaluated at the current lattice.

    Returns:
        ``(two_theta [M] deg, intensity [M])``; masked reflections have intensity 0.
    """
    hkl = refl.hkl
    g = reciprocal_norms(crystal.lattice, hkl)
    tt, ok = bragg_two_theta(g, wavelength)
    ok = ok & refl.mask
    if two_theta_range is not None:
        lo, hi = two_theta_range
        ok = ok & (tt <= hi + 1e-9) & (tt >= lo - 1e-9)
    theta = jnp.radians(jnp.where(ok, tt, 90.0)) / 2
    F2 = structure_factor_sq(crystal, hkl, B=B, occupancy=occupancy, table=table)
    I = 2 * F2 * lorentz_polarization(theta, cthm)
    if preferred_orientation is not None:
        direction, r = preferred_orientation
        I = I * march_dollase(crystal.lattice, hkl, direction, r)
    return tt, jnp.where(ok, I, 0.0)


def stick_pattern(crystal: Crystal, refl: Reflections, wavelength=1.54184, two_theta_range=(0.0, 90.0), *,
                  normalize: bool = True, **kw) -> StickPattern:
    """Stick pattern: intensities of coinciding reflections summed per host-fixed group.

    With the default ``table="doyle_turner"`` and no B factors this reproduces
    pymatgen's ``XRDCalculator.get_pattern`` (same wavelength and window).

    Args:
        crystal, refl, wavelength: as :func:`reflection_intensities`.
        two_theta_range: 2θ window [deg] (the one ``refl`` was built with).
        normalize: scale so that the strongest peak is 100.
        **kw: B, occupancy, table, cthm, preferred_orientation.

    Returns:
        :class:`StickPattern` with ``[G]`` arrays.
    """
    tt, I = reflection_intensities(crystal, refl, wavelength, two_theta_range=two_theta_range, **kw)
    G = refl.n_groups
    Ig = jax.ops.segment_sum(I, refl.group, num_segments=G + 1)[:G]
    Ig = jnp.where(refl.group_mask, Ig, 0.0)
    if normalize:
        Ig = 100.0 * Ig / jnp.maximum(jnp.max(Ig), 1e-300)
    g = reciprocal_norms(crystal.lattice, refl.hkl[refl.rep])
    d = 1.0 / jnp.where(g > 0, g, 1.0)
    return StickPattern(two_theta=jnp.where(refl.group_mask, tt[refl.rep], 0.0), intensity=Ig,
                        d_spacing=jnp.where(refl.group_mask, d, 0.0), mask=refl.group_mask)


def peak_shape(x, fwhm, eta, shape: str = "pseudo_voigt"):
    """Unit-area peak shape at offsets ``x`` [deg] for FWHM ``H`` [deg] (broadcasting)."""
    if shape not in PROFILES:
        raise ValueError(f"unknown profile {shape!r}; choose one of {PROFILES}")
    u = x / fwhm
    gauss = (2.0 / fwhm) * jnp.sqrt(_LN2 / jnp.pi) * jnp.exp(-4 * _LN2 * u * u)
    lor = (2.0 / (jnp.pi * fwhm)) / (1 + 4 * u * u)
    if shape == "gaussian":
        return gauss
    if shape == "lorentzian":
        return lor
    return eta * lor + (1 - eta) * gauss


def caglioti_fwhm(two_theta, profile: Profile, min_fwhm=1e-3):
    """Caglioti FWHM H = sqrt(U tan²θ + V tanθ + W) [deg], floored at ``min_fwhm``."""
    t = jnp.tan(jnp.radians(two_theta) / 2)
    h2 = profile.U * t * t + profile.V * t + profile.W
    return jnp.sqrt(jnp.maximum(h2, min_fwhm ** 2))


def chebyshev_background(two_theta, coeffs):
    """Σ_k c_k T_k(x), x = 2θ mapped linearly from [first, last] grid point to [-1, 1]. ``[N]``."""
    coeffs = jnp.atleast_1d(jnp.asarray(coeffs))
    lo, hi = two_theta[0], two_theta[-1]
    x = 2 * (two_theta - lo) / (hi - lo) - 1
    t_prev, t = jnp.ones_like(x), x
    out = coeffs[0] * t_prev
    for k in range(1, coeffs.shape[0]):
        out = out + coeffs[k] * t
        t_prev, t = t, 2 * x * t - t_prev
    return out


def powder_pattern(crystal: Crystal, refl: Reflections, two_theta, wavelengths=(1.54184,), weights=(1.0,), *,
                   profile: Profile | None = None, shape: str = "pseudo_voigt", scale=1.0, background=None,
                   extra_fwhm=0.0, B=None, occupancy=None, table: str = "doyle_turner", cthm=1.0,
                   preferred_orientation=None, window: int | None = None):
    """Continuous powder pattern y(2θ) on a grid (differentiable in every argument but ``refl``).

    ``y = Σ_λ w_λ Σ_h scale I_λ(h) φ(2θ - 2θ_λ(h) - zero; H, η) + background``

    Args:
        crystal: single crystal.
        refl: reflections enumerated at the *shortest* wavelength, with a margin
            that covers the grid (and lattice changes during fitting).
        two_theta: ``[N]`` grid [deg] (increasing).
        wavelengths: tuple of λ [Å] (e.g. Kα1, Kα2); weights: their intensity weights.
        profile: :class:`Profile`; default ``Profile()``.
        shape: ``"gaussian"``, ``"lorentzian"`` or ``"pseudo_voigt"``.
        scale: overall scale factor.
        background: Chebyshev coefficients (see :func:`chebyshev_background`) or None.
        extra_fwhm: extra Gaussian broadening [deg] added in quadrature (for
            coarse-to-fine fitting).
        B, occupancy, table, cthm, preferred_orientation: see :func:`reflection_intensities`.
        window: None (every peak is evaluated on the whole grid) or a static half-width
            in grid points: each peak is evaluated on ``2 window + 1`` points around its
            position and scatter-added (the grid must then be uniform). Much faster for
            long grids; tails beyond the window are cut, as in Rietveld programs
            (FullProf's ``Wdt``).

    Returns:
        ``[N]`` intensities.
    """
    profile = Profile() if profile is None else profile
    two_theta = jnp.asarray(two_theta)
    hkl = refl.hkl
    g = reciprocal_norms(crystal.lattice, hkl)
    F2 = structure_factor_sq(crystal, hkl, B=B, occupancy=occupancy, table=table)
    po = 1.0
    if preferred_orientation is not None:
        direction, r = preferred_orientation
        po = march_dollase(crystal.lattice, hkl, direction, r)
    y = jnp.zeros_like(two_theta)
    for lam, wgt in zip(wavelengths, weights):
        tt, ok = bragg_two_theta(g, lam)
        ok = ok & refl.mask
        theta = jnp.radians(jnp.where(ok, tt, 90.0)) / 2
        I = jnp.where(ok, 2 * F2 * lorentz_polarization(theta, cthm) * po, 0.0)
        pos = jnp.where(ok, tt, 90.0) + profile.zero
        H = caglioti_fwhm(pos, profile)
        if not (isinstance(extra_fwhm, (int, float)) and extra_fwhm == 0):
            H = jnp.sqrt(H * H + jnp.asarray(extra_fwhm) ** 2)
        eta = jnp.clip(profile.eta0 + profile.eta1 * pos, 0.0, 1.0)
        if window is None:
            phi = peak_shape(two_theta[:, None] - pos[None, :], H[None, :], eta[None, :], shape)
            y = y + wgt * (phi @ I)
        else:
            n = two_theta.shape[0]
            t0 = two_theta[0]
            step = (two_theta[-1] - two_theta[0]) / (n - 1)
            centre = jnp.round(jax.lax.stop_gradient((pos - t0) / step)).astype(jnp.int32)
            idx = centre[:, None] + jnp.arange(-window, window + 1)[None, :]  # [M, K]
            inside = (idx >= 0) & (idx < n)
            x = (t0 + idx * step) - pos[:, None]
            phi = peak_shape(x, H[:, None], eta[:, None], shape)
            vals = jnp.where(inside, wgt * I[:, None] * phi, 0.0)
            y = y.at[jnp.clip(idx, 0, n - 1).ravel()].add(vals.ravel())
    y = scale * y
    if background is not None:
        y = y + chebyshev_background(two_theta, background)
    return y
