"""``genuine train-cellpose``: argument checks (fast) and a tiny end-to-end run (slow)."""

from __future__ import annotations

import json

import pytest

from genuine_core.cli import main
from genuine_core.segmentation.cellpose_train import CellposeTrainConfig


@pytest.mark.parametrize("args, line", [
    # the config's own words named its fields and no value: 'learning_rate must be in (0, 1) and weight_decay >= 0'
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--fields", "0"], "--fields must be >= 1, got 0"),
    (["--val-fields", "-1"], "--val-fields must be >= 0, got -1"),
    (["--images-per-epoch", "0"], "--images-per-epoch must be >= 1, got 0"),
    (["--lr", "2"], "--lr must be in (0, 1), got 2"),
    (["--lr", "nan"], "--lr must be in (0, 1), got nan"),
    (["--threads", "0"], "--threads must be in [1, 256], got 0"),
])
def test_bad_arguments_exit_2_name_the_option_and_write_nothing(tmp_path, args, line, capsys):
    out = tmp_path / "model"
    assert main(["train-cellpose", "--out", str(out), *args]) == 2
    assert capsys.readouterr().err.strip() == f"error: {line}"
    assert not out.exists()


def test_calibrate_only_without_a_model_folder_exits_2(tmp_path, capsys):
    assert main(["train-cellpose", "--out", str(tmp_path / "none"), "--calibrate-only"]) == 2
    assert "config.json" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="min_train_masks"):
        CellposeTrainConfig(nuclei=(3, 10))  # cellpose would silently drop such fields
    with pytest.raises(ValueError, match="256"):
        CellposeTrainConfig(nbase=(16, 32, 64, 128))  # cellpose's eval needs a 256-wide bottom
    with pytest.raises(ValueError, match="multiple"):
        CellposeTrainConfig(bsize=100)


@pytest.mark.slow
def test_tiny_training_run_writes_a_loadable_model_folder(tmp_path):
    from genuine_core.segmentation.cellpose_backend import MODEL_FILE, model_settings
    from genuine_core.checksums import sha256_file
    from genuine_core.segmentation.cellpose_train import calibrate_folder, train_cellpose

    cfg = CellposeTrainConfig(n_fields=2, n_val_fields=1, epochs=2, field_size=256, nuclei=(6, 8),
                              nbase=(8, 16, 256), bsize=64, save_every=1)
    metrics = train_cellpose(tmp_path / "m", cfg, command="genuine train-cellpose --out m")
    folder = tmp_path / "m"
    assert (folder / MODEL_FILE).is_file()
    digest, name = (folder / "checksum.sha256").read_text().split()
    assert name == MODEL_FILE and digest == sha256_file(folder / MODEL_FILE)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["nbase"] == [8, 16, 256] and saved["cellprob_threshold"] in (-1.0, 0.0, 1.0, 2.0)
    assert saved["command"] == "genuine train-cellpose --out m"
    assert model_settings(folder / MODEL_FILE)["bsize"] == 64
    assert json.loads((folder / "metrics.json").read_text())["val"]["n_gt"] == metrics["val"]["n_gt"] > 0
    assert len(metrics["calibration"]["grid"]) == 4
    again = calibrate_folder(folder)  # re-calibration regenerates the validation fields from the seed
    assert again["val"]["n_gt"] == metrics["val"]["n_gt"]


def test_train_cellpose_cli_refuses_to_replace_a_model_or_write_into_a_file(tmp_path, capsys, monkeypatch):
    import genuine_core.segmentation.cellpose_train as ct
    from genuine_core.cli import main

    calls = []
    monkeypatch.setattr(ct, "train_cellpose", lambda out, config, command: calls.append(command) or {"val": {}})
    folder = tmp_path / "cp"
    folder.mkdir()
    (folder / "cellpose_nuclei").write_bytes(b"trained weights")
    assert main(["train-cellpose", "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a trained cellpose model" in err and "--overwrite" in err and "\n" not in err
    target = tmp_path / "FILE"
    target.write_text("x")
    assert main(["train-cellpose", "--out", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert calls == [] and (folder / "cellpose_nuclei").read_bytes() == b"trained weights"
    assert main(["train-cellpose", "--out", str(folder), "--overwrite"]) == 0
    assert calls == [f"genuine train-cellpose --out {folder} --overwrite"]  # recorded in its config.json
    assert "warning" not in capsys.readouterr().err  # no validation F1 reported: nothing to warn about
    monkeypatch.setattr(ct, "train_cellpose", lambda out, config, command: calls.append(command) or {"val": {"f1": 0.0}})
    assert main(["train-cellpose", "--out", str(folder), "--overwrite"]) == 0
    assert "warning: validation F1 0.000: this model misses most nuclei" in capsys.readouterr().err
    calls.pop()
    other = tmp_path / "bench"  # someone else's folder: never written into, --overwrite or not
    other.mkdir()
    (other / "config.json").write_text("{}")
    for extra in ([], ["--overwrite"]):
        assert main(["train-cellpose", "--out", str(other), *extra]) == 2
        assert "holds config.json, and is not a cellpose model folder" in capsys.readouterr().err
    assert len(calls) == 1 and (other / "config.json").read_text() == "{}"
