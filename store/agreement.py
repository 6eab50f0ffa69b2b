"""Inter-reviewer agreement and conflicts, computed from the label events (no table of its own).

Each nucleus' events are replayed in order (:func:`replay`). A *review* is a named reviewer's decision made
while the nucleus is not in conflict; each reviewer's latest review counts (an undone one no longer does). When
two reviewers' latest reviews differ, the nucleus is in *conflict* (``open``). Every later decision on it is
an *adjudication*: it becomes the current label, as every decision does; made while the conflict is open (or
agreeing with the settled label) it ``settles`` the conflict, one contradicting the settled label opens it
again. Adjudications are made seeing the reviews, so they are not counted in the agreement. An undo returns
the nucleus to where it was before the undone event.

A *blind read* (``label_events.blind``: decided in blind review, other reviewers' decisions on the nucleus
hidden) is an independent read, never an adjudication: it is a review even on a nucleus in conflict, and counts in
the agreement. When the reviews then disagree, the conflict is settled *by majority* (``NucleusReview.majority``)
if the blind read's decision is that of more than half of the reviews (2 of 3, say: the current label, being the
latest decision, is then the majority's), and open otherwise (a tie, or a blind read against the others'
majority: the current label is the minority's); a later decision seeing the reviews adjudicates as before. A blind
read against an adjudicated label reopens the conflict, as a contradicting adjudication does: no majority of reads
overrules an adjudicator.

A *scan exclusion* (``store.labels.exclude_scan``: its note begins with ``labels.SCAN_EXCLUSION_MARK``; an older
command line's unmarked events are recognised by their pattern, :data:`_UNMARKED_SCAN_EXCLUSIONS`) is a
data-quality decision about the whole scan, not an opinion on the nucleus: it excludes the nucleus like any
decision, is no review (it opens no conflict and counts in no agreement), and settles a conflict the nucleus was
in; the reviews made before it keep counting.

Agreement per pair of reviewers is over the nuclei both reviewed: the share of identical decisions and
Cohen's kappa over MNA / non-MNA / exclude, with a 95 % interval from the large-sample standard error of
Fleiss, Cohen & Everitt (1969), kappa +- 1.96 SE clipped to [-1, 1]. Kappa is undefined when both reviewers
used one and the same category only; where the SE is 0 (perfect agreement, or a reviewer used one category only)
no interval is given.

A reviewer is a name compared without case and surplus spaces ('ann' and 'Ann ' are one reviewer), shown as
they spelled it most recently. Events whose reviewer name is blank (unnamed legacy events) take part in the
current label but in no agreement or conflict; :func:`agreement` counts them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from genuine_core.stats import z_value
from store.db import Store
from store.labels import LEGACY_INGEST_NOTE, SCAN_EXCLUSION_MARK, reviewer_spelled_sql

#: the kappa categories, stored value -> name
CATEGORIES = {"1": "MNA", "0": "non-MNA", "exclude": "exclude"}
#: conflict states of a nucleus
STATES = ("none", "open", "settled")
#: (state, settled_by of :func:`conflicts`) in words
STATE_WORDS = {("open", ""): "open", ("settled", "adjudication"): "settled by adjudication",
               ("settled", "majority"): "settled by majority (blind read)"}

_SPELLED = reviewer_spelled_sql()
#: per name as stored (``raw``, not blank), the reviewer's name shown: names equal without case and surplus
#: spaces ('ann', 'Ann ') are one reviewer, shown as they spelled it most recently (read once per spelling)
_REVIEWERS = f"""
SELECT raw, arg_max(spelled, last) OVER (PARTITION BY lower(spelled)) AS shown
FROM (SELECT reviewer AS raw, {_SPELLED} AS spelled, max(id) AS last FROM label_events GROUP BY reviewer)
WHERE spelled <> ''
"""
#: the longest pause between two events of one transaction of ``store.labels.exclude_scan`` (they are written
#: microseconds apart; a curator's decisions are at least ``pages.review.MIN_DECISION_GAP_S``, 0.4 s, apart)
_SAME_WRITE = "INTERVAL 200 MILLISECOND"
#: the events of ``genuine store exclude-scan`` of before the mark (2026-12-05), recognised by what that command
#: wrote: one reviewer's 'exclude' events, none other between them, with one note (the user's --note or none), on
#: the nuclei of one scan in increasing order, one transaction's pause apart, and together every nucleus of the
#: scan not excluded before them (at least two; a single one reads as the reviewer's own decision)
_UNMARKED_SCAN_EXCLUSIONS = f"""
WITH ev AS (
    SELECT id, nucleus_id, value, undoes, reviewer, coalesce(note, '') AS note, created_at,
           row_number() OVER (ORDER BY id) AS rn
    FROM label_events
),
cand AS (
    SELECT ev.*, n.scan_id,
           rn - row_number() OVER (PARTITION BY n.scan_id, ev.reviewer, ev.note ORDER BY ev.id) AS island
    FROM ev JOIN nuclei n ON n.id = ev.nucleus_id
    WHERE ev.value = 'exclude' AND ev.undoes IS NULL AND NOT starts_with(ev.note, '{SCAN_EXCLUSION_MARK}')
),
steps AS (
    SELECT *, nucleus_id - lag(nucleus_id) OVER w AS step, created_at - lag(created_at) OVER w AS pause
    FROM cand WINDOW w AS (PARTITION BY scan_id, reviewer, note, island ORDER BY id)
),
runs AS (
    SELECT scan_id, min(id) AS first_id, max(id) AS last_id, count(*) AS k
    FROM steps GROUP BY scan_id, reviewer, note, island
    HAVING count(*) >= 2 AND min(step) > 0 AND max(pause) <= {_SAME_WRITE}
),
prior AS (
    SELECT r.first_id, arg_max(e.value, e.id) AS value
    FROM runs r JOIN nuclei n ON n.scan_id = r.scan_id JOIN label_events e ON e.nucleus_id = n.id AND e.id < r.first_id
    GROUP BY r.first_id, n.id
)
SELECT c.id FROM runs r JOIN cand c ON c.id BETWEEN r.first_id AND r.last_id
WHERE r.k + (SELECT count(*) FROM prior p WHERE p.first_id = r.first_id AND p.value = 'exclude')
      = (SELECT count(*) FROM nuclei n WHERE n.scan_id = r.scan_id)
ORDER BY c.id
"""
#: what the label events are now (they are only ever appended): the key of :func:`unmarked_scan_exclusions`
_EVENTS_STATE = "SELECT count(*), max(id) FROM label_events"
#: an event of ``store.labels.exclude_scan``: marked, or the Ingest page's older note, or an unmarked one of the
#: command line's older runs (``id`` is the label event's; ``unmarked_in``: :func:`_unmarked_frame`)
_SCAN_EXCLUSION = (f"(value = 'exclude' AND undoes IS NULL AND (starts_with(coalesce(note, ''), "
                   f"'{SCAN_EXCLUSION_MARK}') OR coalesce(note, '') = '{LEGACY_INGEST_NOTE}' "
                   "OR id IN (SELECT id FROM unmarked_in)))")
_EVENTS = f"""
SELECT e.id, e.nucleus_id, e.value, coalesce(w.shown, '') AS reviewer, e.note, e.undoes, e.created_at,
       {_SCAN_EXCLUSION} AS scan_exclusion, coalesce(e.blind, false) AS blind
FROM label_events e LEFT JOIN ({_REVIEWERS}) w ON w.raw = e.reviewer
"""
# nuclei with reviews by at least two named reviewers: the only ones that can be in conflict
_MULTI = f"""
SELECT nucleus_id FROM label_events JOIN ({_REVIEWERS}) w ON w.raw = reviewer
WHERE undoes IS NULL AND NOT {_SCAN_EXCLUSION}
GROUP BY nucleus_id HAVING count(DISTINCT w.shown) >= 2
"""

# per named reviewer, the nuclei they decided (scan exclusions are no decision on a nucleus)
_COUNTS = f"""
SELECT w.shown AS reviewer, count(DISTINCT nucleus_id) AS n
FROM label_events JOIN ({_REVIEWERS}) w ON w.raw = reviewer
WHERE undoes IS NULL AND NOT {_SCAN_EXCLUSION}
GROUP BY 1 ORDER BY 1
"""
# nuclei excluded with their whole scan (the exclusion not undone)
_SCAN_EXCLUDED = f"""
SELECT count(DISTINCT nucleus_id) FROM label_events e
WHERE {_SCAN_EXCLUSION} AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.undoes = e.id)
"""
# decisions without a reviewer name, and their nuclei
_UNNAMED = f"""
SELECT count(*) AS n, count(DISTINCT nucleus_id) AS k FROM label_events
WHERE undoes IS NULL AND reviewer NOT IN (SELECT raw FROM ({_REVIEWERS}))
"""

#: store path -> (events state, ids of :data:`_UNMARKED_SCAN_EXCLUSIONS`): read again once an event is added
_unmarked_cache: dict[str, tuple[tuple, pd.DataFrame]] = {}


def unmarked_scan_exclusions(store: Store) -> pd.DataFrame:
    """Ids (``id``) of the label events an older ``genuine store exclude-scan`` wrote without the mark, recognised
    by their pattern (:data:`_UNMARKED_SCAN_EXCLUSIONS`); cached until the next label event."""
    state = tuple(store.query(_EVENTS_STATE).iloc[0].tolist())
    hit = _unmarked_cache.get(str(store.path))
    if hit is None or hit[0] != state:
        hit = (state, store.query(_UNMARKED_SCAN_EXCLUSIONS).astype({"id": "int64"}))
        _unmarked_cache[str(store.path)] = hit
    return hit[1]


@contextmanager
def _unmarked_frame(store: Store) -> Iterator[None]:
    """Queries using :data:`_SCAN_EXCLUSION` run inside this: it registers ``unmarked_in``."""
    with store.frames(unmarked_in=unmarked_scan_exclusions(store)):
        yield


@dataclass
class NucleusReview:
    """One nucleus after :func:`replay`.

    Attributes:
        reviews: named reviewer -> their latest review ``{"value", "event_id", "note", "created_at", "blind"}``
            (``blind``: a blind read).
        state: ``none`` (reviews agree, or fewer than two), ``open`` or ``settled``.
        majority: settled by majority: a blind read made its decision that of more than half of the reviews
            (False when an adjudication or a scan exclusion settled it since).
        current: the current label value ('1', '0', 'exclude', 'unset').
        adjudications: decisions made while in conflict, oldest first (``reviewer``, ``value``, ``event_id``,
            ``note``, ``created_at``; reviewer '' when unnamed), a scan exclusion that settled it included.
        last_event_id: the nucleus' latest event.
    """

    reviews: dict = field(default_factory=dict)
    state: str = "none"
    current: str = "unset"
    adjudications: list = field(default_factory=list)
    last_event_id: int | None = None
    majority: bool = False

    @property
    def disagreed(self) -> bool:
        """True when the reviewers' latest reviews differ (open or settled conflict)."""
        return self.state != "none"


def _copy(r: NucleusReview) -> NucleusReview:
    return NucleusReview(dict(r.reviews), r.state, r.current, list(r.adjudications), r.last_event_id, r.majority)


def _disagree(reviews: dict) -> bool:
    return len({v["value"] for v in reviews.values()}) > 1


def _holds_majority(reviews: dict, value: str) -> bool:
    """True when more than half of the reviews decided ``value``."""
    return 2 * sum(v["value"] == value for v in reviews.values()) > len(reviews)


def _records(events: pd.DataFrame) -> list[tuple]:
    """``(nucleus_id, id, value, reviewer, note, undoes, created_at, scan_exclusion, blind)`` per event, by
    nucleus then id (``blind`` False where the frame has no such column)."""
    ev = events.sort_values(["nucleus_id", "id"])
    notes = ev["note"].astype(object).where(ev["note"].notna(), None)
    undoes = ev["undoes"].astype(object).where(ev["undoes"].notna(), None)
    return list(zip(ev["nucleus_id"].astype(int).tolist(), ev["id"].astype(int).tolist(), ev["value"].tolist(),
                    ev["reviewer"].tolist(), notes.tolist(), undoes.tolist(), ev["created_at"].tolist(),
                    ev["scan_exclusion"].fillna(False).astype(bool).tolist(),
                    (ev["blind"].fillna(False).astype(bool).tolist() if "blind" in ev else [False] * len(ev))))


def _replay(records) -> NucleusReview:
    """The state machine of the module docstring over one nucleus' records (oldest first)."""
    r = NucleusReview()
    before: dict[int, NucleusReview] = {}
    for _, eid, value, reviewer, note, undoes, created_at, scan_exclusion, blind in records:
        before[eid] = _copy(r)
        if undoes is not None and int(undoes) in before:  # an undo: back to the state before the undone event
            r = _copy(before[int(undoes)])
            r.last_event_id = eid
            continue
        entry = {"value": value, "event_id": eid, "note": note, "created_at": created_at, "blind": bool(blind)}
        if scan_exclusion:  # no review: it settles a conflict (the scan is out of every call) and opens none
            if r.state != "none":
                r.state, r.majority = "settled", False
                r.adjudications.append({"reviewer": reviewer, **entry})
        elif blind and reviewer and value != "unset":  # an independent read: a review, in conflict or not
            r.reviews[reviewer] = entry
            if r.state == "settled" and not r.majority:  # settled by an adjudication (or a scan exclusion)
                if value != r.current:  # reopened, as by a contradicting adjudication: no read overrules it
                    r.state = "open"
            elif _disagree(r.reviews):
                r.majority = r.state != "none" and _holds_majority(r.reviews, value)
                r.state = "settled" if r.majority else "open"
            elif r.state != "none":  # every review agrees now: a conflict no more (it had been one)
                r.state, r.majority = "settled", True
        elif r.state == "none":
            if reviewer:
                if value == "unset":
                    r.reviews.pop(reviewer, None)
                else:
                    r.reviews[reviewer] = entry
            r.state = "open" if _disagree(r.reviews) else "none"
        else:
            r.state = "settled" if r.state == "open" or value == r.current else "open"
            r.majority = False
            r.adjudications.append({"reviewer": reviewer, **entry})
        r.current = value
        r.last_event_id = eid
    return r


def replay(events: pd.DataFrame) -> NucleusReview:
    """Replay one nucleus' events (columns of ``_EVENTS``, any order) into its :class:`NucleusReview`."""
    return _replay(_records(events))


def multi_reviewed(store: Store) -> dict[int, NucleusReview]:
    """:class:`NucleusReview` of every nucleus decided by at least two named reviewers."""
    with _unmarked_frame(store):
        events = store.query(f"{_EVENTS} WHERE e.nucleus_id IN ({_MULTI}) ORDER BY e.nucleus_id, e.id")
    return {nid: _replay(list(recs)) for nid, recs in itertools.groupby(_records(events), key=lambda r: r[0])}


def nucleus_review(store: Store, nucleus_id: int) -> NucleusReview:
    """One nucleus' reviews, conflict state and adjudications (for the review card)."""
    with _unmarked_frame(store):
        return replay(store.query(f"{_EVENTS} WHERE e.nucleus_id = ? ORDER BY e.id", [int(nucleus_id)]))


def conflict_states(store: Store, nucleus_ids) -> pd.Series:
    """Per nucleus id (index, in the given order): ``none``, ``open`` or ``settled`` (:data:`STATES`)."""
    found = multi_reviewed(store)
    ids = [int(i) for i in nucleus_ids]
    return pd.Series([found[i].state if i in found else "none" for i in ids], index=ids, dtype=object)


def disagreed(store: Store, nucleus_ids) -> pd.Series:
    """Per nucleus id (index, in the given order): True when its reviewers' latest reviews disagree."""
    return conflict_states(store, nucleus_ids) != "none"


def settled_by(r: NucleusReview) -> str:
    """How a settled conflict was settled: 'majority' (a blind read made one), 'adjudication'; '' otherwise."""
    return "" if r.state != "settled" else "majority" if r.majority else "adjudication"


def reviews_text(r: NucleusReview) -> str:
    """Each reviewer's latest review in words, by name: 'Ann: MNA; Bob: non-MNA; Cy: MNA (blind)'."""
    return "; ".join(f"{who}: {CATEGORIES.get(v['value'], v['value'])}" + (" (blind)" if v.get("blind") else "")
                     for who, v in sorted(r.reviews.items(), key=lambda item: item[0].casefold()))


def conflicts(store: Store, sample: str | None = None, include_settled: bool = False) -> pd.DataFrame:
    """Nuclei whose reviewers disagree, the longest untouched first.

    Returns:
        DataFrame ``nucleus_id, sample, state ('open'/'settled'), settled_by ('majority', 'adjudication'; '' when
        open), current, reviews (e.g. 'Ann: MNA; Bob: non-MNA; Cy: MNA (blind)', :func:`reviews_text`),
        n_reviewers, last_event_id``.
    """
    wanted = ("open", "settled") if include_settled else ("open",)
    rows = [{"nucleus_id": nid, "state": r.state, "settled_by": settled_by(r), "current": r.current,
             "n_reviewers": len(r.reviews), "reviews": reviews_text(r), "last_event_id": r.last_event_id}
            for nid, r in multi_reviewed(store).items() if r.state in wanted]
    cols = ["nucleus_id", "sample", "state", "settled_by", "current", "reviews", "n_reviewers", "last_event_id"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    with store.frames(c_in=df[["nucleus_id"]]):
        where = store.query("SELECT c.nucleus_id, s.name AS sample FROM c_in c JOIN nuclei n ON n.id = c.nucleus_id "
                            "JOIN scans sc ON sc.id = n.scan_id JOIN samples s ON s.id = sc.sample_id")
    df = df.merge(where, on="nucleus_id", how="left")
    if sample is not None:
        df = df[df["sample"] == sample]
    return df.sort_values(["last_event_id", "nucleus_id"])[cols].reset_index(drop=True)


# ----------------------------------------------------------------------------- kappa
@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa with its 95 % interval; ``kappa`` None when undefined, ``low``/``high`` None without an
    interval; ``note`` says why."""

    kappa: float | None
    se: float | None
    low: float | None
    high: float | None
    note: str = ""


def cohen_kappa(matrix, names=tuple(CATEGORIES.values())) -> Kappa:
    """Cohen's kappa of a square confusion matrix (rows: one rater, columns: the other, same categories).

    The 95 % interval is kappa +- 1.96 SE with the large-sample SE of Fleiss, Cohen & Everitt (1969)
    (Fleiss, Levin & Paik 2003, eq. 18.15), clipped to [-1, 1].
    """
    m = np.asarray(matrix, dtype=float)
    n = m.sum()
    if n == 0:
        return Kappa(None, None, None, None, "no nucleus reviewed by both")
    p = m / n
    rows, cols = p.sum(1), p.sum(0)
    po, pe = float(np.trace(p)), float(rows @ cols)
    if pe >= 1 - 1e-12:
        only = names[int(np.argmax(rows))] if len(names) == len(rows) else int(np.argmax(rows))
        return Kappa(None, None, None, None, f"undefined: both used one category only ({only})")
    if np.trace(m) == n:  # the formula's SE is 0 here, up to rounding
        return Kappa(1.0, 0.0, None, None, "perfect agreement: the large-sample interval is degenerate (none given)")
    k = (po - pe) / (1 - pe)
    diag = sum(p[i, i] * (1 - (rows[i] + cols[i]) * (1 - k)) ** 2 for i in range(len(p)))
    off = (1 - k) ** 2 * sum(p[i, j] * (cols[i] + rows[j]) ** 2
                             for i in range(len(p)) for j in range(len(p)) if i != j)
    var = max(0.0, diag + off - (k - pe * (1 - k)) ** 2) / (n * (1 - pe) ** 2)
    se = math.sqrt(var)
    if se < 1e-12:  # a reviewer used one category only: the multinomial has no variance off that row/column
        return Kappa(k, 0.0, None, None, "the large-sample SE is 0 here (a reviewer used one category only): "
                                         "no interval")
    z = z_value(0.95)
    return Kappa(k, se, max(-1.0, k - z * se), min(1.0, k + z * se))


# ----------------------------------------------------------------------------- per pair
@dataclass
class Agreement:
    """What :func:`agreement` found.

    Attributes:
        pairs: one row per pair of named reviewers who both reviewed a nucleus at least (``reviewer_a`` before
            ``reviewer_b``, ignoring case): ``n_both, n_agree, agreement_pct, kappa, kappa_low, kappa_high, note``.
        matrices: ``(reviewer_a, reviewer_b)`` -> confusion matrix (rows a's decision, columns b's; MNA,
            non-MNA, exclude), for the same pairs.
        reviewers: named reviewer -> nuclei they decided (any decision, adjudications included; scan exclusions
            not). A reviewer is a name compared without case and extra spaces ('ann', 'Ann '), shown as they
            spelled it last.
        unnamed_events, unnamed_nuclei: decisions without a reviewer name, and the nuclei they are on.
        open_conflicts, settled_conflicts: nuclei in each conflict state.
        majority_settled: of the settled conflicts, those a blind read settled by majority.
        blind_reviews: reviews that are blind reads, on nuclei two reviewers decided (each counts in the pairs).
        scan_excluded_nuclei: nuclei excluded with their whole scan (no review, in no agreement).
    """

    pairs: pd.DataFrame
    matrices: dict
    reviewers: dict
    unnamed_events: int = 0
    unnamed_nuclei: int = 0
    open_conflicts: int = 0
    settled_conflicts: int = 0
    scan_excluded_nuclei: int = 0
    majority_settled: int = 0
    blind_reviews: int = 0

    def summary(self) -> str:
        """One line on what the table covers (one reviewer only, no overlap, unnamed events)."""
        parts = []
        if len(self.reviewers) < 2:
            who = f"1 named reviewer ({next(iter(self.reviewers))})" if self.reviewers else "no named reviewer"
            parts.append(f"{who}: agreement needs two reviewers deciding the same nuclei")
        elif not int(self.pairs["n_both"].sum()):
            parts.append(f"{len(self.reviewers)} reviewers, but no nucleus was reviewed by two of them")
        else:
            by_majority = f" ({self.majority_settled} by a blind read's majority)" if self.majority_settled else ""
            parts.append(f"{len(self.reviewers)} reviewers; conflicts: {self.open_conflicts} open, "
                         f"{self.settled_conflicts} settled{by_majority}")
            if self.blind_reviews:
                parts.append(f"blind reads (decided without seeing the other reviews): {self.blind_reviews}, each "
                             "counted as an independent review, also on nuclei in conflict")
            paired = set(self.pairs["reviewer_a"]) | set(self.pairs["reviewer_b"])
            alone = sorted(set(self.reviewers) - paired, key=str.casefold)
            if alone:
                parts.append(f"in no pair, having reviewed no nucleus another reviewer reviewed (settling a "
                             f"conflict is no review): {', '.join(alone)}")
        if self.unnamed_events:
            parts.append(f"{self.unnamed_events} decisions on {self.unnamed_nuclei} nuclei carry no reviewer name "
                         "(legacy events) and are left out")
        if self.scan_excluded_nuclei:
            parts.append(f"{self.scan_excluded_nuclei} nuclei excluded with their whole scan: a decision on the "
                         "scan, not a review (it settles a conflict and opens none)")
        return "; ".join(parts)


def _matrix(reviews_a: list[str], reviews_b: list[str]) -> pd.DataFrame:
    keys = list(CATEGORIES)
    m = np.zeros((len(keys), len(keys)), dtype=int)
    for a, b in zip(reviews_a, reviews_b):
        if a in CATEGORIES and b in CATEGORIES:
            m[keys.index(a), keys.index(b)] += 1
    names = list(CATEGORIES.values())
    return pd.DataFrame(m, index=pd.Index(names, name="first"), columns=pd.Index(names, name="second"))


def agreement(store: Store) -> Agreement:
    """Agreement of every pair of named reviewers over the nuclei both reviewed (their latest reviews)."""
    with _unmarked_frame(store):
        counts = store.query(_COUNTS)
        scan_excluded = store.scalar(_SCAN_EXCLUDED)
    unnamed = store.query(_UNNAMED).iloc[0]
    reviewers = dict(zip(counts["reviewer"], counts["n"].astype(int)))
    found = multi_reviewed(store)
    rows, matrices = [], {}
    for a, b in itertools.combinations(sorted(reviewers, key=str.casefold), 2):
        both = [r.reviews for r in found.values() if a in r.reviews and b in r.reviews]
        m = _matrix([x[a]["value"] for x in both], [x[b]["value"] for x in both])
        m.index.name, m.columns.name = a, b
        n, agree = int(m.to_numpy().sum()), int(np.trace(m.to_numpy()))
        if not n:  # a pair with no nucleus both reviewed says nothing (e.g. one of them only settled conflicts)
            continue
        k = cohen_kappa(m.to_numpy())
        matrices[(a, b)] = m
        rows.append({"reviewer_a": a, "reviewer_b": b, "n_both": n, "n_agree": agree,
                     "agreement_pct": 100.0 * agree / n, "kappa": k.kappa, "kappa_low": k.low,
                     "kappa_high": k.high, "note": k.note})
    cols = ["reviewer_a", "reviewer_b", "n_both", "n_agree", "agreement_pct", "kappa", "kappa_low", "kappa_high",
            "note"]
    states = [r.state for r in found.values()]
    by_majority = sum(settled_by(r) == "majority" for r in found.values())
    blind = sum(bool(v.get("blind")) for r in found.values() for v in r.reviews.values())
    return Agreement(pd.DataFrame(rows, columns=cols), matrices, reviewers, int(unnamed["n"]), int(unnamed["k"]),
                     states.count("open"), states.count("settled"), int(scan_excluded or 0), by_majority, blind)


def ci_text(low, high) -> str:
    """'0.12 to 0.58', or '-' without an interval."""
    return "-" if low is None or pd.isna(low) else f"{low:.2f} to {high:.2f}"


def pair_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """``Agreement.pairs`` in words: Reviewers, Both reviewed, Agreement, Kappa, 95 % CI, Note."""
    return pd.DataFrame({
        "Reviewers": pairs["reviewer_a"] + " / " + pairs["reviewer_b"],
        "Both reviewed": pairs["n_both"].astype(int),
        "Agreement": [f"{a:.1f} % ({k} of {n})" if n else "-"
                      for a, k, n in zip(pairs["agreement_pct"], pairs["n_agree"], pairs["n_both"])],
        "Kappa": ["-" if k is None or pd.isna(k) else f"{k:.2f}" for k in pairs["kappa"]],
        "95 % CI": [ci_text(lo, hi) for lo, hi in zip(pairs["kappa_low"], pairs["kappa_high"])],
        "Note": pairs["note"],
    })


#: how the figures are computed, for the page and the command line
METHOD = ("Each reviewer's latest decision on a nucleus counts, made before reviewers disagreed on it (later "
          "decisions settle the conflict and are not counted), or made in blind review (a blind read is an "
          "independent read: it counts, and settles a conflict only when it makes a majority, e.g. 2 of 3). Kappa: Cohen's, over MNA / non-MNA / exclude; "
          "95 % CI: kappa +- 1.96 x the large-sample SE of Fleiss, Cohen & Everitt (1969); approximate for few "
          "nuclei.")
