"""GTH/HGH (Padé LDA) pseudopotential parameter table.

The separable dual-space Gaussian pseudopotentials of Goedecker, Teter & Hutter
(GTH96) in the relativistic-form generalisation of Hartwigsen, Goedecker &
Hutter (HGH98). In Hartree atomic units a species is described by

* the local part (HGH98 Eq. 1)::

      V_loc(r) = -Z_ion/r erf(r / (sqrt(2) r_loc))
                 + exp(-(r/r_loc)^2 / 2) * sum_{i=1..4} C_i (r/r_loc)^(2i-2)

* the separable non-local part (HGH98 Eqs. 2-3)::

      V_nl = sum_l sum_{i,j} sum_m |p_i^l Y_lm> h^l_ij <p_j^l Y_lm|,
      p_i^l(r) = sqrt(2) r^(l+2(i-1)) exp(-r^2 / (2 r_l^2))
                 / (r_l^(l+(4i-1)/2) sqrt(Gamma(l + (4i-1)/2)))

The numbers are the published Padé (LDA, Teter's Padé fit = ABINIT ixc=1)
parameters, transcribed from CP2K's ``data/GTH_POTENTIALS`` file into
``difcrys/dft/data/gth_pade.json`` by :func:`build_table` (see
``difcrys/dft/data/README.md`` for provenance).

References:
    S. Goedecker, M. Teter, J. Hutter, Phys. Rev. B 54, 1703 (1996).
    C. Hartwigsen, S. Goedecker, J. Hutter, Phys. Rev. B 58, 3641 (1998).

Regenerate the table with::

    python -m difcrys.dft.gth_table /path/to/cp2k/data/GTH_POTENTIALS --commit <sha>
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import re

import numpy as np

from difcrys.errors import PseudopotentialError

#: Maximum angular momentum channel + 1 (l = 0, 1, 2, 3).
N_L = 4
#: Maximum number of projectors per angular-momentum channel.
MAX_PROJ = 3

DATA_FILE = pathlib.Path(__file__).resolve().parent / "data" / "gth_pade.json"

_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce "
    "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn "
    "Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr"
).split()
_Z = {s: z for z, s in enumerate(_SYMBOLS) if z > 0}
#: Element symbols indexed by atomic number (index 0 is a placeholder "X").
SYMBOLS = tuple(_SYMBOLS)

CITE_GTH96 = "S. Goedecker, M. Teter, J. Hutter, Phys. Rev. B 54, 1703 (1996)"
CITE_HGH98 = "C. Hartwigsen, S. Goedecker, J. Hutter, Phys. Rev. B 58, 3641 (1998)"
CITE_CP2K = "CP2K data/GTH_POTENTIALS (M. Krack et al.), https://github.com/cp2k/cp2k"


# --------------------------------------------------------------------------
# Parameters of one species
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class GTHParams:
    """GTH/HGH parameters of one species, padded to fixed shapes for stacking.

    Attributes:
        symbol: element symbol, e.g. ``"Si"``.
        Z: atomic number.
        zion: valence (ionic) charge Z_ion [e].
        rloc: local radius r_loc [Bohr].
        c: local coefficients C_1..C_4 [Ha], shape [4], zero-padded.
        r: projector radius r_l per channel l = 0..3 [Bohr], shape [4]; 0 where
            the channel has no projector.
        h: non-local coupling matrices h^l_ij [Ha], shape [4, 3, 3], symmetric,
            zero-padded beyond ``nproj[l]``.
        nproj: number of projectors per channel, shape [4] int.
        mask: ``mask[l, i]`` is True when projector i of channel l exists,
            shape [4, 3] bool.
        n_elec: valence occupations per l (s, p, d, f) of the reference atom.
        key: table key (``"Si-q4"``).
        name: CP2K entry name (``"GTH-PADE-q4"``).
        citation: where the numbers were published.
    """

    symbol: str
    Z: int
    zion: float
    rloc: float
    c: np.ndarray
    r: np.ndarray
    h: np.ndarray
    nproj: np.ndarray
    mask: np.ndarray
    n_elec: tuple
    key: str
    name: str
    citation: str

    @property
    def lmax(self) -> int:
        """Highest angular momentum with at least one projector (-1 if purely local)."""
        ls = np.nonzero(self.nproj > 0)[0]
        return int(ls.max()) if ls.size else -1

    @property
    def variant(self) -> str:
        """Variant label, e.g. ``"q4"`` (the part of ``key`` after the element)."""
        return self.key.split("-", 1)[1]

    def projector_radius(self, l: int) -> float:
        """Radius r_l [Bohr] of channel ``l`` (0 if the channel is empty)."""
        return float(self.r[l])

    def h_matrix(self, l: int) -> np.ndarray:
        """The ``nproj[l] x nproj[l]`` matrix h^l [Ha] without padding."""
        n = int(self.nproj[l])
        return self.h[l, :n, :n].copy()


def stack_gth(params: list[GTHParams]) -> dict[str, np.ndarray]:
    """Stack several species into arrays with a leading species axis.

    Args:
        params: S species.

    Returns:
        dict with ``zion`` [S], ``rloc`` [S], ``c`` [S,4], ``r`` [S,4],
        ``h`` [S,4,3,3], ``nproj`` [S,4], ``mask`` [S,4,3], ``Z`` [S].
    """
    if not params:
        raise PseudopotentialError("stack_gth needs at least one species")
    return {
        "Z": np.array([p.Z for p in params], dtype=np.int32),
        "zion": np.array([p.zion for p in params], dtype=np.float64),
        "rloc": np.array([p.rloc for p in params], dtype=np.float64),
        "c": np.stack([p.c for p in params]),
        "r": np.stack([p.r for p in params]),
        "h": np.stack([p.h for p in params]),
        "nproj": np.stack([p.nproj for p in params]),
        "mask": np.stack([p.mask for p in params]),
    }


# --------------------------------------------------------------------------
# Loading the packaged table
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _table() -> dict:
    if not DATA_FILE.exists():
        raise PseudopotentialError(f"GTH parameter table not found: {DATA_FILE}")
    with open(DATA_FILE) as f:
        return json.load(f)


def _symbol(element) -> str:
    if isinstance(element, (int, np.integer)):
        z = int(element)
        if not 0 < z < len(_SYMBOLS):
            raise PseudopotentialError(f"no GTH pseudopotential for atomic number {z}: not an element")
        return _SYMBOLS[z]
    if not isinstance(element, str) or not element.strip():
        raise PseudopotentialError(f"element must be a symbol or atomic number, got {element!r}")
    s = element.strip()
    return s[:1].upper() + s[1:].lower()


def available_elements() -> list[str]:
    """Element symbols with a Padé GTH entry, ordered by atomic number."""
    return sorted(_table()["default"], key=lambda s: _Z[s])


def available_variants(element) -> list[str]:
    """Table keys (``"Ga-q13"``, ``"Ga-q3"``) for one element.

    Raises:
        PseudopotentialError: element has no entry.
    """
    sym = _symbol(element.split("-", 1)[0] if isinstance(element, str) else element)
    keys = [k for k, e in _table()["entries"].items() if e["symbol"] == sym]
    if not keys:
        raise PseudopotentialError(
            f"no GTH-PADE (LDA) pseudopotential for element {sym!r}; available: "
            + " ".join(available_elements())
        )
    return sorted(keys, key=lambda k: _table()["entries"][k]["zion"])


def default_variant(element) -> str:
    """Table key of the default entry of ``element`` (CP2K's ``GTH-PADE`` alias)."""
    sym = _symbol(element)
    available_variants(sym)  # raises with a clear message if absent
    return _table()["default"][sym]


def load_gth(element, variant=None) -> GTHParams:
    """Padé (LDA) GTH/HGH parameters of one element.

    Args:
        element: symbol (``"Si"``), atomic number (14), or a table key with
            the variant (``"Ga-q3"``).
        variant: ``None`` for the default entry (CP2K's ``GTH-PADE`` alias,
            the HGH98 default valence), or the valence as ``"q3"``, ``3``, or a
            full key ``"Ga-q3"``; ``"q9_old"`` style labels are accepted.

    Returns:
        GTHParams with arrays padded to l = 0..3 and 3 projectors per channel.

    Raises:
        PseudopotentialError: unknown element or variant (the message lists
            what exists).
    """
    if isinstance(element, str) and "-" in element:
        element, v = element.split("-", 1)
        if variant is not None and str(variant).lstrip("q") != v.lstrip("q"):
            raise PseudopotentialError(f"conflicting variants {v!r} and {variant!r} for {element}")
        variant = v
    sym = _symbol(element)
    keys = available_variants(sym)
    if variant is None:
        key = _table()["default"][sym]
    else:
        v = str(variant)
        if "-" in v:
            v = v.split("-", 1)[1]
        if not v.startswith("q"):
            v = "q" + v
        key = f"{sym}-{v}"
        if key not in keys:
            raise PseudopotentialError(
                f"no GTH-PADE variant {v!r} for {sym}; available: {', '.join(keys)}"
            )
    return _from_entry(key, _table()["entries"][key])


def _from_entry(key: str, e: dict) -> GTHParams:
    c = np.zeros(4)
    c[: len(e["c"])] = e["c"]
    r = np.zeros(N_L)
    h = np.zeros((N_L, MAX_PROJ, MAX_PROJ))
    nproj = np.zeros(N_L, dtype=np.int32)
    mask = np.zeros((N_L, MAX_PROJ), dtype=bool)
    for p in e["projectors"]:
        l, n = int(p["l"]), len(p["h"])
        if l >= N_L or n > MAX_PROJ:
            raise PseudopotentialError(f"{key}: channel l={l} with {n} projectors exceeds lmax 3 / 3 projectors")
        r[l] = p["r"]
        nproj[l] = n
        if n:
            h[l, :n, :n] = np.asarray(p["h"], dtype=np.float64)
            mask[l, :n] = True
    for a in (c, r, h, nproj, mask):
        a.setflags(write=False)
    return GTHParams(
        symbol=e["symbol"], Z=int(e["Z"]), zion=float(e["zion"]), rloc=float(e["rloc"]),
        c=c, r=r, h=h, nproj=nproj, mask=mask, n_elec=tuple(e["n_elec"]),
        key=key, name=e["cp2k_name"], citation=e["citation"],
    )


# --------------------------------------------------------------------------
# HGH98 off-diagonal relations (used for checks)
# --------------------------------------------------------------------------
def hgh_offdiagonal(l: int, h_diag) -> np.ndarray:
    """Full h^l matrix implied by the HGH98 relations from its diagonal.

    HGH98 Eqs. (5)-(7) fix the off-diagonal elements by requiring the
    projectors to be the orthogonalised combinations used in the fit, e.g.
    ``h^0_12 = -1/2 sqrt(3/5) h^0_22``.

    Args:
        l: angular momentum 0..2 (l = 3 only with a single projector).
        h_diag: diagonal elements (h_11, h_22, h_33) [Ha], up to 3 of them.

    Returns:
        [n, n] symmetric matrix [Ha].
    """
    d = list(h_diag)
    n = len(d)
    h = np.diag(np.asarray(d, dtype=np.float64))
    h22 = d[1] if n > 1 else 0.0
    h33 = d[2] if n > 2 else 0.0
    coef = {
        0: (-0.5 * math.sqrt(3 / 5), 0.5 * math.sqrt(5 / 21), -0.5 * math.sqrt(100 / 63)),
        1: (-0.5 * math.sqrt(5 / 7), 1 / 6 * math.sqrt(35 / 11), -1 / 6 * 14 / math.sqrt(11)),
        2: (-0.5 * math.sqrt(7 / 9), 0.5 * math.sqrt(63 / 143), -0.5 * 18 / math.sqrt(143)),
    }.get(l)
    if coef is None:
        if n > 1:
            raise PseudopotentialError(f"HGH98 gives no off-diagonal relation for l={l}")
        return h
    if n > 1:
        h[0, 1] = h[1, 0] = coef[0] * h22
    if n > 2:
        h[0, 2] = h[2, 0] = coef[1] * h33
        h[1, 2] = h[2, 1] = coef[2] * h33
    return h


def satisfies_hgh_relations(params: GTHParams, atol: float = 2e-8) -> bool:
    """True when every h^l of ``params`` obeys the HGH98 off-diagonal relations."""
    for l in range(N_L):
        n = int(params.nproj[l])
        if n > 1:
            hl = params.h_matrix(l)
            if not np.allclose(hl, hgh_offdiagonal(l, np.diag(hl)), atol=atol, rtol=1e-7):
                return False
    return True


# --------------------------------------------------------------------------
# Conversion from CP2K's data file (host-side tooling)
# --------------------------------------------------------------------------
_HEADER = re.compile(r"^([A-Z][a-z]?)\s+(GTH-\S+)(.*)$")


def parse_cp2k_gth(text: str, functional: str = "PADE") -> list[dict]:
    """Parse GTH entries of one functional from CP2K's ``GTH_POTENTIALS`` text.

    The CP2K format (documented in the file's header) per entry is: a line
    ``Symbol Name Aliases...``; the valence occupations per l; ``r_loc nexp
    C_1..C_nexp``; ``nprj``; then for each l: ``r_l nprj_l`` followed by the
    upper triangle of h^l row by row (rows may continue on following lines).

    Args:
        text: contents of ``GTH_POTENTIALS``.
        functional: functional tag in the entry name (``"PADE"`` keeps the
            ``GTH-PADE-q<N>`` entries).

    Returns:
        list of entry dicts (see ``gth_pade.json``), in file order.

    Raises:
        PseudopotentialError: malformed entry.
    """
    lines = [ln.split("#", 1)[0].rstrip() for ln in text.splitlines()]
    entries = []
    i = 0
    while i < len(lines):
        m = _HEADER.match(lines[i].strip())
        if not m or not m.group(2).startswith(f"GTH-{functional}-q"):
            i += 1
            continue
        sym, name, aliases = m.group(1), m.group(2), m.group(3).split()
        # gather the numeric tokens of this entry (until the next header / blank)
        j = i + 1
        tokens = []
        while j < len(lines) and not _HEADER.match(lines[j].strip()):
            tokens.extend(lines[j].split())
            j += 1
        try:
            entries.append(_parse_entry_tokens(sym, name, aliases, tokens))
        except (ValueError, IndexError) as exc:
            raise PseudopotentialError(f"malformed CP2K entry {sym} {name}: {exc}") from exc
        i = j
    return entries


def _parse_entry_tokens(sym, name, aliases, tokens) -> dict:
    # tokens start with the occupations; their count is not given, so read the
    # first physical line separately: the caller passes a flat list, hence we
    # re-split using the float/int pattern: occupations are ints and the next
    # token (r_loc) contains a decimal point.
    k = 0
    n_elec = []
    while "." not in tokens[k]:
        n_elec.append(int(tokens[k]))
        k += 1
    rloc = float(tokens[k]); nexp = int(tokens[k + 1]); k += 2
    c = [float(t) for t in tokens[k:k + nexp]]; k += nexp
    nprj = int(tokens[k]); k += 1
    projectors = []
    for l in range(nprj):
        r = float(tokens[k]); n = int(tokens[k + 1]); k += 2
        h = np.zeros((n, n))
        for a in range(n):
            for b in range(a, n):
                h[a, b] = h[b, a] = float(tokens[k]); k += 1
        projectors.append({"l": l, "r": r, "h": h.tolist()})
    if k != len(tokens):
        raise ValueError(f"{len(tokens) - k} unread tokens")
    zion = sum(n_elec)
    q = int(re.match(r"GTH-[A-Z0-9]+-q(\d+)", name).group(1))
    if q != zion:
        raise ValueError(f"valence q{q} in the name != sum of occupations {zion}")
    if sym not in _Z:
        raise ValueError(f"unknown element {sym}")
    return {
        "symbol": sym,
        "Z": _Z[sym],
        "zion": zion,
        "n_elec": n_elec,
        "rloc": rloc,
        "c": (c + [0.0] * 4)[:4],
        "nexp": nexp,
        "projectors": projectors,
        "cp2k_name": name,
        "cp2k_aliases": aliases,
        "is_cp2k_default": f"GTH-{name.split('-')[1]}" in aliases,
    }


#: CP2K Padé entries whose numbers are *not* those of HGH98: either absent from
#: the HGH98 tables or re-optimised later (CP2K keeps HGH98's Na semicore entry
#: as "Na-q9_old"). Established by comparing every entry with the HGH98 files
#: distributed with ABINIT (``abinit-data``: ``<Z><sym>.<q>.hgh``, headed "from
#: PRB58, 3641 (1998)", 6 decimals): all other entries agree to <= 1e-6.
NOT_HGH98 = frozenset({"Na-q9", "Ga-q13", "Y-q11", "Zr-q12", "Ce-q12",
                       "Cu-q19", "Zn-q20", "Ag-q19", "Au-q19"})


def _citation(e: dict) -> tuple[str, bool]:
    """Citation of an entry and whether its numbers are the published HGH98 ones."""
    key = f"{e['symbol']}-{name_variant(e['cp2k_name'])}"
    if e["Z"] >= 87 or key in NOT_HGH98:
        return CITE_CP2K + " (re-optimised or added after HGH98; not the published table)", False
    return f"{CITE_HGH98} (functional form of {CITE_GTH96})", True


def name_variant(cp2k_name: str) -> str:
    """``"GTH-PADE-q9_old"`` -> ``"q9_old"``."""
    return cp2k_name.split("-", 2)[2]


def build_table(text: str, commit: str = "unknown") -> dict:
    """Build the ``gth_pade.json`` contents from CP2K's ``GTH_POTENTIALS`` text.

    Args:
        text: file contents.
        commit: CP2K git commit the file was taken from (recorded).

    Returns:
        dict with ``_meta``, ``default`` (symbol -> key) and ``entries``
        (key -> entry).
    """
    entries = {}
    default = {}
    for e in parse_cp2k_gth(text, "PADE"):
        key = f"{e['symbol']}-{name_variant(e['cp2k_name'])}"
        if key in entries:
            raise PseudopotentialError(f"duplicate CP2K entry {key}")
        e["citation"], e["published_hgh98"] = _citation(e)
        entries[key] = e
        if e["is_cp2k_default"]:
            default[e["symbol"]] = key
    for e in entries.values():  # elements without a CP2K default: smallest valence
        if e["symbol"] not in default:
            cands = [k for k, x in entries.items() if x["symbol"] == e["symbol"]]
            default[e["symbol"]] = min(cands, key=lambda k: entries[k]["zion"])
    return {
        "_meta": {
            "description": "Goedecker-Teter-Hutter / Hartwigsen-Goedecker-Hutter separable "
            "pseudopotentials for the Pade (Teter) LDA, Hartree atomic units",
            "source": "cp2k/cp2k data/GTH_POTENTIALS, entries GTH-PADE-q<N>",
            "cp2k_commit": commit,
            "citations": [CITE_GTH96, CITE_HGH98, CITE_CP2K],
            "fields": {
                "Z": "atomic number", "zion": "valence charge (= sum of n_elec)",
                "n_elec": "valence occupations per l (s, p, d, f)",
                "rloc": "local radius [Bohr]", "c": "C1..C4 [Ha], zero-padded",
                "nexp": "number of C coefficients given",
                "projectors": "per l = 0..lmax: r [Bohr], h [Ha] full symmetric matrix",
                "default": "CP2K's GTH-PADE alias; elements without one (actinides) "
                "default to the smallest valence",
            },
        },
        "default": default,
        "entries": entries,
    }


def main(argv=None) -> None:  # pragma: no cover - tooling
    import argparse

    ap = argparse.ArgumentParser(description="Convert CP2K GTH_POTENTIALS to gth_pade.json")
    ap.add_argument("cp2k_file")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--out", default=str(DATA_FILE))
    a = ap.parse_args(argv)
    table = build_table(pathlib.Path(a.cp2k_file).read_text(), a.commit)
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"wrote {len(table['entries'])} entries for {len(table['default'])} elements to {a.out}")


if __name__ == "__main__":  # pragma: no cover
    main()
