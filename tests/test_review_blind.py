"""Blind double review on the Review page: other reviewers' decisions stay hidden until the reviewer decided.

The leak test draws the page for a blind reviewer twice, on a store where nobody decided anything and on a copy
where other reviewers decided (and disagreed on) the nuclei of that reviewer's queue: every element of the page
(text, tables, metrics, widget keys, progress) must be the same.
"""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from _store_fakes import private_store_copy  # noqa: E402
from test_app import APP, TIMEOUT, card_nucleus, decision, events, frame_with, texts  # noqa: E402

SECRET = "ann-secret-note"


def _others_decide(path) -> tuple[int, int, int]:
    """Ann and Carl decide the first three nuclei of Bob's blind queue: X (Ann: MNA, with a note), Y (Ann: MNA,
    Carl: non-MNA, an open conflict), Z (Ann: exclude)."""
    from store.db import open_store
    from store.labels import record_label_event
    from store.review import review_queue

    with open_store(path) as s:
        x, y, z = review_queue(s, include_reviewed=True, reviewer="Bob", limit=3)["nucleus_id"].astype(int)
        record_label_event(s, x, 1, "Ann", note=SECRET)
        record_label_event(s, y, 1, "Ann", note=SECRET)
        record_label_event(s, y, 0, "Carl", note=SECRET)
        record_label_event(s, z, "exclude", "Ann", note=SECRET)
    return int(x), int(y), int(z)


def _blind_page(reviewer: str = "Bob", mode: str | None = None) -> AppTest:
    """The Review page opened from an address with ``?blind=1`` (the store: ``$GENUINE_DB``)."""
    import streamlit as st

    st.cache_data.clear()  # the stores were written behind the app's back
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["blind"] = "1"
    at.session_state["reviewer"] = reviewer
    at.run()
    at.switch_page("pages/review.py").run()
    if mode:
        at.segmented_control(key="review_mode").set_value(mode).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _elements(node, out: list) -> list:
    """Every element under ``node`` as (kind, its message to the browser), in page order."""
    children = getattr(node, "children", None)
    if children:
        for _, child in sorted(children.items()):
            _elements(child, out)
    elif getattr(node, "proto", None) is not None:
        out.append((type(node).__name__, str(node.proto)))
    return out


def curated(at: AppTest) -> str:
    """The card's Curated value."""
    return next(m.value for m in at.metric if m.label == "Curated")


def _page(at: AppTest) -> list:
    return _elements(at.main, [])


@pytest.mark.parametrize("mode", [None, "Conflicts"])
def test_blind_review_shows_nothing_of_other_reviewers_decisions(small_store, tmp_path, monkeypatch, mode):
    src, _ = small_store
    (tmp_path / "quiet").mkdir()
    (tmp_path / "decided").mkdir()
    quiet = private_store_copy(src, tmp_path / "quiet", monkeypatch)
    decided = private_store_copy(src, tmp_path / "decided", monkeypatch)
    x, y, z = _others_decide(decided)
    monkeypatch.setenv("GENUINE_DB", str(quiet))
    alone = _page(_blind_page(mode=mode))
    monkeypatch.setenv("GENUINE_DB", str(decided))
    at = _blind_page(mode=mode)
    assert at.toggle(key="review_blind").value and at.query_params["blind"] == "1"
    seen = _page(at)
    assert len(seen) == len(alone)
    assert [a for a, b in zip(seen, alone) if a != b] == []
    body = "\n".join(p for _, p in seen)
    assert SECRET not in body and "Ann" not in body and "Carl" not in body
    if mode is None:
        assert card_nucleus(at) == x and curated(at) == "hidden"
        assert "of" in at.get("progress")[0].proto.text and "reviewed by you" in at.get("progress")[0].proto.text


def test_blind_review_shows_the_others_once_decided_and_hides_them_again_after_undo(store_copy, monkeypatch):
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")
    path, _ = store_copy
    x, y, z = _others_decide(path)
    at = _blind_page()
    assert card_nucleus(at) == x
    assert not any(str(b.key).endswith(("_1", "_0", "_exclude", "_unset")) for b in at.button
                   if str(b.key).startswith("decide_"))  # the buttons' keys (in the page) name no decision
    decision(at, "non").click().run()
    assert not at.exception and card_nucleus(at) == y  # next: Y, still blind (Ann and Carl disagree on it)
    assert curated(at) == "hidden" and SECRET not in str(_page(at))
    ev = events(path)
    assert ev.iloc[-1][["nucleus_id", "value", "reviewer"]].tolist() == [x, "0", "Bob"]
    recent = frame_with(at, "Before")
    assert recent.iloc[0]["Before"] == "MNA"  # decided: Ann's decision may show now
    at.segmented_control(key="review_mode").set_value("Conflicts").run()
    assert card_nucleus(at) == x  # Bob's conflict with Ann; not Y, which Bob has not decided
    reviews = frame_with(at, "Reviewer")
    assert reviews[["Reviewer", "Decision"]].values.tolist() == [["Ann", "MNA"], ["Bob (blind read)", "non-MNA"]]
    assert reviews["Note"].iloc[0] == SECRET
    at.button(key="review_undo").click().run()
    assert not at.exception
    assert any(f"nucleus {x} is back to **hidden (blind)**" in m.value for m in at.success)
    assert not any("MNA" in m.value for m in at.success)
    at.segmented_control(key="review_mode").set_value("Flagged nuclei").run()
    assert card_nucleus(at) == x and SECRET not in str(_page(at))
    recent = frame_with(at, "Before")
    assert recent.iloc[0]["Decision"] == "hidden (blind) (undo)" and set(recent["Before"]) == {"hidden (blind)"}


def test_blind_review_is_kept_in_the_address_and_over_other_pages(store_copy):
    at = _blind_page()
    at.toggle(key="review_blind").set_value(False).run()
    assert "blind" not in at.query_params and "agreement needs two reviewers" in texts(at)
    at.toggle(key="review_blind").set_value(True).run()
    assert at.query_params["blind"] == "1"
    at.switch_page("pages/cases.py").run()
    at.switch_page("pages/review.py").run()
    assert not at.exception and at.toggle(key="review_blind").value
    assert "Downloads are off in blind review" in texts(at)


def test_decided_by_is_the_reviewers_standing_decisions(store_copy):
    """Names compare as the queue compares them ('bob ' is Bob); an undone decision no longer counts; a decision
    someone made since still does (the reviewer decided it)."""
    from store.db import open_store
    from store.labels import record_label_event, undo_last
    from store.nuclei import sample_nuclei
    from store.review import decided_by

    path, _ = store_copy
    with open_store(path) as s:
        a, b, c = sample_nuclei(s, "LINE-MNA")["nucleus_id"].astype(int).tolist()[:3]
        record_label_event(s, a, 1, "Bob")
        record_label_event(s, a, 0, "Ann")
        record_label_event(s, b, 1, "bob ")
        record_label_event(s, c, 1, "Bob")
        undo_last(s, "Bob")
        assert decided_by(s, " BOB", [a, b, c]) == {a, b}
        assert decided_by(s, "Ann", [a, b, c]) == {a} and decided_by(s, "", [a, b, c]) == set()


def test_a_blind_decision_on_a_conflict_is_a_third_read_not_an_adjudication(store_copy, monkeypatch):
    """Ann and Carl disagree on Y; Bob, blind, sides with Ann. Before, Bob's decision was stored like any other and
    counted as an adjudication: the card listed Ann and Carl only, Bob as '(adjudication)', and agreement left him
    out. Now it is stored as a blind read: a third review, the conflict settled by majority (2 of 3)."""
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")
    path, _ = store_copy
    x, y, z = _others_decide(path)
    at = _blind_page()
    decision(at, "non").click().run()
    assert card_nucleus(at) == y
    decision(at, "mna").click().run()
    assert not at.exception and any("a blind read" in m.value for m in at.success)
    ev = events(path)
    assert ev.iloc[-1][["nucleus_id", "value", "reviewer", "blind"]].tolist() == [y, "1", "Bob", True]
    assert ev.iloc[-2]["blind"] and not ev.iloc[-3]["blind"]  # Bob's first one too; Carl's not
    at.segmented_control(key="review_mode").set_value("Conflicts").run()
    progress = at.get("progress")[0].proto.text
    assert "1 of 2 conflicts settled" in progress and "1 by majority" in progress
    at.toggle(key="review_include_settled").set_value(True).run()
    for _ in range(3):
        if card_nucleus(at) == y:
            break
        at.button(key="review_skip").click().run()
    assert "settled by majority" in texts(at)
    reviews = frame_with(at, "Reviewer")
    assert reviews[["Reviewer", "Decision"]].values.tolist() == [
        ["Ann", "MNA"], ["Bob (blind read)", "MNA"], ["Carl", "non-MNA"]]
