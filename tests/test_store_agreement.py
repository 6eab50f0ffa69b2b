"""Inter-reviewer agreement (``store.agreement``): kappa, pairs, conflicts and their settling."""

from __future__ import annotations

import numpy as np
import pytest

from _store_fakes import fake_model, synthetic_result
from store import agreement, labels, registry, samples
from genuine_core.errors import InputError, StoreError
from store.agreement import cohen_kappa
from store.db import Store
from store.scans import write_scan_result


@pytest.fixture()
def nuclei(store):
    """Eight stored nuclei of sample S (ids)."""
    sid = samples.ensure_sample(store, "S", "case", None, None)
    mid = registry.register_model(store, fake_model("m"))
    write_scan_result(store, sid, synthetic_result("a" * 64, {"m": np.linspace(0.1, 0.9, 8)}), {"m": mid})
    return store.query("SELECT id FROM nuclei ORDER BY id")["id"].tolist()


# -- kappa ------------------------------------------------------------------------------------------
def test_kappa_of_a_hand_example():
    # po = 0.7, pe = 0.5*0.6 + 0.5*0.4 = 0.5: kappa = (0.7 - 0.5) / 0.5
    k = cohen_kappa([[20, 5], [10, 15]], names=("MNA", "non-MNA"))
    assert k.kappa == pytest.approx(0.4)
    assert k.low < 0.4 < k.high and k.note == ""


def test_kappa_interval_is_the_delta_method_interval():
    """The Fleiss-Cohen-Everitt SE is the delta-method SE of kappa under the multinomial: checked numerically."""
    m = np.array([[30, 4, 2], [6, 25, 1], [1, 2, 9]], float)
    n = m.sum()
    p = m.ravel() / n

    def kappa(q):
        q = q.reshape(3, 3)
        pe = q.sum(1) @ q.sum(0)
        return (np.trace(q) - pe) / (1 - pe)

    grad = np.array([(kappa(p + h) - kappa(p - h)) / 2e-7 for h in np.eye(9) * 1e-7])
    cov = (np.diag(p) - np.outer(p, p)) / n
    k = cohen_kappa(m)
    assert k.kappa == pytest.approx(kappa(p))
    assert k.se == pytest.approx(np.sqrt(grad @ cov @ grad), rel=1e-5)
    assert k.low == pytest.approx(k.kappa - 1.959964 * k.se) and k.high == pytest.approx(k.kappa + 1.959964 * k.se)


def test_kappa_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a = rng.choice(["1", "0", "exclude"], 200, p=[0.4, 0.5, 0.1])
    b = np.where(rng.uniform(size=200) < 0.75, a, rng.choice(["1", "0", "exclude"], 200))
    m = agreement._matrix(list(a), list(b)).to_numpy()
    assert cohen_kappa(m).kappa == pytest.approx(metrics.cohen_kappa_score(a, b))


def test_kappa_at_perfect_agreement_is_one_without_an_interval():
    k = cohen_kappa([[3, 0, 0], [0, 2, 0], [0, 0, 1]])
    assert k.kappa == pytest.approx(1.0) and k.se == 0 and k.low is None and k.high is None
    assert "perfect agreement" in k.note


def test_kappa_is_undefined_when_both_used_one_category_only():
    k = cohen_kappa([[0, 0, 0], [0, 5, 0], [0, 0, 0]])
    assert k.kappa is None and k.low is None and k.note == "undefined: both used one category only (non-MNA)"
    # one reviewer using one category while the other uses two: defined (0: no better than chance)
    assert cohen_kappa([[3, 2, 0], [0, 0, 0], [0, 0, 0]]).kappa == pytest.approx(0.0)
    assert cohen_kappa(np.zeros((3, 3))).note == "no nucleus reviewed by both"


def test_kappa_gives_no_interval_where_its_standard_error_is_zero():
    k = cohen_kappa([[0, 0, 5], [0, 0, 0], [0, 0, 0]])  # one said MNA, the other exclude, every time
    assert k.kappa == pytest.approx(0.0) and k.low is None and k.high is None
    assert k.note == "the large-sample SE is 0 here (a reviewer used one category only): no interval"
    one = cohen_kappa([[1, 2, 0], [0, 0, 0], [0, 0, 0]])  # only one of them used one category: kappa 0, SE 0 too
    assert one.kappa == pytest.approx(0.0) and one.low is None and one.note == k.note


# -- pairs and conflicts --------------------------------------------------------------------------
def test_pairs_count_each_reviewers_latest_review(store, nuclei):
    n1, n2, n3, n4 = nuclei[:4]
    labels.record_label_event(store, n1, 1, "Ann")
    labels.record_label_event(store, n1, 0, "Ann")  # Ann changed her mind before anyone else looked
    labels.record_label_event(store, n1, 0, "Bob")
    labels.record_label_event(store, n2, 1, "Ann")
    labels.record_label_event(store, n2, "exclude", "Bob")
    labels.record_label_event(store, n3, 1, "Ann")
    labels.record_label_event(store, n3, 1, "Bob")
    labels.record_label_event(store, n4, 1, "Cy")  # Cy alone on n4
    res = agreement.agreement(store)
    assert res.reviewers == {"Ann": 3, "Bob": 3, "Cy": 1}
    pairs = res.pairs.set_index(["reviewer_a", "reviewer_b"])
    ab = pairs.loc[("Ann", "Bob")]
    assert (ab["n_both"], ab["n_agree"]) == (3, 2) and ab["agreement_pct"] == pytest.approx(200 / 3)
    assert ab["kappa"] == pytest.approx(cohen_kappa(res.matrices[("Ann", "Bob")].to_numpy()).kappa)
    assert res.matrices[("Ann", "Bob")].loc["MNA", "exclude"] == 1
    assert list(pairs.index) == [("Ann", "Bob")]  # Cy reviewed nothing the others did: in no pair
    assert res.summary().endswith("in no pair, having reviewed no nucleus another reviewer reviewed (settling a "
                                  "conflict is no review): Cy")
    assert (res.open_conflicts, res.settled_conflicts) == (1, 0)
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [n2]


def test_a_decision_on_an_open_conflict_settles_it_and_is_not_counted_as_a_review(store, nuclei):
    n = nuclei[0]
    labels.record_label_event(store, n, 1, "Ann", note="many green dots")
    labels.record_label_event(store, n, 0, "Bob", note="dots are noise")
    open_ = agreement.conflicts(store)
    assert open_.iloc[0]["reviews"] == "Ann: MNA; Bob: non-MNA" and open_.iloc[0]["state"] == "open"
    assert open_.iloc[0]["sample"] == "S"
    labels.record_label_event(store, n, 0, "Sen", note="settled")
    assert agreement.conflicts(store).empty
    settled = agreement.conflicts(store, include_settled=True)
    assert settled.iloc[0]["state"] == "settled" and settled.iloc[0]["current"] == "0"
    r = agreement.nucleus_review(store, n)
    assert r.reviews["Ann"]["note"] == "many green dots" and set(r.reviews) == {"Ann", "Bob"}
    assert r.adjudications[0]["reviewer"] == "Sen" and r.current == labels.current_labels(store).iloc[0]["value"]
    res = agreement.agreement(store)
    pairs = res.pairs.set_index(["reviewer_a", "reviewer_b"])
    assert ("Ann", "Sen") not in pairs.index  # the settling decision saw both reviews: no review, no pair
    assert res.summary().endswith("(settling a conflict is no review): Sen")
    assert pairs.loc[("Ann", "Bob"), "n_both"] == 1 and pairs.loc[("Ann", "Bob"), "n_agree"] == 0
    assert agreement.disagreed(store, [n, nuclei[1]]).tolist() == [True, False]
    # a later decision against the settled label opens the conflict again; one more settles it
    labels.record_label_event(store, n, 1, "Ann")
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [n]
    labels.record_label_event(store, n, 1, "Sen")
    assert agreement.conflicts(store).empty


def test_undo_returns_the_conflict_to_where_it_was(store, nuclei):
    n = nuclei[0]
    labels.record_label_event(store, n, 1, "Ann")
    labels.record_label_event(store, n, 0, "Bob")
    labels.record_label_event(store, n, 1, "Sen")
    labels.undo_last(store, "Sen")  # the settling decision undone: open again
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [n]
    m = nuclei[1]
    labels.record_label_event(store, m, 1, "Ann")
    labels.record_label_event(store, m, 0, "Bob")
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [n, m]
    labels.undo_last(store, "Bob")  # Bob's review undone: only Ann's stands, no conflict
    assert agreement.conflicts(store, include_settled=True)["nucleus_id"].tolist() == [n]
    assert agreement.agreement(store).pairs.set_index(["reviewer_a", "reviewer_b"]).loc[("Ann", "Bob"), "n_both"] == 1


def test_replay_ends_on_the_current_label(store, nuclei):
    rng = np.random.default_rng(3)
    for _ in range(120):
        n, who = int(rng.choice(nuclei)), str(rng.choice(["Ann", "Bob", "Cy"]))
        if rng.uniform() < 0.2:
            labels.undo_last(store, who)
        else:
            labels.record_label_event(store, n, str(rng.choice(["1", "0", "exclude"])), who)
    current = labels.current_labels(store).set_index("nucleus_id")["value"]
    for n in nuclei:
        assert agreement.nucleus_review(store, n).current == current.get(n, "unset")


def test_one_reviewer_only_and_unnamed_legacy_events_are_stated(store, nuclei):
    labels.record_label_event(store, nuclei[0], 1, "Ann")
    res = agreement.agreement(store)
    assert res.pairs.empty and res.summary().startswith("1 named reviewer (Ann): agreement needs two reviewers")
    store.execute("INSERT INTO label_events (nucleus_id, value, previous, reviewer, created_at) "
                  "VALUES (?, '0', '1', '', now()), (?, '1', 'unset', '  ', now())", [nuclei[0], nuclei[1]])
    res = agreement.agreement(store)
    assert (res.unnamed_events, res.unnamed_nuclei) == (2, 2) and list(res.reviewers) == ["Ann"]
    assert "2 decisions on 2 nuclei carry no reviewer name (legacy events) and are left out" in res.summary()
    assert agreement.conflicts(store, include_settled=True).empty
    with Store(store.path.with_name("other.duckdb")) as other:
        empty = agreement.agreement(other)
    assert empty.pairs.empty and empty.summary().startswith("no named reviewer")


def test_no_overlap_is_stated(store, nuclei):
    labels.record_label_event(store, nuclei[0], 1, "Ann")
    labels.record_label_event(store, nuclei[1], 1, "Bob")
    res = agreement.agreement(store)
    assert res.pairs.empty and not res.matrices
    assert res.summary() == "2 reviewers, but no nucleus was reviewed by two of them"


def test_a_reviewer_is_one_whatever_the_case_and_spaces_of_the_name(store, nuclei):
    """'ann', 'Ann ' and ' ANN' are one reviewer, shown as she spelled it last; no conflict with herself."""
    n1, n2, n3 = nuclei[:3]
    labels.record_label_event(store, n1, 1, "ann")
    labels.record_label_event(store, n1, 0, "Ann ")  # she changed her mind: her latest review, no conflict
    labels.record_label_event(store, n2, 1, " ANN")
    labels.record_label_event(store, n2, 1, "Bob")
    labels.record_label_event(store, n3, 0, "Mary  Lou")
    labels.record_label_event(store, n3, 0, "bob")
    labels.record_label_event(store, n1, 1, "mary lou")
    res = agreement.agreement(store)
    assert res.reviewers == {"ANN": 2, "bob": 2, "mary lou": 2}  # before: 'Ann', 'ANN', 'Bob', 'Mary  Lou', ...
    pairs = res.pairs.set_index(["reviewer_a", "reviewer_b"])
    assert pairs["n_both"].to_dict() == {("ANN", "bob"): 1, ("ANN", "mary lou"): 1, ("bob", "mary lou"): 1}
    assert pairs.loc[("ANN", "mary lou"), "n_agree"] == 0 and pairs.loc[("ANN", "bob"), "n_agree"] == 1
    assert agreement.conflicts(store)["reviews"].tolist() == ["ANN: non-MNA; mary lou: MNA"]
    assert set(agreement.nucleus_review(store, n2).reviews) == {"ANN", "bob"}
    assert res.summary() == "3 reviewers; conflicts: 1 open, 0 settled"


# -- scan exclusions --------------------------------------------------------------------------------
def _scan_id(store) -> int:
    return int(store.scalar("SELECT id FROM scans"))


def test_excluding_a_scan_is_no_review_and_opens_no_conflict(store, nuclei):
    """Sen takes the scan out after Ann reviewed its nuclei: the queue stays empty, the pair table too."""
    for n in nuclei[:5]:
        labels.record_label_event(store, n, 1, "Ann")
    assert labels.exclude_scan(store, _scan_id(store), "Sen", note="NMI and MYCN swapped") == 8
    assert agreement.conflicts(store, include_settled=True).empty  # before: 5 open 'Ann: MNA; Sen: exclude'
    assert agreement.disagreed(store, nuclei).tolist() == [False] * 8
    res = agreement.agreement(store)
    assert res.reviewers == {"Ann": 5} and res.pairs.empty and res.scan_excluded_nuclei == 8
    assert "8 nuclei excluded with their whole scan: a decision on the scan, not a review" in res.summary()
    r = agreement.nucleus_review(store, nuclei[0])
    assert r.current == "exclude" and set(r.reviews) == {"Ann"} and r.state == "none" and not r.adjudications
    note = labels.label_event(store, r.last_event_id)
    assert note["value"] == "exclude" and note["reviewer"] == "Sen"
    notes = store.query("SELECT DISTINCT note FROM label_events WHERE reviewer = 'Sen'")["note"].tolist()
    assert notes == [f"[whole scan excluded] scan {_scan_id(store)} (aaaaaaaa.tif): NMI and MYCN swapped"]


def test_excluding_a_scan_settles_its_open_conflicts_and_keeps_the_reviews(store, nuclei):
    n, m = nuclei[:2]
    labels.record_label_event(store, n, 1, "Ann")
    labels.record_label_event(store, n, 0, "Bob")
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [n]
    labels.exclude_scan(store, _scan_id(store), "Sen")
    assert agreement.conflicts(store).empty
    settled = agreement.conflicts(store, include_settled=True)
    assert settled["nucleus_id"].tolist() == [n] and settled.iloc[0]["reviews"] == "Ann: MNA; Bob: non-MNA"
    r = agreement.nucleus_review(store, n)
    assert r.state == "settled" and r.adjudications[0]["reviewer"] == "Sen" and r.current == "exclude"
    assert r.adjudications[0]["note"].startswith("[whole scan excluded] scan ")
    pairs = agreement.agreement(store).pairs.set_index(["reviewer_a", "reviewer_b"])
    assert pairs.loc[("Ann", "Bob"), "n_both"] == 1 and ("Ann", "Sen") not in pairs.index
    labels.undo_last(store, "Sen")  # one exclusion undone (the latest: the scan's last nucleus)
    last = nuclei[-1]
    assert agreement.nucleus_review(store, last).current == "unset"
    # a review made after the scan was excluded is a second opinion like any other
    labels.record_label_event(store, m, 1, "Ann")
    labels.record_label_event(store, m, 0, "Bob")
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [m]


def test_the_scan_exclusion_mark_is_reserved_and_the_ingest_pages_older_note_counts_as_one(store, nuclei):
    with pytest.raises(InputError, match=r"must not begin with '\[whole scan excluded\]'"):
        labels.record_label_event(store, nuclei[0], "exclude", "Bob", note=" [whole scan excluded] scan 1")
    labels.record_label_event(store, nuclei[0], 1, "Ann")
    store.execute("INSERT INTO label_events (nucleus_id, value, previous, reviewer, created_at, note) "
                  "VALUES (?, 'exclude', '1', 'Sen', now(), 'the whole scan excluded on the Ingest page')",
                  [nuclei[0]])  # written by the Ingest page of 2026-12-04
    assert agreement.conflicts(store, include_settled=True).empty
    labels.record_label_event(store, nuclei[1], 1, "Ann")
    labels.record_label_event(store, nuclei[1], "exclude", "Bob", note="out of focus")  # Bob's own review
    assert agreement.conflicts(store)["reviews"].tolist() == ["Ann: MNA; Bob: exclude"]


def _old_cli_exclude_scan(store, reviewer: str, note: str | None, gap_ms: int = 1) -> None:
    """What ``genuine store exclude-scan`` wrote before its notes were marked (before 2026-12-05): in one transaction,
    an 'exclude' event per nucleus of the scan not excluded yet, in nucleus order, the user's --note (or none)."""
    def append(cur):
        rows = cur.execute("SELECT n.id, coalesce(c.value, 'unset') FROM nuclei n LEFT JOIN curated_labels c "
                           "ON c.nucleus_id = n.id WHERE n.scan_id = ? ORDER BY n.id", [_scan_id(store)]).fetchall()
        for nid, value in rows:
            if value != "exclude":
                cur.execute("INSERT INTO label_events (nucleus_id, value, previous, reviewer, created_at, note) "
                            "VALUES (?, 'exclude', ?, ?, now()::TIMESTAMP + (? * INTERVAL 1 MILLISECOND), ?)",
                            [nid, value, reviewer, nid * gap_ms, note])
    store.write(append)


@pytest.mark.parametrize("note", [None, "channels swapped"])
def test_an_older_command_lines_scan_exclusion_is_recognised_without_the_mark(store, nuclei, note):
    """Before the mark, the whole scan excluded from the command line read as Sen's review of every nucleus: each
    nucleus Ann had reviewed became an open conflict 'Ann: MNA; Sen: exclude', and Sen a reviewer in the pairs."""
    for n in nuclei[:5]:
        labels.record_label_event(store, n, 1, "Ann")
    labels.record_label_event(store, nuclei[0], 0, "Bob")  # an open conflict the exclusion settles
    labels.record_label_event(store, nuclei[1], 1, "Bob")
    labels.record_label_event(store, nuclei[7], "exclude", "Ann")  # already excluded: the old command skipped it
    _old_cli_exclude_scan(store, "Sen", note)
    assert agreement.conflicts(store)["nucleus_id"].tolist() == []
    assert agreement.conflicts(store, include_settled=True)["nucleus_id"].tolist() == [nuclei[0]]
    res = agreement.agreement(store)
    assert res.reviewers == {"Ann": 6, "Bob": 2} and res.scan_excluded_nuclei == 7
    assert res.pairs[["reviewer_a", "reviewer_b", "n_both"]].values.tolist() == [["Ann", "Bob", 2]]


def test_a_curators_own_exclusions_of_part_of_a_scan_stay_reviews(store, nuclei):
    """Excluding some nuclei one after another (not every nucleus of the scan) is a review, as before."""
    for n in nuclei[:3]:
        labels.record_label_event(store, n, 1, "Ann")
    for n in nuclei[:3]:
        labels.record_label_event(store, n, "exclude", "Bob")
    assert agreement.conflicts(store)["nucleus_id"].tolist() == nuclei[:3]
    assert agreement.agreement(store).scan_excluded_nuclei == 0


def test_every_nucleus_of_a_scan_excluded_by_hand_stays_reviews(store, nuclei):
    """The same events, but a curator's pace apart (0.5 s): Bob's reviews, in conflict with Ann's."""
    labels.record_label_event(store, nuclei[0], 1, "Ann")
    _old_cli_exclude_scan(store, "Bob", None, gap_ms=500)
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [nuclei[0]]
    assert agreement.agreement(store).scan_excluded_nuclei == 0


# -- command line ---------------------------------------------------------------------------------
def test_cli_prints_the_pair_table_matrices_and_conflicts(store, nuclei, capsys):
    from genuine_core.cli import main

    for n, a, b in zip(nuclei[:5], "11001", "10001"):
        labels.record_label_event(store, n, a, "Ann")
        labels.record_label_event(store, n, b, "Bob", note="b" if a != b else None)
    path = store.path
    store.close()
    assert main(["store", "agreement", "--matrices", "--conflicts", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 reviewers; conflicts: 1 open, 0 settled\n")
    row = next(line for line in out.splitlines() if line.strip().startswith("Ann / Bob"))
    assert row.split()[3:6] == ["5", "80.0", "%"] and "(4 of 5)" in row
    k = cohen_kappa([[2, 1, 0], [0, 2, 0], [0, 0, 0]])
    assert f"{k.kappa:.2f}" in row and f"{k.low:.2f} to {k.high:.2f}" in row
    assert "Ann (rows) / Bob (columns):" in out
    assert f"conflicts: 1 nucleus_id sample state current reviews {nuclei[1]} S open non-MNA Ann: MNA; Bob: non-MNA" \
        in " ".join(out.split())
    assert "Fleiss, Cohen & Everitt (1969)" in out


def test_cli_on_a_store_without_reviews_says_so(tmp_path, capsys):
    from genuine_core.cli import main

    with Store(tmp_path / "s.duckdb"):
        pass
    assert main(["store", "agreement", "--db", str(tmp_path / "s.duckdb")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no named reviewer: agreement needs two reviewers") and "Reviewers" not in out
    assert main(["store", "agreement", "--db", str(tmp_path / "none.duckdb")]) == 2


# -- curated-label export ------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_exported_training_set_marks_nuclei_whose_reviewers_disagreed(store, nuclei, tmp_path, suffix):
    from genuine_core.cli import main
    from training.labelled import LabelledPatches

    labels.record_label_event(store, nuclei[0], 1, "Ann")
    labels.record_label_event(store, nuclei[0], 0, "Bob")  # disagree
    labels.record_label_event(store, nuclei[1], 1, "Ann")
    labels.record_label_event(store, nuclei[1], 1, "Bob")  # agree
    labels.record_label_event(store, nuclei[2], 0, "Ann")  # one reviewer
    path = store.path
    store.close()
    out = tmp_path / f"curated{suffix}"
    assert main(["export", "labels", "--out", str(out), "--db", str(path)]) == 0
    got = LabelledPatches.load(out)
    assert got.labels.tolist() == [0, 1, 0] and got.reviewers_disagreed.tolist() == [True, False, False]
    got.ensure_split(np.random.default_rng(0))
    part = got.subset("train")
    assert part.reviewers_disagreed is not None and len(part.reviewers_disagreed) == len(part)


def test_curated_table_says_whose_reviewers_disagreed(store, nuclei):
    from store.export import curated_table

    a, b, c = nuclei[:3]
    for nid, ann, bob in ((a, 1, 0), (b, 1, 1)):
        labels.record_label_event(store, nid, ann, "Ann")
        labels.record_label_event(store, nid, bob, "Bob")
    labels.record_label_event(store, c, 0, "Ann")
    labels.record_label_event(store, a, 1, "Sen")  # settles a's conflict
    table = curated_table(store).set_index("nucleus_id")
    assert table.loc[[a, b, c], "reviewers_disagreed"].tolist() == [True, False, False]
    assert table.loc[[a, b, c], "conflict"].tolist() == ["settled", "", ""]
    assert table.loc[a, "reviewer"] == "Sen" and table.loc[a, "sample"] == "S"


def _figures(store, nuclei) -> tuple:
    res = agreement.agreement(store)
    return (res.pairs.to_dict("records"), res.reviewers, res.open_conflicts, res.settled_conflicts,
            agreement.conflicts(store, include_settled=True)[["nucleus_id", "state", "current", "reviews"]]
            .to_dict("records"), labels.current_labels(store)[["nucleus_id", "value"]].to_dict("records"),
            [agreement.nucleus_review(store, n).state for n in nuclei])


def test_undoing_a_scan_exclusion_in_one_step_restores_labels_conflicts_and_agreement(store, nuclei):
    n, m, k = nuclei[:3]
    labels.record_label_event(store, n, 1, "Ann")
    labels.record_label_event(store, n, 0, "Bob")  # open conflict
    labels.record_label_event(store, m, 1, "Ann")
    labels.record_label_event(store, m, 1, "Bob")  # agreement
    labels.record_label_event(store, k, 0, "Ann")
    with pytest.raises(StoreError, match=r"is not excluded: its nuclei were never excluded with the whole scan"):
        labels.unexclude_scan(store, _scan_id(store), "Sen")
    before = _figures(store, nuclei)
    assert before[2] == 1 and before[0][0]["n_both"] == 2
    assert labels.exclude_scan(store, _scan_id(store), "Sen") == 8
    assert agreement.agreement(store).settled_conflicts == 1 and agreement.conflicts(store).empty
    assert labels.scan_exclusion_standing(store, _scan_id(store)) == 8
    assert labels.unexclude_scan(store, _scan_id(store), "Sen") == 8
    assert _figures(store, nuclei) == before  # the conflict is open again, the pair's figures as they were
    res = agreement.agreement(store)
    assert res.scan_excluded_nuclei == 0 and "whole scan" not in res.summary()
    undos = store.query("SELECT reviewer, undoes, note FROM label_events WHERE undoes IS NOT NULL")
    assert len(undos) == 8 and undos["reviewer"].eq("Sen").all()
    assert undos["note"].str.contains(f"the exclusion of scan {_scan_id(store)} undone").all()
    assert labels.scan_exclusion_standing(store, _scan_id(store)) == 0
    with pytest.raises(StoreError, match=rf"^scan {_scan_id(store)} is not excluded: its latest"):
        labels.unexclude_scan(store, _scan_id(store), "Sen")
    with pytest.raises(StoreError, match=r"^no scan with id 99; list them with: genuine store scans"):
        labels.unexclude_scan(store, 99, "Sen")
    with pytest.raises(InputError, match="reviewer name is required"):
        labels.unexclude_scan(store, _scan_id(store), " ")


def test_unexclude_leaves_decisions_made_since_and_undoes_only_the_latest_exclusion(store, nuclei):
    scan = _scan_id(store)
    labels.exclude_scan(store, scan, "Sen", note="first")
    labels.undo_last(store, "Sen")  # the last nucleus back to no decision, on the Review page
    labels.record_label_event(store, nuclei[0], 1, "Ann")  # a curator decides one again after the exclusion
    assert labels.exclude_scan(store, scan, "Sen", note="second") == 2  # nuclei[0] and the last one
    labels.record_label_event(store, nuclei[0], 0, "Bob")  # decided again since: left alone
    assert labels.unexclude_scan(store, scan, "Ann") == 1  # the second run's one standing event
    current = labels.current_labels(store).set_index("nucleus_id")["value"].to_dict()
    assert current[nuclei[0]] == "0" and nuclei[-1] not in current  # back to no decision
    assert [current[i] for i in nuclei[1:-1]] == ["exclude"] * 6  # the first run stays
    with pytest.raises(StoreError, match="latest whole-scan exclusion was undone or decided over on every nucleus"):
        labels.unexclude_scan(store, scan, "Ann")  # the latest run has nothing standing left


# -- blind reads ----------------------------------------------------------------------------------
def test_a_blind_read_on_an_open_conflict_is_a_review_and_settles_it_by_majority(store, nuclei):
    """Ann and Bob disagree; Cy, reviewing blind, sides with Ann: before, Cy's read was an adjudication (left out
    of the agreement, settling the conflict as if Cy had seen both reviews); now it is a third review, in two
    pairs, and the conflict is settled by majority (2 of 3)."""
    n = nuclei[0]
    labels.record_label_event(store, n, 1, "Ann")
    labels.record_label_event(store, n, 0, "Bob")
    labels.record_label_event(store, n, 1, "Cy", blind=True)
    assert store.scalar("SELECT blind FROM label_events ORDER BY id DESC LIMIT 1") is True
    assert store.query("SELECT blind FROM label_events ORDER BY id")["blind"].isna().tolist() == [True, True, False]
    r = agreement.nucleus_review(store, n)
    assert set(r.reviews) == {"Ann", "Bob", "Cy"} and not r.adjudications
    assert r.reviews["Cy"]["blind"] and not r.reviews["Ann"]["blind"]
    assert (r.state, r.majority, r.current) == ("settled", True, "1")
    row = agreement.conflicts(store, include_settled=True).iloc[0]
    assert (row["state"], row["settled_by"]) == ("settled", "majority")
    assert row["reviews"] == "Ann: MNA; Bob: non-MNA; Cy: MNA (blind)" and row["n_reviewers"] == 3
    res = agreement.agreement(store)
    pairs = res.pairs.set_index(["reviewer_a", "reviewer_b"])
    assert pairs[["n_both", "n_agree"]].to_dict("index") == {
        ("Ann", "Bob"): {"n_both": 1, "n_agree": 0}, ("Ann", "Cy"): {"n_both": 1, "n_agree": 1},
        ("Bob", "Cy"): {"n_both": 1, "n_agree": 0}}
    assert (res.open_conflicts, res.settled_conflicts, res.majority_settled, res.blind_reviews) == (0, 1, 1, 1)
    assert "conflicts: 0 open, 1 settled (1 by a blind read's majority)" in res.summary()
    assert ("blind reads (decided without seeing the other reviews): 1, each counted as an independent review"
            in res.summary())
    assert "in no pair" not in res.summary()


def test_a_blind_tie_or_minority_leaves_the_conflict_open_until_a_majority_or_an_adjudication(store, nuclei):
    tie, minority = nuclei[:2]
    labels.record_label_event(store, tie, 1, "Ann")
    labels.record_label_event(store, tie, 0, "Bob")
    labels.record_label_event(store, tie, "exclude", "Cy", blind=True)  # 1 / 1 / 1: no majority
    r = agreement.nucleus_review(store, tie)
    assert (r.state, r.majority, r.current, len(r.reviews)) == ("open", False, "exclude", 3)
    labels.record_label_event(store, minority, 1, "Ann")
    labels.record_label_event(store, minority, 1, "Bob")
    labels.record_label_event(store, minority, 0, "Cy", blind=True)  # against the others: the label is the minority's
    assert agreement.nucleus_review(store, minority).state == "open"
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [tie, minority]
    labels.record_label_event(store, minority, 1, "Dee", blind=True)  # 3 of 4 MNA, the label MNA again
    r = agreement.nucleus_review(store, minority)
    assert (r.state, r.majority, r.current, len(r.reviews)) == ("settled", True, "1", 4)
    labels.record_label_event(store, tie, 0, "Sen")  # seeing the reviews: an adjudication, as before
    r = agreement.nucleus_review(store, tie)
    assert (r.state, r.majority, len(r.reviews)) == ("settled", False, 3) and r.adjudications[0]["reviewer"] == "Sen"
    table = agreement.conflicts(store, include_settled=True).set_index("nucleus_id")["settled_by"]
    assert table.to_dict() == {tie: "adjudication", minority: "majority"}
    assert agreement.agreement(store).pairs.set_index(["reviewer_a", "reviewer_b"]).loc[("Cy", "Dee"), "n_both"] == 1


def test_undoing_a_blind_read_reopens_the_conflict_it_settled(store, nuclei):
    n = nuclei[0]
    labels.record_label_event(store, n, 1, "Ann")
    labels.record_label_event(store, n, 0, "Bob")
    labels.record_label_event(store, n, 0, "Cy", blind=True)
    assert agreement.nucleus_review(store, n).majority
    labels.undo_last(store, "Cy")
    r = agreement.nucleus_review(store, n)
    assert (r.state, r.majority, set(r.reviews)) == ("open", False, {"Ann", "Bob"})
    assert labels.audit_trail(store)["blind"].tolist() == [False, False, True, False]


def test_cli_says_a_conflict_was_settled_by_a_blind_majority(store, nuclei, capsys):
    from genuine_core.cli import main

    labels.record_label_event(store, nuclei[0], 1, "Ann")
    labels.record_label_event(store, nuclei[0], 0, "Bob")
    labels.record_label_event(store, nuclei[0], 0, "Cy", blind=True)
    labels.record_label_event(store, nuclei[1], 1, "Ann")
    labels.record_label_event(store, nuclei[1], 0, "Bob")
    labels.record_label_event(store, nuclei[1], 0, "Sen")
    path = store.path
    store.close()
    assert main(["store", "agreement", "--conflicts", "--db", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("4 reviewers; conflicts: 0 open, 2 settled (1 by a blind read's majority)")
    assert f"{nuclei[0]} S settled by majority (blind read) non-MNA Ann: MNA; Bob: non-MNA; Cy: non-MNA (blind)" in out
    assert f"{nuclei[1]} S settled by adjudication non-MNA Ann: MNA; Bob: non-MNA" in out
    assert "made in blind review (a blind read is an independent read" in out


def test_an_older_store_gains_the_blind_column_and_its_events_are_not_blind(tmp_path):
    from _store_fakes import store_at_version
    from store import migrations

    path = tmp_path / "v8.duckdb"
    conn = store_at_version(path, 8)
    assert "blind" not in {r[0] for r in conn.execute("DESCRIBE label_events").fetchall()}
    conn.execute("INSERT INTO label_events (nucleus_id, value, previous, reviewer, created_at) VALUES "
                 "(7, '1', 'unset', 'Ann', now()), (7, '0', '1', 'Bob', now()), (7, '1', '0', 'Cy', now())")
    conn.close()
    with Store(path) as s:  # migrated on opening for writing
        assert migrations.current_version(s.cursor()) == migrations.LATEST == 10
        assert s.query("SELECT blind FROM label_events")["blind"].isna().all()
        r = agreement.nucleus_review(s, 7)  # Cy saw both reviews then: an adjudication, as it was
        assert (r.state, set(r.reviews), r.adjudications[0]["reviewer"]) == ("settled", {"Ann", "Bob"}, "Cy")


def test_a_blind_read_against_an_adjudicated_label_reopens_the_conflict_instead_of_overruling_it(store, nuclei):
    """Ann MNA, Bob non-MNA, Sen adjudicates MNA; Cy then reads non-MNA blind. Before, the blind read made a
    majority of the reads (Bob, Cy) and 'settled' the nucleus as non-MNA, overruling the adjudicator; now it
    reopens the conflict, as a contradicting adjudication would. A blind read agreeing with the adjudicated label
    leaves it settled by the adjudication."""
    against, agreeing = nuclei[:2]
    for n, cy in ((against, 0), (agreeing, 1)):
        labels.record_label_event(store, n, 1, "Ann")
        labels.record_label_event(store, n, 0, "Bob")
        labels.record_label_event(store, n, 1, "Sen")  # seeing the reviews: an adjudication
        labels.record_label_event(store, n, cy, "Cy", blind=True)
    r = agreement.nucleus_review(store, against)
    assert (r.state, r.majority, r.current, set(r.reviews)) == ("open", False, "0", {"Ann", "Bob", "Cy"})
    assert agreement.conflicts(store)["nucleus_id"].tolist() == [against]
    r = agreement.nucleus_review(store, agreeing)
    assert (r.state, agreement.settled_by(r), r.adjudications[0]["reviewer"]) == ("settled", "adjudication", "Sen")
