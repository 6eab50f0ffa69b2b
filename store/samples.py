"""Samples: a cell line, a mixture, a patient case or a probe set; scans belong to one."""

from __future__ import annotations

import math

import pandas as pd

from genuine_core.errors import InputError, StoreError
from store.db import Store
from store.location import has_control_characters

SAMPLE_KINDS = ("cell-line", "mixture", "case", "probe")
_GENOTYPES = {"mna": "MNA", "non-mna": "non-MNA", "nonmna": "non-MNA", "non_mna": "non-MNA"}


def normalise_genotype(genotype: str | None) -> str | None:
    """``'mna'``/``'MNA'`` -> ``'MNA'``, ``'non-mna'``/``'non-MNA'`` -> ``'non-MNA'``; other text kept as is."""
    if not isinstance(genotype, str) or not genotype.strip():
        return None  # None, NaN from a DataFrame, empty text
    g = str(genotype).strip()
    return _GENOTYPES.get(g.lower(), g)


def genotype_label(genotype: str | None) -> int | None:
    """Auto label implied by a genotype: 1 for MNA, 0 for non-MNA, None otherwise."""
    g = normalise_genotype(genotype)
    return {"MNA": 1, "non-MNA": 0}.get(g) if g else None


def _validate(kind: str | None, expected: float | None) -> None:
    if kind is not None and kind not in SAMPLE_KINDS:
        raise InputError(f"sample kind must be one of {SAMPLE_KINDS}, got {kind!r}")
    if expected is not None and (math.isnan(expected) or not 0 <= expected <= 1):
        raise InputError(f"expected MNA fraction must be in [0, 1], got {expected}")


def get_sample(store: Store, name: str) -> dict | None:
    """The sample row as a dict, or None."""
    df = store.query("SELECT * FROM samples WHERE name = ?", [name])
    if df.empty:
        return None
    row = df.iloc[0].to_dict()
    row["expected_mna"] = None if pd.isna(row["expected_mna"]) else float(row["expected_mna"])
    return row


def check_new_name(name: str) -> None:
    """Refuse a new sample's name holding control characters: a newline or terminal escape in it would forge
    lines wherever it is printed (``genuine store scans``, reports, the event log).

    Raises:
        InputError: naming the sample as typed (escaped).
    """
    if has_control_characters(name):
        raise InputError(f"sample name {name!r} holds control characters (newlines, escapes); choose another")


def ensure_sample(store: Store, name: str, kind: str | None = None, expected: float | None = None,
                  genotype: str | None = None, notes: str | None = None) -> int:
    """Id of sample ``name``, created when missing.

    Args:
        name: unique sample name.
        kind: ``cell-line`` | ``mixture`` | ``case`` | ``probe`` (default ``case`` when creating).
        expected: expected MNA fraction in [0, 1], when known.
        genotype: ``MNA`` / ``non-MNA`` (gives nuclei an auto label) or free text.
        notes: free text.

    Raises:
        InputError: invalid kind/expected, or an existing sample with a different kind,
            expected fraction or genotype than asked for.
    """
    name = (name or "").strip()
    if not name:
        raise InputError("sample name must not be empty")
    _validate(kind, expected)
    genotype = normalise_genotype(genotype)
    existing = get_sample(store, name)
    if existing is None:
        check_new_name(name)
    if existing is not None:
        clashes = []
        if kind is not None and kind != existing["kind"]:
            clashes.append(f"kind {existing['kind']!r} (asked {kind!r})")
        if expected is not None and (existing["expected_mna"] is None or
                                     abs(existing["expected_mna"] - expected) > 1e-9):
            clashes.append(f"expected MNA {_percent(existing['expected_mna'])} (asked {_percent(expected)})")
        if genotype is not None and genotype != existing["genotype"]:
            had = "unknown" if existing["genotype"] is None else repr(existing["genotype"])
            clashes.append(f"genotype {had} (asked {genotype!r})")
        if clashes:
            raise InputError(f"sample {name!r} already exists with " + ", ".join(clashes))
        return int(existing["id"])
    with store.transaction() as cur:
        row = cur.execute(
            "INSERT INTO samples (name, kind, expected_mna, genotype, notes) VALUES (?, ?, ?, ?, ?) RETURNING id",
            [name, kind or "case", expected, genotype, notes],
        ).fetchone()
    return int(row[0])


def _percent(fraction) -> str:
    """0.25 -> '25 %'; None (not recorded) -> 'unknown'."""
    return "unknown" if fraction is None or pd.isna(fraction) else f"{100 * float(fraction):g} %"


#: sample names an error about an unknown sample lists before it cuts the list short with ", ..."
LISTED_NAMES = 10


def name_list(store: Store) -> str:
    """The store's sample names, sorted, for an error about an unknown one: ``"A, B, ..."`` (the first
    :data:`LISTED_NAMES`), or ``"none"``."""
    names = store.query("SELECT name FROM samples ORDER BY name LIMIT ?", [LISTED_NAMES + 1])["name"].tolist()
    return ", ".join(names[:LISTED_NAMES]) + (", ..." if len(names) > LISTED_NAMES else "") or "none"


def sample_id(store: Store, name: str) -> int:
    """Id of an existing sample.

    Raises:
        StoreError: no such sample.
    """
    sid = store.scalar("SELECT id FROM samples WHERE name = ?", [name])
    if sid is None:
        raise StoreError(f"no sample named {name!r}; samples: {name_list(store)}")
    return int(sid)


def list_samples(store: Store) -> pd.DataFrame:
    """All samples with their scan and nucleus counts.

    Returns:
        DataFrame ``id, name, kind, expected_mna, genotype, notes, created_at, n_scans,
        n_nuclei``, ordered by kind then name.
    """
    return store.query(
        """
        SELECT s.id, s.name, s.kind, s.expected_mna, s.genotype, s.notes, s.created_at,
               count(c.id)::INTEGER AS n_scans,
               coalesce(sum(c.n_nuclei), 0)::BIGINT AS n_nuclei
        FROM samples s LEFT JOIN scans c ON c.sample_id = s.id
        GROUP BY ALL
        ORDER BY s.kind, s.name
        """
    )
