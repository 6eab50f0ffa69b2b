"""A retraining run stopped on one server resumes on another, from a restored backup of its store.

The backup holds the run (``<name>_files/runs/``) and copies of the registered models' folders
(``<name>_files/models/``); the run's recorded command names the original ``--init`` / ``--detector`` folders,
which are gone on the new server: resuming takes their copies (found by the checksum the run recorded), or
refuses in one line naming the missing folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _store_fakes import private_store_copy
from genuine_core.errors import InputError


def _tiny(folder: Path, seed: int = 0, kind: str = "resnet", patch_size: int = 96) -> Path:
    from genuine_core.models import GenuineClassifier, preset_config

    GenuineClassifier.from_config(preset_config("tiny", kind=kind, patch_size=patch_size, seed=seed)).save(
        folder, metrics={})
    return folder


def _curate(s, n: int) -> None:
    from store.labels import record_label_event
    from store.nuclei import sample_nuclei

    for sample, label in (("LINE-MNA", 1), ("LINE-NON", 0)):
        for nid in sample_nuclei(s, sample)["nucleus_id"].tolist()[:n]:
            record_label_event(s, nid, label, "Dr. Test")


def _wait(done, what: str, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen in {seconds:.0f} s"
        time.sleep(0.05)


@pytest.fixture()
def run_registry():
    from pages import retrain

    retrain.runs().clear()
    yield retrain.runs()
    retrain.runs().clear()


@pytest.mark.slow
def test_a_stopped_fine_tune_resumes_to_a_finished_model_from_a_backup_restored_elsewhere(
        small_store, tmp_path, monkeypatch, run_registry):
    from genuine_core.cli import main
    from genuine_core.pipeline import load_model
    from pages import retrain
    from store.db import open_store
    from store.registry import register_model
    from training.checkpoint import has_checkpoint

    site1, site2 = tmp_path / "site1", tmp_path / "site2"
    site1.mkdir()
    db = private_store_copy(small_store[0], site1, monkeypatch)
    init = _tiny(site1 / "models" / "resnet-base")
    monkeypatch.setitem(retrain.PRESET_DEFAULTS, "tiny", (8, 100, 64))  # patience 100: the run goes on
    with open_store(db) as s:
        register_model(s, load_model(init))
        _curate(s, 12)
        run_id = retrain.start_run(s, "resnet", "tiny", 8, "resnet-moved", None, init=str(init))
    rec = run_registry[run_id]
    _wait(lambda: has_checkpoint(rec["out"]) or retrain.poll(rec) != retrain.RUNNING, "a first checkpoint")
    assert has_checkpoint(rec["out"]), rec["log"].read_text()[-2000:]
    retrain.stop_run(rec)
    _wait(lambda: retrain.poll(rec) != retrain.RUNNING, "the stop")
    assert retrain.poll(rec) == retrain.STOPPED, rec["log"].read_text()[-2000:]

    assert main(["store", "backup", str(tmp_path / "backup"), "--db", str(db)]) == 0
    shutil.move(site1, tmp_path / "gone")  # the first server's disk is no more
    shutil.copytree(tmp_path / "backup", site2)
    db2 = site2 / db.name
    monkeypatch.setenv("GENUINE_DB", str(db2))
    assert main(["store", "check", "--fix-paths", "--db", str(db2)]) == 0
    run_registry.clear()  # the new server
    with open_store(db2) as s:
        retrain.recover_runs(s)
    rec = run_registry[run_id]
    assert retrain.poll(rec) == retrain.STOPPED and retrain.resumable(rec)
    retrain.resume_run(rec)
    _wait(lambda: retrain.poll(rec) != retrain.RUNNING, "the resumed run's end")
    assert retrain.poll(rec) == retrain.FINISHED, rec["log"].read_text()[-3000:]
    copy = site2 / f"{db.stem}_files" / "models" / "resnet-base"
    assert rec["cmd"][rec["cmd"].index("--init") + 1] == str(copy)
    assert load_model(rec["out"]).kind == "resnet"
    saved = json.loads((rec["log"].parent / "run.json").read_text())
    assert saved["resumed"] == 1 and str(copy) in saved["cmd"]


def _stopped_run(files: Path, inputs: dict[str, Path], kind: str = "genuine") -> dict:
    """A stopped run under ``files/runs/r1`` whose command names the folders ``inputs`` (option -> folder) and
    whose checkpoint recorded their checksums as the run started; the folders are then removed."""
    from genuine_core.models.folder import folder_digest
    from training.train import INPUTS_KEY

    folder = files / "runs" / "r1"
    out = folder / "m"
    (out / "checkpoint").mkdir(parents=True)
    (folder / "train.log").write_text("")
    started = {k.lstrip("-"): {"path": str(v), "checksum": folder_digest(v)} for k, v in inputs.items()}
    (out / "checkpoint" / "metrics.json").write_text(json.dumps({"status": "unfinished", INPUTS_KEY: started}))
    cmd = [sys.executable, "-m", "genuine_core.cli", "train", "--kind", kind, "--out", str(out)]
    for option, path in inputs.items():
        cmd += [option, str(path)]
        shutil.rmtree(path)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return {"log": folder / "train.log", "out": out, "name": "m", "epochs": 3, "started": time.time(), "cmd": cmd,
            "proc": proc, "ended": time.time(), "rc": 130, "resumed": 0}


def test_resuming_takes_the_copies_of_its_missing_detector_and_init_folders(tmp_path, monkeypatch):
    from pages import retrain

    files = tmp_path / "site2" / "lab_files"
    det, init = _tiny(tmp_path / "gone" / "det", kind="genuine"), _tiny(tmp_path / "gone" / "base", seed=1)
    shutil.copytree(det, files / "models" / "det")
    shutil.copytree(init, files / "models" / "base")
    rec = _stopped_run(files, {"--detector": det, "--init": init})
    launched = []
    monkeypatch.setattr(retrain, "_launch", lambda rec, cmd, mode: launched.append(cmd))
    retrain.resume_run(rec)
    cmd = launched[0]
    assert cmd[cmd.index("--detector") + 1] == str(files / "models" / "det")
    assert cmd[cmd.index("--init") + 1] == str(files / "models" / "base") and cmd[-1] == "--resume"
    assert rec["cmd"] == cmd[:-1]  # kept for the next resume (run.json)


def test_resuming_without_a_copy_of_a_missing_folder_refuses_in_one_line(tmp_path, monkeypatch):
    from pages import retrain

    files = tmp_path / "site2" / "lab_files"
    det = _tiny(tmp_path / "gone" / "det", kind="genuine")
    rec = _stopped_run(files, {"--detector": det})
    launched = []
    monkeypatch.setattr(retrain, "_launch", lambda rec, cmd, mode: launched.append(cmd))
    with pytest.raises(InputError) as err:
        retrain.resume_run(rec)
    msg = str(err.value)
    assert "\n" not in msg and not launched and rec["resumed"] == 0
    assert f"its --detector folder {det} is not on this machine" in msg
    assert str(files / "models") in msg  # where a copy is looked for: the way out


@pytest.mark.parametrize("same_weights", [True, False])
def test_resume_accepts_moved_data_and_init_only_when_they_hold_what_the_run_started_on(tmp_path, same_weights):
    """``genuine train --resume`` compares its options with the run's: a path that is gone counts as the same
    when the new one holds the same training set (fingerprint) or weights (checksum) the checkpoint recorded."""
    import argparse

    from genuine_core.models.folder import folder_digest
    from training import cli_train
    from training.datasets import data_fingerprint
    from training.train import INPUTS_KEY, RESUME_DATA_KEY

    old, new = tmp_path / "site1", tmp_path / "site2"
    init = _tiny(new / "models" / "base")
    started = init if same_weights else _tiny(tmp_path / "other", seed=3)
    data = new / "curated.npz"
    data.write_bytes(b"patches")
    out = new / "m"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "metrics.json").write_text(json.dumps({
        RESUME_DATA_KEY: data_fingerprint(data), INPUTS_KEY: {"init": {"checksum": folder_digest(started)}}}))
    (out / "train_config.json").write_text(json.dumps({"command": (
        f"genuine train --kind resnet --preset tiny --data {old / 'curated.npz'} --init {old / 'base'} "
        f"--out {old / 'm'}")}))
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    args = parser.parse_args(["--kind", "resnet", "--preset", "tiny", "--data", str(data), "--init", str(init),
                              "--out", str(out), "--resume"])
    if same_weights:
        assert cli_train._check_resume(args, out) == str(init)
    else:
        with pytest.raises(InputError, match=f"these differ: --init {init} \\(the run: {old / 'base'}\\)"):
            cli_train._check_resume(args, out)


def test_a_refused_resume_after_a_restore_suggests_the_folders_found_here_not_the_gone_ones(tmp_path):
    """Another option differs: the suggested command names the restored data and init, which the run accepts,
    instead of the first server's paths, which are gone."""
    import argparse

    from genuine_core.models.folder import folder_digest
    from training import cli_train
    from training.datasets import data_fingerprint
    from training.train import INPUTS_KEY, RESUME_DATA_KEY

    old, new = tmp_path / "site1", tmp_path / "site2"
    init = _tiny(new / "models" / "base")
    data = new / "curated.npz"
    data.write_bytes(b"patches")
    out = new / "m"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "metrics.json").write_text(json.dumps({
        RESUME_DATA_KEY: data_fingerprint(data), INPUTS_KEY: {"init": {"checksum": folder_digest(init)}}}))
    (out / "train_config.json").write_text(json.dumps({"command": (
        f"genuine train --kind resnet --preset tiny --beta 0.2 --data {old / 'curated.npz'} --init {old / 'base'} "
        f"--out {old / 'm'}")}))
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    args = parser.parse_args(["--kind", "resnet", "--preset", "tiny", "--data", str(data), "--init", str(init),
                              "--out", str(out), "--resume"])
    with pytest.raises(InputError) as err:
        cli_train._check_resume(args, out)
    msg = str(err.value)
    assert "these differ: --beta 0.0 (the run: 0.2)" in msg and "--data" not in msg.split("Resume with")[0]
    suggestion = msg.split("Resume with: ")[1]
    assert f"--data {data}" in suggestion and f"--init {init}" in suggestion and str(old) not in suggestion
    assert "--beta 0.2" in suggestion and suggestion.endswith(f"--out {out} --resume")
