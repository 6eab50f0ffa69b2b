"""Probe patches for the paper's section 4.3: known signals on DAPI-only nuclei.

Backgrounds are nucleus patches whose NMI/MYCN channels are ignored (set to zero):
synthetic nuclei (:func:`synthetic_backgrounds`) or real nuclei cut from a scan with
:func:`genuine_core.patches.extract_patches`. Into each, ``n_nmi`` red and ``n_mycn``
green signals of a given width are drawn (paper 2.3: Gaussian, hard cut at 0.8 of the
maximum, elastic deformation, blur) at random positions where the signal does not
cross the nucleus border; by default positions are independent, so signals may overlap
(as in the paper). The result is normalised like ``extract_patches``: values in [0, 1],
zero outside the nucleus.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from genuine_core.errors import InputError
from genuine_core.rules import is_amplified
from genuine_core.synth.signals import MYCN, NMI, SignalStyle, place_signals, render_spots

PROBE_TABLE_COLUMNS = ["patch_row", "background", "n_nmi", "n_mycn", "signal_size", "nmi_size",
                       "n_nmi_visible", "n_mycn_visible", "n_cluster_visible", "true_label"]

#: most signals of one probe, per probe (NMI and MYCN each)
MAX_SIGNALS = 200
#: largest signal width (Gaussian sigma, patch px) of every probe: ``make_probe``, ``genuine synth probe
#: --signal-size``, ``genuine probe`` and the Probe page's size controls: the report's largest size (at σ 20
#: two MYCN signals drawn into a synthetic 96 px nucleus always merged into one visible signal)
MAX_SIGNAL_SIZE = 12.0

#: signal style of probes: the field renderer's, with the acquisition's optical blur folded in
PROBE_STYLE = SignalStyle(blur=1.5)
#: synthetic background nuclei one probe run draws its probes into (the Probe page and ``genuine probe``)
RUN_BACKGROUNDS = 40


@dataclass(frozen=True)
class RunBound:
    """Inclusive limits of one probe-run setting and its default (None: the evaluation report's Figure 4
    setting, ``training.evaluate.PROBE_*``)."""

    lo: float
    hi: float
    default: float | None = None

    @property
    def limits(self) -> tuple[float, float]:
        """(lo, hi), as ``genuine_core.commands.checks.in_range`` takes them."""
        return self.lo, self.hi


_MYCN_COUNT = RunBound(0, 40)
#: limits and defaults of a probe run's settings: the Probe page's widgets and ``genuine probe``'s checks
RUN_BOUNDS = {
    "n": RunBound(1, 500),  # probes per condition
    "nmi": RunBound(0, 10),  # NMI signals per nucleus
    "counts": _MYCN_COUNT,  # ends of the count experiment's MYCN range
    "fixed_count": replace(_MYCN_COUNT, default=2),  # MYCN count of the size experiment
    "count_step": RunBound(1, 10, 1),
    # ends of the size range and the count experiment's size (σ, px)
    "size": RunBound(0.5, MAX_SIGNAL_SIZE),
    "size_steps": RunBound(2, 30),
    "elastic": RunBound(0.0, 100.0, float(SignalStyle().elastic_alpha)),
    "blur": RunBound(0.0, 4.0, 1.5),
}


def run_style(elastic_alpha: float, blur: float) -> SignalStyle:
    """The signal style of a probe run (the Probe page and ``genuine probe``): the generator's default with
    the chosen elastic deformation and blur."""
    return replace(SignalStyle(), elastic_alpha=float(elastic_alpha), blur=float(blur))


@dataclass
class ProbeBatch:
    """Probe patches with their ground truth.

    Attributes:
        patches: (n, 3, P, P) float32 in [0, 1], channels (NMI, MYCN, DAPI), 0 outside the nucleus.
        boxes: ``patch_row, cls, x1, y1, x2, y2`` in patch pixels (``x2, y2`` exclusive) of the
            visible signals (touching signals of one channel merge into one box).
        table: one row per patch: ``PROBE_TABLE_COLUMNS`` (requested counts, sizes, visible
            counts, and the Cohn-rule label of the visible counts).
    """

    patches: np.ndarray
    boxes: pd.DataFrame
    table: pd.DataFrame


def _as_dapi(backgrounds: np.ndarray) -> np.ndarray:
    b = np.asarray(backgrounds, np.float32)
    if b.ndim == 4:
        if b.shape[1] != 3:
            raise ValueError(f"background patches must be (N, 3, P, P), got {b.shape}")
        b = b[:, 2]
    if b.ndim != 3 or b.shape[1] != b.shape[2] or b.shape[0] == 0:
        raise ValueError(f"backgrounds must be (N, 3, P, P) patches or (N, P, P) DAPI, got {np.shape(backgrounds)}")
    if not np.isfinite(b).all():
        raise ValueError("backgrounds contain NaN or inf")
    return np.clip(b, 0.0, 1.0)


def make_probe(
    backgrounds: np.ndarray,
    n_nmi: int,
    n_mycn: int,
    signal_size: float,
    n: int = 50,
    rng: np.random.Generator | None = None,
    *,
    masks: np.ndarray | None = None,
    nmi_size: float = 3.5,
    amplitude: tuple[float, float] = (0.7, 1.0),
    spaced: bool = False,
    style: SignalStyle = PROBE_STYLE,
) -> ProbeBatch:
    """Draw ``n`` probe nuclei with ``n_nmi`` NMI and ``n_mycn`` MYCN signals each.

    Args:
        backgrounds: (N, 3, P, P) patches (only the DAPI channel is used) or (N, P, P) DAPI,
            values in [0, 1]. Each probe picks one at random.
        n_nmi: NMI (red) signals per nucleus.
        n_mycn: MYCN (green) signals per nucleus.
        signal_size: MYCN signal width (Gaussian sigma, patch pixels); paper's "signal size".
        n: probes to draw (paper: 50 per condition).
        rng: random generator; None means seed 0, so a call always repeats.
        masks: (N, P, P) nucleus masks; default ``DAPI > 0`` (patches are 0 outside the nucleus).
        nmi_size: NMI signal width (sigma, patch pixels).
        amplitude: signal brightness range (normalised patch units).
        spaced: keep signals apart (``style.min_gap``) instead of independent positions.
        style: drawing parameters (cut, elastic alpha/sigma, blur); the default blurs a
            little more than the field renderer because probes skip the acquisition blur.

    Returns:
        ProbeBatch.

    Raises:
        ValueError: bad counts, sizes, shapes or an empty nucleus mask.
    """
    if rng is None:
        rng = np.random.default_rng(0)
    for name, v in (("n_nmi", n_nmi), ("n_mycn", n_mycn)):
        if not isinstance(v, (int, np.integer)) or v < 0 or v > MAX_SIGNALS:
            raise ValueError(f"{name} must be an integer in [0, {MAX_SIGNALS}], got {v!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not 0 < signal_size <= MAX_SIGNAL_SIZE or not 0 < nmi_size <= MAX_SIGNAL_SIZE:
        raise ValueError(f"signal sizes must be in (0, {MAX_SIGNAL_SIZE:g}] px, got {signal_size}, {nmi_size}")
    if not 0 < amplitude[0] <= amplitude[1]:
        raise ValueError(f"amplitude must be (low, high) with 0 < low <= high, got {amplitude}")
    dapi = _as_dapi(backgrounds)
    if masks is None:
        masks = dapi > 0
    masks = np.asarray(masks).astype(bool)
    if masks.shape != dapi.shape:
        raise ValueError(f"masks shape {masks.shape} does not match backgrounds {dapi.shape}")
    empty = ~masks.reshape(len(masks), -1).any(axis=1)
    if empty.any():
        raise ValueError(f"{int(empty.sum())} background(s) have an empty nucleus mask")
    p = dapi.shape[-1]
    style = replace(style, overlap_prob=0.0 if spaced else 1.0)

    pick = rng.integers(0, len(dapi), size=n)
    k = n_nmi + n_mycn
    sig = np.tile(np.r_[np.full(n_nmi, nmi_size), np.full(n_mycn, signal_size)], n)
    cls = np.tile(np.r_[np.full(n_nmi, NMI), np.full(n_mycn, MYCN)], n)
    amp = rng.uniform(amplitude[0], amplitude[1], size=n * k)
    spots = render_spots(rng, [np.zeros((1, 2))] * (n * k), list(sig[:, None]), cls, amp, None, style)

    out = np.zeros((n, 3, p, p), np.float32)
    rows, box_rows = [], []
    for i, b in enumerate(pick):
        m = masks[b]
        ps = place_signals(rng, m, spots[i * k:(i + 1) * k], style)
        out[i, 0] = np.minimum(ps.red, 1.0) * m
        out[i, 1] = np.minimum(ps.green, 1.0) * m
        out[i, 2] = dapi[b] * m
        for c, x1, y1, x2, y2 in ps.boxes:
            box_rows.append((i, int(c), float(x1), float(y1), float(x2), float(y2)))
        rows.append((i, int(b), n_nmi, n_mycn, float(signal_size), float(nmi_size), ps.n_nmi, ps.n_mycn,
                     ps.n_cluster, int(is_amplified(ps.n_nmi, ps.n_mycn, ps.n_cluster))))
    boxes = pd.DataFrame(box_rows, columns=["patch_row", "cls", "x1", "y1", "x2", "y2"])
    boxes = boxes.astype({"patch_row": np.int64, "cls": np.int64})
    return ProbeBatch(out, boxes, pd.DataFrame(rows, columns=PROBE_TABLE_COLUMNS))


def synthetic_backgrounds(rng: np.random.Generator, n: int, patch_size: int = 96, scale: float = 1.0,
                          field_shape: tuple[int, int] = (512, 512)) -> np.ndarray:
    """DAPI-only synthetic nucleus patches (NMI and MYCN channels zero).

    Returns:
        (n, 3, P, P) float32 patches normalised like ``extract_patches``.
    """
    from genuine_core.patches import extract_patches
    from genuine_core.synth.fields import Scene, make_field
    from genuine_core.synth.lines import CellLine, Phenotype

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    blank = Phenotype(nmi=((0, 1.0),), mycn=((0, 1.0),))
    line = CellLine("dapi_only", False, typical=blank, atypical=blank, natural_noise=0.0)
    scene = Scene(scale=scale, debris=0.0, specks=0.0, haze=0.0)
    got: list[np.ndarray] = []
    total = 0
    while total < n:
        f = make_field(rng, {"dapi_only": 1.0}, 25, (int(field_shape[0] * scale), int(field_shape[1] * scale)),
                       lines=(line,), scene=scene)
        ps = extract_patches(f.image, f.masks, size=patch_size)
        got.append(ps.patches)
        total += len(ps.patches)
    bg = np.concatenate(got)[:n]
    bg[:, :2] = 0.0
    return bg


def probe_conditions(experiment: str, n_nmi: int, counts: tuple[int, int], count_step: int, fixed_count: int,
                     sizes: tuple[float, float], n_sizes: int, fixed_size: float) -> pd.DataFrame:
    """One row per probe condition: ``n_nmi, n_mycn, signal_size``.

    ``experiment="count"`` varies the MYCN count over ``counts`` (inclusive, step
    ``count_step``) at signal size ``fixed_size`` (px); ``"size"`` varies the size over
    ``n_sizes`` evenly spaced values in ``sizes`` (px, rounded to 0.01) at ``fixed_count``
    MYCN signals. Sizes that coincide (equal range ends, or steps finer than the rounding)
    are one condition, so each condition gets its own N probes.
    """
    if experiment == "count":
        values = list(range(int(counts[0]), int(counts[1]) + 1, max(1, int(count_step))))
        return pd.DataFrame({"n_nmi": n_nmi, "n_mycn": values, "signal_size": float(fixed_size)})
    values = np.unique(np.round(np.linspace(float(sizes[0]), float(sizes[1]), max(2, int(n_sizes))), 2))
    return pd.DataFrame({"n_nmi": n_nmi, "n_mycn": int(fixed_count), "signal_size": values})


def run_probe(model, backgrounds: np.ndarray, conds: pd.DataFrame, n: int, seed: int, spaced: bool,
              style: SignalStyle, progress=None) -> dict:
    """Draw and score ``n`` probes per condition.

    Args:
        model: anything with ``predict(patches) -> Prediction`` (a pipeline ``ScoringModel``).
        backgrounds: ``(B, 3, P, P)`` nucleus patches (their DAPI channel is used).
        conds: :func:`probe_conditions` rows.
        n: probes per condition.
        seed: seeds the signal positions and backgrounds.
        spaced: keep signals apart (no clusters by overlap).
        style: :class:`SignalStyle` of the drawn signals.
        progress: optional ``callback(fraction, text)``.

    Returns:
        ``{"results": one row per probe (condition columns, visible counts, ``prob`` = the
        model's raw sigmoid probability, ``prob_calibrated`` = after its temperature scaling,
        ``call`` 0/1), "embeddings": (N, D), "examples": {condition index: (3, P, P) patch}}``.
    """
    rng = np.random.default_rng(seed)
    tables, embs, examples = [], [], {}
    for k, c in enumerate(conds.itertuples(index=False)):
        if progress is not None:
            progress(k / len(conds), f"condition {k + 1} of {len(conds)}: NMI {c.n_nmi}, MYCN {c.n_mycn}, "
                                     f"size {c.signal_size:g}")
        try:
            pb = make_probe(backgrounds, int(c.n_nmi), int(c.n_mycn), float(c.signal_size), n=n, rng=rng,
                            spaced=spaced, style=style)
        except ValueError as exc:
            raise InputError(f"cannot draw probes: {exc}") from None
        pred = model.predict(pb.patches)
        t = pb.table.drop(columns=["patch_row"]).assign(
            condition=k, prob=pred.table["prob"].to_numpy(float),
            prob_calibrated=pred.table["prob_calibrated"].to_numpy(float), call=pred.table["call"].to_numpy(int))
        tables.append(t)
        embs.append(np.asarray(pred.embeddings, np.float32))
        examples[k] = pb.patches[:4]
    if progress is not None:
        progress(1.0, "done")
    return {"results": pd.concat(tables, ignore_index=True), "embeddings": np.concatenate(embs),
            "examples": examples}
