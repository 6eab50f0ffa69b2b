"""An interrupted training run is never used silently.

A folder whose ``metrics.json`` status is not ``final`` (``training``: best weights of a run that
did not finish; ``checkpoint``: ``<out>/checkpoint``) is refused by the loader, hence by ingest,
evaluate and registration, with one line naming the ``genuine train ... --resume`` command; only
``allow_unfinished=True`` loads it. Ctrl-C during ``genuine train`` says the same.
"""

from __future__ import annotations

import json
import shlex
import sys

import pytest

from genuine_core.cli import main
from genuine_core.errors import ModelLoadError
from genuine_core.models import GenuineClassifier, build_model, preset_config
from genuine_core.models.folder import UnfinishedModelError, check_finished, is_finished, load_model


def _tiny(kind="resnet"):
    return build_model(preset_config("tiny", kind, seed=1))


# ------------------------------------------------------------------------------- loader


@pytest.mark.parametrize("metrics,finished", [({}, True), ({"status": "final"}, True), ({"val_loss": 1.0}, True),
                                              ({"status": "training"}, False), ({"status": "checkpoint"}, False),
                                              ({"status": "failed"}, False)])
def test_is_finished(metrics, finished):
    assert is_finished(metrics) is finished


def test_unfinished_folder_is_refused_unless_allowed(tmp_path):
    cmd = "genuine train --kind resnet --preset tiny --data bench --out run --resume"
    folder = _tiny().save(tmp_path / "run", {"status": "training", "epoch": 3, "resume_command": cmd})
    with pytest.raises(UnfinishedModelError) as info:
        GenuineClassifier.from_folder(folder)
    msg = str(info.value)
    assert isinstance(info.value, ModelLoadError) and info.value.status == "training"
    assert "did not finish" in msg and "epoch 3" in msg and msg.endswith(cmd) and "\n" not in msg
    with pytest.raises(UnfinishedModelError):
        check_finished(folder)  # the cheap pre-flight check agrees
    m = GenuineClassifier.from_folder(folder, allow_unfinished=True)
    assert m.metrics["status"] == "training"
    assert load_model(folder, allow_unfinished=True).kind == "resnet"


def test_without_a_recorded_command_the_message_still_says_resume(tmp_path):
    folder = _tiny().save(tmp_path / "old_run", {"status": "training"})
    with pytest.raises(UnfinishedModelError, match=r"genuine train .*--out .*old_run --resume$"):
        load_model(folder)


def test_checkpoint_folder_points_to_the_run(tmp_path):
    out = tmp_path / "run"
    _tiny().save(out, {"status": "training", "epoch": 1})
    ck = _tiny().save(out / "checkpoint", {"status": "checkpoint", "epoch": 2})
    with pytest.raises(UnfinishedModelError, match="resumable checkpoint of the training run in .*--resume"):
        load_model(ck)
    _tiny().save(out, {"status": "final"})  # the run finished since
    with pytest.raises(UnfinishedModelError, match=r"that run finished: use .*run$"):
        load_model(ck)
    assert load_model(out).kind == "resnet"


def test_finished_and_statusless_folders_load(tmp_path):
    assert load_model(_tiny().save(tmp_path / "a", {"status": "final"})).metrics == {"status": "final"}
    assert load_model(_tiny().save(tmp_path / "b", {})).metrics == {}
    check_finished(tmp_path / "a")
    check_finished(tmp_path / "nothing_here")  # no metrics: nothing to refuse (load_model reports the folder)


def test_training_refuses_an_unfinished_detector_or_init_folder(tmp_path):
    from training import modelapi

    det = _tiny("detector").save(tmp_path / "det", {"status": "training", "epoch": 2})
    with pytest.raises(UnfinishedModelError, match="did not finish"):
        modelapi.build("tiny", "genuine", 0, 32, str(det))
    res = _tiny("resnet").save(tmp_path / "res", {"status": "training"})
    with pytest.raises(UnfinishedModelError, match="--resume"):
        modelapi.load_weights(_tiny("resnet"), res)


def test_resume_command_keeps_the_runs_options():
    from training.train import RunSpec, resume_command

    spec = RunSpec(kind="genuine", preset="tiny", data="my data", out="runs/g", detector="det",
                   command="genuine train --kind genuine --data 'my data' --detector det --overwrite --out runs/g")
    assert resume_command(spec) == ("genuine train --kind genuine --data 'my data' --detector det --out runs/g "
                                    "--resume")
    spec = RunSpec(kind="resnet", preset="tiny", data="d", out="o", init="models/resnet_cpu",
                   command="genuine train --kind resnet --init models/resnet_cpu --data d")
    assert resume_command(spec) == "genuine train --kind resnet --init models/resnet_cpu --data d --out o --resume"
    spec = RunSpec(kind="resnet", preset="tiny", data="d", out="o", init="i", resume=True,
                   command="genuine train --kind resnet --data d --out o --resume")  # a resume that left it out
    assert resume_command(spec) == "genuine train --kind resnet --data d --out o --init i --resume"
    assert resume_command(RunSpec(kind="resnet", preset="tiny", data="d", out="o", beta=0.2)) == (
        "genuine train --kind resnet --preset tiny --data d --beta 0.2 --out o --resume")


# ------------------------------------------------------------------------------- end to end (tiny)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from genuine_core.synth.benchmark import make_benchmark

    path = tmp_path_factory.mktemp("bench") / "bench"
    make_benchmark(path, seed=0, size="tiny")
    return path


def _ctrl_c_in_epoch_2(monkeypatch):
    """Make a training run stop with Ctrl-C as it records its second epoch; returns the real recorder."""
    import training.loop as loop

    real_history = loop.write_history

    def ctrl_c_in_epoch_2(out, history):
        if len(history) == 2:
            raise KeyboardInterrupt
        real_history(out, history)

    monkeypatch.setattr(loop, "write_history", ctrl_c_in_epoch_2)
    return real_history


def test_interrupted_run_is_refused_everywhere_until_resumed(bench, tmp_path, monkeypatch, capsys):
    import training.loop as loop
    from _store_fakes import write_toy_scans
    from conftest import make_toy_scan
    from genuine_core.pipeline import load_model as load_scoring_model

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--kind", "resnet", "--preset", "tiny", "--data", str(bench), "--epochs", "3",
            "--threads", "1", "--out", "run"]
    monkeypatch.setattr(sys, "argv", ["pytest"])  # the resume command comes from main()'s argv, not sys.argv
    real_history = _ctrl_c_in_epoch_2(monkeypatch)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # paths recorded absolute: the resume command works from any folder
    expected = "genuine " + " ".join(shlex.quote(a) for a in argv[:-1]) + f" {tmp_path / 'run'} --resume"
    assert err.startswith("interrupted: training stopped before it finished") and err.endswith(expected)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "training" and metrics["resume_command"] == expected

    # ingest, registration and evaluate refuse it with one line naming the resume command
    scan = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)[0]
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(scan), "--sample", "x", "--models", "run", "--db", str(db), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did not finish" in err and err.endswith(expected)
    with pytest.raises(UnfinishedModelError):
        load_scoring_model(tmp_path / "run")  # what the Models page registers after a run
    assert main(["evaluate", "--models", "run", "--data", str(bench), "--out", "rep", "--no-probes"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did not finish" in err and "--resume" in err
    assert not (tmp_path / "rep" / "evaluation.json").exists()

    # the printed command continues the run; then the folder is final and usable
    monkeypatch.setattr(loop, "write_history", real_history)
    resume = shlex.split(expected)[1:]
    monkeypatch.setattr(sys, "argv", ["genuine", *resume])
    assert main(resume) == 0
    capsys.readouterr()
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["status"] == "final" and "resume_command" not in final
    from store.db import Store
    from store.registry import register_model

    with Store(db) as s:
        assert register_model(s, load_scoring_model(tmp_path / "run")) == 1


def test_interrupt_before_the_first_epoch_says_there_is_nothing_to_resume(bench, tmp_path, monkeypatch, capsys):
    import training.train as train

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "fit", ctrl_c)
    argv = ["train", "--kind", "resnet", "--preset", "tiny", "--data", str(bench), "--out", "run2", "--threads", "1"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("interrupted: training stopped before its first epoch was saved")
    assert "nothing to resume" in err


def test_a_new_run_clears_an_earlier_runs_checkpoint(tmp_path, monkeypatch):
    """An --overwrite run interrupted before its first epoch must not point at the old run's checkpoint."""
    import training.train as train
    from training.checkpoint import CHECKPOINT_DIR

    out = tmp_path / "run"
    (out / CHECKPOINT_DIR).mkdir(parents=True)
    (out / CHECKPOINT_DIR / "state.json").write_text("{}")  # left by an earlier, finished run

    def interrupted(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_classifier", interrupted)
    with pytest.raises(train.TrainingInterrupted, match="nothing to resume"):
        train.train_model(train.RunSpec(kind="resnet", preset="tiny", data="d", out=str(out)))
    assert not (out / CHECKPOINT_DIR).exists()


def test_resume_refuses_options_that_differ_from_the_run(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--kind", "resnet", "--preset", "tiny", "--data", str(bench), "--epochs", "1",
            "--threads", "1", "--out", "run"]
    assert main(argv) == 0
    capsys.readouterr()
    before = (tmp_path / "run" / "train_config.json").read_text()
    assert main([*argv[:-2], "--lr", "0.5", "--out", "run", "--resume", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "these differ: --lr 0.5 (the run: 0.001)" in err and "Resume with: genuine train" in err
    assert err.strip().endswith("--out run --resume --overwrite")  # the run is finished: the command says so
    assert main(["train", "--kind", "ratio", "--preset", "tiny", "--data", str(bench), "--out", "run",
                 "--resume"]) == 2
    assert "a ratio fit has no checkpoint" in capsys.readouterr().err
    assert (tmp_path / "run" / "train_config.json").read_text() == before  # nothing rewritten
    assert main([*argv, "--resume", "--overwrite"]) == 0  # the same options (threads may differ) resume
    tc = json.loads((tmp_path / "run" / "train_config.json").read_text())
    first, = tc["earlier_commands"]  # the session that started the run stays on record beside the resume's
    assert first.startswith("genuine train --kind resnet") and "--resume" not in first
    assert tc["command"].endswith("--resume --overwrite")


def test_a_fine_tuning_run_resumes_with_the_command_that_started_it(bench, tmp_path, monkeypatch, capsys):
    """--init names where the run started: --resume accepts it unchanged (or left out) and the run keeps it."""
    import training.loop as loop

    monkeypatch.chdir(tmp_path)
    build_model(preset_config("tiny", "resnet", seed=1, patch_size=96)).save(tmp_path / "base", {"status": "final"})
    argv = ["train", "--kind", "resnet", "--preset", "tiny", "--data", str(bench), "--init", "base", "--epochs", "3",
            "--patience", "5", "--threads", "1", "--out", "run"]
    real_history = _ctrl_c_in_epoch_2(monkeypatch)
    assert main(argv) == 130
    monkeypatch.setattr(loop, "write_history", real_history)
    resume = json.loads((tmp_path / "run" / "metrics.json").read_text())["resume_command"]
    assert f"--init {tmp_path / 'base'}" in resume and capsys.readouterr().err.strip().endswith(resume)
    assert main([*argv, "--init", "elsewhere", "--resume"]) == 2  # another --init is another run
    err = capsys.readouterr().err
    assert f"these differ: --init elsewhere (the run: {tmp_path / 'base'})" in err
    assert main([*argv, "--resume"]) == 0  # the same command as the run's, as the Models page's Resume runs it
    tc = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert tc["init"] == str(tmp_path / "base") and tc["epochs_run"] == 3
    assert tc["earlier_commands"][0].startswith("genuine train") and "--init" in tc["earlier_commands"][0]


def test_a_resumed_run_records_the_init_weights_it_started_from(bench, tmp_path, monkeypatch):
    """train_config.json names the --init folder by the checksum it had when the run started: a folder re-saved
    before the resume (its weights are not used: they come from the checkpoint) does not change the record."""
    import training.loop as loop
    from genuine_core.models import folder_digest

    monkeypatch.chdir(tmp_path)
    base = build_model(preset_config("tiny", "resnet", seed=1, patch_size=96)).save(tmp_path / "base",
                                                                                     {"status": "final"})
    started = folder_digest(base)
    argv = ["train", "--kind", "resnet", "--preset", "tiny", "--data", str(bench), "--init", "base", "--epochs", "3",
            "--patience", "5", "--threads", "1", "--out", "run"]
    real_history = _ctrl_c_in_epoch_2(monkeypatch)
    assert main(argv) == 130
    monkeypatch.setattr(loop, "write_history", real_history)
    build_model(preset_config("tiny", "resnet", seed=9, patch_size=96)).save(base, {"status": "final"})
    assert folder_digest(base) != started
    assert main([*argv, "--resume"]) == 0
    tc = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert tc["inputs"]["init"] == {"path": str(base), "checksum": started}


def test_a_resume_left_out_init_keeps_the_runs_own(tmp_path, monkeypatch):
    """Resume commands of older versions left --init out: the run's (from the session that started it) applies."""
    import argparse

    from training import cli_train

    monkeypatch.setattr(cli_train, "_check_same_data", lambda data, out: None)
    out = tmp_path / "run"
    out.mkdir()
    start = f"genuine train --kind resnet --preset tiny --data d --init {tmp_path / 'base'} --out {out}"
    (out / "metrics.json").write_text(json.dumps({
        "status": "training", "resume_command": f"genuine train --kind resnet --preset tiny --data d --out {out} "
                                                "--resume", "session_commands": [start]}))
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    now = ["--kind", "resnet", "--preset", "tiny", "--data", "d", "--out", str(out), "--resume"]
    assert cli_train._check_resume(parser.parse_args(now), out) == str(tmp_path / "base")
    assert cli_train._check_resume(parser.parse_args([*now, "--init", str(tmp_path / "base")]), out) == str(
        tmp_path / "base")


def test_overwrite_starts_from_an_empty_folder_so_a_failed_run_leaves_no_old_model(bench, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    base = ["train", "--preset", "tiny", "--data", str(bench), "--epochs", "1", "--threads", "1", "--out", "run"]
    assert main(base + ["--kind", "resnet"]) == 0
    assert (tmp_path / "run" / "history.json").is_file()
    # a learning rate that diverges: one line, and the earlier model is gone rather than left looking resumable
    assert main(base + ["--kind", "resnet", "--lr", "1e9", "--overwrite"]) == 2
    assert "lower the learning rate" in capsys.readouterr().err
    assert not any((tmp_path / "run" / f).exists() for f in ("metrics.json", "checkpoint"))
    # a ratio fit over a ResNet folder keeps none of the ResNet's curves
    assert main(base + ["--kind", "resnet"]) == 0
    assert main(base + ["--kind", "ratio", "--overwrite"]) == 0
    assert not (tmp_path / "run" / "history.json").exists()
    tc = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert tc["train"] == {"seed": 0, "threads": 1, "max_val": None}  # no epochs or augmentation it never used


def test_a_split_with_one_class_is_refused_before_training(bench, tmp_path, capsys):
    argv = ["train", "--kind", "resnet", "--preset", "tiny", "--data", str(bench), "--epochs", "1", "--threads", "1",
            "--out", str(tmp_path / "run")]
    assert main([*argv, "--max-val", "1"]) == 2
    err = capsys.readouterr().err
    assert "the val split holds" in err and "needs both classes" in err and "--max-val" in err
    assert not (tmp_path / "run").exists()


def test_a_last_batch_of_one_row_joins_the_one_before():
    import numpy as np

    from training.datasets import batches

    assert [len(b) for b in batches(33, 32, None)] == [33]
    assert [len(b) for b in batches(65, 32, np.random.default_rng(0))] == [32, 33]
    assert [len(b) for b in batches(66, 32, None)] == [32, 32, 2]
    assert [len(b) for b in batches(1, 32, None)] == [1]
    assert sorted(np.concatenate(list(batches(65, 32, np.random.default_rng(1))))) == list(range(65))


def test_resume_trains_a_finished_run_on_only_with_overwrite(bench, tmp_path, monkeypatch, capsys):
    """A better epoch would replace a finished (maybe registered) model's weights: --resume alone refuses."""
    import training.loop as loop

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--kind", "resnet", "--preset", "tiny", "--data", str(bench), "--epochs", "1", "--threads", "1",
            "--out", "run"]
    assert main(argv) == 0
    files = {f: (tmp_path / "run" / f).read_bytes() for f in ("weights.safetensors", "metrics.json", "history.json")}
    capsys.readouterr()
    more = [*argv[:-5], "3", "--patience", "5", "--threads", "1", "--out", "run"]
    assert main([*more, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a finished model: --resume would train it on" in err and "add --overwrite" in err
    assert "--init run --out NEW_FOLDER" in err and len(err.splitlines()) == 1
    assert {f: (tmp_path / "run" / f).read_bytes() for f in files} == files  # untouched
    # told so, it trains on; stopped in its second epoch, the printed command continues it
    real_history = _ctrl_c_in_epoch_2(monkeypatch)
    assert main([*more, "--resume", "--overwrite"]) == 130
    resume = capsys.readouterr().err.strip().splitlines()[-1].split("Continue the run with: ")[1]
    assert resume.endswith("--overwrite --resume")
    monkeypatch.setattr(loop, "write_history", real_history)
    assert main(shlex.split(resume)[1:]) == 0
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 3


def test_resume_refuses_training_data_that_changed_since_the_run_started(bench, tmp_path, monkeypatch, capsys):
    import shutil

    import pandas as pd

    import training.loop as loop

    data = tmp_path / "bench"
    shutil.copytree(bench, data)
    argv = ["train", "--kind", "resnet", "--preset", "tiny", "--data", str(data), "--epochs", "3", "--threads", "1",
            "--out", str(tmp_path / "run")]
    real_history = _ctrl_c_in_epoch_2(monkeypatch)
    assert main(argv) == 130
    monkeypatch.setattr(loop, "write_history", real_history)
    nuclei = pd.read_parquet(data / "nuclei.parquet")  # the benchmark made again in the same folder
    nuclei.iloc[::-1].to_parquet(data / "nuclei.parquet", index=False)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"--resume: the training data in {data} changed since the run started" in err


def test_resume_compares_a_left_out_detector_as_it_resolves(tmp_path, monkeypatch):
    """--detector left out resolves to the preset's detector: the same run, not 'these differ: --detector None'."""
    import argparse

    from genuine_core.errors import InputError
    from training import cli_train

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "detector_tiny").mkdir(parents=True)
    monkeypatch.setattr(cli_train, "_check_same_data", lambda data, out: None)
    monkeypatch.setattr(cli_train, "_recorded_argv", lambda out: [
        "--kind", "genuine", "--preset", "tiny", "--data", "d", "--detector", "models/detector_tiny", "--out", "run"])
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    now = ["--kind", "genuine", "--preset", "tiny", "--data", "d", "--out", "run", "--resume"]
    cli_train._check_resume(parser.parse_args(now), tmp_path / "run")  # nothing differs
    with pytest.raises(InputError, match=r"these differ: --detector elsewhere \(the run: models/detector_tiny\)"):
        cli_train._check_resume(parser.parse_args([*now, "--detector", "elsewhere"]), tmp_path / "run")
