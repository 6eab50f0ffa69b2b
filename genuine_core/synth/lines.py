"""Cell lines: a genotype (MNA or not) and the signal phenotypes its nuclei show.

Each nucleus of a line shows the line's *typical* phenotype, except a share
``natural_noise`` that shows the *atypical* one (non-amplified-looking nuclei in an
MNA line, amplified-looking ones in a non-MNA line). The auto-label is the line's
genotype, so those nuclei carry natural label noise. Typical and atypical counts are
resampled until the Cohn rule (``genuine_core.rules.is_amplified``) agrees with the
intent, so the configured share is what is realised (up to signal merging).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genuine_core.rules import is_amplified

Dist = tuple[tuple[int, float], ...]


def uniform(lo: int, hi: int) -> Dist:
    """Uniform count distribution on ``lo..hi`` inclusive."""
    if hi < lo or lo < 0:
        raise ValueError(f"bad count range {lo}..{hi}")
    n = hi - lo + 1
    return tuple((v, 1.0 / n) for v in range(lo, hi + 1))


def decaying(lo: int, hi: int, scale: float) -> Dist:
    """Counts ``lo..hi`` with weights ``exp(-(v - lo) / scale)`` (most mass near ``lo``)."""
    if hi < lo or lo < 0 or scale <= 0:
        raise ValueError(f"bad count range {lo}..{hi} or scale {scale}")
    return tuple((v, float(np.exp(-(v - lo) / scale))) for v in range(lo, hi + 1))


def _check_dist(name: str, d: Dist) -> Dist:
    if not d:
        raise ValueError(f"{name}: empty count distribution")
    vals = [int(v) for v, _ in d]
    ps = [float(p) for _, p in d]
    if min(vals) < 0 or min(ps) < 0 or sum(ps) <= 0:
        raise ValueError(f"{name}: counts and weights must be >= 0 with positive total, got {d!r}")
    return tuple(zip(vals, ps))


def _sample(d: Dist, rng: np.random.Generator) -> int:
    """One draw from a count distribution (inverse CDF on a uniform draw)."""
    total = sum(w for _, w in d)
    u = rng.random() * total
    acc = 0.0
    for v, w in d:
        acc += w
        if u < acc:
            return v
    return d[-1][0]


def _check_pair(name: str, pair: tuple[float, float], lo: float = 0.0) -> tuple[float, float]:
    if len(pair) != 2 or not (lo < pair[0] <= pair[1]):
        raise ValueError(f"{name} must be (low, high) with {lo} < low <= high, got {pair!r}")
    return (float(pair[0]), float(pair[1]))


@dataclass(frozen=True)
class Phenotype:
    """Signal counts and looks of one kind of nucleus (lengths in pixels at scale 1).

    Attributes:
        nmi: NMI (reference) signal count distribution, ``((count, weight), ...)``.
        mycn: single MYCN signal count distribution.
        clusters: MYCN cluster count distribution.
        nmi_sigma, mycn_sigma: spot width ranges (Gaussian sigma, px).
        nmi_amplitude, mycn_amplitude: brightness ranges (scene units, ~1 = full scale).
        cluster_radius: cluster radius range (px).
        cluster_amplitude: cluster brightness range.
    """

    nmi: Dist = ((1, 0.06), (2, 0.88), (3, 0.06))
    mycn: Dist = ((1, 0.08), (2, 0.8), (3, 0.12))
    clusters: Dist = ((0, 1.0),)
    nmi_sigma: tuple[float, float] = (3.0, 4.2)
    mycn_sigma: tuple[float, float] = (3.0, 4.2)
    nmi_amplitude: tuple[float, float] = (0.35, 0.7)
    mycn_amplitude: tuple[float, float] = (0.6, 1.1)
    cluster_radius: tuple[float, float] = (4.0, 8.0)
    cluster_amplitude: tuple[float, float] = (0.8, 1.2)

    def __post_init__(self) -> None:
        for name in ("nmi", "mycn", "clusters"):
            object.__setattr__(self, name, _check_dist(name, getattr(self, name)))
        for name in ("nmi_sigma", "mycn_sigma", "nmi_amplitude", "mycn_amplitude", "cluster_radius",
                     "cluster_amplitude"):
            object.__setattr__(self, name, _check_pair(name, getattr(self, name)))

    def sample_counts(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """Draw (n_nmi, n_mycn, n_cluster)."""
        return _sample(self.nmi, rng), _sample(self.mycn, rng), _sample(self.clusters, rng)


@dataclass(frozen=True)
class CellLine:
    """A cell line: genotype label plus typical and atypical phenotypes.

    Attributes:
        name: line name (written to ``cell_line``).
        mna: genotype; the auto-label of its nuclei (1 = MNA).
        typical: phenotype matching the genotype.
        atypical: phenotype contradicting it (natural label noise).
        natural_noise: share of nuclei drawn from ``atypical``.
    """

    name: str
    mna: bool
    typical: Phenotype = field(default_factory=Phenotype)
    atypical: Phenotype = field(default_factory=Phenotype)
    natural_noise: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("cell line needs a non-empty name")
        if not 0.0 <= self.natural_noise <= 1.0:
            raise ValueError(f"natural_noise must be in [0, 1], got {self.natural_noise}")

    @property
    def label(self) -> int:
        """Genotype label, 1 = MNA."""
        return int(self.mna)

    def with_noise(self, natural_noise: float) -> "CellLine":
        """Copy with another natural-noise share."""
        return CellLine(self.name, self.mna, self.typical, self.atypical, natural_noise)

    def sample(self, rng: np.random.Generator, max_tries: int = 50) -> tuple[Phenotype, tuple[int, int, int], bool]:
        """Draw one nucleus: (phenotype, (n_nmi, n_mycn, n_cluster), atypical?).

        Counts are redrawn until the Cohn rule agrees with the intended look.
        """
        atyp = bool(rng.random() < self.natural_noise)
        pheno = self.atypical if atyp else self.typical
        want = self.label ^ int(atyp)
        counts = pheno.sample_counts(rng)
        for _ in range(max_tries):
            if is_amplified(*counts) == want:
                break
            counts = pheno.sample_counts(rng)
        else:
            raise ValueError(f"cell line {self.name!r}: its {'atypical' if atyp else 'typical'} phenotype "
                             f"cannot produce label {want}")
        return pheno, counts, atyp


#: two copies of each probe; in 3 % of nuclei both MYCN signals are lost (failed hybridisation, or
#: out of the focal plane), so a nucleus with an empty green channel is not always an HSR nucleus
_DIPLOID = Phenotype(mycn=((0, 0.03), (1, 0.08), (2, 0.77), (3, 0.12)))
_DM_LOOK = Phenotype(nmi=((2, 1.0),), mycn=uniform(8, 16), mycn_sigma=(2.7, 3.8), mycn_amplitude=(0.5, 1.0))

#: the four default lines: two non-MNA, two MNA
DEFAULT_LINES: tuple[CellLine, ...] = (
    CellLine("nonmna_diploid", False, typical=_DIPLOID, atypical=_DM_LOOK, natural_noise=0.02),
    CellLine(
        "nonmna_gain", False,
        typical=Phenotype(nmi=((2, 0.9), (3, 0.1)), mycn=((3, 0.15), (4, 0.25), (5, 0.25), (6, 0.2), (7, 0.15))),
        atypical=_DM_LOOK, natural_noise=0.02,
    ),
    CellLine(
        "mna_dm", True,
        typical=Phenotype(nmi=((1, 0.05), (2, 0.85), (3, 0.1)), mycn=decaying(8, 35, 14.0),
                          mycn_sigma=(2.7, 3.8), mycn_amplitude=(0.6, 1.1)),
        atypical=Phenotype(nmi=((2, 1.0),), mycn=uniform(1, 5)), natural_noise=0.10,
    ),
    CellLine(
        "mna_hsr", True,
        typical=Phenotype(nmi=((1, 0.05), (2, 0.9), (3, 0.05)), mycn=uniform(0, 6),
                          clusters=((1, 0.5), (2, 0.35), (3, 0.15))),
        atypical=Phenotype(nmi=((2, 1.0),), mycn=uniform(1, 4)), natural_noise=0.10,
    ),
)


def lines_by_name(lines: tuple[CellLine, ...] = DEFAULT_LINES) -> dict[str, CellLine]:
    """Map name -> line; raises ValueError on duplicate names."""
    out: dict[str, CellLine] = {}
    for line in lines:
        if line.name in out:
            raise ValueError(f"duplicate cell line name {line.name!r}")
        out[line.name] = line
    return out


def with_natural_noise(lines: tuple[CellLine, ...], mna: float | None = None,
                       non_mna: float | None = None) -> tuple[CellLine, ...]:
    """Copy of ``lines`` with the natural-noise share set per genotype (None keeps it)."""
    out = []
    for line in lines:
        share = mna if line.mna else non_mna
        out.append(line if share is None else line.with_noise(share))
    return tuple(out)
