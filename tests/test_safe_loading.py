"""Safe model loading (issue 6, point 2), beyond the folder tests of test_models.py.

test_models.py already covers: a flipped weights byte (checksum mismatch), a crafted
pickle as ``weights.safetensors`` / ``weights.pt`` whose payload would create a marker
file, a ``torch.save`` archive with such a payload as ``weights.pt``, an unknown config
key, a missing checksum list. Here:

* a whole ``torch.save``-d module carrying a payload, under either weights name, through
  the folder loader, the scoring loader and ``genuine ingest --models``: refused with a
  message, the payload never runs, the store is unchanged;
* config.json / metrics.json are data: wrong types, non-JSON (a YAML object tag, a Python
  expression), a list: refused as invalid, nothing evaluated;
* the checksum is recorded at registration (``models.checksum`` = ``folder_digest``) and
  verified at every later load from the registered folder: a folder tampered with, or
  re-written with other weights and a consistent new checksum list, is refused by
  ``genuine ingest`` with one line, and the store is unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_toy_scan
from hostile_cases import store_snapshot

from genuine_core.cli import main
from genuine_core.errors import ModelLoadError
from genuine_core.io import write_scan_tiff
from genuine_core.models import build_model, folder_digest, preset_config
from genuine_core.models.folder import (
    CHECKSUM_FILE,
    CONFIG_FILE,
    LEGACY_WEIGHTS_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    sha256_file,
)
from genuine_core.models.folder import load_model as load_folder
from genuine_core.pipeline import load_model


def _rewrite_checksums(folder: Path) -> None:
    """What an attacker who can write the folder does: make the checksum list match the new files."""
    names = sorted(p.name for p in folder.iterdir() if p.name != CHECKSUM_FILE)
    (folder / CHECKSUM_FILE).write_text("".join(f"{sha256_file(folder / n)}  {n}\n" for n in names))


def _save_tiny(folder: Path, shift: float = 0.0) -> Path:
    """A tiny ratio model folder; ``shift`` moves its (only) parameter, the log ratio threshold."""
    model = build_model(preset_config("tiny", "ratio"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift)
    return model.save(folder)


class _Payload(torch.nn.Module):
    """A module whose unpickling would create ``marker`` (runs code)."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = str(marker)
        self.log_threshold = torch.nn.Parameter(torch.zeros(()))

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture()
def scan(tmp_path) -> Path:
    p = tmp_path / "scan.tif"
    write_scan_tiff(p, make_toy_scan(seed=21).image)
    return p


@pytest.fixture()
def store_with_model(tmp_path, scan) -> tuple[Path, Path]:
    """(store, registered model folder): one scan ingested with a tiny ratio model."""
    folder = _save_tiny(tmp_path / "models" / "tiny-ratio")
    db = tmp_path / "store.duckdb"
    assert main(["ingest", str(scan), "--sample", "S", "--db", str(db), "--models", str(folder.parent),
                 "--quiet", "--no-umap"]) == 0
    return db, folder


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("target", [WEIGHTS_FILE, LEGACY_WEIGHTS_FILE])
def test_torch_saved_module_is_refused_and_its_payload_never_runs(target, store_with_model, tmp_path, capsys):
    db, folder = store_with_model
    evil = tmp_path / "evil" / "tiny-ratio"
    shutil.copytree(folder, evil)
    marker = tmp_path / "pwned"
    (evil / WEIGHTS_FILE).unlink()
    torch.save(_Payload(marker), evil / target)
    _rewrite_checksums(evil)
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match="refus"):
        load_folder(evil)
    with pytest.raises(ModelLoadError, match="refus"):
        load_model(evil)
    before = store_snapshot(db)
    scan = tmp_path / "scan2.tif"
    write_scan_tiff(scan, make_toy_scan(seed=22).image)
    capsys.readouterr()
    code = main(["ingest", str(scan), "--sample", "S", "--db", str(db), "--models", str(evil.parent), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "refus" in err and "\n" not in err
    assert store_snapshot(db) == before
    assert not marker.exists()


@pytest.mark.parametrize("text", [
    '!!python/object/apply:os.system ["touch {marker}"]',  # a YAML object tag
    "__import__('pathlib').Path('{marker}').touch()",  # a Python expression
    "[1, 2, 3]",
    '{{"kind": "ratio", "preset": "tiny", "patch_size": "__import__(\'os\')"}}',
    '{{"kind": {{"__class__": "os.system"}}, "preset": "tiny"}}',
    '{{"kind": "ratio", "preset": "tiny", "hidden": [16], "seed": 1.5}}',
])
def test_config_is_parsed_as_data(text, tmp_path):
    marker = tmp_path / "pwned"
    folder = _save_tiny(tmp_path / "m")
    (folder / CONFIG_FILE).write_text(text.format(marker=marker))
    _rewrite_checksums(folder)
    with pytest.raises(ModelLoadError, match="invalid model config"):
        load_folder(folder)
    assert not marker.exists()


def test_metrics_must_be_a_json_object(tmp_path):
    folder = _save_tiny(tmp_path / "m")
    for text, match in (("[0.5]", "must hold a JSON object"), ("{'auc': 1}", "invalid JSON")):
        (folder / METRICS_FILE).write_text(text)
        _rewrite_checksums(folder)
        with pytest.raises(ModelLoadError, match=match):
            load_folder(folder)


def test_checksum_recorded_at_registration_and_verified_at_load(store_with_model, tmp_path, capsys):
    from store.db import Store
    from store.registry import list_models

    db, folder = store_with_model
    with Store(db, read_only=True) as s:
        reg = list_models(s)
    assert reg["name"].tolist() == ["tiny-ratio"]
    assert reg.at[0, "checksum"] == folder_digest(folder) and reg.at[0, "folder"] == str(folder.resolve())
    scan = tmp_path / "next.tif"
    write_scan_tiff(scan, make_toy_scan(seed=23).image)
    before = store_snapshot(db)
    good = {p.name: p.read_bytes() for p in folder.iterdir()}

    def ingest(*extra: str) -> str:
        capsys.readouterr()
        assert main(["ingest", str(scan), "--sample", "S", "--db", str(db), "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
        assert store_snapshot(db) == before
        return err

    # 1. a flipped weights byte: the folder's own checksum list catches it
    data = bytearray(good[WEIGHTS_FILE])
    data[-1] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    assert "checksum mismatch for weights.safetensors" in ingest()
    # 2. other weights with a consistent checksum list: the store's recorded checksum catches it,
    #    whether the folder comes from the registry or is named again with --models
    (folder / WEIGHTS_FILE).write_bytes(good[WEIGHTS_FILE])
    other = _save_tiny(tmp_path / "other", shift=0.7)
    assert (other / WEIGHTS_FILE).read_bytes() != good[WEIGHTS_FILE]
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    _rewrite_checksums(folder)
    load_folder(folder)  # a valid folder on its own ...
    assert "no longer holds the weights registered" in ingest()  # ... but not the registered model
    assert "registered with other weights" in ingest("--models", str(folder.parent))
    # 3. the original files back: loads and ingests again
    for name, content in good.items():
        (folder / name).write_bytes(content)
    capsys.readouterr()
    assert main(["ingest", str(scan), "--sample", "S", "--db", str(db), "--quiet", "--no-umap"]) == 0
    assert store_snapshot(db)["counts"]["scans"] == before["counts"]["scans"] + 1


def test_config_json_of_a_registered_model_is_checked_too(store_with_model, capsys):
    """Editing config.json (e.g. the decision threshold) of a registered folder is tampering as well."""
    db, folder = store_with_model
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    cfg["threshold"] = 0.01
    (folder / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="checksum mismatch for config.json"):
        load_folder(folder)
    _rewrite_checksums(folder)
    before = store_snapshot(db)
    capsys.readouterr()
    assert main(["ingest", str(folder), "--sample", "S", "--db", str(db), "--quiet"]) == 2
    assert "no longer holds the weights registered" in capsys.readouterr().err
    assert store_snapshot(db) == before
