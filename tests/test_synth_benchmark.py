"""Benchmark folders: layout, splits, mixtures, determinism, load_benchmark."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genuine_core import io, patches
from genuine_core.errors import InputError
from genuine_core.synth import SIZES, BenchmarkSize, load_benchmark, make_benchmark
from genuine_core.synth.benchmark import MIXTURE_FRACTIONS, mixture_counts

# smallest useful size: 2 fields per line (all train), 8 mixtures of 6 nuclei
MICRO = BenchmarkSize("micro", nuclei_per_line=6, mixture_nuclei=6, patch_size=64, field_shape=(192, 192),
                      nuclei_per_field=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny"
    summary = make_benchmark(out, seed=3, size="tiny", beta=0.25, progress=False, command="genuine synth benchmark")
    return out, summary


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every array file and of the tables' content."""
    d = {}
    for p in sorted(root.rglob("*")):
        if p.suffix in (".npy", ".tif"):
            d[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    for name in ("nuclei.parquet", "boxes.parquet"):
        df = pd.read_parquet(root / name)
        d[name] = hashlib.sha256(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()).hexdigest()
    return d


def test_folder_layout(tiny):
    out, _ = tiny
    for name in ("config.json", "summary.json", "nuclei.parquet", "boxes.parquet"):
        assert (out / name).is_file()
    for split in ("train", "val", "test", "mixture"):
        arr = np.load(out / "patches" / f"{split}.npy", mmap_mode="r")
        assert arr.dtype == np.float16 and arr.shape[1:] == (3, 96, 96) and len(arr) > 0
    nuclei = pd.read_parquet(out / "nuclei.parquet")
    fields = set(nuclei["field_id"])
    for fid in fields:
        assert (out / "fields" / f"{fid}.tif").is_file() and (out / "fields" / f"{fid}_masks.tif").is_file()
    for col in ("field_id", "split", "sample", "patch_row", "nucleus_id", "cell_line", "true_label", "auto_label",
                "noise", "label_noisy"):
        assert col in nuclei.columns
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["beta"] == 0.25 and config["patch_size"] == 96
    assert config["command"] == "genuine synth benchmark"
    assert set(config["acquisitions"]) == {"nominal", "shifted"}


def test_split_by_field_and_per_line_counts(tiny):
    out, summary = tiny
    nuclei = pd.read_parquet(out / "nuclei.parquet")
    assert nuclei.groupby("field_id")["split"].nunique().max() == 1  # a field is in exactly one split
    pool = nuclei[nuclei["split"] != "mixture"]
    assert pool.groupby("field_id")["cell_line"].nunique().max() == 1  # training fields hold one line
    per_line = pool[pool["patch_row"] >= 0].groupby("cell_line").size()
    assert (per_line == SIZES["tiny"].nuclei_per_line).all() and len(per_line) == 4
    for line, row in summary["per_line"].items():
        assert row["n"] == per_line[line]
        assert row["train"] > 0 and row["val"] > 0 and row["test"] > 0
    # realised label-noise rate is reported and equals the table's
    assert summary["label_noise_rate"] == pytest.approx(pool["label_noisy"].mean())


def test_mixture_fractions_within_one_nucleus(tiny):
    out, summary = tiny
    nuclei = pd.read_parquet(out / "nuclei.parquet")
    mix = nuclei[(nuclei["split"] == "mixture") & (nuclei["patch_row"] >= 0) & (nuclei["sample"] != "")]
    n = SIZES["tiny"].mixture_nuclei
    assert set(mix["sample"]) == {f"mix_{round(f * 100):03d}" for f in MIXTURE_FRACTIONS}
    for frac in MIXTURE_FRACTIONS:
        sample = f"mix_{round(frac * 100):03d}"
        g = mix[mix["sample"] == sample]
        assert len(g) == n
        assert abs(g["line_label"].sum() - frac * n) <= 1.0
        s = summary["mixtures"][sample]
        assert s["within_one_nucleus"] and s["n"] == n and s["target_fraction"] == frac
        assert s["true_mna_fraction"] == pytest.approx(g["true_label"].mean())
    assert (mix["acquisition"] == "shifted").all()
    assert (mix["flipped"] == False).all()  # noqa: E712  (beta applies to the training pool only)


def test_mixture_counts_rounding():
    assert [mixture_counts(f, 2048) for f in MIXTURE_FRACTIONS] == [0, 512, 1024, 1536, 1843, 1946, 2028, 2048]
    with pytest.raises(ValueError):
        mixture_counts(1.2, 10)


def test_load_benchmark_aligns_rows_and_boxes(tiny):
    out, _ = tiny
    split = load_benchmark(out, "train")
    n = len(split.patches)
    assert isinstance(split.patches, np.memmap)
    assert (split.nuclei["patch_row"].to_numpy() == np.arange(n)).all()
    assert split.boxes["patch_row"].between(0, n - 1).all()
    b = split.boxes
    assert (b[["x1", "y1"]].to_numpy() >= 0).all() and (b[["x2", "y2"]].to_numpy() <= 96).all()
    # every visible signal of an extracted nucleus has a box in its patch
    per = b.groupby("patch_row").size().reindex(range(n), fill_value=0).to_numpy()
    counts = split.nuclei[["n_nmi", "n_mycn", "n_cluster"]].sum(axis=1).to_numpy()
    assert (per == counts).all()
    # a box sits on a bright spot of its channel inside the nucleus patch
    for row in b.sample(min(40, len(b)), random_state=0).itertuples():
        patch = np.asarray(split.patches[row.patch_row], np.float32)
        ch = 0 if row.cls == 1 else 1
        box = patch[ch, int(row.y1):int(row.y2), int(row.x1):int(row.x2)]
        nucleus = patch[ch][patch[2] > 0]
        assert box.max() > np.median(nucleus) + 0.1
        cy, cx = int((row.y1 + row.y2 - 1) // 2), int((row.x1 + row.x2 - 1) // 2)
        assert patch[2, cy, cx] > 0, "box centre must be inside the nucleus"


def test_patches_come_from_the_quantised_tiff(tiny):
    out, _ = tiny
    split = load_benchmark(out, "val")
    fid = split.nuclei["field_id"].iloc[0]
    scan = io.read_scan(out / "fields" / f"{fid}.tif")
    masks = io.read_masks(out / "fields" / f"{fid}_masks.tif")
    ps = patches.extract_patches(scan.image, masks, size=96, scan_id=fid)
    rows = split.nuclei.index[split.nuclei["field_id"] == fid]
    assert np.array_equal(np.asarray(split.patches[rows]), ps.patches.astype(np.float16))


def test_same_seed_is_byte_identical_and_seed_matters(tmp_path):
    kw = dict(size=MICRO, progress=False, mixture_fractions=(0.0, 0.5, 1.0))
    make_benchmark(tmp_path / "a", seed=11, **kw)
    make_benchmark(tmp_path / "b", seed=11, **kw)
    make_benchmark(tmp_path / "c", seed=12, **kw)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(da) > 10 and da == db
    assert da["patches/train.npy"] != dc["patches/train.npy"]
    assert da["nuclei.parquet"] != dc["nuclei.parquet"]


def test_acquisition_jitter_changes_the_pool_images_not_the_truth(tmp_path):
    kw = dict(seed=4, size=MICRO, progress=False, mixture_fractions=(0.0, 1.0))
    make_benchmark(tmp_path / "a", **kw)
    make_benchmark(tmp_path / "b", acquisition_jitter=1.0, **kw)
    na, nb = pd.read_parquet(tmp_path / "a/nuclei.parquet"), pd.read_parquet(tmp_path / "b/nuclei.parquet")
    cols = ["field_id", "nucleus_id", "split", "true_label", "auto_label", "n_nmi", "n_mycn", "n_cluster"]
    pd.testing.assert_frame_equal(na[cols], nb[cols])  # the same scenes
    pool = nb["split"] != "mixture"
    assert set(nb.loc[pool, "acquisition"]) == {"jittered"} and set(nb.loc[~pool, "acquisition"]) == {"shifted"}
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da["patches/train.npy"] != db["patches/train.npy"]
    assert da["patches/mixture.npy"] == db["patches/mixture.npy"]  # mixtures keep their own acquisition
    cfg = json.loads((tmp_path / "b/config.json").read_text())
    assert cfg["acquisition_jitter"]["strength"] == 1.0
    with pytest.raises(ValueError, match="acquisition_jitter"):
        make_benchmark(tmp_path / "c", acquisition_jitter=3.0, **kw)
    assert not (tmp_path / "c").exists()


def test_spot_flux_normalisation_rescales_only_the_mycn_channel(tmp_path):
    kw = dict(seed=4, size=MICRO, progress=False, mixture_fractions=(0.0, 1.0))
    make_benchmark(tmp_path / "a", normalisation="percentile", **kw)
    make_benchmark(tmp_path / "b", **kw)  # spot_flux is the default
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a/nuclei.parquet"),
                                  pd.read_parquet(tmp_path / "b/nuclei.parquet"))
    a = np.load(tmp_path / "a/patches/train.npy").astype(np.float32)
    b = np.load(tmp_path / "b/patches/train.npy").astype(np.float32)
    np.testing.assert_array_equal(a[:, [0, 2]], b[:, [0, 2]])
    assert not np.array_equal(a[:, 1], b[:, 1])
    assert ((a[:, 1] > 0) == (b[:, 1] > 0)).mean() > 0.99  # the same pixels, rescaled
    assert json.loads((tmp_path / "a/config.json").read_text())["patch_normalisation"] == "percentile"
    assert json.loads((tmp_path / "b/config.json").read_text())["patch_normalisation"] == "spot_flux"
    with pytest.raises(ValueError, match="normalisation"):
        make_benchmark(tmp_path / "c", normalisation="flux", **kw)
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_worker_processes_do_not_change_the_output(tmp_path):
    make_benchmark(tmp_path / "a", seed=5, size=MICRO, progress=False)
    make_benchmark(tmp_path / "b", seed=5, size=MICRO, progress=False, workers=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError):
        make_benchmark(tmp_path / "x", size="huge", progress=False)
    with pytest.raises(ValueError):
        make_benchmark(tmp_path / "x", size=MICRO, beta=1.5, progress=False)
    with pytest.raises(ValueError):
        make_benchmark(tmp_path / "x", seed=-1, size=MICRO, progress=False)
    with pytest.raises(ValueError):
        make_benchmark(tmp_path / "x", size=MICRO, workers=0, progress=False)
    with pytest.raises(ValueError):
        BenchmarkSize("bad", nuclei_per_line=1, mixture_nuclei=1, patch_size=64)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        make_benchmark(busy, size=MICRO, progress=False)
    assert (busy / "something.txt").read_text() == "keep me"
    with pytest.raises(InputError):
        load_benchmark(tmp_path / "nowhere", "train")


def test_load_benchmark_rejects_unknown_split(tiny):
    with pytest.raises(InputError):
        load_benchmark(tiny[0], "validation")


def test_a_failing_field_raises_its_own_error_and_leaves_no_patch_files(tmp_path, monkeypatch):
    from genuine_core.synth import benchmark

    calls = []

    def failing(task):
        calls.append(task.field_id)
        if len(calls) == 2:
            raise RuntimeError("renderer crashed")
        return original(task)

    original = benchmark._run_task
    monkeypatch.setattr(benchmark, "_run_task", failing)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        make_benchmark(tmp_path / "b", seed=0, size=MICRO, progress=False)
    assert list((tmp_path / "b").iterdir()) == []  # no fields, patches or tables of the run that failed
    with pytest.raises(InputError, match="not a synthetic benchmark"):
        load_benchmark(tmp_path / "b", "train")


@pytest.mark.slow
def test_workers_in_a_script_without_main_guard_get_a_clear_error(tmp_path):
    script = tmp_path / "make.py"
    script.write_text("from genuine_core.synth import BenchmarkSize, make_benchmark\n"
                      f"make_benchmark({str(tmp_path / 'b')!r}, size=BenchmarkSize('micro', nuclei_per_line=6, "
                      "mixture_nuclei=6, patch_size=64, field_shape=(192, 192), nuclei_per_field=3), "
                      "workers=2, progress=False)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr.splitlines()[-1]
    assert not (tmp_path / "b" / "nuclei.parquet").exists()
