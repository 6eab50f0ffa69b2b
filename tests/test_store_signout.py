"""Pathologists' sign-out of samples (``store.signout``, schema step 6): append-only, a later sign-out
supersedes, a withdrawal keeps the history, changes since sign-out are found, older stores migrate, the CLI."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from _store_fakes import fake_model, synthetic_result
from genuine_core.cli import main
from genuine_core.errors import InputError, StoreError
from store import check, export, labels, migrations, registry, samples, signout
from store.db import Store
from store.scans import write_scan_result


def _fill(s: Store, n: int = 60, seed: int = 0, sample: str = "CASE-1") -> None:
    """One scan of ``n`` nuclei in ``sample``, scored by m1 and m2 (m1 calls about a third MNA)."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 1, n)
    probs[: n // 3] = 0.95
    probs[n // 3:] = np.minimum(probs[n // 3:], 0.4)
    mids = {m: registry.register_model(s, fake_model(m)) for m in ("m1", "m2")}
    sid = samples.ensure_sample(s, sample, "case")
    write_scan_result(s, sid, synthetic_result(f"{seed:x}" * 64, {"m1": probs, "m2": 1 - probs}, seed=seed), mids)


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "s.duckdb")
    _fill(s)
    yield s
    s.close()


def test_a_sign_out_keeps_the_call_the_name_and_the_models_numbers(store):
    row = signout.model_numbers(store, "CASE-1", "m1")
    sid = signout.sign_out(store, "CASE-1", "mna", "m1", "  Dr. Ana Müller ", "clear\namplification ")
    got = signout.history(store, "CASE-1").iloc[0]
    assert got["id"] == sid and got["action"] == "sign out" and got["call"] == "MNA"
    assert got["by_user"] == "Dr. Ana Müller" and got["comment"] == "clear amplification"  # one line
    checksum = registry.list_models(store).set_index("name").at["m1", "checksum"]
    assert got["model"] == "m1" and got["model_checksum"] == checksum
    assert got["rule_call"] == row["call"] == "MNA"
    assert (got["n_scored"], got["n_mna"]) == (60, 20) and got["mna_pct"] == pytest.approx(row["mna_pct"])
    assert pd.isna(got["supersedes"])
    force = signout.in_force(store)
    assert force["sample"].tolist() == ["CASE-1"] and force["changes"].tolist() == [[]]


def test_a_later_sign_out_supersedes_and_a_withdrawal_keeps_the_history(store):
    first = signout.sign_out(store, "CASE-1", "MNA", "m1", "ann")
    second = signout.sign_out(store, "CASE-1", "not assessable", "m2", "bob", "tissue too thin")
    assert signout.in_force(store)[["call", "by_user"]].values.tolist() == [["not assessable", "bob"]]
    with pytest.raises(InputError, match="needs a reason"):
        signout.withdraw(store, "CASE-1", "bob", " ")
    gone = signout.withdraw(store, "CASE-1", "bob", "wrong patient")
    assert signout.in_force(store).empty
    trail = signout.history(store, "CASE-1")
    assert trail["id"].tolist() == [first, second, gone]  # nothing deleted or changed
    assert trail["action"].tolist() == ["sign out", "sign out", "withdraw"]
    assert trail["supersedes"].tolist()[1:] == [first, second]
    with pytest.raises(StoreError, match="not signed out: nothing to withdraw"):
        signout.withdraw(store, "CASE-1", "bob", "again")
    signout.sign_out(store, "CASE-1", "MNA", "m1", "ann")  # signed out again after the withdrawal
    assert signout.in_force(store)["by_user"].tolist() == ["ann"]
    assert check.store_info(store)["counts"]["sign_outs"] == 4 and check.check_store(store) == []
    store.execute("INSERT INTO sign_outs (created_at, sample_id, action, by_user) VALUES (now(), 99, 'withdraw', 'x')")
    assert "sign-outs of unknown samples" in " ".join(check.check_store(store))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"sample": "NOPE"}, StoreError, "no sample named 'NOPE'; samples: CASE-1"),
    ({"model": "m9"}, StoreError, "no model named 'm9'; registered: m1, m2"),
    ({"call": "amplified"}, InputError, "unknown call 'amplified'; a sign-out call is one of: MNA, heterogeneous MNA"),
    ({"by": "  "}, InputError, "needs the pathologist's name"),
    ({"by": "ann\nbob"}, InputError, "control characters"),
    ({"comment": "ok\x1b[2J"}, InputError, "comment must not hold control characters"),
    ({"seen": (60, 19)}, StoreError, "changed while you looked"),
])
def test_a_bad_sign_out_is_refused_and_writes_nothing(store, kwargs, error, message):
    args = {"sample": "CASE-1", "call": "MNA", "model": "m1", "by": "ann", **kwargs}
    with pytest.raises(error, match=message):
        signout.sign_out(store, **args)
    assert signout.history(store).empty


def test_the_table_itself_refuses_an_empty_name_and_an_unknown_call(store):
    cur = store.cursor()
    with pytest.raises(duckdb.ConstraintException):
        cur.execute("INSERT INTO sign_outs (created_at, sample_id, action, call, by_user) "
                    "VALUES (now(), 1, 'sign out', 'MNA', '  ')")
    with pytest.raises(duckdb.ConstraintException):
        cur.execute("INSERT INTO sign_outs (created_at, sample_id, action, call, by_user) "
                    "VALUES (now(), 1, 'sign out', 'amplified', 'ann')")


def test_changes_since_sign_out_are_named_old_and_new(store, tmp_path):
    signout.sign_out(store, "CASE-1", "MNA", "m1", "ann")
    ids = store.query("SELECT id FROM nuclei ORDER BY id")["id"].tolist()
    for nid in ids[:5]:  # a curator excludes five of the MNA nuclei
        labels.record_label_event(store, nid, "exclude", "cur")
    changes = signout.in_force(store)["changes"].iloc[0]
    assert changes == ["nuclei scored 60 → 55", "MNA 33.3 % → 27.3 %", *[c for c in changes if "corrected" in c]]
    assert len(changes) == 2  # fake models carry no validation metrics: no corrected estimate
    relabel = labels.record_label_event(store, ids[10], 0, "cur")  # a relabelling changes no model call
    assert relabel and signout.in_force(store)["changes"].iloc[0] == changes
    registry.remove_model(store, "m1", by="ann")
    assert signout.in_force(store)["changes"].iloc[0] == ["model m1 is no longer registered"]


def test_new_scans_of_the_sample_show_as_a_change(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        _fill(s)
        signout.sign_out(s, "CASE-1", "MNA", "m2", "ann")
        mids = dict(zip(*[registry.list_models(s)[c] for c in ("name", "id")]))
        res = synthetic_result("f" * 64, {"m1": np.full(20, 0.9), "m2": np.full(20, 0.9)}, seed=5)
        write_scan_result(s, samples.sample_id(s, "CASE-1"), res, mids)
        changes = signout.in_force(s)["changes"].iloc[0]
        assert changes[0] == "nuclei scored 60 → 80" and changes[1].startswith("MNA 66.7 % → ")


def test_the_report_states_the_sign_out_or_its_absence(store, tmp_path):
    export.export_sample(store, "CASE-1", tmp_path / "a", model="m1")
    md = (tmp_path / "a" / "summary.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("- **")]
    assert lines[2] == "- **signed out**: not signed out" and "Sign-out history" not in md
    signout.sign_out(store, "CASE-1", "heterogeneous MNA", "m1", "Dr. <b>Ann</b>", "see note")
    labels.record_label_event(store, int(store.scalar("SELECT min(id) FROM nuclei")), "exclude", "cur")
    export.export_sample(store, "CASE-1", tmp_path / "b")
    md = (tmp_path / "b" / "summary.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("- **")]
    assert lines[0].startswith("- **call (each model)**: m1: ")  # no --model: every model's call first
    assert lines[1].startswith("- **signed out**: heterogeneous MNA (overrides m1's call: MNA), signed out by "
                               "Dr. <b>Ann</b> on ")
    assert " UTC (m1: 33.3 % MNA, 20 of 60 nuclei, 95 % CI " in lines[1] and lines[1].endswith("%); comment: see note")
    assert lines[2] == "- **changed since sign-out**: nuclei scored 60 → 59; MNA 33.3 % → 32.2 %"
    assert "## Sign-out history" in md
    page = (tmp_path / "b" / "summary.html").read_text()
    assert "Dr. &lt;b&gt;Ann&lt;/b&gt;" in page and "<h2>Sign-out history</h2>" in page
    signout.withdraw(store, "CASE-1", "ann", "wrong case")
    export.export_sample(store, "CASE-1", tmp_path / "c")
    withdrawn = signout.history(store, "CASE-1").iloc[-1].to_dict()
    assert signout.status_text(withdrawn).startswith("not signed out: withdrawn by ann on ")
    assert signout.status_text(withdrawn).endswith(" UTC (wrong case)")  # the Cases page's words too
    assert f"- **signed out**: {signout.status_text(withdrawn)}" in (tmp_path / "c" / "summary.md").read_text()


def test_the_status_of_a_sample_in_words_is_one_function(store):
    assert signout.status_text(None) == "not signed out"
    signout.sign_out(store, "CASE-1", "MNA", "m1", "ann", "ok")
    row = signout.history(store, "CASE-1").iloc[-1].to_dict()
    assert signout.status_text(row) == signout.sign_out_text(row)
    signout.withdraw(store, "CASE-1", "bob", "wrong slide")
    row = signout.history(store, "CASE-1").iloc[-1].to_dict()
    assert signout.status_text(row) == f"not signed out: withdrawn by bob on {str(row['created_at'])[:16]} UTC " \
                                       "(wrong slide)"


def test_the_report_reads_the_sign_out_history_once(store, tmp_path, monkeypatch):
    signout.sign_out(store, "CASE-1", "MNA", "m1", "ann")
    reads = []
    real = signout.history
    monkeypatch.setattr(signout, "history", lambda *a, **k: reads.append(a[1:]) or real(*a, **k))
    export.export_sample(store, "CASE-1", tmp_path / "r", model="m1")
    assert reads == [("CASE-1",)]  # the trail; the sign-out in force comes from it (it also read every sample's)
    assert "- **signed out**: MNA, signed out by ann on " in (tmp_path / "r" / "summary.md").read_text()


def _version_5_store(path) -> None:
    with Store(path) as s:
        _fill(s)
    conn = duckdb.connect(str(path))
    conn.execute("DROP TABLE sign_outs")
    conn.execute("DROP SEQUENCE sign_out_ids")
    conn.execute("DELETE FROM schema_version WHERE version >= 6")
    conn.close()


def test_a_version_5_store_gains_the_table_when_opened_for_writing(tmp_path, capsys):
    path = tmp_path / "old.duckdb"
    _version_5_store(path)
    with pytest.raises(StoreError, match="schema version 5 is older than 10.*store migrate"):
        Store(path, read_only=True)  # readers refuse as for every older store, naming the way out
    assert main(["export", "sample", "CASE-1", "--out", str(tmp_path / "r"), "--db", str(path)]) == 2
    assert "schema version 5 is older than 10" in capsys.readouterr().err
    with Store(path) as s:
        assert migrations.current_version(s.cursor()) == migrations.LATEST == 10
        assert signout.history(s).empty and s.scalar("SELECT count(*) FROM nuclei") == 60
        signout.sign_out(s, "CASE-1", "MNA", "m1", "ann")
        s.execute(migrations.STEPS[5][2]())  # the step again: the table and its rows stay
        assert len(signout.history(s)) == 1
    with Store(path, read_only=True) as s:
        assert signout.in_force(s)["call"].tolist() == ["MNA"]


def test_cli_signs_out_lists_and_withdraws(store, capsys):
    db = str(store.path)
    store.close()
    assert main(["store", "sign-out", "CASE-1", "--call", "non-mna", "--model", "m2", "--by", "Dr. B",
                 "--comment", "agree", "--db", db]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sample 'CASE-1': non-MNA (overrides m2's call: MNA), signed out by Dr. B on ") and "(m2: 66.7 % MNA, 40 of 60 nuclei, 95 % CI" in out and out.rstrip().endswith("%); comment: agree")
    assert main(["store", "sign-outs", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "changed since" in out[0] and "CASE-1" in out[1] and "non-MNA" in out[1] and out[1].rstrip().endswith("-")
    assert main(["export", "sample", "CASE-1", "--out", str(store.path.parent / "rep"), "--db", db]) == 0
    capsys.readouterr()
    assert "- **signed out**: non-MNA (overrides m2's call: MNA), signed out by Dr. B on " in (store.path.parent / "rep" / "summary.md").read_text()
    assert main(["store", "sign-out", "CASE-1", "--withdraw", "--by", "Dr. B", "--comment", "typo", "--db", db]) == 0
    assert "withdrawn by Dr. B" in capsys.readouterr().out
    assert main(["store", "sign-outs", "--db", db]) == 0
    assert capsys.readouterr().out.startswith("no sample signed out in ")
    assert main(["store", "sign-outs", "--history", "--sample", "CASE-1", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "withdraw" in out[2] and "typo" in out[2]


@pytest.mark.parametrize("argv, message", [
    (["CASE-1", "--call", "MNA", "--model", "m1", "--by", " "], "error: a sign-out needs the pathologist's name"),
    (["CASE-1", "--call", "big", "--model", "m1", "--by", "a"], "error: unknown call 'big'; a sign-out call is one"),
    (["CASE-1", "--call", "MNA", "--by", "a"], "error: sign-out needs --model (or --withdraw)"),
    (["NOPE", "--call", "MNA", "--model", "m1", "--by", "a"], "error: no sample named 'NOPE'; samples: CASE-1"),
    (["CASE-1", "--call", "MNA", "--model", "zz", "--by", "a"], "error: no model named 'zz'; registered: m1, m2"),
    (["CASE-1", "--withdraw", "--by", "a", "--comment", "x"], "error: sample 'CASE-1' is not signed out"),
    (["CASE-1", "--withdraw", "--call", "MNA", "--by", "a"], "error: --withdraw takes no --call or --model"),
])
def test_cli_refuses_bad_sign_outs_with_one_line(store, capsys, argv, message):
    db = str(store.path)
    store.close()
    assert main(["store", "sign-out", *argv, "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1
    with Store(db, read_only=True) as s:
        assert signout.history(s).empty


def test_a_scan_the_signed_out_model_did_not_score_shows_as_a_change(tmp_path):
    """A scan ingested after the sign-out that its model never scored (retired meanwhile, or left out with
    ingest --models) leaves the model's numbers as they were: it is named as a change all the same."""
    with Store(tmp_path / "s.duckdb") as s:
        _fill(s)
        signout.sign_out(s, "CASE-1", "MNA", "m1", "ann")
        registry.retire_model(s, "m1", by="admin")
        mids = dict(zip(*[registry.list_models(s)[c] for c in ("name", "id")]))
        res = synthetic_result("e" * 64, {"m2": np.full(20, 0.9)}, seed=5)
        write_scan_result(s, samples.sample_id(s, "CASE-1"), res, {"m2": mids["m2"]})
        assert signout.in_force(s)["changes"].iloc[0] == ["1 scan (20 nuclei) added since, not scored by m1"]
        for nid in s.query("SELECT id FROM nuclei WHERE scan_id = 2")["id"]:  # a curator excludes it all
            labels.record_label_event(s, int(nid), "exclude", "cur")
        assert signout.in_force(s)["changes"].iloc[0] == []


def test_cli_sign_outs_of_one_sample_says_why_it_is_not_signed_out(store, capsys):
    """As the Cases page and the report: a withdrawn sign-out is named with who withdrew it and why, and a
    misspelt sample is refused (it was 'no sample signed out ... for NOPE', exit 0, as if it were not signed out)."""
    db = str(store.path)
    signout.sign_out(store, "CASE-1", "MNA", "m1", "ann")
    signout.withdraw(store, "CASE-1", "bob", "wrong slide")
    last = signout.history(store, "CASE-1").iloc[-1].to_dict()
    store.close()
    assert main(["store", "sign-outs", "--sample", "CASE-1", "--db", db]) == 0
    assert capsys.readouterr().out == f"sample 'CASE-1': {signout.status_text(last)}\n"
    assert main(["store", "sign-outs", "--sample", "CASE-9", "--db", db]) == 2
    assert capsys.readouterr().err.startswith("error: no sample named 'CASE-9'; samples: CASE-1")


def test_a_store_busy_with_the_dashboard_points_pathologists_to_the_cases_page(tmp_path):
    """genuine store sign-out(s) and export sample meet 'store busy' while the dashboard runs: the advice names the
    page that does the same (it named Ingest, Models and Review only)."""
    from store.db import StoreBusy

    text = str(StoreBusy(tmp_path / "lab.duckdb", "the GENUINE dashboard (PID 1)", 10, dashboard=True))
    assert "Cases for sign-outs and sample reports" in text


def test_a_sign_out_on_a_model_that_did_not_score_every_scan_is_refused(tmp_path):
    """A model retired (or left out of an ingest) before a scan came has not seen its nuclei: its numbers are not
    the sample's, so a sign-out on them is refused, naming what it missed; one on a model that scored all is not."""
    with Store(tmp_path / "s.duckdb") as s:
        _fill(s)
        registry.retire_model(s, "m1", by="admin")
        mids = dict(zip(*[registry.list_models(s)[c] for c in ("name", "id")]))
        res = synthetic_result("e" * 64, {"m2": np.full(20, 0.9)}, seed=5)
        write_scan_result(s, samples.sample_id(s, "CASE-1"), res, {"m2": mids["m2"]})
        assert signout.unscored(s, "CASE-1", "m1") == (1, 20) and signout.unscored(s, "CASE-1", "m2") == (0, 0)
        with pytest.raises(StoreError, match=r"not signed out: m1 has not scored 1 of the sample's scans "
                                             r"\(20 nuclei\); sign out on a model that scored them all"):
            signout.sign_out(s, "CASE-1", "MNA", "m1", "ann")
        signout.sign_out(s, "CASE-1", "MNA", "m2", "ann")
        for nid in s.query("SELECT id FROM nuclei WHERE scan_id = 2")["id"]:  # excluded: no longer missed
            labels.record_label_event(s, int(nid), "exclude", "cur")
        assert signout.unscored(s, "CASE-1", "m1") == (0, 0)
        signout.sign_out(s, "CASE-1", "MNA", "m1", "ann")
        assert signout.history(s)["model"].tolist() == ["m2", "m1"]


def test_a_sign_out_that_overrides_the_models_call_says_so_everywhere(store, tmp_path, capsys):
    """A call other than the model's rule call (kept as rule_call) was shown as the call alone: the sign-out line,
    the report's history and `genuine store sign-outs [--history]` now name the call it overrides."""
    signout.sign_out(store, "CASE-1", "non-MNA", "m1", "ann", "artefact")
    row = signout.history(store, "CASE-1").iloc[-1].to_dict()
    assert row["rule_call"] == "MNA"
    assert signout.call_text(row) == "non-MNA (overrides m1's call: MNA)"
    assert signout.sign_out_text(row).startswith("non-MNA (overrides m1's call: MNA), signed out by ann on ")
    assert signout.call_text({**row, "call": "MNA"}) == "MNA"  # agreeing: the call alone
    export.export_sample(store, "CASE-1", tmp_path / "r", model="m1")
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "- **signed out**: non-MNA (overrides m1's call: MNA), signed out by ann on " in md
    assert md.split("## Sign-out history")[1].count("non-MNA (overrides m1's call: MNA)") == 1
    db = str(store.path)
    store.close()
    for argv in ([], ["--history"]):
        assert main(["store", "sign-outs", *argv, "--db", db]) == 0
        out = capsys.readouterr().out
        assert "non-MNA (overrides m1's call: MNA)" in out, out


def test_excluding_a_scan_of_a_signed_out_sample_says_its_sign_out_changed(tmp_path, capsys):
    """`genuine store exclude-scan` printed only the nuclei it excluded: the sample's sign-out in force, now on
    other numbers, went unmentioned until someone opened the Cases page."""
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        _fill(s)
        mids = dict(zip(*[registry.list_models(s)[c] for c in ("name", "id")]))
        res = synthetic_result("d" * 64, {"m1": np.full(60, 0.9), "m2": np.full(60, 0.1)}, seed=3)
        write_scan_result(s, samples.ensure_sample(s, "CASE-2", "case"), res, mids)
        signout.sign_out(s, "CASE-1", "MNA", "m1", "ann")
        scans = s.query("SELECT c.id, s.name FROM scans c JOIN samples s ON s.id = c.sample_id ORDER BY c.id")
    ids = dict(zip(scans["name"], scans["id"]))
    assert main(["store", "exclude-scan", str(ids["CASE-2"]), "--by", "cur", "--db", str(db)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"scan {ids['CASE-2']}: 60 nuclei excluded by cur"]
    assert main(["store", "exclude-scan", str(ids["CASE-1"]), "--by", "cur", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"scan {ids['CASE-1']}: 60 nuclei excluded by cur" and len(out) == 2
    assert out[1] == ("sample 'CASE-1' is signed out as MNA by ann, and its sign-out's numbers changed: m1 has no "
                      "call for the sample now (no scored nucleus left); check it on the Cases page, then sign it "
                      "out again or withdraw the sign-out")


def test_removing_a_scan_of_a_signed_out_sample_says_its_sign_out_changed(tmp_path, capsys):
    """`genuine store remove-scan` printed only what it deleted: the sample's sign-out in force, now on fewer
    nuclei, went unmentioned (as exclude-scan's did)."""
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        _fill(s)
        mids = dict(zip(*[registry.list_models(s)[c] for c in ("name", "id")]))
        res = synthetic_result("e" * 64, {"m1": np.full(30, 0.9), "m2": np.full(30, 0.1)}, seed=4)
        extra = write_scan_result(s, samples.ensure_sample(s, "CASE-1", "case"), res, mids)
        signout.sign_out(s, "CASE-1", "MNA", "m1", "ann")
    assert main(["store", "remove-scan", str(extra), "--yes", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"removed scan {extra} ") and len(out) == 3, out
    assert out[2].startswith("sample 'CASE-1' is signed out as MNA by ann, and its sign-out's numbers changed: "
                             "nuclei scored 90 → 60"), out[2]


def test_cli_sign_outs_prints_a_missing_comment_as_a_dash(store, capsys):
    """The comment column was blank for a sign-out without one, while every other empty cell shows '-'."""
    signout.sign_out(store, "CASE-1", "MNA", "m1", "ann")
    db = str(store.path)
    store.close()
    assert main(["store", "sign-outs", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[-2:] == ["-", "-"]  # comment, changed since
    assert main(["store", "sign-outs", "--history", "--db", db]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "-"
