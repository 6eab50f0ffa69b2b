"""``genuine store agreement``: the curators' agreement per pair of reviewers, and the conflicts."""

from __future__ import annotations

from store import agreement
from store.labels import VALUE_NAMES


def print_agreement(store, matrices: bool = False, conflicts: bool = False) -> int:
    """Print the pair table (``store.agreement.pair_table``), what it covers and the method; exit code 0."""
    res = agreement.agreement(store)
    print(res.summary())
    if not res.pairs.empty:
        print(agreement.pair_table(res.pairs).to_string(index=False))
    if matrices:
        for (a, b), m in res.matrices.items():
            if m.to_numpy().sum():
                print(f"\n{a} (rows) / {b} (columns):")
                print(m.to_string())
    if conflicts:
        table = agreement.conflicts(store, include_settled=True)
        print(f"\nconflicts: {len(table)}" if len(table) else "\nno conflicts")
        if len(table):
            table = table.assign(current=table["current"].map(lambda v: VALUE_NAMES.get(v, v)),
                                 state=[agreement.STATE_WORDS[(s, by)] for s, by in zip(table["state"],
                                                                                        table["settled_by"])])
            print(table[["nucleus_id", "sample", "state", "current", "reviews"]].to_string(index=False))
    print(agreement.METHOD)
    return 0
