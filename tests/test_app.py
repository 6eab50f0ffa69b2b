"""Dashboard pages under ``streamlit.testing.v1.AppTest`` on the small test store.

Each test copies the session's small store (see ``test_app_store.py``) so writes stay
local, points ``GENUINE_DB`` at it and drives ``app.py`` like a browser session would.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from _store_fakes import private_store_copy  # noqa: E402
from test_app_store import SAMPLES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
PAGES = ["cases", "review", "embeddings", "probe", "ingest", "models"]
TIMEOUT = 120


def open_page(page: str, reviewer: str | None = None) -> AppTest:
    """Run the app, switch to ``pages/<page>.py`` and run it."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if reviewer is not None:
        at.session_state["reviewer"] = reviewer
    at.run()
    if page != "cases":
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _curate_lines(s, n: int) -> None:
    """Dr. Test labels the first ``n`` nuclei of LINE-MNA as MNA and of LINE-NON as non-MNA."""
    from store.labels import record_label_event
    from store.nuclei import sample_nuclei

    for sample, label in (("LINE-MNA", 1), ("LINE-NON", 0)):
        for nid in sample_nuclei(s, sample)["nucleus_id"].tolist()[:n]:
            record_label_event(s, nid, label, "Dr. Test")


def _stub_launch(monkeypatch) -> list[list[str]]:
    """Retraining runs launch a no-op process instead of ``genuine train``; returns the commands they were given."""
    import sys

    from pages import retrain

    launched, launch = [], retrain._launch
    monkeypatch.setattr(retrain, "_launch",
                        lambda rec, cmd, mode: launched.append(cmd) or launch(rec, [sys.executable, "-c", "pass"], mode))
    return launched


def texts(at: AppTest) -> str:
    """All markdown, captions, alerts and headings of the page, joined."""
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption]
    for kind in (at.info, at.warning, at.error, at.success, at.title, at.subheader):
        parts += [e.value for e in kind]
    return "\n".join(str(p) for p in parts)


def events(path: Path) -> pd.DataFrame:
    """Label events of a store, oldest first (``store.labels.audit_trail``).

    The app under test holds the same file open in this process; DuckDB shares the
    database instance, so this sees its committed writes.
    """
    from store.db import open_store
    from store.labels import audit_trail

    return audit_trail(open_store(path))


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first dataframe on the page that has ``column``."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


# ----------------------------------------------------------------------------- empty store
@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_the_empty_state_without_a_store(page, tmp_path, monkeypatch):
    monkeypatch.setenv("GENUINE_DB", str(tmp_path / "missing.duckdb"))
    at = open_page(page)
    body = texts(at)
    assert "Nothing here yet" in body and "genuine demo" not in body  # the demo commands never fill a lab's store
    assert f"genuine ingest IMAGE --sample NAME --db {tmp_path / 'missing.duckdb'}" in body
    assert "the first ingest creates the store" in body
    assert not (tmp_path / "missing.duckdb").exists()  # looking never creates a store


def test_the_empty_state_suggests_the_demo_only_for_the_default_demo_store(tmp_path):
    from pages.common import REPO as APP_REPO
    from pages.common import empty_hint
    from store.location import DEFAULT_DB

    assert "`genuine demo`" in empty_hint(APP_REPO / DEFAULT_DB)
    assert "`genuine demo`" not in empty_hint(tmp_path / "lab.duckdb") and "Ingest" in empty_hint(tmp_path / "x")


@pytest.mark.parametrize("page", ["cases", "review", "embeddings", "probe", "models"])
def test_every_page_shows_the_empty_state_on_an_empty_store(page, tmp_path, monkeypatch):
    from store.db import open_store

    path = tmp_path / "empty.duckdb"
    open_store(path).close()  # schema only, no samples or models
    monkeypatch.setenv("GENUINE_DB", str(path))
    at = open_page(page)
    assert "Nothing here yet" in texts(at)


@pytest.mark.parametrize("page", ["cases", "ingest"])
def test_an_empty_file_shows_the_empty_state_like_a_missing_store(page, tmp_path, monkeypatch):
    path = tmp_path / "touched.duckdb"
    path.touch()  # e.g. `touch`: DuckDB refuses it as "not a valid DuckDB database file"
    monkeypatch.setenv("GENUINE_DB", str(path))
    at = open_page(page)
    assert not at.exception and not at.error
    assert "Nothing here yet" in texts(at)
    assert path.stat().st_size == 0  # looking never creates a store


@pytest.mark.parametrize("page", ["cases", "ingest"])
def test_a_file_that_is_no_store_is_named_without_blaming_other_programs(page, tmp_path, monkeypatch):
    path = tmp_path / "notes.duckdb"
    path.write_text("not a database")
    monkeypatch.setenv("GENUINE_DB", str(path))
    at = open_page(page)
    assert any("The store cannot be opened" in e.value for e in at.error)
    assert "check that it is a GENUINE store" in texts(at) and "Close other programs" not in texts(at)
    assert path.read_text() == "not a database"


@pytest.mark.parametrize("page", PAGES)
def test_a_store_of_a_newer_version_is_refused_on_every_page_without_a_traceback(page, tmp_path, monkeypatch):
    import duckdb

    from store.db import open_store

    path = tmp_path / "newer.duckdb"
    open_store(path).close()
    conn = duckdb.connect(str(path))
    conn.execute("INSERT INTO schema_version (version, note) VALUES (99, 'a later GENUINE')")
    conn.close()
    monkeypatch.setenv("GENUINE_DB", str(path))
    at = open_page(page)
    assert any("schema version 99 is newer than this program" in e.value for e in at.error)
    assert not at.file_uploader  # nothing is offered for upload into a store that cannot be opened


# ----------------------------------------------------------------------------- cases
def test_cases_table_has_every_sample_with_its_nucleus_count(store_copy):
    _, counts = store_copy
    at = open_page("cases")
    table = frame_with(at, "Sample")
    assert sorted(table["Sample"]) == sorted(SAMPLES)
    assert dict(zip(table["Sample"], table["Nuclei scored"])) == counts
    assert {"ratio-test MNA %", "intensity-test MNA %", "ratio-test 95 % CI", "Call", "QC flags"} <= set(table.columns)
    mix = table.set_index("Sample").loc["MIX-50"]
    assert mix["Expected %"] == pytest.approx(50.0)
    assert mix["Deviation (pp)"] == pytest.approx(mix["ratio-test MNA %"] - 50.0)
    # few nuclei in every sample: the call says so and the QC flag is raised
    assert set(table["Call"]) == {"not enough nuclei"}
    assert all("few nuclei" in f for f in table["QC flags"])


def test_cases_table_gives_qc_flags_and_every_header_room(store_copy):
    at = open_page("cases")
    table = next(d for d in at.dataframe if "Sample" in d.value.columns)
    config = json.loads(table.proto.columns)
    assert config["QC flags"]["width"] == "large"  # two flags were cut at "medium", even at 1920 px
    # numeric and interval columns are sized for their header (the right-most one was cut), 8 px per character
    sized = [c for c in table.value.columns if c.endswith(("%", " CI", "(pp)")) or c == "Nuclei scored"]
    assert "intensity-test 95 % CI" in sized and table.value.columns[-1] in sized
    assert {c: config[c]["width"] for c in sized} == {c: 24 + 8 * len(c) for c in sized}


def test_cases_filter_and_drilldown(store_copy):
    _, counts = store_copy
    at = open_page("cases")
    at.multiselect(key="cases_kinds").set_value(["mixture"]).run()
    assert frame_with(at, "Sample")["Sample"].tolist() == ["MIX-50"]
    at.selectbox(key="case_select").set_value("MIX-50").run()
    assert not at.exception
    assert "Case MIX-50" in [s.value for s in at.subheader]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Nuclei scored"] == str(counts["MIX-50"])
    # one gallery image per nucleus (fewer than the default maximum of 32), captioned "#id · prob"
    captions = [c for img in at.get("image") for c in img.captions if c.startswith("#")]
    assert len(captions) == counts["MIX-50"]
    downloads = [b.proto.label for b in at.get("download_button")]
    assert downloads == ["Report (HTML)", "All files (.zip)"]
    # no rerun on a download: a rerun replaces the deferred files, and a second quick click got none
    assert all(b.proto.ignore_rerun for b in at.get("download_button"))


def test_cases_drilldown_states_each_deviation_beside_its_own_estimate(store_copy):
    from store.db import open_store
    from store.summary import sample_summaries

    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    at.selectbox(key="case_select").set_value("MIX-50").run()
    with open_store(store_copy[0]) as s:
        row = sample_summaries(s).query("sample == 'MIX-50' and model == @primary").iloc[0]
    deltas = {m.label: m.delta for m in at.metric}
    assert deltas[f"MNA ({primary})"] == f"{row['deviation_pp']:+.1f} pp vs expected"
    assert deltas["Corrected"] == f"{row['corrected_deviation_pp']:+.1f} pp vs expected"


def test_cases_print_a_share_as_the_report_does(store_copy, monkeypatch):
    """20.04 % called MNA shows as 20.04 (not 20.0, which reads as 20 % or fewer), and 6.25 % as the report's 6.2
    in the table and the case metrics (the table's JavaScript formatting rounded the tie up to 6.3)."""
    import store.summary as summary_module

    real = summary_module.sample_summaries

    def shifted(store, *args, **kwargs):
        df = real(store, *args, **kwargs)
        mix, line = df["sample"] == "MIX-50", df["sample"] == "LINE-MNA"
        df.loc[mix, ["mna_pct", "ci_low_pct", "ci_high_pct", "call"]] = [20.04, 18.5, 21.7, "MNA"]
        df.loc[line, ["mna_pct", "corrected_low_pct"]] = [6.25, 0.04]
        return df

    monkeypatch.setattr(summary_module, "sample_summaries", shifted)
    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    table = next(d for d in at.dataframe if "Sample" in d.value.columns)
    config = json.loads(table.proto.columns)
    col = f"{primary} MNA %"
    assert config[col]["type_config"]["format"] == "%.2f"
    shares = table.value.set_index("Sample")[col]
    assert shares["MIX-50"] == 20.04 and shares["LINE-MNA"] == 6.2  # rounded as Python prints it
    at.selectbox(key="case_select").set_value("MIX-50").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics[f"MNA ({primary})"] == "20.04 %" and metrics["95 % CI"] == "18.5–21.7 %"
    at.selectbox(key="case_select").set_value("LINE-MNA").run()
    assert {m.label: m.value for m in at.metric}[f"MNA ({primary})"] == "6.2 %"


def test_cases_gallery_shows_the_calibrated_probability(store_copy):
    from store.db import open_store
    from store.nuclei import sample_nuclei

    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    at.selectbox(key="case_select").set_value("MIX-50").run()
    with open_store(store_copy[0]) as s:
        nuc = sample_nuclei(s, "MIX-50", primary).set_index("nucleus_id")
    captions = [c for img in at.get("image") for c in img.captions if c.startswith("#")]
    shown = {int(c.split(" · ")[0][1:]): float(c.split(" · ")[1]) for c in captions}
    assert shown and all(p == pytest.approx(nuc.loc[i, "prob_calibrated"], abs=0.005) for i, p in shown.items())


def test_cases_gallery_patches_fit_their_columns(store_copy, monkeypatch):
    from streamlit.elements.image import ImageMixin

    widths = []
    draw = ImageMixin.image

    def spy(self, image, caption=None, width="content", *args, **kwargs):
        if isinstance(caption, str) and caption.startswith("#"):
            widths.append(width)
        return draw(self, image, caption, width, *args, **kwargs)

    monkeypatch.setattr(ImageMixin, "image", spy)
    at = open_page("cases")
    at.selectbox(key="case_select").set_value("MIX-50").run()
    # eight fixed 96 px patches per row ran 8 px past the content edge at 1280 px: each fills its column
    assert widths and set(widths) == {"stretch"}


def test_cases_gallery_counts_an_excluded_nucleus_in_neither_class(store_copy):
    from store.db import open_store
    from store.labels import record_label_event
    from store.nuclei import sample_nuclei

    with open_store(store_copy[0]) as s:  # before the page caches the sample (its cache follows the session)
        gone = int(sample_nuclei(s, "MIX-50", "ratio-test")["nucleus_id"].iloc[0])
        record_label_event(s, gone, "exclude", "qa")
    at = open_page("cases")
    at.selectbox(key="case_select").set_value("MIX-50").run()
    with open_store(store_copy[0]) as s:
        nuc = sample_nuclei(s, "MIX-50", at.selectbox(key="cases_primary").value)
    at.number_input(key="case_gallery_n").set_value(200).run()
    scored = int(next(m.value for m in at.metric if m.label == "Nuclei scored"))
    assert scored == len(nuc) - 1

    def shown(group: str) -> set[int]:
        at.segmented_control(key="case_gallery_filter").set_value(group).run()
        return {int(c.split(" · ")[0][1:]) for img in at.get("image") for c in img.captions if c.startswith("#")}

    mna, non = shown("MNA"), shown("non-MNA")
    assert gone not in mna | non and len(mna) + len(non) == scored  # as the metrics count: 53 + 10 = 63, not 11
    assert shown("excluded") == {gone} and gone not in shown("uncertain")
    assert f"{len(non)} shown of {len(non)} non-MNA nuclei" in texts(at.segmented_control(key="case_gallery_filter")
                                                                      .set_value("non-MNA").run())


def test_cases_gallery_uncertain_means_what_the_qc_flag_counts(store_copy):
    from store.db import open_store
    from store.nuclei import sample_nuclei
    from store.registry import list_models
    from store.summary import uncertainty_threshold

    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    at.selectbox(key="case_select").set_value("MIX-50").run()
    at.segmented_control(key="case_gallery_filter").set_value("uncertain").run()
    at.number_input(key="case_gallery_n").set_value(200).run()
    with open_store(store_copy[0]) as s:
        method = list_models(s).set_index("name").at[primary, "uncertainty_method"]
        nuc = sample_nuclei(s, "MIX-50", primary)
    want = set(nuc.loc[nuc["uncertainty"] >= uncertainty_threshold(method), "nucleus_id"])
    shown = {int(c.split(" · ")[0][1:]) for img in at.get("image") for c in img.captions if c.startswith("#")}
    assert want and shown == want


def test_the_uncertainty_names_its_mc_dropout_passes_on_the_cases_and_models_pages(store_copy):
    from store.db import open_store

    with open_store(store_copy[0]) as s:  # the small store's fake models record none; an ingest would
        s.execute("UPDATE models SET uncertainty_method = 'mc_dropout_std'")
        s.execute("UPDATE scan_models SET mc_samples = 30")
    at = open_page("cases")
    at.selectbox(key="case_select").set_value("MIX-50").run()
    assert "uncertain: MC-dropout standard deviation over 30 passes of at least" in (
        at.segmented_control(key="case_gallery_filter").help)
    at = open_page("models")
    assert set(frame_with(at, "Uncertainty")["Uncertainty"]) == {"MC-dropout standard deviation over 30 passes"}


def test_cases_filters_without_a_match_say_so_and_open_no_case(store_copy):
    at = open_page("cases")
    at.text_input(key="cases_search").set_value("no-such-sample").run()
    assert not at.exception
    assert any("No sample matches" in i.value for i in at.info)
    assert not [s.value for s in at.subheader if s.value.startswith("Case ")]


def test_cases_link_to_an_unknown_sample_warns(store_copy):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["case"] = "NOPE"
    at.run()
    assert any("No scored sample named 'NOPE'" in w.value for w in at.warning)


def test_cases_link_opens_the_case(store_copy):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["case"] = "LINE-NON"
    at.run()
    assert not at.exception
    assert at.selectbox(key="case_select").value == "LINE-NON"
    assert "Case LINE-NON" in [s.value for s in at.subheader]


def test_cases_address_follows_the_open_case_and_outlines_follow_the_model_for_calls(store_copy):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["case"] = "LINE-NON"
    at.run()
    at.selectbox(key="case_select").set_value("MIX-50").run()
    assert at.query_params["case"] == "MIX-50"  # a copied address opens the case on screen
    models = at.selectbox(key="cases_primary").options
    assert len(models) > 1 and at.selectbox(key="case_colour_model").value == at.selectbox(key="cases_primary").value
    other = next(m for m in models if m != at.selectbox(key="cases_primary").value)
    at.selectbox(key="cases_primary").set_value(other).run()
    assert not at.exception and at.selectbox(key="case_colour_model").value == other
    assert at.selectbox(key="case_select").value == "MIX-50" and at.query_params["model"] == other
    again = AppTest.from_file(APP, default_timeout=TIMEOUT)  # the copied address, opened elsewhere
    again.query_params.update(case="MIX-50", model=other)
    again.run()
    assert not again.exception and again.selectbox(key="cases_primary").value == other
    assert again.selectbox(key="case_select").value == "MIX-50"


def test_reviewer_name_is_kept_in_the_address_for_a_reload_or_a_copied_link(store_copy):
    """A name entered goes into ?reviewer= beside ?case=; a new session opened on that address (a reload, or
    /ingest in a new tab) starts with it instead of asking for a name again."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["case"] = "LINE-NON"
    at.run()
    at.sidebar.text_input(key="reviewer").input("Dr. Ann").run()
    assert at.query_params["reviewer"] == "Dr. Ann" and at.query_params["case"] == "LINE-NON"  # both kept
    reload = AppTest.from_file(APP, default_timeout=TIMEOUT)  # the same address in a new tab, on /ingest
    reload.query_params.update(reviewer="Dr. Ann")
    reload.run()
    reload.switch_page("pages/ingest.py").run()
    assert not reload.exception, [e.value for e in reload.exception]
    assert reload.sidebar.text_input(key="reviewer").value == "Dr. Ann"
    assert "Enter your name under **Reviewer**" not in texts(reload)
    assert reload.query_params["reviewer"] == "Dr. Ann"
    reload.sidebar.text_input(key="reviewer").input("").run()  # cleared: a reload must not bring it back
    assert "reviewer" not in reload.query_params
    reload.run()
    assert reload.sidebar.text_input(key="reviewer").value == ""


def test_reviewer_name_in_the_address_that_fails_the_name_check_is_ignored(store_copy):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(reviewer="Ann\x1b[2J", case="LINE-NON")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.text_input(key="reviewer").value == ""
    assert any("reviewer name in the address was ignored: it needs a name without control characters" in c.value
               for c in at.sidebar.caption)
    assert "reviewer" not in at.query_params and at.query_params["case"] == "LINE-NON"


def test_reviewer_name_typed_with_control_characters_is_not_taken(store_copy):
    at = open_page("cases")
    at.sidebar.text_input(key="reviewer").input("Ann\x1b[2J").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.text_input(key="reviewer").value == "" and "reviewer" not in at.query_params
    assert any("reviewer name typed was ignored: it needs a name without control characters" in c.value
               for c in at.sidebar.caption)
    at.sidebar.text_input(key="reviewer").input("Dr. Ann").run()  # a good name is taken, the warning goes
    assert at.query_params["reviewer"] == "Dr. Ann"
    assert not any("was ignored" in c.value for c in at.sidebar.caption)


# ----------------------------------------------------------------------------- review
def decision(at: AppTest, which: str):
    """The ``which`` (mna, non, exclude) decision button of the card on screen (its key names the card)."""
    return next(b for b in at.button if str(b.key).startswith(f"decide_{which}_"))


def _path_to(node, match, path=()) -> tuple | None:
    """The child indices leading from ``node`` to the first element ``match(element)`` accepts (its place on
    the page: the browser redraws an element whose place changed, dropping the keyboard focus in it)."""
    for i, child in sorted(getattr(node, "children", {}).items()):
        if match(child):
            return (*path, i)
        found = _path_to(child, match, (*path, i))
        if found is not None:
            return found
    return None


def test_review_card_keeps_its_place_when_the_last_decision_message_goes(store_copy):
    """A rerun that is no decision (e.g. the note's text sent as Tab leaves it) drops the last decision's
    message; the card must stay where it was: in the browser a card that moved up was drawn anew, the MNA
    button Tab had focused was gone and Enter pressed nothing (the browser test's keyboard step, under load)."""
    at = open_page("review", reviewer="Dr. Test")
    decision(at, "mna").click().run()
    assert any("recorded" in s.value for s in at.success)
    note = lambda e: getattr(e, "key", None) == "review_note"  # noqa: E731
    before = _path_to(at.main, note)
    at.text_input(key="review_note").input("mn").run()  # what Tab sends
    assert not any("recorded" in s.value for s in at.success) and not at.exception
    assert _path_to(at.main, note) == before is not None


def test_review_a_second_curator_on_a_stale_card_does_not_overwrite_the_first(store_copy):
    path, _ = store_copy
    ann = open_page("review", reviewer="Ann")
    bob = open_page("review", reviewer="Bob")
    card = lambda at: int([m.value for m in at.markdown if m.value.startswith("#### Nucleus")][0].split()[-1])  # noqa: E731
    nid = card(ann)
    assert card(bob) == nid  # both look at the same nucleus
    decision(ann, "mna").click().run()
    decision(bob, "non").click().run()  # his card still says 'no decision'
    assert not bob.exception
    assert any(f"nucleus {nid} was decided meanwhile: MNA by Ann" in e.value for e in bob.error)
    ev = events(path)
    assert len(ev) == 1 and ev.iloc[0]["reviewer"] == "Ann"


def test_review_a_second_curator_with_include_reviewed_moves_on_after_each_decision(store_copy):
    """Double review: Bob turns on Include reviewed to review Ann's nuclei; after his decision the next card
    shows (the decided nucleus stayed the first card, and each press decided it again)."""
    path, _ = store_copy
    ann = open_page("review", reviewer="Ann")
    card = lambda at: int([m.value for m in at.markdown if m.value.startswith("#### Nucleus")][0].split()[-1])  # noqa: E731
    first = card(ann)
    decision(ann, "mna").click().run()
    bob = open_page("review", reviewer="Bob")
    bob.toggle(key="review_include").set_value(True).run()
    assert card(bob) == first  # Ann's nucleus, for the second review
    decision(bob, "non").click().run()
    assert not bob.exception and card(bob) != first
    assert "**1 of " in bob.get("progress")[0].proto.text and "reviewed by you**" in bob.get("progress")[0].proto.text
    ev = events(path)
    assert ev["reviewer"].tolist() == ["Ann", "Bob"] and set(ev["nucleus_id"]) == {first}


def test_review_progress_with_include_reviewed_is_the_current_reviewers(store_copy, monkeypatch):
    """A second curator's progress line counted every curator's decisions ('2 of 16 reviewed · 14 to go') while
    their queue still held 15 nuclei: with Include reviewed, done and to go are theirs."""
    from store.db import open_store
    from store.review import review_progress

    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")
    path, _ = store_copy
    ann = open_page("review", reviewer="Ann")
    decision(ann, "mna").click().run()
    decision(ann, "exclude").click().run()
    bob = open_page("review", reviewer="Bob")
    bob.toggle(key="review_include").set_value(True).run()
    decision(bob, "non").click().run()
    assert not bob.exception
    with open_store(path) as s:
        total = review_progress(s)["total"]
    bar = bob.get("progress")[0].proto
    assert bar.text == (f"**1 of {total} reviewed by you** · {total - 1} to go · 2 with a decision (anyone's) · "
                        "1 excluded")
    assert bar.value == int(100 / total)
    assert len(frame_with(bob, "Decision")) == 1  # his latest decisions: the one
    bob.toggle(key="review_include").set_value(False).run()  # a first read: everyone's decisions count
    assert bob.get("progress")[0].proto.text.startswith(f"**2 of {total} reviewed** · {total - 2} to go")


def test_review_decision_writes_exactly_one_event_with_the_reviewer(store_copy):
    path, _ = store_copy
    at = open_page("review", reviewer="Dr. Test")
    first = [m.value for m in at.markdown if m.value.startswith("#### Nucleus")][0]
    nid = int(first.split()[-1])
    progress_before = at.get("progress")[0].proto.text
    at.text_input(key="review_note").input("clear amplification").run()
    decision(at, "mna").click().run()
    assert not at.exception
    ev = events(path)
    assert len(ev) == 1
    assert ev.iloc[0]["reviewer"] == "Dr. Test"
    assert ev.iloc[0]["nucleus_id"] == nid and ev.iloc[0]["value"] == "1"
    assert ev.iloc[0]["note"] == "clear amplification"
    assert any("recorded" in s.value for s in at.success)
    # the card moved on and the progress counts the decision
    shown = [m.value for m in at.markdown if m.value.startswith("#### Nucleus")]
    assert shown and int(shown[0].split()[-1]) != nid
    before = int(progress_before.split("**")[1].split()[0])
    after = int(at.get("progress")[0].proto.text.split("**")[1].split()[0])
    assert after == before + 1
    assert at.text_input(key="review_note").value == ""


def test_review_a_press_for_a_card_already_decided_is_ignored(store_copy, monkeypatch):
    """A key pressed twice before the page caught up reaches the server bound to the decided nucleus."""
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "60")  # 'too soon' however slow this machine runs the page
    path, _ = store_copy
    at = open_page("review", reviewer="Dr. Test")
    decision(at, "non").click().run()
    (decided,) = events(path)["nucleus_id"].tolist()
    at.session_state["review_shown"] = None  # what the first press left: no card drawn since
    decision(at, "non").click().run()
    assert not at.exception and len(events(path)) == 1
    decision(at, "non").click().run()  # the next card is drawn, but the press came too soon after
    assert len(events(path)) == 1
    assert any("after a decision was ignored" in m.value for m in at.info)
    at.session_state["review_last_decision"] = -1e9  # a moment later: the curator has seen the next card
    decision(at, "non").click().run()  # the page has drawn the next card: that one is decided
    assert len(events(path)) == 2 and events(path)["nucleus_id"].tolist()[1] != decided


def test_review_a_double_press_never_decides_the_next_card_unseen(store_copy, monkeypatch):
    """The second press of a double press reaches the server after the next card was drawn, but it was made
    on the card the browser still showed: that button is gone, so nothing more is decided."""
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")  # however late the second press arrives
    path, _ = store_copy
    at = open_page("review", reviewer="Dr. Test")
    pressed = decision(at, "mna")  # the button the browser shows for the first card
    pressed.click().run()
    (first,) = events(path)["nucleus_id"].tolist()
    shown = int([m.value for m in at.markdown if m.value.startswith("#### Nucleus")][0].split()[-1])
    assert shown != first
    pressed.click().run()  # the same key pressed again before the browser drew the next card
    assert not at.exception and events(path)["nucleus_id"].tolist() == [first]
    assert not at.error  # one's own double press is no conflict with another curator
    decision(at, "mna").click().run()  # a press on the card now on screen decides it
    assert events(path)["nucleus_id"].tolist() == [first, shown]


def test_review_undo_appends_a_reverting_event(store_copy):
    path, _ = store_copy
    at = open_page("review", reviewer="Dr. Test")
    decision(at, "exclude").click().run()
    at.button(key="review_undo").click().run()
    assert not at.exception
    ev = events(path)
    assert ev["value"].tolist() == ["exclude", "unset"]
    assert ev.iloc[1]["undoes"] == ev.iloc[0]["event_id"]
    assert set(ev["reviewer"]) == {"Dr. Test"}
    nid = int(ev.iloc[0]["nucleus_id"])
    assert any(f"nucleus {nid} is back to **no decision**" in m.value for m in at.success)
    log = frame_with(at, "Decision")  # the reviewer's latest decisions, in words
    assert log["Decision"].tolist() == ["no decision (undo)", "excluded"]
    assert log["Before"].tolist() == ["excluded", "no decision"]


def test_review_skip_says_where_the_nucleus_went(store_copy):
    at = open_page("review", reviewer="Dr. Test")
    first = [m.value for m in at.markdown if m.value.startswith("#### Nucleus")][0]
    at.button(key="review_skip").click().run()
    nid = first.split()[-1]
    assert any(f"Nucleus {nid} skipped" in i.value for i in at.info)


def test_review_needs_a_reviewer_name(store_copy):
    path, _ = store_copy
    at = open_page("review")
    assert decision(at, "mna").disabled
    assert "Reviewer" in texts(at)
    assert len(events(path)) == 0


def test_review_exports_curated_labels(store_copy):
    at = open_page("review", reviewer="Dr. Test")
    decision(at, "non").click().run()
    labels = [b for b in at.get("download_button") if "Curated labels" in b.proto.label]
    assert labels and labels[0].proto.label == "Curated labels (1)"


def test_review_downloads_do_not_rerun_the_page(store_copy, monkeypatch, tmp_path):
    """A rerun replaces the Training set's deferred file: a download pressed right after another one asked
    the server for a file it had dropped ('Deferred file ... not found') and gave nothing. The downloads
    do not rerun the page, and the Training set made when pressed is the store's curated set."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    from store.db import open_store
    from store.export import curated_training_set
    from training.labelled import LabelledPatches

    deferred = {}  # file id -> the callable the button's file is made by (the test runtime exists only in a run)
    add_deferred = MediaFileManager.add_deferred

    def keep(self, data_callable, *args, **kwargs):
        file_id = add_deferred(self, data_callable, *args, **kwargs)
        deferred[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")
    at = open_page("review", reviewer="Dr. Test")
    decision(at, "mna").click().run()
    decision(at, "non").click().run()
    buttons = {b.proto.label: b.proto for b in at.get("download_button")}
    assert set(buttons) == {"Curated labels (2)", "Training set", "Audit trail"}
    assert all(b.ignore_rerun for b in buttons.values())
    (tmp_path / "curated.npz").write_bytes(deferred[buttons["Training set"].deferred_file_id]())
    got = LabelledPatches.load(tmp_path / "curated.npz")
    with open_store(store_copy[0]) as s:
        want = curated_training_set(s)
    assert sorted(got.labels.tolist()) == [0, 1]
    assert got.nucleus_key.tolist() == want.nucleus_key.tolist() and np.array_equal(got.patches, want.patches)


def test_review_training_set_download_says_why_it_is_unavailable(store_copy, monkeypatch):
    """Only excluded nuclei: the training set would be empty, so its download is disabled with the reason (a
    deferred download that fails gives the browser no file and the page no message)."""
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")  # scripted clicks come faster than any curator's
    at = open_page("review", reviewer="Dr. Test")

    def training_set():
        return next(b for b in at.get("download_button") if b.proto.label == "Training set")

    assert training_set().proto.disabled  # nothing curated yet
    decision(at, "exclude").click().run()
    assert [b.proto.label for b in at.get("download_button") if "Curated labels" in b.proto.label] == \
        ["Curated labels (1)"]
    assert training_set().proto.disabled
    assert "no curated labels to export (excluded nuclei are left out)" in training_set().proto.help
    assert "Training set not available: no curated labels to export" in texts(at)
    decision(at, "mna").click().run()
    assert not training_set().proto.disabled
    assert "Training set not available" not in texts(at)


# ----------------------------------------------------------------------------- probe
@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory) -> Path:
    """A tiny randomly initialised GENUINE model folder (32 px patches)."""
    torch = pytest.importorskip("torch")
    from genuine_core.models import GenuineClassifier, preset_config

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-genuine"
    GenuineClassifier.from_config(preset_config("tiny", kind="genuine")).save(folder, metrics={})
    return folder


def test_probe_page_starts_on_the_genuine_model(store_copy, tiny_model_folder, tmp_path):
    from genuine_core.models import RatioBaseline, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    ratio_folder = tmp_path / "tiny-ratio"
    RatioBaseline.from_config(preset_config("tiny", kind="ratio")).save(ratio_folder, metrics={})
    path, _ = store_copy
    with open_store(path) as s:
        register_model(s, load_model(ratio_folder))  # registered first, listed first
        register_model(s, load_model(tiny_model_folder))
    at = open_page("probe")
    assert at.selectbox(key="probe_model").options == ["tiny-ratio", "tiny-genuine"]
    assert at.selectbox(key="probe_model").value == "tiny-genuine"


def test_probe_page_starts_on_an_active_model_and_labels_a_retired_one(store_copy, tiny_model_folder, tmp_path):
    from dataclasses import replace

    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model, retire_model

    newer = tmp_path / "tiny-genuine-2"
    GenuineClassifier.from_config(replace(preset_config("tiny", kind="genuine"), seed=1)).save(newer, metrics={})
    path, _ = store_copy
    with open_store(path) as s:
        register_model(s, load_model(tiny_model_folder))  # listed first, then retired by an upgrade
        register_model(s, load_model(newer, name="tiny-genuine-2"))
        retire_model(s, "tiny-genuine", by="tester")
    at = open_page("probe")
    box = at.selectbox(key="probe_model")
    assert box.value == "tiny-genuine-2"
    assert "tiny-genuine (retired)" in box.options


def test_probe_page_refuses_a_folder_that_holds_other_weights_than_registered(store_copy, tiny_model_folder,
                                                                              tmp_path):
    import shutil
    from dataclasses import replace

    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    folder = tmp_path / "swapped"
    shutil.copytree(tiny_model_folder, folder)
    path, _ = store_copy
    with open_store(path) as s:
        register_model(s, load_model(folder, name="swapped"))
    shutil.rmtree(folder)  # other weights saved into the registered folder afterwards
    GenuineClassifier.from_config(replace(preset_config("tiny", kind="genuine"), seed=1)).save(folder, metrics={})
    at = open_page("probe")
    at.selectbox(key="probe_model").set_value("swapped")
    at.number_input(key="probe_n").set_value(2)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    assert "probe_result" not in at.session_state
    assert any("no longer holds the weights registered" in e.value for e in at.error), [e.value for e in at.error]


def test_probe_page_returns_a_curve_with_one_point_per_condition(store_copy, tiny_model_folder):
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    path, _ = store_copy
    with open_store(path) as s:
        register_model(s, load_model(tiny_model_folder))
    at = open_page("probe")
    at.selectbox(key="probe_model").set_value("tiny-genuine")
    at.number_input(key="probe_n").set_value(3)
    at.slider(key="probe_counts").set_value((0, 8))
    at.number_input(key="probe_step").set_value(4)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    res = at.session_state["probe_result"]
    curve = res["curve"]
    assert curve["n_mycn"].tolist() == [0, 4, 8]
    assert curve["n"].tolist() == [3, 3, 3]
    assert curve["mean_pred"].between(0, 1).all()
    assert len(res["results"]) == 9
    shown = frame_with(at, "mean call")
    assert len(shown) == 3 and shown["probes"].tolist() == [3, 3, 3]
    # the run is recorded in the store with its settings and one result row per probe
    from store.probes import list_probe_runs, probe_results

    runs = list_probe_runs(open_store(path))
    assert runs["id"].tolist() == [res["run_id"]] and runs.iloc[0]["params"]["n_per_condition"] == 3
    saved = probe_results(open_store(path), res["run_id"])
    assert len(saved) == 9 and saved["n_mycn"].tolist() == [0] * 3 + [4] * 3 + [8] * 3
    assert frame_with(at, "run")["run"].tolist() == [res["run_id"]]


@pytest.fixture()
def stub_probe_model(store_copy, tmp_path, monkeypatch):
    """Register a model scored by a stand-in ``predict`` and return ``(path, name, set_predict)``.

    ``set_predict(fn)`` sets ``fn(patches (N, 3, P, P)) -> (prob (N,), prob_calibrated (N,), call (N,))``;
    ``genuine_core.pipeline.load_model`` is patched to hand the page this model (32 px patches),
    so the page's probe run takes a second. The name is unique per test, so cached models never leak.
    """
    from types import SimpleNamespace

    import importlib

    from genuine_core import pipeline
    from store.db import open_store
    from store.registry import register_model

    path, _ = store_copy
    fns = {"predict": lambda p: (np.full(len(p), 0.9), np.full(len(p), 0.8), np.ones(len(p), int))}

    def predict(patches):
        prob, cal, call = fns["predict"](patches)
        table = pd.DataFrame({"prob": prob, "prob_calibrated": cal, "uncertainty": 0.0, "call": call})
        green = patches[:, 1].mean(axis=(1, 2))
        return SimpleNamespace(table=table, embeddings=np.stack([green, patches[:, 0].mean(axis=(1, 2))], 1))

    name = f"stub probe {tmp_path.name}"  # a space: commands that name it must quote it
    model = pipeline.ScoringModel(name=name, kind="genuine", preset="test", patch_size=32, checksum="c" * 64,
                                  config={"kind": "genuine"}, metrics={}, folder=str(tmp_path), predict=predict)
    with open_store(path) as s:
        register_model(s, model)
    for module in ("store.demo", "store.ingest", "store.rescore"):  # they bind load_model by name at import:
        importlib.import_module(module)                              # bind the real one before it is patched
    monkeypatch.setattr(pipeline, "load_model", lambda folder, name=None, mc_samples=0: model)
    return path, name, lambda fn: fns.__setitem__("predict", fn)


def probe_widget(at: AppTest, key: str):
    """The widget with ``key`` (slider, number input, toggle, radio or selectbox)."""
    for kind in (at.slider, at.number_input, at.toggle, at.radio, at.selectbox):
        try:
            return kind(key=key)
        except KeyError:
            continue
    raise KeyError(key)


def run_probe_page(name: str, **widgets) -> AppTest:
    """Open the probe page, choose model ``name``, N = 3, set ``widgets`` (key suffix -> value), run."""
    at = open_page("probe")
    at.selectbox(key="probe_model").set_value(name)
    at.number_input(key="probe_n").set_value(3)
    for key, value in widgets.items():
        probe_widget(at, f"probe_{key}").set_value(value)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    return at


def crossing_metric(at: AppTest) -> tuple[str, str]:
    """The value and help of the page's 'Model crosses 0.5 at' metric."""
    m = next(m for m in at.metric if m.label == "Model crosses 0.5 at")
    return m.value, m.proto.help


def test_probe_page_says_where_a_curve_above_the_level_starts(stub_probe_model):
    _, name, set_predict = stub_probe_model
    set_predict(lambda p: (np.full(len(p), 0.9), np.full(len(p), 0.8), np.ones(len(p), int)))
    at = run_probe_page(name, counts=(30, 40), step=5, fixed_size=12.0)
    value, help_text = crossing_metric(at)
    why = "at or below 30 (every condition ≥ 0.5)"  # evaluate's crossing: x[0] = 30
    assert value == "no crossing" and f"No crossing: {why}." in help_text
    assert f"0.5 crossing: model {why}, ground truth" in texts(at)


def test_probe_examples_follow_the_sidebar_patch_colours(stub_probe_model):
    _, name, _ = stub_probe_model
    at = open_page("probe")
    at.sidebar.get("button_group")[0].set_value("magenta/green")
    at.selectbox(key="probe_model").set_value(name)
    at.number_input(key="probe_n").set_value(3)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    assert "the model sees exactly these patches; NMI magenta · MYCN green · DAPI grey)" in texts(at)


def test_probe_page_says_no_condition_reaches_the_level(stub_probe_model):
    _, name, set_predict = stub_probe_model
    set_predict(lambda p: (np.full(len(p), 0.1), np.full(len(p), 0.2), np.zeros(len(p), int)))
    at = run_probe_page(name, counts=(30, 40), step=5)
    value, help_text = crossing_metric(at)
    assert value == "no crossing" and "No crossing: above 40 (no condition reaches 0.5)." in help_text
    assert "0.5 crossing: model above 40 (no condition reaches 0.5), ground truth" in texts(at)


def test_probe_page_metric_of_a_single_condition_is_short_enough_to_read(stub_probe_model):
    # a MYCN range of 0-0 printed "above 0 (no condition reaches …" in the metric, cut off at its edge
    _, name, set_predict = stub_probe_model
    set_predict(lambda p: (np.full(len(p), 0.1), np.full(len(p), 0.2), np.zeros(len(p), int)))
    at = run_probe_page(name, counts=(0, 0))
    assert [m.value for m in at.metric] == ["no crossing", "no crossing"]
    assert "No crossing: above 0 (no condition reaches 0.5)." in crossing_metric(at)[1]
    # the truth's range only: nothing implies it crosses beyond it (as a truth that signal size never changes)
    assert ("0.5 crossing: model above 0 (no condition reaches 0.5), ground truth never reaches 0.5 here "
            "(max 0.00).") in texts(at)
    truth = next(m for m in at.metric if m.label == "Truth crosses 0.5 at")
    assert "No crossing: never reaches 0.5 here (max 0.00)." in truth.proto.help


def test_probe_page_lists_every_crossing_of_a_wavy_ground_truth(stub_probe_model, monkeypatch):
    from genuine_core import plotting

    summary = plotting.probe_summary
    monkeypatch.setattr(plotting, "probe_summary", lambda *a, **k: summary(*a, **k).assign(
        truth=[0.0, 0.6, 0.4, 0.6, 0.4]))  # merging levels the truth off near 0.5
    _, name, _ = stub_probe_model
    at = run_probe_page(name, counts=(0, 16), step=4)
    assert "ground truth 4 times, at 3.33, 6.00, 10.00, 14.00." in texts(at)


def test_probe_page_saves_raw_and_calibrated_probabilities_and_plots_calibrated(stub_probe_model):
    from store.db import open_store
    from store.probes import probe_results

    path, name, set_predict = stub_probe_model
    set_predict(lambda p: (np.full(len(p), 0.9), np.full(len(p), 0.7), np.ones(len(p), int)))
    at = run_probe_page(name, counts=(0, 4), step=4)
    res = at.session_state["probe_result"]
    saved = probe_results(open_store(path), res["run_id"])
    assert saved["prob"].tolist() == pytest.approx([0.9] * 6)
    assert saved["prob_calibrated"].tolist() == pytest.approx([0.7] * 6)
    assert frame_with(at, "mean P")["mean P"].tolist() == pytest.approx([0.7, 0.7])  # the calibrated one


def fake_umap(monkeypatch, splits: list) -> None:
    """Patch ``store.umap`` so the page finds stored coordinates (one nucleus per ``splits`` entry) and a map."""
    import store.umap as umap_store

    points = pd.DataFrame({"nucleus_id": range(len(splits)), "x": np.arange(len(splits), dtype=float),
                           "y": 0.0, "split": splits})
    monkeypatch.setattr(umap_store, "umap_points", lambda store, model, sample=None, **kw: points)
    monkeypatch.setattr(umap_store, "transform_embeddings",
                        lambda store, model, emb: np.zeros((len(emb), 2), np.float32))


def plotly_array(values) -> list:
    """A trace's array from a chart spec: plotly encodes numeric arrays as {"dtype", "bdata": base64}."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), np.dtype(values["dtype"])).tolist()
    return list(values)


def umap_backdrop_trace(at: AppTest) -> dict:
    """The first (backdrop) trace of the page's probe UMAP."""
    chart = next(c for c in at.get("plotly_chart") if "Probe conditions on the model" in c.proto.spec)
    return json.loads(chart.proto.spec)["data"][0]


@pytest.mark.parametrize("splits, name, xs", [
    (["train", "mixture", "train", "test", None], "training nuclei", [0.0, 2.0]),
    (["mixture", None, None], "stored nuclei", [0.0, 1.0, 2.0]),
])
def test_probe_umap_backdrop_is_what_its_legend_says(stub_probe_model, monkeypatch, splits, name, xs):
    _, model, _ = stub_probe_model
    fake_umap(monkeypatch, splits)
    trace = umap_backdrop_trace(run_probe_page(model, counts=(0, 4), step=4))
    assert trace["name"] == name and plotly_array(trace["x"]) == xs


def test_probe_umap_backdrop_is_a_limited_subset_read_by_the_store(stub_probe_model, monkeypatch):
    # a lab store's map of a million nuclei was read whole and drawn whole behind the probes
    import store.umap as umap_store

    _, model, _ = stub_probe_model
    fake_umap(monkeypatch, ["mixture"] * 5)  # the model's map (transform_embeddings)
    limits = []

    def points(store, model, sample=None, **kw):
        limits.append(kw.get("limit"))
        frame = pd.DataFrame({"nucleus_id": range(5), "x": np.arange(5.0), "y": 0.0, "split": "mixture"})
        return frame if kw.get("limit") is None else frame.head(kw["limit"])

    monkeypatch.setattr(umap_store, "umap_points", points)
    trace = umap_backdrop_trace(run_probe_page(model, counts=(0, 4), step=4))
    assert limits and all(n is not None and n <= 20_000 for n in limits)  # the query is LIMITed
    assert plotly_array(trace["x"]) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_probe_umap_labels_every_other_size_with_one_decimal(stub_probe_model, monkeypatch):
    # the report's 12 sizes were labelled "2.45", "3.41", ... and neighbours overprinted ("11.0912.0")
    import store.umap as umap_store

    _, model, _ = stub_probe_model
    fake_umap(monkeypatch, ["train"])
    monkeypatch.setattr(umap_store, "transform_embeddings",  # conditions apart on the map (probes by condition)
                        lambda store, model, emb: np.stack([np.arange(len(emb), dtype=float), np.zeros(len(emb))], 1))
    at = open_page("probe")
    at.selectbox(key="probe_model").set_value(model)
    at.get("button_group")[0].set_value("size").run()
    at.number_input(key="probe_n").set_value(2)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    chart = next(c for c in at.get("plotly_chart") if "Probe conditions on the model" in c.proto.spec)
    pts = next(t for t in json.loads(chart.proto.spec)["data"] if t.get("name") == "probe conditions")
    sizes = sorted(at.session_state["probe_result"]["results"]["signal_size"].unique())
    assert len(pts["text"]) == len(sizes) == 12
    assert pts["text"][1::2] == [""] * 6 and pts["text"][::2] == [f"{v:.1f}" for v in sizes[::2]]
    assert "Every other size is labelled, and a condition that lands on a labelled one is left" in texts(at)


def test_probe_page_without_a_umap_names_the_model_in_the_fit_command(stub_probe_model):
    _, model, _ = stub_probe_model
    body = texts(run_probe_page(model, counts=(0, 4), step=4))
    assert f"No UMAP is fitted for this model in the store (run `genuine umap --model '{model}'" in body


def test_probe_page_shows_why_a_missing_umap_map_cannot_place_the_probes(stub_probe_model, monkeypatch):
    import store.umap as umap_store

    _, model, _ = stub_probe_model
    fit = {"id": 1, "reducer_path": "umap_gone.npz", "reducer_sha256": "0" * 64}
    monkeypatch.setattr(umap_store, "latest_fit", lambda store, name: fit)  # a fit row whose file is gone
    at = run_probe_page(model, counts=(0, 4), step=4)
    warning = " ".join(w.value for w in at.warning)
    assert "The probes are not placed on the model's UMAP: UMAP map of" in warning
    assert "umap_gone.npz: cannot read UMAP map" in warning and f"genuine umap --model '{model}'" in warning
    assert "No UMAP is fitted" not in texts(at)


def test_probe_page_defaults_are_the_evaluation_figure_4_settings(stub_probe_model):
    from training.evaluate import PROBE_COUNT_SIZE, PROBE_COUNTS, PROBE_N, PROBE_NMI, PROBE_SIZES

    at = open_page("probe")
    assert at.number_input(key="probe_fixed_size").value == PROBE_COUNT_SIZE == 3.5
    assert at.slider(key="probe_counts").value == (PROBE_COUNTS[0], PROBE_COUNTS[-1]) == (0, 35)
    assert at.number_input(key="probe_nmi").value == PROBE_NMI and at.number_input(key="probe_n").value == PROBE_N
    assert at.slider(key="probe_sizes").value == (min(PROBE_SIZES), max(PROBE_SIZES))
    assert "The defaults are the evaluation report's Figure 4 settings: MYCN 0-35 with 2 NMI at σ 3.5 px" in texts(at)
    # the caption said "about a minute"; measured on a 2-core CPU: 16 s (count) and 4 s (size) idle, 50 s busy
    caption = texts(at)
    assert "about a minute" not in caption and "about 15 s for the genuine_cpu model on an idle 2-core CPU" in caption


def test_probe_page_size_controls_stop_at_the_generators_limit(stub_probe_model):
    # the page stopped at 12 px while genuine synth probe --signal-size took up to 40 px
    from genuine_core.synth.probe import MAX_SIGNAL_SIZE

    at = open_page("probe")
    assert at.slider(key="probe_sizes").max == MAX_SIGNAL_SIZE
    assert at.number_input(key="probe_fixed_size").max == MAX_SIGNAL_SIZE


def test_genuine_probe_writes_the_pages_curve_for_the_same_settings(stub_probe_model, tmp_path, capsys):
    # there was no command-line way to get the Probe page's curve
    from genuine_core import plotting
    from genuine_core.cli import main

    path, name, set_predict = stub_probe_model

    def by_green(p):  # calls a probe MNA when its MYCN channel is bright enough: the curve rises with the count
        green = p[:, 1].mean(axis=(1, 2))
        return np.minimum(green * 5, 1.0), np.minimum(green * 4, 1.0), (green > 0.1).astype(int)

    set_predict(by_green)
    out = tmp_path / "probe_out"
    argv = ["probe", "--model", name, "--db", str(path), "--vary", "count", "--counts", "0-8", "--count-step", "2",
            "--n", "3", "--seed", "5", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    at = run_probe_page(name, counts=(0, 8), step=2, seed=5)
    page = at.session_state["probe_result"]["curve"]
    cli = pd.read_csv(out / "probe_curve.csv")
    assert cli["mean_pred"].nunique() > 1  # the probes differ between conditions, so equal curves say something
    pd.testing.assert_frame_equal(cli, page.reset_index(drop=True), check_dtype=False)
    doc = json.loads((out / "probe.json").read_text())
    assert doc["crossings"] == pytest.approx(plotting.crossings(page["n_mycn"], page["mean_pred"], 0.5))
    assert doc["model"] == name and doc["model_checksum"] == "c" * 64 and doc["settings"]["seed"] == 5
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"
    assert main(argv) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--sizes", "1-13"]) == 2
    assert capsys.readouterr().err.strip() == "error: --sizes must be in [0.5, 12] px, got 13"


def test_genuine_probe_draws_into_the_same_real_nuclei_as_the_page(stub_probe_model, tmp_path, capsys):
    from genuine_core.cli import main

    path, name, set_predict = stub_probe_model

    def by_green(p):
        green = p[:, 1].mean(axis=(1, 2))
        return np.minimum(green * 5, 1.0), np.minimum(green * 4, 1.0), (green > 0.02).astype(int)

    set_predict(by_green)
    out = tmp_path / "probe_real"
    argv = ["probe", "--model", name, "--db", str(path), "--vary", "size", "--sizes", "1-9", "--size-steps", "3",
            "--fixed-count", "3", "--n", "3", "--seed", "2", "--background-sample", "LINE-NON", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    at = open_page("probe")
    at.segmented_control(key="probe_exp").set_value("size").run()
    at.selectbox(key="probe_model").set_value(name)
    for key, value in (("n", 3), ("sizes", (1.0, 9.0)), ("nsizes", 3), ("fixed_count", 3), ("seed", 2),
                       ("bg", "real nuclei from the store"), ("bg_sample", "LINE-NON")):
        probe_widget(at, f"probe_{key}").set_value(value)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    page = at.session_state["probe_result"]["curve"]
    assert page["mean_prob"].nunique() > 1  # the probes differ between conditions
    pd.testing.assert_frame_equal(pd.read_csv(out / "probe_curve.csv"), page.reset_index(drop=True),
                                  check_dtype=False)
    doc = json.loads((out / "probe.json").read_text())
    assert doc["settings"]["background"] == "store sample LINE-NON" and doc["settings"]["background_nuclei"]
    assert main(["probe", "--model", name, "--vary", "count", "--background-sample", "LINE-NON",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--background-sample needs --db" in capsys.readouterr().err


#: ``RUN_BOUNDS`` setting -> the Probe page's widgets and the ``genuine probe`` option that check it
PROBE_LIMITS = {"n": (["probe_n"], "--n"), "nmi": (["probe_nmi"], "--nmi"), "counts": (["probe_counts"], "--counts"),
                "fixed_count": (["probe_fixed_count"], "--fixed-count"), "count_step": (["probe_step"], "--count-step"),
                "size": (["probe_sizes", "probe_fixed_size"], "--fixed-size"),
                "size_steps": (["probe_nsizes"], "--size-steps"), "elastic": (["probe_elastic"], "--elastic"),
                "blur": (["probe_blur"], "--blur")}


def widget_limits(at: AppTest, key: str) -> tuple[float, float]:
    """(min, max) of the Probe page's slider or number input ``key``."""
    w = probe_widget(at, key)
    return (w.min, w.max) if hasattr(w, "min") else (w.min_value, w.max_value)


def probe_option_refusal(option: str, value) -> str | None:
    """``genuine probe``'s one-line refusal of ``option value`` (None: accepted)."""
    import argparse

    from genuine_core.errors import InputError
    from training import cli_probe

    parser = argparse.ArgumentParser()
    cli_probe.add_arguments(parser)
    text = f"{value}-{value}" if option == "--counts" else str(value)
    try:
        cli_probe.settings(parser.parse_args(["--model", "m", "--vary", "count", "--out", "o", option, text]))
    except InputError as exc:
        return str(exc)
    return None


def test_probe_page_and_genuine_probe_keep_their_limits(stub_probe_model):
    # the command copied the page's limits as literal numbers: these are the values both had
    at = open_page("probe")
    assert {w: widget_limits(at, w) for ws, _ in PROBE_LIMITS.values() for w in ws} == {
        "probe_n": (1, 500), "probe_nmi": (0, 10), "probe_counts": (0, 40), "probe_fixed_count": (0, 40),
        "probe_step": (1, 10), "probe_sizes": (0.5, 12.0), "probe_fixed_size": (0.5, 12.0), "probe_nsizes": (2, 30),
        "probe_elastic": (0.0, 100.0), "probe_blur": (0.0, 4.0)}
    assert probe_option_refusal("--n", 501) == "--n must be in [1, 500], got 501"
    assert probe_option_refusal("--blur", 4.5) == "--blur must be in [0, 4] px, got 4.5"
    assert probe_option_refusal("--sizes", 13) == "--sizes must be in [0.5, 12] px, got 13"


@pytest.mark.parametrize("option", ["--sizes", "--fixed-size"])
def test_genuine_probe_refuses_the_sizes_the_pages_controls_do_not_offer(option):
    # the command took sizes in (0, 12] px while the page's size controls start at 0.5 px
    assert probe_option_refusal(option, 0.25) == f"{option} must be in [0.5, 12] px, got 0.25"
    assert probe_option_refusal(option, 0.5) is None


@pytest.mark.parametrize("option, value, example", [("--sizes", "-1-3", "1.5-12"), ("--counts", "-2-5", "0-35"),
                                                    ("--sizes", None, "1.5-12")])
def test_genuine_probe_says_the_range_form_when_a_value_starts_with_a_dash(option, value, example, capsys):
    # `--sizes -1-3` got argparse's bare "expected one argument": -1-3 was read as an option
    from genuine_core.cli import main

    argv = ["probe", "--model", "m", "--vary", "size", "--out", "o", option] + ([value] if value else [])
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "usage: genuine probe" in err
    assert (f"error: argument {option}: expected LO-HI or one number, e.g. {option} {example} "
            "(no negative values: one starting with '-' is read as another option)") in err


def test_probe_page_and_genuine_probe_take_their_limits_from_one_table(stub_probe_model, monkeypatch):
    # the command copied the page's limits as literal numbers, so a changed limit could hold in one of them only
    from genuine_core.synth.probe import RUN_BOUNDS, RunBound

    moved = {"n": RunBound(2, 499), "nmi": RunBound(1, 9), "counts": RunBound(0, 39),
             "fixed_count": RunBound(1, 39, 2), "count_step": RunBound(2, 9, 2), "size": RunBound(0.5, 12.5),
             "size_steps": RunBound(3, 29), "elastic": RunBound(5.0, 95.0, 40.0), "blur": RunBound(0.25, 3.75, 1.5)}
    for key, bound in moved.items():
        monkeypatch.setitem(RUN_BOUNDS, key, bound)
    at = open_page("probe")
    for key, (widgets, option) in PROBE_LIMITS.items():
        b = moved[key]
        for w in widgets:
            assert widget_limits(at, w) == (b.lo, b.hi), w
        past = 1 if isinstance(b.lo, int) else 0.25
        assert probe_option_refusal(option, b.hi) is None, option
        refused = probe_option_refusal(option, b.hi + past)
        assert refused and refused.startswith(f"{option} must be in "), (option, refused)
        if key != "counts":  # LO-HI cannot say -1
            assert probe_option_refusal(option, b.lo) is None, option
            refused = probe_option_refusal(option, b.lo - past)
            assert refused and refused.startswith(f"{option} must be in "), (option, refused)
    assert probe_option_refusal("--sizes", 12.5) is None  # the size range ends as the fixed size


def saved_run(path, run_id: int) -> tuple[dict, pd.DataFrame]:
    """A saved probe run's row (without its id and time) and its results."""
    from store.db import open_store
    from store.probes import list_probe_runs, probe_results

    with open_store(path) as s:  # the page's open store is writable: a read-only one cannot open beside it
        row = list_probe_runs(s).set_index("id").loc[run_id]
        return ({k: row[k] for k in ("model", "created_by", "params", "n_results")},
                probe_results(s, run_id).drop(columns="idx"))


@pytest.mark.parametrize("background", ["synthetic", "real"])
def test_genuine_probe_with_db_keeps_the_run_as_the_page_does(stub_probe_model, monkeypatch, tmp_path, capsys,
                                                              background):
    # genuine probe --db wrote its files only: the run was not saved in the store nor placed on the UMAP
    from genuine_core.cli import main
    from store.db import open_store
    from store.probes import list_probe_runs

    path, name, set_predict = stub_probe_model
    set_predict(lambda p: (p[:, 1].mean(axis=(1, 2)) * 5, p[:, 1].mean(axis=(1, 2)) * 4,
                           (p[:, 1].mean(axis=(1, 2)) > 0.05).astype(int)))
    fake_umap(monkeypatch, ["train"])
    real = ["--background-sample", "LINE-NON"] if background == "real" else []
    argv = ["probe", "--model", name, "--db", str(path), "--vary", "count", "--counts", "0-8", "--count-step", "4",
            "--n", "3", "--seed", "5", "--by", "ann", *real, "--out", str(tmp_path / "out")]
    assert main(argv) == 0, capsys.readouterr().err
    with open_store(path, read_only=True) as s:
        cli_id = int(list_probe_runs(s)["id"].max())
    assert f"saved in {path} as probe run {cli_id} of {name}" in capsys.readouterr().out
    widgets = {"bg": "real nuclei from the store", "bg_sample": "LINE-NON"} if real else {}
    at = open_page("probe")
    at.sidebar.text_input(key="reviewer").set_value("ann").run()
    at.selectbox(key="probe_model").set_value(name)
    for key, value in {"n": 3, "counts": (0, 8), "step": 4, "seed": 5, **widgets}.items():
        probe_widget(at, f"probe_{key}").set_value(value)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    page_id = at.session_state["probe_result"]["run_id"]
    cli_row, cli_results = saved_run(path, cli_id)
    page_row, page_results = saved_run(path, page_id)
    assert cli_row == page_row and cli_row["created_by"] == "ann"
    assert cli_row["params"]["backgrounds"] == (len(cli_row["params"]["background_nuclei"]) if real else 40)
    pd.testing.assert_frame_equal(cli_results, page_results)
    assert cli_results["umap_x"].notna().all()  # placed on the model's UMAP, as the page places them


def test_genuine_probe_says_why_a_run_of_unregistered_weights_is_not_kept(stub_probe_model, tmp_path, capsys):
    from genuine_core import pipeline
    from genuine_core.cli import main
    from store.db import open_store
    from store.probes import list_probe_runs

    path, name, _ = stub_probe_model
    model = pipeline.load_model("any")
    model.checksum = "d" * 64  # the folder holds other weights than the registered model
    argv = ["probe", "--model", str(tmp_path), "--db", str(path), "--vary", "count", "--counts", "0-4",
            "--count-step", "4", "--n", "2", "--out", str(tmp_path / "out")]
    with open_store(path, read_only=True) as s:
        before = len(list_probe_runs(s))
    assert main(argv) == 0, capsys.readouterr().err
    assert f"not saved in {path}: no model registered there has these weights" in capsys.readouterr().out
    with open_store(path, read_only=True) as s:
        assert len(list_probe_runs(s)) == before


def test_probe_results_and_the_touch_switch_are_not_squeezed_into_columns(stub_probe_model):
    # on a 1024 px screen the chart beside the metrics and table was 290 px wide (title cut off), the metrics'
    # labels read "Model crosse…", the table hid its last columns and a fourth form column cut "Signals …"
    _, name, _ = stub_probe_model
    at = run_probe_page(name, counts=(0, 8), step=4)
    assert len(at.get("plotly_chart")) and len(at.dataframe) and len(at.toggle)
    in_columns = [w for col in at.columns for w in [*col.get("plotly_chart"), *col.dataframe, *col.toggle]]
    assert not in_columns, in_columns
    assert [m.label for m in at.metric] == ["Model crosses 0.5 at", "Truth crosses 0.5 at"]
    assert all(len(col.metric) <= 1 for col in at.columns)  # the two metrics share the page's width


def test_saved_probe_runs_show_the_newest_run_after_a_save(stub_probe_model):
    _, model, _ = stub_probe_model
    at = run_probe_page(model, counts=(0, 4), step=4)
    first = at.session_state["probe_result"]["run_id"]
    assert at.selectbox(key="probe_show_run").value == first
    at.button[0].click().run(timeout=TIMEOUT)
    second = at.session_state["probe_result"]["run_id"]
    assert second != first and at.selectbox(key="probe_show_run").value == second
    chart = next(c for c in at.get("plotly_chart") if "run " in c.proto.spec and "probe_saved_curve" in c.proto.id)
    assert json.loads(chart.proto.spec)["layout"]["title"]["text"] == f"run {second}: {model}"


def test_probe_form_disables_the_controls_the_chosen_experiment_does_not_use(stub_probe_model):
    at = open_page("probe")
    count_keys, size_keys = ("counts", "step", "fixed_size"), ("sizes", "nsizes", "fixed_count")

    def disabled() -> dict:
        return {k: probe_widget(at, f"probe_{k}").disabled for k in count_keys + size_keys + ("nmi", "n")}

    assert disabled() == {"counts": False, "step": False, "fixed_size": False, "sizes": True, "nsizes": True,
                          "fixed_count": True, "nmi": False, "n": False}
    at.get("button_group")[0].set_value("size").run()  # outside the form: applies at once, not on submit
    assert disabled() == {"counts": True, "step": True, "fixed_size": True, "sizes": False, "nsizes": False,
                          "fixed_count": False, "nmi": False, "n": False}


def test_saved_probe_runs_tell_runs_apart_and_plot_call_and_probability(stub_probe_model):
    _, model, _ = stub_probe_model
    at = run_probe_page(model, counts=(0, 4), step=4, nmi=1, fixed_size=2.5)
    runs = frame_with(at, "run")  # at 1024 px all ten columns scrolled sideways, hiding NMI, range, background
    assert list(runs.columns) == ["run", "model", "when (UTC)", "experiment", "range"]
    at.toggle(key="probe_runs_every").set_value(True).run()
    runs = frame_with(at, "run")
    assert list(runs.columns) == ["run", "model", "when (UTC)", "by", "probes", "experiment", "N", "NMI", "range",
                                  "background"]
    assert runs[["N", "NMI", "range"]].values.tolist() == [[3, 1, "MYCN 0-4 step 4, σ 2.5 px"]]
    spec = json.loads(next(c for c in at.get("plotly_chart") if "probe_saved_curve" in c.proto.id).proto.spec)
    lines = [t["name"] for t in spec["data"] if t.get("mode") == "lines+markers"]
    assert lines == ["mean call (prediction)", "mean calibrated P(MNA)"]  # as the live chart: the headline first


def test_probe_size_experiment_with_equal_ends_is_one_condition_of_n_probes(stub_probe_model):
    _, model, _ = stub_probe_model
    at = open_page("probe")
    at.selectbox(key="probe_model").set_value(model)
    at.get("button_group")[0].set_value("size").run()  # enables the size controls
    at.number_input(key="probe_n").set_value(5)
    at.slider(key="probe_sizes").set_value((0.5, 0.5))
    at.number_input(key="probe_nsizes").set_value(2)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    shown = frame_with(at, "mean call")
    assert shown["σ (px)"].tolist() == [0.5] and shown["probes"].tolist() == [5]
    assert len(at.session_state["probe_result"]["results"]) == 5


def test_probe_page_draws_the_cohn_rule_at_4_mycn_for_0_nmi(stub_probe_model):
    from genuine_core.rules import is_amplified

    _, model, _ = stub_probe_model
    at = run_probe_page(model, counts=(0, 8), step=4, nmi=0)
    assert (is_amplified(0, 3), is_amplified(0, 4)) == (0, 1)  # the rule switches at 4 for 0 NMI
    assert ("the Cohn rule (MNA when MYCN ≥ 4 × NMI) on the drawn signals, before touching signals merge: "
            "4 drawn MYCN signals for 0 NMI signals (0 NMI is counted as 1, as the rule does)" in texts(at))
    spec = json.loads(next(c for c in at.get("plotly_chart") if "probe_curve" in c.proto.id).proto.spec)
    assert [s["x0"] for s in spec["layout"]["shapes"] if s.get("line", {}).get("dash") == "dot"] == [4]


def test_probe_page_shows_the_generators_ground_truth_beside_the_model(stub_probe_model):
    # touching signals merge, so the share of truly MNA probes crosses 0.5 later than the rule on drawn signals
    from genuine_core.plotting import TRUTH_CURVE, crossing_text

    _, model, _ = stub_probe_model
    at = run_probe_page(model, counts=(0, 16), step=4)
    res = at.session_state["probe_result"]
    truth = res["results"].groupby("n_mycn")["true_label"].mean()
    assert res["curve"]["truth"].tolist() == pytest.approx(truth.tolist())
    spec = json.loads(next(c for c in at.get("plotly_chart") if "probe_curve" in c.proto.id).proto.spec)
    line = next(t for t in spec["data"] if t.get("name") == TRUTH_CURVE)
    assert plotly_array(line["x"]) == [0, 4, 8, 12, 16] and plotly_array(line["y"]) == pytest.approx(truth.tolist())
    assert "Cohn rule (drawn signals)" in [t.get("name") for t in spec["data"]]  # in the legend
    assert not [a for a in spec["layout"].get("annotations", []) if a.get("text") == "Cohn rule (drawn signals)"]
    assert frame_with(at, "truth")["truth"].tolist() == pytest.approx(truth.tolist())
    curve = res["curve"]
    assert [m.label for m in at.metric] == ["Model crosses 0.5 at", "Truth crosses 0.5 at"]
    assert (f"0.5 crossing: model {crossing_text(curve['n_mycn'], curve['mean_pred'])}, "
            f"ground truth {crossing_text(curve['n_mycn'], curve['truth'], beyond=False)}.") in texts(at)
    assert "Saved runs keep the model's outputs, not the generator's visible counts" in texts(at)


def test_probe_touching_signals_help_says_merged_signals_stay_mycn(stub_probe_model):
    help_text = open_page("probe").toggle(key="probe_clusters").help
    assert "count as one MYCN (or NMI) signal in the visible counts, never as a cluster" in help_text
    assert "merge into a cluster" not in help_text


def test_a_saved_probe_run_records_the_model_weights_and_the_nuclei_it_drew_into(stub_probe_model):
    """A run on real nuclei names them (the same seed picks others once the sample gains or loses scans) and the
    model's checksum, so its numbers can be reproduced and checked; a synthetic run names how many it drew."""
    from store.db import open_store
    from store.nuclei import sample_nuclei
    from store.probes import list_probe_runs

    path, name, _ = stub_probe_model
    for bg in ("synthetic", "real nuclei from the store"):
        run_probe_page(name, counts=(0, 4), step=4, bg=bg, bg_sample="LINE-MNA", seed=7)
    with open_store(path) as s:
        real, synthetic = (r["params"] for _, r in list_probe_runs(s, name).iterrows())
        ids = set(sample_nuclei(s, "LINE-MNA")["nucleus_id"])
    assert real["model_checksum"] == synthetic["model_checksum"] == "c" * 64
    assert real["seed"] == 7 and real["backgrounds"] == len(real["background_nuclei"]) > 0
    assert set(real["background_nuclei"]) <= ids
    assert synthetic["backgrounds"] == 40 and "background_nuclei" not in synthetic


def test_probe_page_without_scans_falls_back_to_synthetic_backgrounds(stub_probe_model):
    from store.db import open_store
    from store.scans import list_scans, remove_scan

    path, model, _ = stub_probe_model
    with open_store(path) as s:
        for scan_id in list_scans(s)["id"]:
            remove_scan(s, int(scan_id))
    at = open_page("probe")
    assert at.radio(key="probe_bg").disabled
    at.session_state["probe_bg"] = "real nuclei from the store"  # chosen before the scans were removed
    at.selectbox(key="probe_model").set_value(model)
    at.number_input(key="probe_n").set_value(3)
    at.slider(key="probe_counts").set_value((0, 4))
    at.number_input(key="probe_step").set_value(4)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "No sample in the store holds scans" in " ".join(i.value for i in at.info)
    assert len(at.session_state["probe_result"]["results"]) == 6


# ----------------------------------------------------------------------------- ingest
def _tiff_bytes(seed: int = 3, flat: bool = False) -> bytes:
    """A synthetic 256 x 256 scan with nuclei (``flat``: a blank one, whose header is fine but has no nuclei)."""
    from genuine_core.io import write_scan_tiff
    from genuine_core.synth import make_field

    f = make_field(np.random.default_rng(seed), {"mna_dm": 1.0}, 8, shape=(256, 256))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "scan.tif"
        write_scan_tiff(p, np.zeros_like(f.image) if flat else f.image)
        return p.read_bytes()


def _upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.get("file_uploader")[0].set_value([(name, data, "image/tiff") for name, data in files]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _ingest(at: AppTest, sample: str) -> AppTest:
    at.text_input(key="ingest_sample").input(sample)
    at.button(key="ingest_go").click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    return at


def _sidebar_store_line(at: AppTest) -> str:
    return next(c.value for c in at.sidebar.caption if "samples" in c.value)


def test_ingest_stores_a_good_scan_and_reports_a_bad_one(store_copy):
    path, counts = store_copy
    at = open_page("ingest")
    assert f"{len(counts)} samples" in _sidebar_store_line(at)
    _upload(at, ("new_case.tif", _tiff_bytes()), ("broken.tif", b"not an image at all"),
            ("blank.tif", _tiff_bytes(flat=True)))
    # the file that fails the header check is named once, in a sentence, and not counted
    assert [w.value for w in at.warning] == ["**broken.tif** will not be ingested: not an image (no TIFF, PNG or "
                                             "JPEG signature)."]
    assert at.button(key="ingest_go").label == "Ingest 2 scans"
    _ingest(at, "NEW-CASE")
    assert any("new_case.tif" in s.value for s in at.success)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("**blank.tif** was not stored: DAPI channel")
    assert errors[0].count("blank.tif") == 1 and errors[0].endswith(".")
    assert not any("broken.tif" in e for e in errors)  # warned about above, never sent to the ingest
    links = at.get("page_link")
    assert [lk.proto.label for lk in links] == ["Open case NEW-CASE"] and "case=NEW-CASE" in links[0].proto.query_string
    # the whole app reran on the new data: the sidebar counts the new sample without a reload
    assert f"{len(counts) + 1} samples" in _sidebar_store_line(at)
    from store.db import open_store
    from store.samples import list_samples

    with open_store(path) as s:
        smp = list_samples(s).set_index("name")
    assert smp.loc["NEW-CASE", "n_scans"] == 1 and smp.loc["NEW-CASE", "n_nuclei"] > 0


def test_ingest_refuses_a_mapping_without_a_probe_channel(store_copy):
    at = _upload(open_page("ingest"), ("scan.tif", _tiff_bytes()))
    at.selectbox(key="ingest_map_mycn").set_value("none").run()
    errors = [e.value for e in at.error]
    assert errors == ["Choose the probe channels: channel map nmi=0,dapi=2 has no MYCN channel: MNA is scored from "
                      "both probes, map them too (e.g. nmi=0,mycn=1,dapi=2)"]
    assert at.button(key="ingest_go").disabled


def test_ingest_previews_any_upload_and_gives_scans_of_different_channel_layouts_a_mapping_each(store_copy):
    import io as bytes_io

    import tifffile

    at = _upload(open_page("ingest"), ("a.tif", _tiff_bytes(3)), ("b.tif", _tiff_bytes(4)))
    preview = at.selectbox(key="ingest_preview")
    assert preview.options == ["a.tif", "b.tif"] and not at.error
    first = at.get("image")[0].proto.imgs[0].url
    assert at.run().get("image")[0].proto.imgs[0].url == first  # the same scan keeps its picture
    at.selectbox(key="ingest_preview").set_value(1).run()
    assert not at.exception and at.get("image")[0].proto.imgs[0].url != first  # b.tif is shown now
    four = bytes_io.BytesIO()
    tifffile.imwrite(four, np.zeros((64, 64, 4), np.uint16), photometric="minisblack", planarconfig="contig")
    at = _upload(open_page("ingest"), ("a.tif", _tiff_bytes(3)), ("four.tif", four.getvalue()))
    assert not at.error and "channel counts differ" in texts(at)  # one mapping per scan (tests/test_ingest_page.py)
    assert len([b for b in at.selectbox if b.key and b.key.startswith("ingest_map_") and b.key.endswith("_dapi")]) == 3
    at.selectbox(key="ingest_preview").set_value(1).run()  # four.tif is blank: its preview says so
    assert any("`four.tif` cannot be read with this mapping: four.tif: DAPI channel" in e.value for e in at.error)
    assert at.button(key="ingest_go").disabled


def test_ingest_hides_the_mapping_when_no_upload_will_be_ingested(store_copy):
    at = _upload(open_page("ingest"), ("bad_scan.tif", b"renamed text file"))
    assert [w.value for w in at.warning] == ["**bad_scan.tif** will not be ingested: not an image (no TIFF, PNG or "
                                             "JPEG signature)."]
    assert "Channel mapping" not in [h.value for h in at.subheader] and "channel(s)" not in texts(at)
    assert not [b for b in at.button if b.label.startswith("Ingest")]
    assert not [t for t in at.text_input if t.key == "ingest_sample"]


def test_ingest_sample_name_follows_the_valid_uploads(store_copy):
    bad, good = ("bad_scan.tif", b"renamed text file"), ("good_scan.tif", _tiff_bytes())
    at = _upload(open_page("ingest"), bad)
    _upload(at, bad, good)
    assert at.text_input(key="ingest_sample").value == "good_scan"  # from the valid scan, not the first file
    assert at.button(key="ingest_go").label == "Ingest 1 scan"
    _upload(at, good, ("other.tif", _tiff_bytes(seed=4)))
    assert at.text_input(key="ingest_sample").value == ""  # several scans: no guess
    assert at.button(key="ingest_go").label == "Ingest 2 scans"
    _upload(at, ("other.tif", _tiff_bytes(seed=4)))
    assert at.text_input(key="ingest_sample").value == "other"
    at.text_input(key="ingest_sample").input("CASE-17")
    _upload(at, good)
    assert at.text_input(key="ingest_sample").value == "CASE-17"  # a typed name is kept


def test_ingest_of_a_stored_scan_links_the_sample_that_holds_it(store_copy):
    path, _ = store_copy
    data = _tiff_bytes()
    at = _ingest(_upload(open_page("ingest"), ("FISH_RGB.tif", data)), "FIRST")
    _ingest(_upload(at, ("FISH_RGB_copy.tif", data)), "QA-DUP")
    dup = [i.value for i in at.info if "already stored" in i.value]
    assert len(dup) == 1 and dup[0].startswith("**FISH_RGB_copy.tif**: already stored as scan 4 in sample 'FIRST'")
    links = at.get("page_link")
    assert [lk.proto.label for lk in links] == ["Open case FIRST"] and "case=FIRST" in links[0].proto.query_string
    from store.db import open_store
    from store.samples import get_sample

    with open_store(path) as s:
        assert get_sample(s, "QA-DUP") is None


def test_the_first_ingest_creates_the_store_and_only_stored_scans_keep_their_upload(tmp_path, monkeypatch):
    import store.ingest
    from store.db import files_folder, open_store

    real_model_folders = store.ingest.model_folders  # a new store scores with the shipped models: here the cheap one
    monkeypatch.setattr(store.ingest, "model_folders",
                        lambda *a: real_model_folders(*a) if a else [REPO / "models" / "ratio_cpu"])
    db = tmp_path / "lab" / "new.duckdb"
    monkeypatch.setenv("GENUINE_DB", str(db))
    data = _tiff_bytes()
    at = _upload(open_page("ingest"), ("first.tif", data))
    assert not db.parent.exists()  # previewed from memory: nothing written before the Ingest button
    _ingest(at, "FIRST")
    assert not at.error, [e.value for e in at.error]
    with open_store(db) as s:  # the app's own configuration: it holds the store open in this process
        assert s.scalar("SELECT count(*) FROM scans") == 1
    uploads = files_folder(db) / "uploads"
    kept = sorted(p.name for p in uploads.iterdir())
    assert len(kept) == 1 and kept[0].endswith("_first.tif")
    _ingest(_upload(at, ("copy_of_first.tif", data)), "FIRST")  # a duplicate under another name
    assert any("already stored" in i.value for i in at.info)
    assert sorted(p.name for p in uploads.iterdir()) == kept


def test_ingest_into_a_sample_of_another_kind_says_why_and_links_nothing(store_copy):
    at = _ingest(_upload(open_page("ingest"), ("new.tif", _tiff_bytes())), "MIX-50")  # a mixture; kind "case"
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("**new.tif** was not stored: sample 'MIX-50' already exists")
    assert not at.get("page_link")


def test_ingest_page_removes_a_scan_after_confirmation_and_keeps_a_curated_one(store_copy):
    from store import labels
    from store.db import open_store
    from store.scans import scan_overview

    path, _ = store_copy
    with open_store(path) as s:
        before = scan_overview(s)
        curated, plain = int(before["id"].iloc[0]), int(before["id"].iloc[1])
        nid = int(s.query("SELECT id FROM nuclei WHERE scan_id = ? LIMIT 1", [curated])["id"].iloc[0])
        labels.record_label_event(s, nid, 1, "Dr. Test")
    at = open_page("ingest")
    assert at.button(key="ingest_exclude").disabled  # the first scan, a reviewed one: no reviewer name, no confirmation
    assert [e.label for e in at.expander if e.label.startswith("Stored scans")] == [
        "Stored scans · remove or exclude one"]  # named for both actions, not "remove one"
    assert at.selectbox(key="ingest_remove_id").label == "Scan"  # not "Scan to remove": it may be excluded
    assert "Reviewer** in the sidebar to remove or exclude a scan." in texts(at)
    at = open_page("ingest", reviewer="Dr. Test")
    at.selectbox(key="ingest_remove_id").set_value(plain).run()
    assert at.button(key="ingest_remove").disabled  # not confirmed yet
    at.checkbox(key=f"ingest_remove_sure_{plain}").check().run()
    at.selectbox(key="ingest_remove_id").set_value(curated).run()
    assert at.button(key="ingest_exclude").disabled  # the confirmation belongs to the scan it was given for
    at.selectbox(key="ingest_remove_id").set_value(plain).run()
    at.button(key="ingest_remove").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Scan {plain} (" in m.value and "removed by Dr. Test" in m.value for m in at.success)
    with open_store(path) as s:
        assert plain not in set(scan_overview(s)["id"])
    at.selectbox(key="ingest_remove_id").set_value(curated).run()  # reviewed: it can be excluded, not removed
    assert not [b for b in at.button if b.key == "ingest_remove"]
    assert any("label events, so it cannot be removed (the audit trail is never deleted)" in c.value
               for c in at.caption)
    at.checkbox(key=f"ingest_exclude_sure_{curated}").check().run()
    at.button(key="ingest_exclude").click().run()
    assert not at.exception, [e.value for e in at.exception]
    n = int(before.set_index("id").at[curated, "n_nuclei"])
    assert any(m.value.startswith(f"Scan {curated}: {n} nuclei excluded by Dr. Test") for m in at.success)
    # nothing left to exclude: no button, the page says why (the scan table counts its excluded nuclei)
    assert not [b for b in at.button if b.key == "ingest_exclude"]
    assert any("every nucleus of it is excluded already, so it counts in no call" in c.value for c in at.caption)
    shown = next(d.value for d in at.dataframe if "ever labelled" in d.value.columns).set_index("scan")
    assert shown.at[curated, "excluded"] == n and shown.at[curated, "reviewed"] == n
    assert any("**Excluded**: of the reviewed nuclei, those excluded; all of them = the scan counts in no call"
               in c.value for c in at.caption)  # the column is explained beside "reviewed" and "ever labelled"
    with open_store(path) as s:
        assert curated in set(scan_overview(s)["id"])  # kept, with its audit trail
        left = s.scalar("SELECT count(*) FROM nuclei n WHERE n.scan_id = ? AND NOT EXISTS (SELECT 1 FROM "
                        "curated_labels c WHERE c.nucleus_id = n.id AND c.excluded)", [curated])
    assert left == 0


def test_ingest_page_undoes_a_scan_exclusion_in_one_step_after_confirmation(store_copy):
    from store import labels
    from store.db import open_store
    from store.scans import scan_overview

    path, _ = store_copy
    with open_store(path) as s:
        scan = int(scan_overview(s)["id"].iloc[0])
        nid = int(s.query("SELECT id FROM nuclei WHERE scan_id = ? ORDER BY id LIMIT 1", [scan])["id"].iloc[0])
        labels.record_label_event(s, nid, 1, "Dr. Test")
        before = labels.current_labels(s)[["nucleus_id", "value"]]
    at = open_page("ingest", reviewer="Dr. Test")
    at.selectbox(key="ingest_remove_id").set_value(scan).run()
    assert not [b for b in at.button if b.key == "ingest_unexclude"]  # nothing to undo yet
    at.checkbox(key=f"ingest_exclude_sure_{scan}").check().run()
    at.button(key="ingest_exclude").click().run()
    assert any("**Undo exclusion** here takes it back in one step" in m.value for m in at.success)
    assert at.button(key="ingest_unexclude").disabled  # not confirmed yet
    at.checkbox(key=f"ingest_unexclude_sure_{scan}").check().run()
    at.button(key="ingest_unexclude").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.value.startswith(f"Scan {scan}: exclusion undone by Dr. Test; its ") for m in at.success)
    assert not [b for b in at.button if b.key == "ingest_unexclude"]
    with open_store(path) as s:
        after = labels.current_labels(s)[["nucleus_id", "value"]]
        undos = s.query("SELECT reviewer FROM label_events WHERE undoes IS NOT NULL")["reviewer"]
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))
    assert len(undos) > 1 and undos.eq("Dr. Test").all()


def test_ingest_records_the_original_file_name(store_copy, tmp_path):
    import json

    from genuine_core.models import RatioBaseline, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model
    from store.scans import list_scans

    path, _ = store_copy
    folder = tmp_path / "tiny-ratio"  # a registered model with a folder: the ingest scores with it
    RatioBaseline.from_config(preset_config("tiny", kind="ratio")).save(folder, metrics={})
    with open_store(path) as s:
        register_model(s, load_model(folder))
    _ingest(_upload(open_page("ingest"), ("FISH RGB qa.tif", _tiff_bytes())), "NEW-CASE")
    with open_store(path) as s:
        scan = list_scans(s, "NEW-CASE").iloc[0]
    assert scan["file_name"] == "FISH RGB qa.tif"
    assert Path(scan["path"]).name.endswith("_FISH_RGB_qa.tif")  # kept under its unique hash-prefixed name
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["case"] = "NEW-CASE"
    at.run()
    at.selectbox(key="cases_primary").set_value("tiny-ratio").run()
    assert not at.exception, [e.value for e in at.exception]
    label = f"FISH RGB qa.tif ({scan['n_nuclei']} nuclei)"
    assert at.selectbox(key="case_scan").options == [label]
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"].startswith(label)


# ----------------------------------------------------------------------------- models / embeddings
@pytest.mark.parametrize("name", ["../escape", "a/b", "", "-x", "x" * 65])
def test_retrain_refuses_a_model_name_that_cannot_be_a_folder(store_copy, name):
    from genuine_core.errors import InputError
    from pages import retrain
    from store.db import open_store

    with open_store(store_copy[0]) as s, pytest.raises(InputError, match="model name"):
        retrain.start_run(s, "resnet", "tiny", 1, name, None)
    assert not (Path(store_copy[0]).parent / (Path(store_copy[0]).stem + "_files") / "runs").exists()


def test_models_page_lists_models_with_metrics(store_copy):
    _, counts = store_copy
    at = open_page("models")
    table = frame_with(at, "Model")
    assert table["Model"].tolist() == ["ratio-test", "intensity-test"]
    assert table["Predictions"].tolist() == [sum(counts.values())] * 2
    metrics = dict(frame_with(at, "Metric").values)  # the first section (here "val")
    assert [metrics[k] for k in ("true positives", "false negatives", "TPR", "TNR")] == ["90", "10", "0.9", "0.95"]
    start = [b for b in at.button if b.label == "Start retraining"]
    assert start and start[0].disabled  # no curated labels yet


def test_models_table_fits_1024_px_and_keeps_every_column_below(store_copy):
    # at 1024 px the table of 11 columns scrolled sideways, hiding Patch px .. Folder
    at = open_page("models")
    main, more = frame_with(at, "Predictions"), frame_with(at, "Folder")
    assert list(main.columns) == ["Model", "Status", "Kind", "Preset", "Predictions", "Scans", "Registered"]
    assert list(more.columns) == ["Model", "Status", "Uncertainty", "Patch px", "Checksum", "Folder"]
    assert more["Model"].tolist() == main["Model"].tolist()


def test_models_page_shows_the_validation_figures_once_under_validation(store_copy, tmp_path):
    # training writes sensitivity, specificity, class counts and temperature at the top of metrics.json and again
    # under "validation": the Metrics tab's "summary" showed them unnamed, read as test figures (genuine_cpu's
    # TPR 0.9745 there, 0.9607 on the evaluation report's test nuclei)
    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    val = {"accuracy": 0.97, "sensitivity": 0.9745, "specificity": 0.9692, "n_positive": 275, "temperature": 0.52}
    metrics = {"best_epoch": 2, "status": "final", "sensitivity": 0.9745, "specificity": 0.9692, "n_positive": 275,
               "temperature": 0.52, "validation": val}
    folder = tmp_path / "tiny-resnet"
    GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(folder, metrics=metrics)
    with open_store(store_copy[0]) as s:
        register_model(s, load_model(folder))
    at = open_page("models")
    at.selectbox(key="models_pick").set_value(folder.name).run()
    assert not at.exception
    tables = [dict(d.value.values) for d in at.dataframe if list(d.value.columns) == ["Metric", "Value"]]
    assert tables[0] == {"best epoch": "2", "training status": "final"}  # the summary: no unnamed validation figures
    assert tables[1]["sensitivity (TPR)"] == "0.9745" and tables[1]["calibration temperature"] == "0.52"
    assert [m.value for m in at.markdown if m.value in ("**summary**", "**validation**")] == ["**summary**",
                                                                                              "**validation**"]


def test_models_page_plots_a_detectors_count_threshold_scan(store_copy, tmp_path):
    import json

    from genuine_core.models import DetectorBaseline, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    folder = tmp_path / "tiny-detector"
    scan = {"nmi": {"0.25": 0.9, "0.50": 0.7}, "mycn": {"0.25": 0.6, "0.50": 0.5}, "cluster": {"0.25": 0.8, "0.50": 0.9}}
    DetectorBaseline.from_config(preset_config("tiny", kind="detector")).save(
        folder, metrics={"count_threshold": [0.25, 0.25, 0.5], "count_threshold_scan": scan, "best_epoch": 3,
                         "test_detection": {"ap50": {"nmi": 0.9, "mycn": 0.7, "cluster": 0.8}, "map50": 0.8}})
    with open_store(store_copy[0]) as s:
        register_model(s, load_model(folder))
    at = open_page("models")
    at.selectbox(key="models_pick").set_value("tiny-detector").run()
    assert not at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "Counting threshold" in spec["layout"]["title"]["text"]
    assert {t.get("name") for t in spec["data"]} >= {"NMI", "MYCN", "MYCN cluster"}
    # the other metrics: one readable two-column table per section, per-class figures spelled out
    tables = [dict(d.value.values) for d in at.dataframe if list(d.value.columns) == ["Metric", "Value"]]
    assert tables[0] == {"best epoch": "3", "count score threshold · NMI": "0.25",
                         "count score threshold · MYCN": "0.25", "count score threshold · cluster": "0.5"}
    assert tables[1] == {"AP (IoU 0.5) · NMI": "0.9", "AP (IoU 0.5) · MYCN": "0.7", "AP (IoU 0.5) · cluster": "0.8",
                         "mAP (IoU 0.5)": "0.8"}
    assert "**test patches: detection**" in [m.value for m in at.markdown]


def _models_page_on_a_trained_resnet(store_copy, folder, validation: dict, history: list, train_config: dict):
    """The Models page showing a tiny ResNet folder saved with these records and registered in the store."""
    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(folder, metrics={"validation": validation})
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "train_config.json").write_text(json.dumps(train_config))
    with open_store(store_copy[0]) as s:
        register_model(s, load_model(folder))
    at = open_page("models")
    at.selectbox(key="models_pick").set_value(folder.name).run()
    assert not at.exception
    return at


def test_models_page_training_curves_say_they_are_measured_against_the_training_labels(store_copy, tmp_path):
    at = _models_page_on_a_trained_resnet(
        store_copy, tmp_path / "resnet-auto",
        {"accuracy": 0.9717, "labels": "truth", "accuracy_vs_training_labels": 0.9133},
        [{"epoch": e, "train_loss": 0.3, "val_loss": 0.27, "val_acc": 0.91, "best": e == 2} for e in (1, 2, 3)],
        {"label": "auto", "kind": "resnet"})
    spec = json.loads(next(c for c in at.get("plotly_chart") if "models_curves" in c.proto.id).proto.spec)
    names = [t.get("name") for t in spec["data"]]
    assert "validation accuracy (vs auto training labels)" in names and "kept: epoch 2" in names
    assert not spec["layout"].get("annotations")  # the kept epoch no longer labels its line beside the y ticks
    assert ("The curves score the validation split at each epoch against the labels it was trained on (auto labels "
            "from each scan's genotype, noisy). The Metrics tab's validation accuracy (0.9717) is measured against "
            "truth labels, so it differs from the curve (the kept epoch scores 0.9133 against the training labels)."
            in texts(at))


@pytest.mark.parametrize("label", ["curated", "auto"])  # auto: recorded before label named the data's own kind
def test_models_page_says_a_model_trained_on_curated_labels_was(store_copy, tmp_path, label):
    at = _models_page_on_a_trained_resnet(
        store_copy, tmp_path / "resnet-curated",
        {"accuracy": 0.9, "labels": "curated", "accuracy_vs_training_labels": 0.9},
        [{"epoch": e, "train_loss": 0.3, "val_loss": 0.27, "val_acc": 0.9, "best": e == 1} for e in (1, 2)],
        {"label": label, "kind": "resnet", "data": "curated.npz"})
    spec = json.loads(next(c for c in at.get("plotly_chart") if "models_curves" in c.proto.id).proto.spec)
    assert "validation accuracy (vs curated training labels)" in [t.get("name") for t in spec["data"]]
    assert ("The curves score the validation split at each epoch against the labels it was trained on (curated "
            "labels)." in texts(at)) and "noisy" not in texts(at)
    train_data = next(d for d in at.dataframe if "data" in d.value.columns)
    assert train_data.value["label"].tolist() == ["curated"]


@pytest.fixture()
def models_runs():
    """The Models page's run registry (``pages.retrain.runs``, shared by the server's sessions), empty."""
    from pages import retrain

    retrain.runs().clear()
    yield retrain.runs()
    retrain.runs().clear()


def _models_finished_run(runs: dict, folder: Path, validation: dict, seconds: float = 7.0) -> str:
    """A finished retraining run in the registry, without training: a tiny ResNet folder, a history, a log
    last written ``seconds`` after the start (10 minutes ago), and an exited process."""
    import json
    import os
    import subprocess
    import sys
    import time

    from genuine_core.models import GenuineClassifier, preset_config

    out = folder / "resnet-curated"
    GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(out, metrics={"validation": validation})
    (out / "history.json").write_text(json.dumps([
        {"epoch": e, "train_loss": 0.7 - 0.1 * e, "val_loss": 0.6, "val_acc": 0.0, "best": e == 1} for e in (1, 2, 3)]))
    log = folder / "train.log"
    log.write_text("trained resnet -> " + "x" * 200 + f" in 1 s (3 epochs); validation sensitivity "
                   f"{validation['sensitivity']:.3f}, specificity {validation['specificity']:.3f}\n")
    started = time.time() - 600
    os.utime(log, (started + seconds, started + seconds))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    runs["run-1"] = {"proc": proc, "log_handle": None, "log": log, "out": out, "name": "resnet-curated",
                     "epochs": 3, "patience": 2, "preset": "tiny", "n": 15, "started": started, "cmd": [],
                     "registered": False, "kind": "resnet"}
    return "run-1"


def test_models_page_retrain_name_and_epochs_follow_kind_and_preset(store_copy, tmp_path):
    from genuine_core.models import DetectorBaseline, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    folder = tmp_path / "tiny-detector"
    DetectorBaseline.from_config(preset_config("tiny", kind="detector")).save(folder, metrics={})
    with open_store(store_copy[0]) as s:
        register_model(s, load_model(folder))
    at = open_page("models")
    name, epochs = at.text_input(key="retrain_name"), at.number_input(key="retrain_epochs")
    assert (name.value, epochs.value) == ("genuine-curated", 30)
    det = at.selectbox(key="retrain_detector")
    assert det.options == ["tiny-detector"] and det.value == str(folder)  # shown by name, the folder is the value
    at.selectbox(key="retrain_kind").set_value("resnet").run()
    assert at.text_input(key="retrain_name").value == "resnet-curated"
    assert not [s for s in at.selectbox if s.key == "retrain_detector"]  # a ResNet uses no detector
    at.selectbox(key="retrain_preset").set_value("tiny").run()
    assert at.number_input(key="retrain_epochs").value == 3
    assert "early stopping after 2 epochs" in texts(at)
    at.text_input(key="retrain_name").input("my-model").run()
    at.selectbox(key="retrain_kind").set_value("genuine").run()
    assert at.text_input(key="retrain_name").value == "my-model"  # typed by the user: kept


def test_models_page_scores_the_stored_scans_with_a_model_registered_after_them(store_copy, tmp_path):
    """A model registered after the scans has scored none; the button scores every stored scan it can read.
    A model expecting other patches is told apart up front, with no button."""
    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    with open_store(store_copy[0]) as s:
        for name, normalisation in (("late-resnet", "spot_flux"), ("old-resnet", "percentile")):
            cfg = preset_config("tiny", kind="resnet", patch_normalisation=normalisation)
            GenuineClassifier.from_config(cfg).save(tmp_path / name, metrics={})
            register_model(s, load_model(tmp_path / name))
        n_nuclei, n_scans = s.query("SELECT (SELECT count(*) FROM nuclei) AS n, (SELECT count(*) FROM scans) AS c"
                                    ).iloc[0].tolist()
        assert s.query("SELECT DISTINCT patch_normalisation AS p FROM scans")["p"].tolist() == ["spot_flux"]
    at = open_page("models", reviewer="Dr. Test")
    at.selectbox(key="models_pick").set_value("old-resnet").run()
    assert f"has scored 0 of the {n_scans} stored scans" in texts(at)
    assert f"{n_scans} of them it cannot read: its patches are 'spot_flux'-normalised" in texts(at)
    assert not [b for b in at.button if b.label.startswith("Score ")]
    at.selectbox(key="models_pick").set_value("late-resnet").run()
    next(b for b in at.button if b.label == f"Score {n_scans} scans ({n_nuclei} nuclei) with late-resnet").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "late-resnet** has scored" not in texts(at)  # nothing left to score: the section is gone
    with open_store(store_copy[0]) as s:  # the app holds it writable: the same configuration
        got = s.query("SELECT count(*) AS p, count(DISTINCT nucleus_id) AS n FROM predictions p JOIN models m "
                      "ON m.id = p.model_id WHERE m.name = 'late-resnet'").iloc[0].tolist()
        stats = s.query("SELECT min(n_models) AS lo FROM review_stats")["lo"].iloc[0]
    assert got == [n_nuclei, n_nuclei]
    assert stats >= 2  # the review statistics count the new model's predictions too


def test_models_page_removes_a_model_whose_folder_is_gone(store_copy, tmp_path):
    """Ingest refuses while a registered folder is missing; the page removes the model (reviewer + tick)."""
    import shutil

    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(tmp_path / "gone", metrics={})
    with open_store(store_copy[0]) as s:
        register_model(s, load_model(tmp_path / "gone"))
    shutil.rmtree(tmp_path / "gone")
    at = open_page("models")
    at.selectbox(key="models_pick").set_value("gone").run()
    assert "ingesting new scans is refused" in texts(at)
    assert at.checkbox(key="models_remove_sure_gone").disabled  # no reviewer yet
    at.sidebar.text_input(key="reviewer").input("Dr. Test").run()
    at.checkbox(key="models_remove_sure_gone").check().run()
    at.button(key="models_remove").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Model gone removed by Dr. Test" in m.value for m in at.success)
    assert "gone" not in frame_with(at, "Model")["Model"].tolist()
    # the details switch to a model that exists, and the browser is told to show its name (a popped key left
    # the browser's selectbox reading "gone" over another model's details and Remove section)
    pick = at.selectbox(key="models_pick")
    assert pick.value in pick.options and pick.value != "gone"
    assert pick.proto.set_value and pick.proto.raw_value == pick.value
    assert [c.label for c in at.checkbox if c.key.startswith("models_remove_sure_")] == [f"Yes, remove {pick.value}"]
    log = frame_with(at, "Action")  # the event log keeps what the removal deleted from the registry
    assert log.iloc[0][["Action", "Model or scan", "By"]].tolist() == ["remove model", "gone", "Dr. Test"]
    assert log["Model or scan"].tolist().count("gone") == 2 and pd.isna(log.iloc[1]["By"])  # registered in code


def test_models_page_retires_and_reinstates_a_model_with_the_reviewers_name(store_copy, tmp_path):
    """Retire / Reinstate take the reviewer's name; the status shows in the table, the event log records who,
    the Ingest page leaves the retired model out and the Cases page marks its calls retired."""
    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(tmp_path / "kept", metrics={})
    with open_store(store_copy[0]) as s:
        register_model(s, load_model(tmp_path / "kept"))
    at = open_page("models")
    at.selectbox(key="models_pick").set_value("kept").run()
    assert frame_with(at, "Status").set_index("Model").at["kept", "Status"] == "active"
    assert at.button(key="models_retire").label == "Retire model" and at.button(key="models_retire").disabled
    assert "to retire a model" in texts(at)
    at.sidebar.text_input(key="reviewer").input("Dr. Test").run()
    at.button(key="models_retire").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Model kept retired by Dr. Test" in m.value for m in at.success)
    assert frame_with(at, "Status").set_index("Model").at["kept", "Status"] == "retired"  # when and by: below
    assert frame_with(at, "Uncertainty").set_index("Model").at["kept", "Status"].endswith(" by Dr. Test")
    assert frame_with(at, "Action").iloc[0][["Action", "Model or scan", "By"]].tolist() == [
        "retire model", "kept", "Dr. Test"]
    assert at.button(key="models_retire").label == "Reinstate model"
    ingest = _upload(open_page("ingest"), ("new_case.tif", _tiff_bytes()))
    scored_by = next(c.value for c in ingest.caption if c.value.startswith("Scored by: "))
    assert "`kept`" not in scored_by and "no active registered model" in scored_by  # the small store's have none
    at.button(key="models_retire").click().run()
    assert any("Model kept reinstated by Dr. Test" in m.value for m in at.success)
    assert frame_with(at, "Action").iloc[0][["Action", "By"]].tolist() == ["reinstate model", "Dr. Test"]
    # a model whose predictions stay: its rows on the Cases page say it is retired
    assert open_page("cases").selectbox(key="cases_primary").value == "ratio-test"  # the GENUINE model
    at.selectbox(key="models_pick").set_value("ratio-test").run()
    at.button(key="models_retire").click().run()
    cases = open_page("cases")
    columns = frame_with(cases, "Call").columns
    assert "ratio-test (retired) MNA %" in columns and "ratio-test MNA %" not in columns
    # the page opens on an active model (a retired one has no calls on new cases); the retired one stays pickable
    primary = cases.selectbox(key="cases_primary")
    assert primary.value == "intensity-test" and "ratio-test (retired)" in primary.options


def test_models_page_integrity_check_notices_weights_replaced_in_place(store_copy, tmp_path):
    import shutil

    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    for name, normalisation in (("kept", "percentile"), ("other", "spot_flux")):  # two different models
        cfg = preset_config("tiny", kind="resnet", patch_normalisation=normalisation)
        GenuineClassifier.from_config(cfg).save(tmp_path / name, metrics={})
    with open_store(store_copy[0]) as s:
        register_model(s, load_model(tmp_path / "kept"))
    at = open_page("models")
    at.selectbox(key="models_pick").set_value("kept").run()
    at.button(key="models_verify").click().run()
    assert any("they are the registered ones" in m.value for m in at.success)
    for f in (tmp_path / "other").iterdir():  # a consistent set of other weights, copied over in place
        shutil.copy(f, tmp_path / "kept" / f.name)
    at.button(key="models_verify").click().run()
    assert any("holds other weights than the ones registered" in m.value for m in at.error)


def test_retrain_default_name_is_free():
    from pages.retrain import free_name

    assert free_name("resnet-curated", {"genuine_cpu"}) == "resnet-curated"
    assert free_name("resnet-curated", {"resnet-curated", "resnet-curated-2"}) == "resnet-curated-3"


def test_models_page_finished_run_shows_a_fixed_duration_and_readable_figures(store_copy, tmp_path, models_runs):
    good = {"sensitivity": 0.9, "specificity": 0.95, "n_positive": 40, "n_negative": 60}
    _models_finished_run(models_runs, tmp_path, good, seconds=7.0)
    at = open_page("models")
    for _ in range(2):
        status = [m.value for m in at.markdown if "run-1" in m.value]
        assert status and status[0].endswith("finished after 7 s")  # not the 600 s since the start
        at.run()
    assert at.code[0].proto.wrap_lines  # long log lines wrap instead of running off the box
    figures = {m.label: m.value for m in at.metric}
    assert figures == {"validation sensitivity": "0.900", "validation specificity": "0.950",
                       "validation MNA nuclei": "40", "validation non-MNA nuclei": "60"}
    assert not [w for w in at.warning if "useless" in w.value]
    assert "shared by everyone" in texts(at) and "this session" not in texts(at)
    import json

    spec = json.loads(next(c for c in at.get("plotly_chart") if "training curves" in c.proto.spec).proto.spec)
    assert spec["layout"]["xaxis"]["dtick"] == 1  # whole epochs
    assert "kept: epoch 1" in [t.get("name") for t in spec["data"]]  # named in the legend, clear of the ticks


def test_models_page_warns_before_registering_a_degenerate_model(store_copy, tmp_path, models_runs):
    useless = {"sensitivity": 1.0, "specificity": 0.0, "n_positive": 2, "n_negative": 1}
    _models_finished_run(models_runs, tmp_path, useless)
    at = open_page("models")
    register = next(b for b in at.button if b.label == "Register resnet-curated")
    assert register.disabled and "to register a model: the store's event log records who" in texts(at)
    at.sidebar.text_input(key="reviewer").input("Dr. Test").run()
    warning = " ".join(w.value for w in at.warning)
    assert "specificity 0.000" in warning and "only 2 MNA nuclei" in warning and "only 1 non-MNA" in warning
    register = next(b for b in at.button if b.label == "Register resnet-curated")
    assert register.disabled  # registering it takes a deliberate tick
    at.checkbox(key="register_anyway_run-1").check().run()
    next(b for b in at.button if b.label == "Register resnet-curated").click().run()
    assert not at.exception
    assert "resnet-curated" in frame_with(at, "Model")["Model"].tolist()  # the whole app reran
    assert "3 models" in " ".join(c.value for c in at.sidebar.caption)
    assert models_runs["run-1"]["registered"]
    assert frame_with(at, "Action").iloc[0][["Action", "Model or scan", "By"]].tolist() == [
        "register model", "resnet-curated", "Dr. Test"]  # the event log says who registered it
    done = texts(at)
    assert "registered as resnet-curated" in done and "**Ingest** page" in done


def test_models_page_selects_a_model_just_registered_so_score_applies_to_it(store_copy, tmp_path, models_runs):
    """Register switches Model details to the new model (it stayed on the old one and told the user to pick it)."""
    good = {"sensitivity": 0.9, "specificity": 0.95, "n_positive": 40, "n_negative": 60}
    _models_finished_run(models_runs, tmp_path, good)
    at = open_page("models", reviewer="Dr. Test")
    assert at.selectbox(key="models_pick").value != "resnet-curated"
    next(b for b in at.button if b.label == "Register resnet-curated").click().run()
    assert not at.exception, [e.value for e in at.exception]
    pick = at.selectbox(key="models_pick")
    assert pick.value == "resnet-curated" and pick.proto.set_value  # the browser is told to show it too
    assert "**resnet-curated** has scored 0 of the" in texts(at)  # its Score section, not the old model's
    assert "pick it under **Model details**" not in texts(at)


def _recorded_run(store_path: Path, status: str, cmd: list[str], pid: int | None = None) -> Path:
    """A retraining run as an earlier server left it in ``<store files>/runs/run-9``: ``run.json`` without an
    exit code, a log, and a tiny ResNet folder whose ``metrics.json`` status is ``status`` (with a checkpoint
    unless final)."""
    import json
    import time

    from genuine_core.models import GenuineClassifier, preset_config

    folder = store_path.with_name(store_path.stem + "_files") / "runs" / "run-9"
    out = folder / "resnet-curated"
    model = GenuineClassifier.from_config(preset_config("tiny", kind="resnet"))
    validation = {"sensitivity": 0.9, "specificity": 0.95, "n_positive": 40, "n_negative": 60}
    model.save(out, metrics={"status": status, "validation": validation})
    if status != "final":  # a resumable checkpoint: its model folder and (here empty) trainer state files
        from training.checkpoint import STATE, TENSORS

        model.save(out / "checkpoint", metrics={"status": "checkpoint"})
        for name in (STATE, TENSORS):
            (out / "checkpoint" / name).write_text("")
    (folder / "train.log").write_text("epoch 1 ...\n")
    (folder / "run.json").write_text(json.dumps({
        "name": "resnet-curated", "kind": "resnet", "preset": "tiny", "epochs": 3, "patience": 2, "n": 15,
        "started": time.time() - 60, "cmd": cmd, "out": str(out), "log": str(folder / "train.log"),
        "pid": pid, "registered": False, "resumed": 0}))
    return folder


def test_models_page_folds_runs_beyond_the_newest_three(store_copy, tmp_path, models_runs):
    """Newest first; the fourth run sits in an expander, without its curves and log."""
    good = {"sensitivity": 0.9, "specificity": 0.95, "n_positive": 40, "n_negative": 60}
    for k in range(4):
        folder = tmp_path / f"r{k}"
        folder.mkdir()
        one: dict = {}
        _models_finished_run(one, folder, good)
        models_runs[f"run-{k}"] = {**one["run-1"], "started": one["run-1"]["started"] + k}  # run-3 is the newest
    at = open_page("models")
    order = [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**run-")]
    assert order == ["run-3", "run-2", "run-1", "run-0"]
    assert [e.label for e in at.expander if "run" in e.label] == ["1 earlier run"]
    assert len([c for c in at.get("plotly_chart") if "training curves" in c.proto.spec]) == 3
    assert len(at.code) == 3


def test_retraining_refuses_taken_names_and_too_few_of_a_class(store_copy, models_runs):
    from genuine_core.errors import InputError
    from pages import retrain
    from store.db import open_store
    from store.labels import record_label_event
    from store.nuclei import sample_nuclei

    assert "(have 9 MNA, 1 non-MNA)" in retrain.curated_shortfall({1: 9, 0: 1})
    assert retrain.curated_shortfall({1: 5, 0: 5}) == ""
    with open_store(store_copy[0]) as s:
        taken = s.query("SELECT name FROM models")["name"].iloc[0]
        with pytest.raises(InputError, match="is taken by a registered model"):
            retrain.start_run(s, "resnet", "tiny", 1, taken, None)
        for nid in sample_nuclei(s, "LINE-MNA")["nucleus_id"].tolist()[:9]:
            record_label_event(s, nid, 1, "Dr. Test")
        record_label_event(s, sample_nuclei(s, "LINE-NON")["nucleus_id"].tolist()[0], 0, "Dr. Test")
        with pytest.raises(InputError, match="5 of each class"):
            retrain.start_run(s, "resnet", "tiny", 1, "fresh-name", None)
    assert not list(store_copy[0].parent.glob("*_files/runs/*"))  # refused before a run folder was made
    at = open_page("models")
    assert "Start is off: a run needs at least 10 curated nuclei, 5 of each class" in texts(at)
    assert next(b for b in at.button if b.label == "Start retraining").disabled


def test_two_sessions_starting_runs_of_one_name_at_once_get_one_run(store_copy, models_runs, monkeypatch):
    import threading

    from genuine_core.errors import InputError
    from pages import retrain
    from store.db import open_store

    with open_store(store_copy[0]) as s:
        _curate_lines(s, 6)
    _stub_launch(monkeypatch)
    outcomes, both_ready = [], threading.Barrier(2)

    def press() -> None:
        both_ready.wait()
        with open_store(store_copy[0]) as s:
            try:
                outcomes.append(retrain.start_run(s, "resnet", "tiny", 1, "same", None))
            except InputError as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=press) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(o, str) for o in outcomes) == 1
    assert "is taken" in str(next(o for o in outcomes if isinstance(o, InputError)))
    assert [rec["name"] for rec in models_runs.values()] == ["same"]


def test_a_failed_run_offers_no_resume(store_copy, tmp_path, models_runs):
    _models_finished_run(models_runs, tmp_path, {"sensitivity": 0.9, "specificity": 0.9})
    rec = models_runs["run-1"]
    (rec["out"] / "checkpoint").mkdir()
    for name in ("config.json", "trainer.json", "trainer.safetensors"):  # resumable, as far as files go
        (rec["out"] / "checkpoint" / name).write_text("")
    (rec["out"] / "metrics.json").write_text('{"status": "training"}')
    rec.update(ended=rec["started"] + 3, rc=2)
    at = open_page("models")
    assert "· failed (exit 2) after 3 s" in next(m.value for m in at.markdown if "run-1" in m.value)
    assert "The run failed; the log above says why" in texts(at)
    assert not [b for b in at.button if b.label == "Resume"]


def test_models_page_reads_back_runs_an_earlier_server_started(store_copy, models_runs):
    """A restarted server lists the store's runs from run.json: a finished one can still be registered."""
    import json

    folder = _recorded_run(store_copy[0], "final", cmd=[])
    (folder.parent / "broken").mkdir()
    (folder.parent / "broken" / "run.json").write_text("{not json")  # skipped, not an error
    at = open_page("models", reviewer="Dr. Test")
    status = [m.value for m in at.markdown if "run-9" in m.value]
    assert status and "· finished after" in status[0]
    at.selectbox(key="retrain_kind").set_value("resnet").run()
    assert at.text_input(key="retrain_name").value == "resnet-curated-2"  # the recovered run's name is taken
    next(b for b in at.button if b.label == "Register resnet-curated").click().run()
    assert not at.exception
    assert "resnet-curated" in frame_with(at, "Model")["Model"].tolist()
    saved = json.loads((folder / "run.json").read_text())
    assert saved["registered"] and saved["rc"] is None and saved["ended"] >= saved["started"]


def test_a_run_registered_while_the_app_was_stopped_shows_as_registered(store_copy, models_runs):
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    folder = _recorded_run(store_copy[0], "final", cmd=[])
    with open_store(store_copy[0]) as s:  # as `genuine store score <run folder>` does
        register_model(s, load_model(folder / "resnet-curated"))
    at = open_page("models")
    assert "registered as resnet-curated" in texts(at)
    assert not [b for b in at.button if b.label == "Register resnet-curated"]
    at.selectbox(key="models_pick").set_value("resnet-curated").run()  # removed again: registrable again
    at.sidebar.text_input(key="reviewer").input("Dr. Test").run()
    at.checkbox(key="models_remove_sure_resnet-curated").check().run()
    at.button(key="models_remove").click().run()
    assert not at.exception and "registered as resnet-curated" not in texts(at)
    assert [b for b in at.button if b.label == "Register resnet-curated"]


def test_models_page_resumes_a_stopped_run_from_its_checkpoint(store_copy, models_runs, tmp_path):
    """A run whose process ended unfinished is 'stopped'; Resume runs its command with --resume into the same log."""
    import json
    import sys
    import time

    marker = tmp_path / "argv.json"
    cmd = [sys.executable, "-c", f"import json, sys; json.dump(sys.argv[1:], open({str(marker)!r}, 'w'))"]
    folder = _recorded_run(store_copy[0], "training", cmd=cmd, pid=2 ** 22 + 7)  # no such process
    at = open_page("models")
    assert "· stopped after" in next(m.value for m in at.markdown if "run-9" in m.value)
    assert "did not finish" in texts(at)
    assert not [b for b in at.button if b.label == "Register resnet-curated"]  # unfinished: nothing to register
    next(b for b in at.button if b.label == "Resume").click().run()
    assert not at.exception
    deadline = time.monotonic() + 60
    while not marker.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(marker.read_text()) == ["--resume"]
    assert "--- resumed" in (folder / "train.log").read_text()
    assert json.loads((folder / "run.json").read_text())["resumed"] == 1


def test_models_page_stops_a_running_run_as_ctrl_c_does(store_copy, tmp_path, models_runs):
    """Stop sends SIGINT (genuine train then saves its checkpoint and exits 130); the run then reads 'stopped'."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    _models_finished_run(models_runs, tmp_path, {"sensitivity": 0.9, "specificity": 0.9})
    models_runs["run-1"].update(proc=proc, pid=proc.pid)
    at = open_page("models")
    assert "· running ·" in next(m.value for m in at.markdown if "run-1" in m.value)
    next(b for b in at.button if b.label == "Stop").click().run()
    assert proc.wait(timeout=30) != 0
    time.sleep(0.1)
    at.run()
    assert "· stopped after" in next(m.value for m in at.markdown if "run-1" in m.value)


def test_a_run_started_by_an_earlier_server_still_running_is_watched(store_copy, models_runs):
    """Its pid is alive and its command line names the run's model folder: running, and Stop reaches it."""
    import subprocess
    import sys

    folder = _recorded_run(store_copy[0], "training", cmd=[])
    out = folder / "resnet-curated"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(out)])
    run = folder / "run.json"
    run.write_text(run.read_text().replace('"pid": null', f'"pid": {proc.pid}'))
    at = open_page("models")
    assert "· running ·" in next(m.value for m in at.markdown if "run-9" in m.value)
    next(b for b in at.button if b.label == "Stop").click().run()
    assert proc.wait(timeout=30) != 0


def test_embeddings_page_without_umap_says_how_to_fit_one(store_copy):
    at = open_page("embeddings")
    assert "genuine umap" in texts(at)


def test_embeddings_page_offers_to_fit_a_map_for_models_without_one(store_copy):
    at = open_page("embeddings")
    fit = at.selectbox(key="emb_fit_model")
    assert fit.options == ["ratio-test", "intensity-test"] and fit.label == "2 models have no map yet"
    assert "Fit one above" in texts(at)


def test_embeddings_page_names_nuclei_without_a_curated_label_in_the_legend(store_copy, monkeypatch):
    # nothing curated: every point was grey and the legend disappeared, so nothing said what grey means
    import store.umap as umap_store

    points = pd.DataFrame({"nucleus_id": [1, 2, 3], "x": [0.0, 1.0, 2.0], "y": 0.0, "sample": "LINE-MNA",
                           "source": "training", "prob": 0.5, "call": 1, "auto_label": 1, "true_label": 1,
                           "curated_label": [None, None, None], "excluded": False})
    monkeypatch.setattr(umap_store, "umap_points", lambda store, model, sample=None, **kw: points)
    monkeypatch.setattr(umap_store, "umap_count", lambda store, model, sample=None, **kw: len(points))
    monkeypatch.setattr(umap_store, "mapped_models",
                        lambda store: store.query("SELECT name FROM models")["name"].tolist())
    at = open_page("embeddings")
    at.selectbox(key="emb_colour").set_value("curated label").run()
    assert not at.exception, [e.value for e in at.exception]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in spec["data"]] == ["not curated"] and spec["layout"]["showlegend"] is True


def test_embeddings_page_names_nuclei_without_ground_truth_or_auto_label_for_what_is_missing(store_copy,
                                                                                             monkeypatch):
    # colour by ground truth on the demo store: the real scan's 63 nuclei were "unlabelled", read as not curated
    import store.umap as umap_store

    points = pd.DataFrame({"nucleus_id": [1, 2], "x": [0.0, 1.0], "y": 0.0, "sample": ["LINE-MNA", "CASE"],
                           "source": ["training", "case"], "prob": 0.5, "call": 1, "auto_label": [1, None],
                           "true_label": [1, None], "curated_label": [None, None], "excluded": False})
    monkeypatch.setattr(umap_store, "umap_points", lambda store, model, sample=None, **kw: points)
    monkeypatch.setattr(umap_store, "umap_count", lambda store, model, sample=None, **kw: len(points))
    monkeypatch.setattr(umap_store, "mapped_models",
                        lambda store: store.query("SELECT name FROM models")["name"].tolist())
    at = open_page("embeddings")
    for how, missing in (("ground truth", "no ground truth"), ("auto label", "no auto label")):
        at.selectbox(key="emb_colour").set_value(how).run()
        assert not at.exception, [e.value for e in at.exception]
        traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
        colour = {t["name"]: t["marker"]["color"] for t in traces}
        assert set(colour) == {"MNA", missing} and colour[missing] == "#c7c7c7"  # the grey of "no label"


@pytest.mark.slow
def test_embeddings_page_fits_a_map_and_shows_it(store_copy):
    at = open_page("embeddings")
    at.selectbox(key="emb_fit_model").set_value("intensity-test").run()
    at.button(key="emb_fit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="emb_left_model").value == "intensity-test"  # the one map there is
    assert at.selectbox(key="emb_fit_model").options == ["ratio-test"]
    assert len(at.get("plotly_chart")) == 1


@pytest.mark.slow
def test_embeddings_page_shows_both_maps_and_looks_up_nuclei(umap_store_copy):
    _, counts = umap_store_copy
    at = open_page("embeddings")
    assert at.selectbox(key="emb_left_model").value == "ratio-test"      # GENUINE-kind model left
    assert at.selectbox(key="emb_right_model").value == "intensity-test"  # ResNet-kind model right
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    at.selectbox(key="emb_colour").set_value("source").run()
    assert not at.exception
    import json

    names = {t["name"] for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]}
    assert {"training", "mixture"} <= names
    at.text_input(key="emb_find").input("1, 2, 99999 -5 1.5 99999999999999999999999").run()
    assert not at.exception, [e.value for e in at.exception]
    table = frame_with(at, "sample")
    assert table["nucleus_id"].tolist() == [1, 2]
    assert "Selected nuclei (2)" in [s.value for s in at.subheader]  # the unknown id is not counted
    assert any("No nucleus with id 99999" in w.value for w in at.warning)
    assert any("Not a nucleus id (whole numbers only): -5, 1.5, 99999999999999999999999" in w.value
               for w in at.warning)  # not read as ids 5, 1 and 5, or an overflow
    other = next(s for s in at.multiselect(key="emb_samples").options if s != table["sample"].iloc[0])
    at.multiselect(key="emb_samples").set_value([other]).run()
    assert "Not on ratio-test's map: nucleus 1" in texts(at)  # filtered out, said so instead of vanishing


@pytest.mark.slow
def test_models_page_retrains_on_curated_labels_and_registers_the_result(store_copy, models_runs):
    """Curate 12 + 12 nuclei, start a tiny ResNet run from the page, wait for it, register it."""
    import time

    from store.db import open_store

    path, _ = store_copy
    with open_store(path) as s:
        _curate_lines(s, 12)
    at = open_page("models", reviewer="Dr. Test")
    at.selectbox(key="retrain_kind").set_value("resnet")
    at.selectbox(key="retrain_preset").set_value("tiny")
    at.number_input(key="retrain_epochs").set_value(2)
    at.text_input(key="retrain_name").set_value("resnet-curated")
    start = next(b for b in at.button if b.label == "Start retraining")
    assert not start.disabled
    start.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="retrain_name").value == "resnet-curated-2"  # the typed name is taken now
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        at.run()
        register = [b for b in at.button if b.label == "Register resnet-curated"]
        if register:
            break
        failed = [m.value for m in at.markdown if "failed (exit" in m.value]
        assert not failed, failed + [c.value for c in at.code]
        time.sleep(3)
    else:
        pytest.fail("retraining did not finish in 10 minutes")
    # 24 curated nuclei leave a handful for validation: the page says so before it registers
    assert any("validation split" in w.value for w in at.warning)
    assert register[0].disabled
    next(c for c in at.checkbox if c.label == "Register it anyway").check().run()
    register = [b for b in at.button if b.label == "Register resnet-curated"]
    register[0].click().run()
    assert not at.exception
    assert "resnet-curated" in frame_with(at, "Model")["Model"].tolist()
    run_dir = next((path.parent / "store_files" / "runs").iterdir())
    assert (run_dir / "curated.npz").is_file() and (run_dir / "resnet-curated" / "history.json").is_file()


def test_a_retraining_run_records_its_seed_and_passes_it_explicitly(store_copy, models_runs, monkeypatch):
    """run.json and the command name the seed (it was left to genuine train's default, recorded nowhere until
    the run finished), and the run's line on the Models page shows it."""

    from pages import retrain
    from store.db import open_store

    with open_store(store_copy[0]) as s:
        _curate_lines(s, 6)
    launched = _stub_launch(monkeypatch)
    with open_store(store_copy[0]) as s:
        run_id = retrain.start_run(s, "resnet", "tiny", 1, "seeded", None)
    cmd = launched[0]
    assert cmd[cmd.index("--seed") + 1] == str(retrain.SEED)
    rec = models_runs[run_id]
    assert json.loads((Path(rec["log"]).parent / "run.json").read_text())["seed"] == retrain.SEED
    assert f"seed {retrain.SEED}" in texts(open_page("models"))


def test_retraining_fine_tunes_a_registered_model_of_the_same_kind_by_default(store_copy, models_runs, tmp_path,
                                                                           monkeypatch):
    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model, retire_model

    folder, old = tmp_path / "resnet-base", tmp_path / "resnet-old"
    GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(folder, metrics={})
    GenuineClassifier.from_config(preset_config("tiny", kind="resnet", seed=1)).save(old, metrics={})
    with open_store(store_copy[0]) as s:
        register_model(s, load_model(old))
        retire_model(s, "resnet-old", by="Dr. Test")  # an upgrade replaced it: its folder may hold other weights
        register_model(s, load_model(folder))
        _curate_lines(s, 6)
    launched = _stub_launch(monkeypatch)
    at = open_page("models")
    at.selectbox(key="retrain_kind").set_value("resnet").run()
    at.selectbox(key="retrain_preset").set_value("tiny").run()
    start_from = at.selectbox(key="retrain_init_resnet_tiny")
    assert start_from.options == ["random weights", "resnet-base (fine-tune)"] and start_from.value == str(folder)
    next(b for b in at.button if b.label == "Start retraining").click().run()
    assert not at.exception and launched and launched[0][launched[0].index("--init") + 1] == str(folder)
    assert "from resnet-base on 12 curated nuclei" in texts(at)
    at.selectbox(key="retrain_init_resnet_tiny").set_value("").run()  # random weights: no --init
    next(b for b in at.button if b.label == "Start retraining").click().run()
    assert len(launched) == 2 and "--init" not in launched[1]


@pytest.mark.slow
@pytest.mark.parametrize("fine_tune", [False, True])
def test_a_real_retraining_run_stopped_after_its_first_epoch_resumes_to_a_finished_model(store_copy, models_runs,
                                                                                          monkeypatch, tmp_path,
                                                                                          fine_tune):
    """Start a tiny ResNet run of 8 epochs (no early stop), from random weights or fine-tuning a model folder
    (--init), stop it (SIGINT) once an epoch is saved, resume it from the checkpoint: it finishes, the model
    loads, and a fine-tune still records where it started."""
    import json
    import time

    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from pages import retrain
    from store.db import open_store
    from training.checkpoint import has_checkpoint

    path, _ = store_copy
    with open_store(path) as s:
        _curate_lines(s, 12)
        monkeypatch.setitem(retrain.PRESET_DEFAULTS, "tiny", (8, 100, 64))  # patience 100: the run goes on
        init = GenuineClassifier.from_config(preset_config("tiny", kind="resnet", patch_size=96)).save(
            tmp_path / "resnet-base", metrics={}) if fine_tune else None
        run_id = retrain.start_run(s, "resnet", "tiny", 8, "resnet-stopped", None, init=init)
    rec = models_runs[run_id]

    def wait(done, what: str, seconds: float = 600) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, f"{what} did not happen in {seconds:.0f} s"
            time.sleep(0.05)

    wait(lambda: has_checkpoint(rec["out"]) or retrain.poll(rec) != retrain.RUNNING, "a first checkpoint")
    assert has_checkpoint(rec["out"]), rec["log"].read_text()[-2000:]
    retrain.stop_run(rec)
    wait(lambda: retrain.poll(rec) != retrain.RUNNING, "the stop")
    assert retrain.poll(rec) == retrain.STOPPED and rec["rc"] == 130, rec["log"].read_text()[-2000:]
    assert retrain.resumable(rec) and "--resume" in rec["log"].read_text()  # the log says how to go on
    retrain.resume_run(rec)
    wait(lambda: retrain.poll(rec) != retrain.RUNNING, "the resumed run's end")
    assert retrain.poll(rec) == retrain.FINISHED, rec["log"].read_text()[-2000:]
    assert not retrain.resumable(rec) and load_model(rec["out"]).kind == "resnet"
    assert json.loads((rec["log"].parent / "run.json").read_text())["resumed"] == 1
    tc = json.loads((rec["out"] / "train_config.json").read_text())
    assert tc["init"] == (str(init) if fine_tune else None) and tc["label"] == "curated"


@pytest.mark.slow
def test_cases_on_the_demo_store_match_the_store_summaries(tmp_path, monkeypatch):
    """A demo store built with the shipped models: the Cases table shows its samples with the stored counts."""
    from store.db import open_store
    from store.demo import DemoConfig, build_demo
    from store.summary import sample_summaries

    demo = tmp_path / "demo" / "genuine_demo.duckdb"
    cfg = DemoConfig(nuclei_per_line=12, mixture_nuclei=6, nuclei_per_field=6, include_real=False, mc_samples=2)
    report = build_demo(demo, cfg, progress=False)  # default model folders: the shipped models/
    assert report["failed"] == [] and sorted(report["models"]) == ["detector_cpu", "genuine_cpu", "ratio_cpu", "resnet_cpu"]
    path = private_store_copy(demo, tmp_path, monkeypatch)
    with open_store(path, read_only=True) as s:
        summ = sample_summaries(s)
    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    table = frame_with(at, "Sample").set_index("Sample")
    want = summ[summ["model"] == primary].set_index("sample")
    assert sorted(table.index) == sorted(summ["sample"].unique())
    assert table["Nuclei scored"].to_dict() == want["n_scored"].to_dict()
    assert table["Call"].to_dict() == want["call"].to_dict()


def test_cases_names_a_sample_left_without_a_nucleus_to_call(store_copy):
    """Curators excluded every nucleus of a sample: it drops out of the table, and the page says so."""
    from store.db import open_store
    from store.labels import exclude_scan

    with open_store(store_copy[0]) as s:
        for scan_id in s.query("SELECT c.id FROM scans c JOIN samples x ON x.id = c.sample_id "
                               "WHERE x.name = 'MIX-50'")["id"]:
            exclude_scan(s, int(scan_id), "qa")
    at = open_page("cases")
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value.endswith("no nucleus to call (all excluded by curators, or none stored): MIX-50")
               for c in at.caption)


def _add_weak_model(s) -> None:
    """Score every stored scan with 'weak-retrain', an always-MNA model registered despite a useless validation."""
    from _store_fakes import fake_model, synthetic_result
    from store.registry import register_model
    from store.scans import add_model_outputs

    weak = {"validation": {"sensitivity": 1.0, "specificity": 0.25, "n_positive": 4, "n_negative": 4}}
    mid = register_model(s, fake_model("weak-retrain", metrics=weak))
    for scan_id in s.query("SELECT id FROM scans ORDER BY id")["id"]:
        ids = s.query("SELECT id FROM nuclei WHERE scan_id = ? ORDER BY id", [int(scan_id)])["id"].to_numpy()
        res = synthetic_result(f"{int(scan_id):064d}", {"weak-retrain": np.full(len(ids), 0.99)})
        assert add_model_outputs(s, int(scan_id), ids, res, {"weak-retrain": mid})


def test_review_shows_a_weak_models_call_but_it_flags_no_model_disagreement(store_copy):
    from store.db import open_store
    from store.review import review_progress

    with open_store(store_copy[0]) as s:
        trusted = review_progress(s, flags=("models_disagree",))["total"]
        _add_weak_model(s)
    at = open_page("review", reviewer="Dr. Test")
    at.get("pills")[0].set_value(["models_disagree"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.get("progress")[0].proto.text.startswith(f"**0 of {trusted} reviewed**")
    assert any("weak validation: weak-retrain; its call is shown" in c.value for c in at.caption)
    assert any("weak-retrain" in d.value.get("Model", pd.Series(dtype=str)).tolist() for d in at.dataframe)
    assert "without weak validation" in at.get("pills")[0].proto.help


def test_review_marks_a_retired_models_call_and_flags_no_disagreement_from_it(store_copy):
    from store.db import open_store
    from store.registry import retire_model
    from store.review import review_progress

    with open_store(store_copy[0]) as s:
        assert review_progress(s, flags=("models_disagree",))["total"] > 0  # the two models disagree somewhere
        retire_model(s, "ratio-test", by="ann")
        assert review_progress(s, flags=("models_disagree",))["total"] == 0  # one trusted model left
        total = review_progress(s)["total"]
    at = open_page("review", reviewer="Dr. Test")
    assert not at.exception, [e.value for e in at.exception]
    assert at.get("progress")[0].proto.text.startswith(f"**0 of {total} reviewed**")
    assert any("retired: ratio-test; its call is shown" in c.value for c in at.caption)
    assert "a retired model" in at.get("pills")[0].proto.help


def test_review_patch_colours_offer_a_colour_blind_view(store_copy):
    at = open_page("review", reviewer="Dr. Test")
    caption = lambda: [c for img in at.get("image") for c in img.captions if c.startswith("NMI ")]  # noqa: E731
    assert caption()[0].startswith("NMI red · MYCN green · DAPI blue")
    at.sidebar.get("button_group")[0].set_value("magenta/green").run()
    assert not at.exception, [e.value for e in at.exception]
    assert caption()[0].startswith("NMI magenta · MYCN green · DAPI grey")


def _gallery_images(at: AppTest, shown: dict) -> dict[int, bytes]:
    """The gallery's images by nucleus id (captions start '#id'), as the bytes the page sent."""
    return {int(img.captions[0].split()[0][1:]): shown[img.proto.imgs[0].url] for img in at.get("image")
            if img.captions and img.captions[0].startswith("#")}


def _sent_images(monkeypatch) -> dict[str, tuple[str, int]]:
    """Every image the pages send from now on: url -> (mimetype, bytes)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    sent, add = {}, MediaFileManager.add

    def keep(self, data, mimetype, coordinates, *args, **kwargs):
        url = add(self, data, mimetype, coordinates, *args, **kwargs)
        sent[url] = (mimetype, len(data))
        return url

    monkeypatch.setattr(MediaFileManager, "add", keep)
    return sent


def test_review_card_sends_its_patch_and_channels_as_png(store_copy, monkeypatch):
    """Not as JPEG, Streamlit's default for an array, whose chroma subsampling blurs small coloured signals."""
    sent = _sent_images(monkeypatch)
    at = open_page("review", reviewer="Dr. Test")
    card = [img for img in at.get("image") if img.captions and not img.captions[0].startswith("#")]
    assert len(card) == 4  # the patch and its three channels
    assert {sent[img.proto.imgs[0].url][0] for img in card} == {"image/png"}


def test_probe_examples_are_sent_as_png(stub_probe_model, monkeypatch):
    _, name, _ = stub_probe_model
    sent = _sent_images(monkeypatch)
    at = open_page("probe")
    at.selectbox(key="probe_model").set_value(name)
    at.number_input(key="probe_n").set_value(3)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    examples = [sent[img.proto.imgs[0].url][0] for img in at.get("image")]
    assert examples and set(examples) == {"image/png"}


def test_one_patch_colour_choice_recolours_every_gallery_for_the_session(store_copy, monkeypatch):
    """magenta/green, chosen once in the sidebar, redraws the Cases gallery's stored patches (NMI magenta, MYCN
    green, DAPI grey) and names those colours; the choice stays for the Review page and its card."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    from genuine_core import plotting
    from genuine_core.pipeline import decode_image
    from store.db import open_store
    from store.nuclei import patch_bytes

    shown = {}  # url -> bytes of every image the pages sent
    add = MediaFileManager.add

    def keep(self, data, mimetype, coordinates, *args, **kwargs):
        url = add(self, data, mimetype, coordinates, *args, **kwargs)
        shown[url] = data
        return url

    monkeypatch.setattr(MediaFileManager, "add", keep)
    at = open_page("cases")
    at.selectbox(key="case_select").set_value("MIX-50").run()
    red = _gallery_images(at, shown)
    with open_store(store_copy[0]) as s:  # the app holds the file open in this process: same configuration
        stored = patch_bytes(s, list(red))
    assert red and red == stored  # red/green: the stored patches as they are
    assert at.sidebar.get("button_group")[0].value == "red/green"
    at.sidebar.get("button_group")[0].set_value("magenta/green").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Patch colours: NMI magenta · MYCN green · DAPI grey" in texts(at)
    magenta = _gallery_images(at, shown)
    assert set(magenta) == set(red)
    for nid, png in magenta.items():
        rgb = decode_image(stored[nid])
        got = decode_image(png).astype(int)
        assert np.array_equal(got, plotting.recolour(rgb, "magenta/green"))
        assert np.array_equal(got[..., 0], np.round(rgb[..., 0] + 0.4 * rgb[..., 2]).clip(0, 255))  # NMI + grey
        assert np.array_equal(got[..., 2], got[..., 0])  # magenta and grey have equal red and blue
    at.switch_page("pages/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.get("button_group")[0].value == "magenta/green"
    assert any(c.startswith("NMI magenta · MYCN green · DAPI grey") for img in at.get("image") for c in img.captions)
    assert "Patch colours: NMI magenta · MYCN green · DAPI grey" in texts(at)  # the Up next gallery


def test_patch_galleries_name_the_channel_colours(store_copy):
    at = open_page("cases")
    at.selectbox(key="case_select").set_value("MIX-50").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Patch colours: NMI red · MYCN green · DAPI blue" in texts(at)


# ----------------------------------------------------------------------------- a large store (store.scale rows)
@pytest.fixture(scope="module")
def scaled_store(tmp_path_factory) -> Path:
    """A store of 12,000 synthetic nuclei in 4 samples, scored by 2 models, each with UMAP coordinates."""
    from genuine_core.pipeline import encode_image, encode_masks
    from store.db import Store
    from store.scale import populate_synthetic

    path = tmp_path_factory.mktemp("scaled") / "scaled.duckdb"
    images = (encode_image(np.zeros((40, 40, 3), np.float32)), encode_masks(np.zeros((40, 40), np.int32)))
    with Store(path) as s:
        populate_synthetic(s, n_nuclei=12_000, n_models=2, n_samples=4, scans_per_sample=2, n_events=50, umap=True,
                           scan_images=images)
    return path


def test_umap_points_limit_is_a_fixed_subset_chosen_by_the_query(scaled_store):
    from store.db import open_store
    import store.umap as umap_store

    with open_store(scaled_store, read_only=True) as s:
        model = umap_store.mapped_models(s)[0]
        whole = umap_store.umap_points(s, model)
        part = umap_store.umap_points(s, model, limit=500)
        assert len(whole) == umap_store.umap_count(s, model) == 12_000
        assert len(part) == 500 and part.equals(umap_store.umap_points(s, model, limit=500))  # the same subset
        assert set(part["nucleus_id"]) < set(whole["nucleus_id"]) and part["nucleus_id"].is_monotonic_increasing
        one = str(whole["sample"].iloc[0])
        assert set(umap_store.umap_points(s, model, samples=[one], limit=100)["sample"]) == {one}
        ids = whole["nucleus_id"].iloc[[3, 7]].tolist()
        assert umap_store.umap_points(s, model, ids=ids)["nucleus_id"].tolist() == ids


def test_embeddings_page_reads_and_draws_at_most_max_points(scaled_store, tmp_path, monkeypatch):
    # every model's whole map was read into pandas (4 x 1M rows on a lab store) and only then subsampled
    import store.umap as umap_store

    private_store_copy(scaled_store, tmp_path, monkeypatch)
    read = []
    whole = umap_store.umap_points

    def spy(*args, **kw):
        df = whole(*args, **kw)
        read.append(len(df))
        return df

    monkeypatch.setattr(umap_store, "umap_points", spy)
    at = open_page("embeddings")
    read.clear()
    at.number_input(key="emb_max").set_value(1000).run()
    assert not at.exception, [e.value for e in at.exception]
    assert read and max(read) <= 1000  # the query is LIMITed, not the frame cut afterwards
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        assert sum(len(plotly_array(t["x"])) for t in spec["data"]) <= 1000
        assert "1,000 of 12,000 nuclei" in spec["layout"]["title"]["text"]
    assert "at most 1,000 nuclei: a fixed random subset of the 12,000" in texts(at)


#: the main column's width (px) at a 1024 px wide window in Chromium with the sidebar open (measured), the gap
#: between columns and the width below which Streamlit drops a number input's -/+ buttons (7.5rem)
MAIN_WIDTH_1024, COLUMN_GAP, NUMBER_INPUT_CONTROLS_MIN = 562, 16, 120


def test_embeddings_max_points_keeps_its_step_buttons_at_1024_px(umap_store_copy):
    # at 1024 px the Max points box, a 1.2 of 7.2 column beside three selectboxes, was 82 px wide: no -/+
    at = open_page("embeddings")
    column = next(c for c in at.columns if any(n.key == "emb_max" for n in c.number_input))

    def parent(node, child):
        kids = list(getattr(node, "children", {}).values())
        if any(k is child for k in kids):
            return node
        return next((p for p in (parent(k, child) for k in kids) if p is not None), None)

    row = list(parent(at.main, column).children.values())
    width = column.weight / sum(c.weight for c in row) * (MAIN_WIDTH_1024 - COLUMN_GAP * (len(row) - 1))
    assert width >= NUMBER_INPUT_CONTROLS_MIN + 10, width


def test_embeddings_page_draws_at_most_10000_points_per_map_by_default(scaled_store, tmp_path, monkeypatch):
    # two WebGL scatters of 30,000 nuclei each took 2-3.5 s to draw on every visit of the page
    private_store_copy(scaled_store, tmp_path, monkeypatch)
    at = open_page("embeddings")
    assert at.number_input(key="emb_max").value == 10_000
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    for chart in charts:
        spec = json.loads(chart.proto.spec)
        assert sum(len(plotly_array(t["x"])) for t in spec["data"]) == 10_000
        assert "10,000 of 12,000 nuclei" in spec["layout"]["title"]["text"]


def test_ingest_page_lists_scans_whose_segmentation_is_not_recorded(scaled_store, tmp_path, monkeypatch):
    # a NULL segmentation came back as NaN and json.loads(NaN) ended the Ingest page with a TypeError
    from store.db import open_store
    from store.scans import scan_overview

    path = private_store_copy(scaled_store, tmp_path, monkeypatch)
    with open_store(path) as s:  # one scan records its segmentation, the others do not (NULL)
        s.cursor().execute("UPDATE scans SET segmentation = '{\"backend\": \"watershed\"}' "
                           "WHERE id = (SELECT min(id) FROM scans)")
        backends = scan_overview(s)["backend"].tolist()
    assert backends[0] == "watershed" and pd.isna(backends[1:]).all()
    open_page("ingest")  # asserts no exception


def test_review_page_reads_no_whole_audit_trail_per_run(scaled_store, tmp_path, monkeypatch):
    # every decision rebuilt the CSVs of all curated labels and of the whole audit trail (0.3 s at 10,000
    # events, growing with each one), and read the whole trail to show a reviewer's last ten decisions
    import store.labels as labels

    from store.db import open_store

    private_store_copy(scaled_store, tmp_path, monkeypatch)
    calls = []
    whole = labels.audit_trail

    def spy(store, *args, **kw):
        calls.append(kw.get("latest"))
        return whole(store, *args, **kw)

    monkeypatch.setattr(labels, "audit_trail", spy)
    at = open_page("review", reviewer="ann")
    assert calls and all(n is not None and n <= 10 for n in calls)  # only the reviewer's latest, in the query
    with open_store(scaled_store, read_only=True) as s:
        mine = whole(s, reviewer="ann", latest=10)
        n = labels.count_current_labels(s)
        assert mine["event_id"].tolist() == whole(s, reviewer="ann")["event_id"].tolist()[-10:]
    assert len(mine) == 10 and set(mine["reviewer"]) == {"ann"} and mine["event_id"].is_monotonic_increasing
    assert at.get("download_button")[0].proto.label == f"Curated labels ({n})"


# ----------------------------------------------------------------------------- review: conflicts and agreement
def _disagree(path: Path, n: int = 2) -> list[int]:
    """Ann and Bob review the first ``n + 1`` LINE-MNA nuclei: they disagree on the first ``n`` (Bob with a note)."""
    from store.db import open_store
    from store.labels import record_label_event
    from store.nuclei import sample_nuclei

    with open_store(path) as s:
        ids = sample_nuclei(s, "LINE-MNA")["nucleus_id"].tolist()[:n + 1]
        for i, nid in enumerate(ids):
            record_label_event(s, nid, 1, "Ann", note="bright green clusters")
            record_label_event(s, nid, 0 if i < n else 1, "Bob", note="clusters are debris" if i < n else None)
    return ids


def card_nucleus(at: AppTest) -> int:
    return int([m.value for m in at.markdown if m.value.startswith("#### Nucleus")][0].split()[-1])


def test_review_conflicts_queue_shows_each_reviewer_and_one_decision_settles(store_copy, monkeypatch):
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")
    path, _ = store_copy
    first, second, agreed = _disagree(path)
    at = open_page("review", reviewer="Sen")
    at.segmented_control(key="review_mode").set_value("Conflicts").run()
    assert not at.exception
    assert card_nucleus(at) == first
    assert "0 of 2 conflicts settled" in at.get("progress")[0].proto.text
    reviews = frame_with(at, "Reviewer")
    assert reviews[["Reviewer", "Decision", "Note"]].values.tolist() == [
        ["Ann", "MNA", "bright green clusters"], ["Bob", "non-MNA", "clusters are debris"]]
    assert "reviewers disagree: your decision settles it" in texts(at)
    decision(at, "non").click().run()
    assert not at.exception
    ev = events(path)
    assert ev.iloc[-1][["nucleus_id", "value", "reviewer"]].tolist() == [first, "0", "Sen"]
    assert card_nucleus(at) == second  # the settled nucleus left the queue
    assert "1 of 2 conflicts settled" in at.get("progress")[0].proto.text
    decision(at, "mna").click().run()
    assert any("No open conflict" in s.value for s in at.success)
    at.toggle(key="review_include_settled").set_value(True).run()
    assert card_nucleus(at) in (first, second) and "settled" in texts(at)
    assert agreed not in (first, second)


def test_review_undo_shows_the_undone_nucleus_again(store_copy, monkeypatch):
    """U after settling a conflict brings that nucleus' card back, to decide it again; the Conflicts queue puts
    the longest untouched first, so the undone one went to the end and the next card showed instead."""
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")
    path, _ = store_copy
    first, second, _ = _disagree(path)
    at = open_page("review", reviewer="Sen")
    at.segmented_control(key="review_mode").set_value("Conflicts").run()
    decision(at, "non").click().run()
    assert card_nucleus(at) == second
    at.button(key="review_undo").click().run()
    assert not at.exception and any(f"nucleus {first} is back to" in m.value for m in at.success)
    assert card_nucleus(at) == first
    at.text_input(key="review_note").input("look again").run()  # a rerun that is no decision keeps it
    assert card_nucleus(at) == first
    decision(at, "mna").click().run()
    assert card_nucleus(at) == second and events(path).iloc[-1][["nucleus_id", "value"]].tolist() == [first, "1"]


def test_review_agreement_table_and_confusion_matrix(store_copy):
    path, _ = store_copy
    _disagree(path)
    at = open_page("review", reviewer="Sen")
    table = frame_with(at, "Kappa")
    row = table.iloc[0]
    assert row["Reviewers"] == "Ann / Bob" and row["Both reviewed"] == 3 and row["Agreement"] == "33.3 % (1 of 3)"
    # Ann used MNA only, Bob both: kappa 0 (no better than chance); the large-sample SE is 0, so no interval
    assert row["Kappa"] == "0.00" and row["95 % CI"] == "-" and "a reviewer used one category only" in row["Note"]
    assert "Fleiss, Cohen & Everitt (1969)" in texts(at)
    matrix = next(d.value for d in at.dataframe if "non-MNA" in list(d.value.columns))
    assert matrix.loc["MNA", "MNA"] == 1 and matrix.loc["MNA", "non-MNA"] == 2 and int(matrix.to_numpy().sum()) == 3


def test_review_agreement_states_one_reviewer_no_overlap_and_unnamed_events(store_copy):
    import streamlit as st

    from store.db import open_store
    from store.labels import record_label_event
    from store.nuclei import sample_nuclei

    path, _ = store_copy
    at = open_page("review", reviewer="Sen")
    assert "no named reviewer: agreement needs two reviewers deciding the same nuclei" in texts(at)
    with open_store(path) as s:
        a, b = sample_nuclei(s, "LINE-MNA")["nucleus_id"].tolist()[:2]
        record_label_event(s, a, 1, "Ann")
        s.execute("INSERT INTO label_events (nucleus_id, value, previous, reviewer, created_at) "
                  "VALUES (?, '0', 'unset', '', now())", [b])
    st.cache_data.clear()  # written behind the app's back: its cached queries do not know
    at = open_page("review", reviewer="Sen")
    assert "1 named reviewer (Ann): agreement needs two reviewers" in texts(at)
    assert "1 decisions on 1 nuclei carry no reviewer name (legacy events) and are left out" in texts(at)
    with open_store(path) as s:
        record_label_event(s, b, 1, "Bob")
    st.cache_data.clear()
    at = open_page("review", reviewer="Sen")
    assert "2 reviewers, but no nucleus was reviewed by two of them" in texts(at)
    assert not [d for d in at.dataframe if "Kappa" in d.value.columns]  # no pair table of empty pairs
    at.segmented_control(key="review_mode").set_value("Conflicts").run()
    assert not at.exception
    assert any("No conflicts: no nucleus has reviewers whose latest decisions disagree" in i.value for i in at.info)


def test_review_skipping_every_card_left_then_one_again_shows_the_next_card():
    """Skipped cards went to the back in queue order, not skip order: once every card left had been skipped,
    skipping the first again showed it again (the load test's sessions, 8 cards left each, got stuck)."""
    import pandas as pd

    from store.review import skipped_last

    q = pd.DataFrame({"nucleus_id": [5, 6, 7, 8], "informativeness": [4.0, 3.0, 2.0, 1.0]})
    assert skipped_last(q, [])["nucleus_id"].tolist() == [5, 6, 7, 8]
    assert skipped_last(q, [6])["nucleus_id"].tolist() == [5, 7, 8, 6]
    assert skipped_last(q, [5, 6, 7, 8])["nucleus_id"].tolist() == [5, 6, 7, 8]
    assert skipped_last(q, [6, 7, 8, 5])["nucleus_id"].tolist() == [6, 7, 8, 5]  # 5 skipped again: 6 shows
    assert skipped_last(q, [9, 7])["nucleus_id"].tolist() == [5, 6, 8, 7]  # decided meanwhile (9): ignored
