"""``genuine store ACTION`` (:data:`ACTIONS`): integrity, overview, scan list, scan removal, excluding a
reviewed scan's nuclei, scoring stored scans with a model registered after them, model removal, retiring a
model (it keeps its predictions but scores nothing new) and reinstating it, recording a moved model folder,
the log of who registered, retired and removed models and removed scans, the curators' agreement per pair of
reviewers, bringing an older store up to date, and a backup.

``score MODEL`` runs a model (a folder, or a registered name) over the stored patches of every
scan it has not scored yet (``store.rescore``), e.g. a model retrained on curated labels; each
scan is committed on its own, so after Ctrl-C the same command scores the rest.

``remove-scan SCAN_ID`` deletes one scan and everything derived from it in one transaction
(``store.scans.remove_scan``), e.g. a scan ingested with the wrong channel map, so that the
file can be ingested again. It refuses scans whose nuclei carry curators' label events (the
audit trail is never deleted). Without ``--yes`` it shows what it would delete and asks; when
stdin is not a terminal, ``--yes`` is required. ``exclude-scan SCAN_ID`` takes such a scan out of
every call instead: each of its nuclei gets an 'exclude' label event by ``--by``
(``store.labels.exclude_scan``); ``unexclude-scan SCAN_ID`` undoes the latest such exclusion in one step
(``store.labels.unexclude_scan``).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from store.location import DEFAULT_DB, add_by_option, add_db_argument, default_db_path, genuine_command, \
    no_store_message, person_name, store_exists

ACTIONS = ("check", "info", "scans", "remove-scan", "exclude-scan", "unexclude-scan", "score", "remove-model",
           "retire-model", "reinstate-model", "relocate-model", "events", "agreement", "sign-out", "sign-outs", "migrate",
           "backup")


def _scan_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a scan id is a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a scan id is a positive integer, got {text!r}")
    return value


def _name_or_none(text: str) -> str | None:
    """An optional filter's value: blank (``--subject ""``, as a script passes an unset variable) means not given."""
    return text if text.strip() else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``genuine store``."""
    add_db_argument(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    helps = {
        "check": "integrity check (exit 1 when problems are found)",
        "info": "schema version, size, row counts and the registered models with their status (active or retired)",
        "scans": "list the stored scans: id, sample, file, channel map, segmentation, nuclei, models that scored "
                 "it, reviewed, excluded and ever labelled nuclei, when ingested, sha256",
        "remove-scan": "delete one scan and everything derived from it (refused once any of its nuclei has a label "
                       "event, even an undone one)",
        "exclude-scan": "leave a labelled scan out of every call: an 'exclude' label event for each of its nuclei",
        "unexclude-scan": "undo the latest exclude-scan of a scan in one step: an undo event for each of its "
                          "nuclei still excluded by it (nuclei decided again since are left alone)",
        "score": "score the stored scans a model has not scored yet (e.g. one retrained on curated labels)",
        "remove-model": "unregister a model and delete its predictions, embeddings and maps (not its folder)",
        "retire-model": "stop a model scoring new scans (e.g. one an upgrade replaced); its predictions, maps and "
                        "calls stay, and its folder is no longer needed",
        "reinstate-model": "let a retired model score new scans again (its folder must hold the registered weights)",
        "relocate-model": "record where a registered model's folder is now (moved, renamed or restored elsewhere); "
                          "it must hold the registered weights",
        "events": "who registered, retired, reinstated, relocated and removed models, and relocated and removed scans, "
                  "when (oldest first)",
        "agreement": "curators' agreement per pair of reviewers (nuclei both reviewed, agreement %, Cohen's kappa "
                     "with 95 % CI) and the conflicts: nuclei whose reviewers disagree",
        "sign-out": "record a pathologist's final call on a sample, with a model's numbers now (a later sign-out "
                    "amends it; --withdraw withdraws it, the history stays)",
        "sign-outs": "the sign-out in force per sample, flagged when its numbers changed since (--history: every "
                     "sign-out and withdrawal)",
        "migrate": "bring a store written by an older version up to this version's schema",
        "backup": "copy the store file, with its pending write-ahead log, its <name>_files folder, the registered "
                  "models' folders and the scan files ingested by path into a new folder (refused while another "
                  "process, e.g. the dashboard, holds the store)",
    }
    subs = {}
    for name in ACTIONS:
        p = sub.add_parser(name, help=helps[name], description=helps[name])
        # --db after the action as well as before it; SUPPRESS keeps one given before
        p.add_argument("--db", type=Path, default=argparse.SUPPRESS,
                       help=f"store file (default: $GENUINE_DB or {DEFAULT_DB})")
        subs[name] = p
    subs["scans"].add_argument("--sample", default=None, help="only the scans of this sample")
    subs["events"].add_argument("--subject", type=_name_or_none, default=None, metavar="NAME",
                                help="only the events of this model name or scan file name")
    subs["agreement"].add_argument("--matrices", action="store_true",
                                   help="also print each pair's confusion matrix (rows: the first reviewer)")
    subs["agreement"].add_argument("--conflicts", action="store_true",
                                   help="also list the nuclei whose reviewers disagree (open and settled)")
    subs["remove-scan"].add_argument("scan_id", type=_scan_id, metavar="SCAN_ID",
                                     help="id of the scan (see: genuine store scans)")
    subs["remove-scan"].add_argument("--yes", action="store_true",
                                     help="do not ask for confirmation (required when stdin is not a terminal)")
    subs["exclude-scan"].add_argument("scan_id", type=_scan_id, metavar="SCAN_ID",
                                      help="id of the scan (see: genuine store scans)")
    subs["exclude-scan"].add_argument("--note", default=None, help="why, kept with each label event "
                                      "(e.g. 'read with NMI and MYCN swapped')")
    subs["unexclude-scan"].add_argument("scan_id", type=_scan_id, metavar="SCAN_ID",
                                        help="id of the scan (see: genuine store scans)")
    _sign_out_arguments(subs["sign-out"], subs["sign-outs"])
    subs["backup"].add_argument("dest", type=Path, metavar="DEST", help="a new folder for the copy")
    subs["backup"].add_argument("--no-models", action="store_true",
                                help="do not copy the registered models' folders (e.g. kept elsewhere); "
                                     "by default they go into DEST/<name>_files/models/")
    subs["backup"].add_argument("--no-scans", action="store_true",
                                help="do not copy the scan files ingested by path (e.g. archived elsewhere); by "
                                     "default each goes into DEST/<name>_files/scans/, checked by its sha256")
    subs["backup"].add_argument("--strict", action="store_true",
                                help="fail, keeping nothing, when a scan file or model folder cannot be copied "
                                     "(missing, or changed since it was stored); by default it is left out with "
                                     "a warning")
    subs["check"].add_argument("--fix-paths", action="store_true",
                               help="first record, for each registered model whose folder is missing, the copy of "
                                    "its folder under <name>_files (e.g. after restoring a backup), and for each "
                                    "scan whose file is missing, the backup's copy under <name>_files/scans/ (an "
                                    "event each in the store's log, with the old and new place and --by)")
    add_by_option(subs["check"])
    subs["score"].add_argument("model", metavar="MODEL", help="a model folder, or the name of a registered model")
    subs["score"].add_argument("--sample", default=None, help="only the scans of this sample")
    subs["score"].add_argument("--quiet", action="store_true", help="no progress bar")
    subs["score"].add_argument("--mc-samples", type=int, default=None, metavar="N",
                               help="MC-dropout passes for the uncertainty (default: as the model's stored "
                                    "uncertainties, i.e. the pass count its scorings recorded, else 10)")
    subs["remove-model"].add_argument("name", metavar="NAME", help="the registered model's name")
    subs["remove-model"].add_argument("--yes", action="store_true",
                                      help="do not ask for confirmation (required when stdin is not a terminal)")
    subs["relocate-model"].add_argument("name", metavar="NAME", help="the registered model's name")
    subs["relocate-model"].add_argument("folder", type=Path, metavar="FOLDER", help="where its folder is now")
    for name in ("retire-model", "reinstate-model"):
        subs[name].add_argument("name", metavar="NAME", help="the registered model's name")
    for name in ("remove-scan", "score", "remove-model", "retire-model", "reinstate-model", "relocate-model"):
        add_by_option(subs[name])
    subs["exclude-scan"].add_argument("--by", metavar="NAME", type=person_name, required=True,
                                      help="the curator: each label event carries this name (required)")
    subs["unexclude-scan"].add_argument("--by", metavar="NAME", type=person_name, required=True,
                                        help="the curator: each undo event carries this name (required)")


def _sign_out_arguments(p: argparse.ArgumentParser, listing: argparse.ArgumentParser) -> None:
    from genuine_core.rules import SIGN_OUT_CALLS

    p.add_argument("sample", metavar="SAMPLE", help="the sample's name")
    p.add_argument("--call", default=None, metavar="CALL", help=f"the final call: {', '.join(SIGN_OUT_CALLS)} "
                   "(any case; quote names with spaces)")
    p.add_argument("--model", default=None, metavar="MODEL",
                   help="the registered model whose numbers the call rests on")
    p.add_argument("--by", metavar="NAME", type=person_name, required=True, help="the pathologist (required)")
    p.add_argument("--comment", default=None, help="free text kept with the sign-out (required with --withdraw)")
    p.add_argument("--withdraw", action="store_true", help="withdraw the sign-out in force instead (no --call/--model)")
    listing.add_argument("--sample", default=None, help="only this sample")
    listing.add_argument("--history", action="store_true", help="every sign-out and withdrawal, oldest first")


def run(args: argparse.Namespace) -> int:
    """``check`` exits 1 when problems are found; ``remove-scan`` exits 1 when not confirmed."""
    db = args.db or default_db_path()
    # every action works on an existing store: none creates one to find it empty; `migrate` sets up an empty file
    if not (Path(db).is_file() if args.action == "migrate" else store_exists(db)):
        from genuine_core.errors import StoreError

        raise StoreError(no_store_message(db))
    if args.action == "remove-scan":
        return _remove_scan(db, args.scan_id, args.yes, args.by)
    if args.action == "exclude-scan":
        return _exclude_scan(db, args.scan_id, args.by, args.note)
    if args.action == "unexclude-scan":
        return _unexclude_scan(db, args.scan_id, args.by)
    if args.action == "score":
        return _score(db, args.model, args.sample, not args.quiet, args.by, args.mc_samples)
    if args.action == "remove-model":
        return _remove_model(db, args.name, args.yes, args.by)
    if args.action == "relocate-model":
        return _relocate_model(db, args.name, args.folder, args.by)
    if args.action in ("retire-model", "reinstate-model"):
        return _retire_or_reinstate(db, args.action, args.name, args.by)
    if args.action == "sign-out":
        return _sign_out(db, args)
    if args.action == "migrate":
        return _migrate(db)
    if args.action == "backup":
        return _backup(db, args.dest, not args.no_models, not args.no_scans, args.strict)
    if args.action == "check" and args.fix_paths:
        _fix_paths(db, args.by)
    import json

    from store.check import check_store, folder_notes, retired_model_notes, scan_file_notes, store_info
    from store.db import Store

    with Store(db, read_only=True) as store:
        if args.action == "info":
            print(json.dumps(store_info(store), indent=2, default=str))
            return 0
        if args.action == "scans":
            return _print_scans(store, args.sample)
        if args.action == "events":
            return _print_events(store, args.subject)
        if args.action == "agreement":
            from store.cli_agreement import print_agreement

            return print_agreement(store, args.matrices, args.conflicts)
        if args.action == "sign-outs":
            return _print_sign_outs(store, args.sample, args.history)
        problems = check_store(store)
        for note in folder_notes(store) + retired_model_notes(store) + scan_file_notes(store):
            print(f"note: {note}")
    if problems:
        for p in problems:
            print(f"problem: {p}")
        return 1
    print(f"ok: {db} is consistent")
    return 0


def _backup(db: Path, dest: Path, with_models: bool, with_scans: bool, strict: bool) -> int:
    from store.backup import backup_store

    done = backup_store(db, dest, with_models, with_scans, strict)
    n = done["files"]
    folder = f" and {done['store'].stem}_files/ ({n} file{'s' * (n != 1)})" if n else ""
    print(f"backed up {db} to {done['store']}{folder}, {done['bytes'] / 1e6:.1f} MB in all")
    if done["copied"]:
        print(f"with the folders of the registered model(s) {', '.join(map(repr, done['copied']))}; where a restored "
              f"copy misses the original folders, `genuine store check --fix-paths` records these")
    for name, why in done["not_copied"].items():
        print(f"warning: model {name!r} not copied: {why} (see: {genuine_command('store check', db)})")
    if not with_models and done["models"]:
        folders = sorted({str(Path(f).parent) for f in done["models"].values()})
        print(f"not copied (--no-models): the registered models' folders ({len(done['models'])}), in "
              f"{', '.join(folders)}; back them up too unless they are kept elsewhere (e.g. shipped with GENUINE)")
        missing = [n for n, f in done["models"].items() if not Path(f).is_dir()]
        if missing:
            print(f"warning: the folder of registered model(s) {', '.join(map(repr, missing))} is missing "
                  f"(see: {genuine_command('store check', db)})")
    if with_scans:
        _print_scan_copies(db, done)
    elif done["scan_files"]:
        print(f"not copied (--no-scans): the files of the {done['scan_files']} scan(s) ingested by path; the store "
              "keeps their previews, masks and patches; back them up too if your lab's records need them")
    return 0


def _print_scan_copies(db: Path, done: dict) -> None:
    """The backup's summary of the scan files ingested by path: how many were copied, which were not and why."""
    n, left = len(done["scans_copied"]), done["scans_not_copied"]
    if n:
        print(f"with {n} scan file(s) ingested by path, in {done['store'].stem}_files/scans/ (checked by sha256); "
              f"where a restored copy misses the originals, `genuine store check --fix-paths` records these")
    for sid, why in list(left.items())[:20]:
        print(f"warning: scan {sid} not copied: {why}")
    if len(left) > 20:
        print(f"warning: and {len(left) - 20} more scan file(s) not copied")
    if left:
        print(f"{len(left)} scan file(s) not copied: the store keeps their previews, masks and patches, so the "
              f"backup is usable; add --strict to refuse such a backup ({genuine_command('store check', db)} lists "
              "the scans whose file is gone)")


def _open_without_page(db: Path, nothing: str):
    """The store opened for writing by a command no dashboard page offers (``check --fix-paths``,
    ``relocate-model``): when the dashboard holds the store, the advice is to stop it (not to use its pages).

    Raises:
        StoreBusy: another process holds the store; ``nothing`` says what was not done.
    """
    from store.db import Store, StoreBusy

    try:
        return Store(db)
    except StoreBusy as exc:
        advice = (f"{nothing}: no dashboard page does this; stop the dashboard, run the command again, then start "
                  "the dashboard again" if exc.dashboard else f"{nothing}; run the command again once that process "
                  "has finished")
        raise StoreBusy(exc.path, exc.holder, exc.waited, exc.dashboard, advice) from None


def _fix_paths(db: Path, by: str | None) -> None:
    """``store check --fix-paths``: record the copies under ``<name>_files`` of missing model folders and scan files."""
    from store.model_copies import fix_model_paths

    from store.scan_copies import fix_scan_paths

    with _open_without_page(db, "no copy was recorded") as store:
        for name, previous, folder in fix_model_paths(store, by):
            print(f"fixed: model {name!r}: folder {folder} (was {previous})")
        for sid, previous, path in fix_scan_paths(store, by):
            print(f"fixed: scan {sid}: file {path} (was {previous})")


def _print_scans(store, sample: str | None) -> int:
    from store.samples import get_sample, name_list
    from store.scans import scan_overview

    if sample is not None and get_sample(store, sample) is None:
        from genuine_core.errors import StoreError

        raise StoreError(f"no sample named {sample!r} in {store.path}; samples: {name_list(store)}")
    df = scan_overview(store, sample)
    if df.empty:
        print(f"no scans in {store.path}" + (f" for sample {sample!r}" if sample else ""))
        return 0
    view = df.rename(columns={"file_name": "file", "channel_map": "channel map", "n_nuclei": "nuclei",
                              "n_models": "models", "curated_nuclei": "reviewed", "excluded_nuclei": "excluded",
                              "labelled_nuclei": "ever labelled"})
    view["ingested_at"] = view["ingested_at"].astype(str).str[:19]
    view["sha256"] = view["sha256"].str[:12]  # enough to tell files apart; the full one is in the sample report
    view = view.rename(columns={"ingested_at": "ingested", "backend": "segmentation"})
    print(view.to_string(index=False))
    print("reviewed: nuclei with a current curated decision (as on the Review page and in 'store info'); "
          "excluded: of those, the ones excluded (all nuclei: the scan counts in no call); "
          "ever labelled: nuclei with any label event, undone ones too (remove-scan refuses such a scan)")
    return 0


def _migrate(db) -> int:
    """Open the store for writing once, which applies the missing schema steps (``store.migrations``)."""
    from store import migrations
    from store.db import Store

    with Store(db, migrate=False) as store:
        before = migrations.current_version(store.cursor())
        early = before >= 1 and migrations.early_layout(store.cursor())
        after = store.migrate()
    done = [f"was {before}"] if after != before else []
    if early:
        done.append("early version-1 labels table converted")
    print(f"{db}: schema version {after}" + (f" ({'; '.join(done)})" if done else ", already up to date"))
    return 0


def _print_events(store, subject: str | None) -> int:
    from store.events import detail_text, store_events

    df = store_events(store, subject)
    if df.empty:
        print(f"no store events in {store.path}" + (f" for {subject!r}" if subject else ""))
        return 0
    df["created_at"] = df["created_at"].astype(str).str[:19]
    df["identity"] = df["identity"].str[:12]
    df["by_user"] = df["by_user"].fillna("(not named)")
    df["detail"] = [detail_text(d) for d in df["detail"]]
    print(df.rename(columns={"event_id": "id", "created_at": "when", "identity": "checksum", "by_user": "by"})
          .to_string(index=False))
    return 0


def _sign_out(db, args: argparse.Namespace) -> int:
    from genuine_core.errors import InputError
    from store import signout
    from store.db import Store

    if not args.by:  # --by " "
        raise InputError("a sign-out needs the pathologist's name: --by NAME")
    if args.withdraw:
        if args.call or args.model:
            raise InputError("--withdraw takes no --call or --model: it withdraws the sign-out in force")
        with Store(db) as store:
            signout.withdraw(store, args.sample, args.by, args.comment)
        print(f"sample {args.sample!r}: sign-out withdrawn by {args.by} (kept in the history)")
        return 0
    missing = [o for o, v in (("--call", args.call), ("--model", args.model)) if not v]
    if missing:
        raise InputError(f"sign-out needs {' and '.join(missing)} (or --withdraw)")
    call = signout.call_name(args.call)  # before the store is opened
    with Store(db) as store:
        signout.sign_out(store, args.sample, call, args.model, args.by, args.comment)
        row = signout.history(store, args.sample).iloc[-1].to_dict()
    print(f"sample {args.sample!r}: {signout.sign_out_text(row)}")
    return 0


def _print_sign_outs(store, sample: str | None, full: bool) -> int:
    from store import signout

    df = signout.history(store, sample) if full else signout.in_force(store)
    if sample is not None and not full:
        trail = signout.history(store, sample)  # refuses an unknown sample
        df = df[df["sample"] == sample]
        if df.empty:  # as the Cases page and the report say it: never signed out, or withdrawn (by, when, why)
            print(f"sample {sample!r}: {signout.status_text(None if trail.empty else trail.iloc[-1].to_dict())}")
            return 0
    if df.empty:
        what = "sign-outs" if full else "sample signed out"
        print(f"no {what} in {store.path}" + (f" for {sample!r}" if sample else ""))
        return 0
    view = _sign_out_view(df, full)
    print(view.to_string(index=False))
    return 0


def _sign_out_view(df, full: bool):
    """The sign-out listing's columns: when, sample, action (history), call, by, model, its numbers, comment,
    and (in force) what changed since."""
    import pandas as pd

    from genuine_core.percent_text import pct_text
    from store import signout

    out = df.assign(when=df["created_at"].astype(str).str[:16], by=df["by_user"],
                    call=[signout.call_text(r) or None for r in df.to_dict("records")],
                    comment=[c if isinstance(c, str) and c.strip() else None for c in df["comment"]])
    out["MNA of nuclei"] = ["-" if pd.isna(n) else f"{pct_text(p)} % of {int(n)}"
                            for p, n in zip(df["mna_pct"], df["n_scored"])]
    cols = ["id", "when", "sample"] + (["action"] if full else []) + ["call", "by", "model", "MNA of nuclei", "comment"]
    out = out[cols].astype(object).where(out[cols].notna(), "-")
    if not full:
        out["changed since"] = ["; ".join(c) or "-" for c in df["changes"]]
    return out


def _exclude_scan(db, scan_id: int, by: str | None, note: str | None) -> int:
    from genuine_core.errors import InputError
    from store import signout
    from store.db import Store
    from store.labels import exclude_scan

    if not by:  # --by " " (person_name makes a blank name None)
        raise InputError("exclude-scan records a label event per nucleus: name the curator with --by NAME")
    with Store(db) as store:
        n = exclude_scan(store, scan_id, by, note)
        stale = signout.changed_note(store, signout.scan_sample(store, scan_id)) if n else None
    print(f"scan {scan_id}: {n} nuclei excluded by {by}" if n else
          f"scan {scan_id}: every nucleus was already excluded")
    if stale:
        print(stale)
    return 0


def _unexclude_scan(db, scan_id: int, by: str | None) -> int:
    from genuine_core.errors import InputError
    from store import signout
    from store.db import Store
    from store.labels import unexclude_scan

    if not by:  # --by " " (person_name makes a blank name None)
        raise InputError("unexclude-scan records an undo event per nucleus: name the curator with --by NAME")
    with Store(db) as store:
        n = unexclude_scan(store, scan_id, by)
        stale = signout.changed_note(store, signout.scan_sample(store, scan_id))
    print(f"scan {scan_id}: exclusion undone by {by} on {n} nuclei; they are back to their earlier decisions")
    if stale:
        print(stale)
    return 0


def _remove_scan(db, scan_id: int, yes: bool, by: str | None) -> int:
    from store import signout
    from store.db import Store
    from store.scans import ScanHasLabelEvents, plan_scan_removal, remove_scan

    with Store(db, read_only=True) as store:  # read-only while the user decides: others may use the store
        plan = plan_scan_removal(store, scan_id)
    if plan.label_events:
        raise ScanHasLabelEvents(plan.scan_id, plan.file_name, plan.sample, plan.label_events, plan.curated_nuclei,
                                 db, by if _by(by) else None,  # the login default is no curator's name
                                 all_excluded=not plan.not_excluded)
    if not yes and not _confirmed(f"scan {scan_id}", genuine_command(f"store remove-scan {scan_id}{_by(by)}", db),
                                  plan.lines()):
        return 1
    with Store(db) as store:  # remove_scan checks again inside its transaction (label events may be new)
        removal = remove_scan(store, scan_id, by)
        stale = signout.changed_note(store, removal.sample)
    print(f"removed scan {removal.scan_id} ({removal.file_name}, sample {removal.sample!r}): "
          + ", ".join(f"{n} {t}" for t, n in removal.rows.items() if n and t != "scans")
          + (f"; deleted {', '.join(str(f) for f in removal.files)}" if removal.files else ""))
    print(f"sample {removal.sample!r} kept with {removal.sample_scans_left} other scan(s); ingest the file again "
          "with the right channel map: "
          + genuine_command(f"ingest FILE --sample {shlex.quote(removal.sample)} --channels MAP", db))
    if stale:
        print(stale)
    return 0


def _score(db, model_name: str, sample: str | None, progress: bool, by: str | None, mc_samples: int | None) -> int:
    """Score the stored scans the model has not scored; exit 1 when some had to be skipped."""
    import sys

    from tqdm.auto import tqdm

    from store.db import INTERRUPTS, Store, is_interrupt
    from store.rescore import check_passes, model_to_score, score_stored_scans
    from store.uncertainty import describe

    check_passes(mc_samples)  # before the store is opened
    done = []

    def report(outcome, i: int, n: int) -> None:
        done.append(outcome)
        tqdm.write(outcome.line(), file=sys.stdout)  # above the progress bar (stderr)
        sys.stdout.flush()

    with Store(db) as store:
        try:
            model = model_to_score(store, model_name, mc_samples)
            score_stored_scans(store, model, sample, progress=progress, on_scan=report, by=by)
        except INTERRUPTS as exc:
            if not is_interrupt(exc):
                raise
            scored = sum(o.status == "scored" for o in done)
            raise KeyboardInterrupt(f"{scored} scan(s) scored before the interrupt; the same command scores "
                                    "the rest") from None
    scored = [o for o in done if o.status == "scored"]
    skipped = len(done) - len(scored)
    if not done:
        print(f"nothing to score: {model.name} has scored every stored scan"
              + (f" of sample {sample!r}" if sample else ""))
        return 0
    print(f"{model.name}: scored {len(scored)} scan(s), {sum(o.n_nuclei for o in scored)} nuclei"
          + (f" (uncertainty: {describe(model.uncertainty_method, [model.mc_samples])})" if scored else "")
          + (f"; {skipped} skipped (see above)" if skipped else ""))
    return 1 if skipped else 0


def _remove_model(db, name: str, yes: bool, by: str | None) -> int:
    """Unregister a model and delete what it produced, after confirmation; exit 1 when not confirmed."""
    from store.db import Store
    from store.registry import plan_model_removal, remove_model

    with Store(db, read_only=True) as store:
        plan = plan_model_removal(store, name)
    if not yes and not _confirmed(f"model {name!r}",
                                  genuine_command(f"store remove-model {shlex.quote(name)}{_by(by)}", db),
                                  [f"  {n} {t}" for t, n in plan.items() if n]):
        return 1
    with Store(db) as store:
        deleted = remove_model(store, name, by)
    print(f"removed model {name!r}: " + ", ".join(f"{n} {t}" for t, n in deleted.items() if n and t != "models")
          + "; its folder is untouched")
    return 0


def _retire_or_reinstate(db, action: str, name: str, by: str | None) -> int:
    from store.db import Store
    from store.registry import reinstate_model, retire_model

    with Store(db) as store:
        if action == "retire-model":
            retire_model(store, name, by)
            again = genuine_command(f"store reinstate-model {shlex.quote(name)}{_by(by)}", db)
            print(f"model {name!r} retired: it scores no new scans; its predictions, maps and calls stay "
                  f"(to score with it again: {again})")
        else:
            reinstate_model(store, name, by)
            print(f"model {name!r} reinstated: its folder holds the registered weights; new scans are scored with "
                  f"it again (scans stored meanwhile: {genuine_command(f'store score {shlex.quote(name)}', db)})")
    return 0


def _relocate_model(db, name: str, folder: Path, by: str | None) -> int:
    from store.registry import relocate_model

    with _open_without_page(db, "nothing was recorded") as store:
        previous = relocate_model(store, name, folder, by)
    print(f"model {name!r}: folder {folder.resolve()}" + (f" (was {previous})" if previous != str(folder.resolve())
                                                          else " (unchanged)"))
    return 0


def _by(by: str | None) -> str:
    """`` --by NAME`` for a suggested command when ``by`` is not the login ``--by`` defaults to: a user who
    copies the suggestion is recorded under the name they gave, not under their login."""
    from store.location import login_name

    return f" --by {shlex.quote(by)}" if by and by != login_name() else ""


def _confirmed(what: str, command: str, lines: list[str]) -> bool:
    """Show what a removal deletes and ask; False (and "nothing removed") unless the user says yes.

    ``command`` is the whole command that removes it (``genuine store remove-scan 3 --db ...``).

    Raises:
        InputError: stdin is not a terminal (the command needs --yes then).
    """
    import sys

    from genuine_core.errors import InputError

    if not sys.stdin.isatty():
        raise InputError(f"{what} not removed: stdin is not a terminal, confirm with --yes ({command} --yes)")
    print("would delete:")
    for line in lines:
        print(line)
    try:
        answer = input(f"Remove {what} and all of the above? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        print("nothing removed")
        return False
    return True
