"""The Cases page's sign-out: the table's "Signed out" column, the case's form, withdrawal, history, and the
"changed since sign-out" warning (``store.signout``), under ``AppTest`` on a copy of the small test store."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("streamlit")

from test_app import frame_with, open_page, texts  # noqa: E402


def _open_case(at, sample: str):
    at.selectbox(key="case_select").set_value(sample).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _signed(at) -> dict:
    table = frame_with(at, "Sign-out in force")
    return dict(zip(table["Sample"], table["Sign-out in force"]))


def _marks(at) -> dict:
    table = frame_with(at, "Signed out")
    return dict(zip(table["Sample"], table["Signed out"]))


def test_a_pathologist_signs_out_a_case_and_the_table_says_so(store_copy):
    from store.db import open_store
    from store.signout import history

    path, _ = store_copy
    at = _open_case(open_page("cases", reviewer="Dr. Path"), "MIX-50")
    primary = at.selectbox(key="cases_primary").value
    assert set(_signed(at).values()) == {""}  # nobody signed anything out yet
    table = next(d for d in at.dataframe if "Signed out" in d.value.columns)
    columns = json.loads(table.proto.columns)
    assert columns["Sign-out in force"]["width"] == "large"  # "... · changed since" was cut at "medium"
    # the marker sits before the 400 px QC flags and is narrow, so it is in view at 1280 px (it came after them)
    order = list(table.value.columns)
    assert order[:5] == ["Sample", f"{primary} MNA %", "Call", "Signed out", "QC flags"]
    assert columns["Signed out"]["width"] == 104 and "✓ changed: its numbers moved since" in columns["Signed out"]["help"]
    assert "Not signed out." in texts(at)
    call = at.selectbox(key=f"sign_out_call MIX-50 {primary}")
    assert call.value == "not enough nuclei"  # preselected: the model's rule call
    assert "not assessable" in call.options
    call.set_value("not assessable")
    at.text_input(key="sign_out_comment MIX-50").input("too few tumour cells")
    next(b for b in at.button if b.label == "Sign out").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    signed = _signed(at)
    # the call overrides the model's rule call: the table, the case and its history say so
    overrides = f"not assessable (overrides {primary}'s call: not enough nuclei)"
    assert signed["MIX-50"].startswith(f"{overrides} · Dr. Path · 20") and signed["LINE-MNA"] == ""
    assert _marks(at)["MIX-50"] == "✓" and _marks(at)["LINE-MNA"] == ""
    success = " ".join(s.value for s in at.success)
    assert f"**Signed out**: {overrides}, signed out by Dr. Path on " in success
    assert f" UTC ({primary}: " in success and success.endswith("%); comment: too few tumour cells")
    assert not [w for w in at.warning if "Changed since sign-out" in w.value]
    rows = history(open_store(path), "MIX-50")  # the app holds the store: this shares its database
    assert rows[["action", "call", "by_user", "model"]].values.tolist() == [
        ["sign out", "not assessable", "Dr. Path", primary]]
    assert frame_with(at, "action")["by"].tolist() == ["Dr. Path"]  # the history under the form
    assert frame_with(at, "action")["call"].tolist() == [overrides]
    # withdrawn with a reason: the table is blank again, and the history keeps both rows
    at.text_input(key="sign_out_withdraw_reason MIX-50").input("wrong slide")
    next(b for b in at.button if b.label == "Withdraw").click().run()
    assert not at.exception and _signed(at)["MIX-50"] == ""
    assert "Not signed out: withdrawn by Dr. Path on " in texts(at) and "(wrong slide)" in texts(at)
    assert frame_with(at, "action")["action"].tolist() == ["sign out", "withdraw"]


def test_without_a_reviewer_name_the_case_cannot_be_signed_out(store_copy):
    at = _open_case(open_page("cases"), "LINE-NON")
    button = next(b for b in at.button if b.label == "Sign out")
    assert button.disabled
    assert "enter your name there to sign out" in texts(at)


def test_a_withdrawal_without_a_reason_is_refused_on_the_page(store_copy):
    from store.db import open_store
    from store.signout import sign_out

    path, _ = store_copy
    with open_store(path) as s:
        model = s.query("SELECT name FROM models ORDER BY id")["name"].iloc[0]
        sign_out(s, "LINE-NON", "non-MNA", model, "Dr. Early")
    at = _open_case(open_page("cases", reviewer="Dr. Path"), "LINE-NON")
    next(b for b in at.button if b.label == "Withdraw").click().run()
    assert any("withdrawing a sign-out needs a reason" in e.value for e in at.error)
    assert _signed(at)["LINE-NON"].startswith(f"non-MNA (overrides {model}'s call: not enough nuclei) · Dr. Early · ")


def test_a_case_whose_numbers_changed_since_sign_out_warns_with_old_and_new(store_copy):
    from store.db import open_store
    from store.labels import record_label_event
    from store.nuclei import sample_nuclei
    from store.signout import model_numbers, sign_out

    path, counts = store_copy
    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    with open_store(path) as s:
        before = model_numbers(s, "LINE-MNA", primary)
        sign_out(s, "LINE-MNA", "MNA", primary, "Dr. Early", "amplified")
        nid = int(sample_nuclei(s, "LINE-MNA", primary).sort_values("prob")["nucleus_id"].iloc[0])
        record_label_event(s, nid, "exclude", "curator")  # a curator excludes one nucleus after the sign-out
        after = model_numbers(s, "LINE-MNA", primary)
    n = int(before["n_scored"])
    assert n == counts["LINE-MNA"] and int(after["n_scored"]) == n - 1
    at = open_page("cases", reviewer="Dr. Path")
    at.button(key="reload_data").click().run()  # the sidebar's reload after changes made elsewhere
    _open_case(at, "LINE-MNA")
    assert _signed(at)["LINE-MNA"].startswith(
        f"MNA (overrides {primary}'s call: not enough nuclei) · Dr. Early · ") and _signed(at)["LINE-MNA"].endswith(
        " · changed since")
    assert _marks(at)["LINE-MNA"] == "✓ changed"
    warning = next(w.value for w in at.warning if "Changed since sign-out" in w.value)
    assert f"({primary}, signed out → now)" in warning and f"nuclei scored {n} → {n - 1}" in warning
    # a new sign-out on today's numbers clears the warning; the earlier one stays in the history
    next(b for b in at.button if b.label == "Sign out").click().run()
    assert not at.exception and not [w for w in at.warning if "Changed since sign-out" in w.value]
    assert _signed(at)["LINE-MNA"].startswith("not enough nuclei · Dr. Path · ")
    assert frame_with(at, "action")["by"].tolist() == ["Dr. Early", "Dr. Path"]


def test_a_signed_out_sample_whose_nuclei_were_all_excluded_stays_listed_and_can_be_withdrawn(store_copy):
    """Curators excluded every nucleus after the sign-out: the row stays (no call now, changed since), the case
    opens with the sign-out in force and its warning, and the sign-out can be withdrawn there."""
    from store.db import open_store
    from store.labels import exclude_scan
    from store.signout import sign_out

    path, _ = store_copy
    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    with open_store(path) as s:
        sign_out(s, "LINE-MNA", "MNA", primary, "Dr. Early")
        for scan_id in s.query("SELECT c.id FROM scans c JOIN samples x ON x.id = c.sample_id "
                               "WHERE x.name = 'LINE-MNA'")["id"]:
            exclude_scan(s, int(scan_id), "qa")
    at = open_page("cases", reviewer="Dr. Path")
    at.button(key="reload_data").click().run()
    table = frame_with(at, "Call").set_index("Sample")
    assert table.loc["LINE-MNA", "Call"] == "no call now: all nuclei excluded"  # before: not in the table
    assert _signed(at)["LINE-MNA"].startswith(
        f"MNA (overrides {primary}'s call: not enough nuclei) · Dr. Early · ") and _signed(at)["LINE-MNA"].endswith(
        " · changed since")
    assert not [c for c in at.caption if "Not in the table" in c.value]
    _open_case(at, "LINE-MNA")
    assert any("No call now: all nuclei excluded" in i.value for i in at.info)
    assert f"**Signed out**: MNA (overrides {primary}'s call: not enough nuclei), signed out by Dr. Early on " \
        in " ".join(s.value for s in at.success)
    warning = next(w.value for w in at.warning if "Changed since sign-out" in w.value)
    assert f"{primary} has no call for the sample now (no scored nucleus left)" in warning
    assert not [b for b in at.button if b.label == "Sign out"]  # no numbers to sign out on
    # the report still documents the sign-out (genuine export sample without --model)
    assert [b.proto.label for b in at.get("download_button")] == ["Report (HTML)", "All files (.zip)"]
    at.text_input(key="sign_out_withdraw_reason LINE-MNA").input("scan read with swapped channels")
    next(b for b in at.button if b.label == "Withdraw").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "LINE-MNA" not in set(frame_with(at, "Call")["Sample"])  # withdrawn: no call, not signed out
    assert any(c.value.endswith("none stored): LINE-MNA") for c in at.caption)


def test_a_sign_out_stays_visible_and_withdrawable_when_no_sample_has_a_call_left(store_copy):
    """Curators excluded every nucleus of every sample after one was signed out: the page does not fall back
    to its empty state, the signed-out sample is listed (no call now) and its sign-out can be withdrawn."""
    from store.db import open_store
    from store.labels import exclude_scan
    from store.signout import sign_out

    path, _ = store_copy
    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    with open_store(path) as s:
        sign_out(s, "LINE-MNA", "MNA", primary, "Dr. Early")
        for scan_id in s.query("SELECT id FROM scans")["id"]:
            exclude_scan(s, int(scan_id), "qa")
    at = open_page("cases", reviewer="Dr. Path")
    at.button(key="reload_data").click().run()
    assert "No scored samples in the store" not in texts(at)
    table = frame_with(at, "Call").set_index("Sample")
    assert table.loc["LINE-MNA", "Call"] == "no call now: all nuclei excluded"
    assert _marks(at)["LINE-MNA"] == "✓ changed"
    _open_case(at, "LINE-MNA")
    assert f"**Signed out**: MNA (overrides {primary}'s call: not enough nuclei), signed out by Dr. Early on " \
        in " ".join(s.value for s in at.success)
    at.text_input(key="sign_out_withdraw_reason LINE-MNA").input("every scan read with swapped channels")
    next(b for b in at.button if b.label == "Withdraw").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "No scored samples in the store" in texts(at)  # nothing signed out, nothing called: empty again


def test_the_case_scan_picker_tells_scans_of_one_name_apart_and_marks_excluded_ones(store_copy):
    """Two scans both named field.tif (fields exported by one scanner) read alike in the picker, and a scan a
    curator excluded whole looked like any other."""
    from store.db import open_store
    from store.labels import exclude_scan

    path, _ = store_copy
    with open_store(path) as s:
        ids = dict(s.query("SELECT x.name, c.id FROM scans c JOIN samples x ON x.id = c.sample_id").values.tolist())
        n = dict(s.query("SELECT id, n_nuclei FROM scans").values.tolist())
        s.execute("UPDATE scans SET file_name = 'field.tif'")
        s.execute("UPDATE scans SET sample_id = (SELECT sample_id FROM scans WHERE id = ?) WHERE id = ?",
                  [ids["LINE-MNA"], ids["LINE-NON"]])
        exclude_scan(s, ids["LINE-NON"], "qa")
    at = _open_case(open_page("cases"), "LINE-MNA")
    first, second = sorted([ids["LINE-MNA"], ids["LINE-NON"]])
    assert at.selectbox(key="case_scan").options == [
        f"scan {first} · field.tif ({n[first]} nuclei{', all excluded' if first == ids['LINE-NON'] else ''})",
        f"scan {second} · field.tif ({n[second]} nuclei{', all excluded' if second == ids['LINE-NON'] else ''})"]


def _unscored_second_scan(s, model: str) -> tuple[int, int]:
    """Move LINE-NON's scan into LINE-MNA and drop ``model``'s scoring of it: (scan id, its nuclei)."""
    ids = dict(s.query("SELECT x.name, c.id FROM scans c JOIN samples x ON x.id = c.sample_id").values.tolist())
    scan = ids["LINE-NON"]
    s.execute("UPDATE scans SET sample_id = (SELECT sample_id FROM scans WHERE id = ?) WHERE id = ?",
              [ids["LINE-MNA"], scan])
    s.execute("DELETE FROM predictions WHERE model_id = (SELECT id FROM models WHERE name = ?) AND nucleus_id IN "
              "(SELECT id FROM nuclei WHERE scan_id = ?)", [model, scan])
    s.execute("DELETE FROM scan_models WHERE scan_id = ? AND model_id = (SELECT id FROM models WHERE name = ?)",
              [scan, model])
    return scan, int(s.scalar("SELECT n_nuclei FROM scans WHERE id = ?", [scan]))


def test_a_case_offers_no_sign_out_on_a_model_that_missed_a_scan(store_copy):
    """The model for calls did not score one of the sample's scans (retired before it came): no Sign out form
    on its numbers, and the case says why and what to do."""
    from store.db import open_store

    path, _ = store_copy
    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    with open_store(path) as s:
        scan, n = _unscored_second_scan(s, primary)  # a second scan of LINE-MNA, which the model for calls did not score
    at = open_page("cases", reviewer="Dr. Path")
    at.button(key="reload_data").click().run()
    _open_case(at, "LINE-MNA")
    assert not [b for b in at.button if b.label == "Sign out"]
    assert f"{primary} has not scored 1 of this sample's scans ({n} nuclei" in texts(at)


def test_excluding_a_scan_on_the_ingest_page_says_the_sign_out_changed(store_copy):
    """The Ingest page's Exclude scan said only how many nuclei it excluded, not that the sample's sign-out in
    force now rests on other numbers."""
    from store import labels
    from store.db import open_store
    from store.scans import scan_overview
    from store.signout import sign_out

    path, _ = store_copy
    with open_store(path) as s:
        scans = scan_overview(s)
        scan_id, sample = int(scans["id"].iloc[0]), str(scans["sample"].iloc[0])
        model = s.query("SELECT name FROM models ORDER BY id")["name"].iloc[0]
        nid = int(s.query("SELECT id FROM nuclei WHERE scan_id = ? LIMIT 1", [scan_id])["id"].iloc[0])
        labels.record_label_event(s, nid, 1, "Dr. Test")  # reviewed: it can be excluded, not removed
        sign_out(s, sample, "not assessable", model, "Dr. Early")
    at = open_page("ingest", reviewer="Dr. Test")
    at.selectbox(key="ingest_remove_id").set_value(scan_id).run()
    at.checkbox(key=f"ingest_exclude_sure_{scan_id}").check().run()
    at.button(key="ingest_exclude").click().run()
    assert not at.exception, [e.value for e in at.exception]
    message = next(m.value for m in at.success if m.value.startswith(f"Scan {scan_id}: "))
    assert f"Sample '{sample}' is signed out as not assessable (overrides {model}'s call: " in message
    assert " by Dr. Early, and " in message
    assert "its sign-out's numbers changed: " in message and "check it on the Cases page" in message


def test_removing_a_scan_on_the_ingest_page_says_the_sign_out_changed(store_copy):
    """The Ingest page's Remove scan said only what it deleted, not that the sample's sign-out in force now
    rests on other numbers (as Exclude scan does)."""
    from store.db import open_store
    from store.scans import scan_overview
    from store.signout import sign_out

    path, _ = store_copy
    with open_store(path) as s:
        scans = scan_overview(s)
        scans = scans[scans["labelled_nuclei"] == 0]
        scan_id, sample = int(scans["id"].iloc[0]), str(scans["sample"].iloc[0])
        model = s.query("SELECT name FROM models ORDER BY id")["name"].iloc[0]
        sign_out(s, sample, "not assessable", model, "Dr. Early")
    at = open_page("ingest", reviewer="Dr. Test")
    at.selectbox(key="ingest_remove_id").set_value(scan_id).run()
    at.checkbox(key=f"ingest_remove_sure_{scan_id}").check().run()
    at.button(key="ingest_remove").click().run()
    assert not at.exception, [e.value for e in at.exception]
    message = next(m.value for m in at.success if m.value.startswith(f"Scan {scan_id} "))
    assert f"Sample '{sample}' is signed out as not assessable" in message and " by Dr. Early, and " in message
    assert "its sign-out's numbers changed: " in message and "check it on the Cases page" in message


def test_a_case_warns_that_a_retired_model_for_calls_missed_a_scan(store_copy):
    """A retired model's numbers leave out the scans ingested after it was retired, and no QC flag says so (by
    design: 'partly scored' compares with the scans of its time). The case's metrics looked complete; now a warning
    above them names the scans and nuclei its numbers leave out."""
    from store import registry
    from store.db import open_store

    path, _ = store_copy
    at = open_page("cases")
    primary = at.selectbox(key="cases_primary").value
    with open_store(path) as s:
        scan, n = _unscored_second_scan(s, primary)  # becomes a scan of LINE-MNA ingested after the model for calls was retired
        registry.retire_model(s, primary, by="Dr. Admin")
        s.execute("UPDATE scans SET ingested_at = (SELECT retired_at FROM models WHERE name = ?) + INTERVAL 1 HOUR "
                  "WHERE id = ?", [primary, scan])
    at = open_page("cases", reviewer="Dr. Path")
    at.button(key="reload_data").click().run()
    at.selectbox(key="cases_primary").set_value(primary).run()
    _open_case(at, "LINE-MNA")
    assert not at.exception, [e.value for e in at.exception]
    warned = [w.value for w in at.warning if "its numbers leave them out" in w.value]
    assert len(warned) == 1 and f"has not scored 1 of this sample's scans** ({n} nuclei" in warned[0], warned
    assert not any("partly scored" in w.value for w in at.warning)
