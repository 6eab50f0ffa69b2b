"""Synthetic benchmark folders: the paper's experiment with exact ground truth.

``make_benchmark`` writes (see docs/ARCHITECTURE.md)::

    DIR/config.json, DIR/summary.json
    DIR/fields/<field_id>.tif, DIR/fields/<field_id>_masks.tif
    DIR/nuclei.parquet, DIR/boxes.parquet
    DIR/patches/<split>.npy        (N, 3, P, P) float16, rows = nuclei.patch_row

Training pool: fields of one cell line each (the auto-label is the line genotype, as
in the paper), split 80/10/10 by field within each line. Mixtures: eight samples at
0/25/50/75/90/95/99/100 % nuclei from MNA lines, imaged under a shifted acquisition;
the share among *extracted* nuclei equals ``round(target * n)`` exactly. Every field
has its own seed, so the output is byte-identical for a seed (and independent of the
number of worker processes).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genuine_core import atomic
from genuine_core.errors import InputError
from genuine_core.patches import DEFAULT_NORMALISATION, LEGACY_NORMALISATION, check_normalisation
from genuine_core.synth.acquisition import JITTER_LOG_HALF_WIDTH, NOMINAL, SHIFTED, Acquisition, jittered
from genuine_core.synth.fields import Scene, make_field
from genuine_core.synth.lines import DEFAULT_LINES, CellLine, lines_by_name

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "mixture")
MIXTURE_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
GENERATOR_VERSION = 2  # 2: diploid nuclei may lose both MYCN signals
#: strongest per-field imaging jitter of the training pool (1 = exposure x0.74-1.35, blur x0.67-1.49)
MAX_ACQUISITION_JITTER = 2.0
_STAGE_POOL, _STAGE_MIX, _STAGE_SPLIT, _STAGE_JITTER = 1, 2, 3, 4


@dataclass(frozen=True)
class BenchmarkSize:
    """Size preset of a benchmark.

    Attributes:
        name: preset name.
        nuclei_per_line: training-pool nuclei per cell line (train + val + test).
        mixture_nuclei: nuclei per mixture sample.
        patch_size: patch side P in pixels.
        field_shape: (H, W) of every field in pixels.
        nuclei_per_field: nuclei requested per field.
        scale: length scale of the scene (1.0 = the real image: nuclei ~55-70 px).
    """

    name: str
    nuclei_per_line: int
    mixture_nuclei: int
    patch_size: int
    field_shape: tuple[int, int] = (512, 512)
    nuclei_per_field: int = 25
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.nuclei_per_line < 3 or self.mixture_nuclei < 1 or self.nuclei_per_field < 1:
            raise ValueError("need >= 3 nuclei per line, >= 1 per mixture and per field")
        if self.patch_size < 16:
            raise ValueError(f"patch_size must be >= 16, got {self.patch_size}")
        if len(self.field_shape) != 2 or min(self.field_shape) < 64:
            raise ValueError(f"field_shape must be (H, W) >= 64, got {self.field_shape}")


SIZES: dict[str, BenchmarkSize] = {
    # unit tests: a few fields
    "tiny": BenchmarkSize("tiny", nuclei_per_line=18, mixture_nuclei=8, patch_size=96,
                          field_shape=(256, 256), nuclei_per_field=6),
    # trains on a 2-core CPU: 6,000-nucleus pool, 8 x 256 mixture nuclei, 96 px patches
    "cpu": BenchmarkSize("cpu", nuclei_per_line=1500, mixture_nuclei=256, patch_size=96),
    # the paper: 50,000-nucleus pool, 8 x 2,048 mixture nuclei, 192 px patches; nuclei at
    # twice the real image's pixel size so they fill a 192 px patch (our choice: the paper
    # gives no pixel size)
    "paper": BenchmarkSize("paper", nuclei_per_line=12_500, mixture_nuclei=2048, patch_size=192,
                           field_shape=(1024, 1024), nuclei_per_field=25, scale=2.0),
}


@dataclass
class BenchmarkSplit:
    """One split of a benchmark folder.

    Attributes:
        patches: (N, 3, P, P) float16, memory-mapped (read-only).
        nuclei: N rows aligned with ``patches`` (``patch_row`` = 0..N-1).
        boxes: ``patch_row, cls, x1, y1, x2, y2`` (+ ``field_id, nucleus_id``) in patch coords.
        normalisation: how the patches were normalised (``config.json`` ``patch_normalisation``;
            benchmarks written before it was recorded: ``percentile``).
    """

    patches: np.ndarray
    nuclei: pd.DataFrame
    boxes: pd.DataFrame
    normalisation: str = LEGACY_NORMALISATION


@dataclass
class _Task:
    """One field to generate (picklable; runs in a worker)."""

    field_id: str
    entropy: tuple[int, ...]
    lines_for_nuclei: list[str]
    split: str
    sample: str
    acquisition: Acquisition
    acq_name: str
    flip_rate: float
    shape: tuple[int, int]
    patch_size: int
    scene: Scene
    lines: tuple[CellLine, ...]
    out: str
    normalisation: str = DEFAULT_NORMALISATION


@dataclass
class _Result:
    task: _Task
    nuclei: pd.DataFrame
    boxes: pd.DataFrame
    patches: np.ndarray  # (n, 3, P, P) float16, rows follow nuclei rows with extracted == True
    n_border_skipped: int = 0


def _run_task(t: _Task) -> _Result:
    """Generate, write and cut one field (pure function of the task)."""
    from genuine_core import io, patches

    rng = np.random.default_rng(np.random.SeedSequence(list(t.entropy)))
    f = make_field(rng, t.lines_for_nuclei, len(t.lines_for_nuclei), t.shape, t.acquisition, t.flip_rate,
                   lines=t.lines, scene=t.scene)
    tif = os.path.join(t.out, "fields", f"{t.field_id}.tif")
    io.write_scan_tiff(tif, f.image)
    io.write_masks_tiff(os.path.join(t.out, "fields", f"{t.field_id}_masks.tif"), f.masks)
    quantised = io.read_scan(tif).image  # patches come from what a scanner would have written
    ps = patches.extract_patches(quantised, f.masks, size=t.patch_size, scan_id=t.field_id,
                                 normalisation=t.normalisation)
    nuc = f.nuclei
    tab = ps.table.set_index("nucleus_id")
    nuc.insert(0, "field_id", t.field_id)
    nuc.insert(1, "split", t.split)
    nuc.insert(2, "sample", t.sample)
    nuc["acquisition"] = t.acq_name
    nuc["extracted"] = nuc["nucleus_id"].isin(tab.index)
    # patch origin in field coords (may be negative: patches are zero-padded); 0 when not extracted
    nuc["patch_y0"] = nuc["nucleus_id"].map(tab["y0"]).fillna(0).astype(np.int64)
    nuc["patch_x0"] = nuc["nucleus_id"].map(tab["x0"]).fillna(0).astype(np.int64)
    # extract_patches orders rows by nucleus id, as are the nuclei rows
    order = ps.table["nucleus_id"].to_numpy()
    if not np.array_equal(order, nuc.loc[nuc["extracted"], "nucleus_id"].to_numpy()):
        raise RuntimeError("patch table and nuclei rows are not aligned")
    boxes = f.boxes
    boxes.insert(0, "field_id", t.field_id)
    return _Result(t, nuc, boxes, ps.patches.astype(np.float16), ps.n_border_skipped)


class _NpyAppender:
    """Append (n, ...) arrays to a growing .npy file (header written at the end)."""

    def __init__(self, path: Path, item_shape: tuple[int, ...], dtype=np.float16):
        self.path = path
        self.raw = path.with_suffix(".raw")
        self.item_shape = item_shape
        self.dtype = np.dtype(dtype)
        self.n = 0
        self.fh = open(self.raw, "wb")

    def append(self, arr: np.ndarray) -> int:
        """Append rows; returns the row index of the first one."""
        if arr.shape[1:] != self.item_shape:
            raise ValueError(f"expected rows of {self.item_shape}, got {arr.shape[1:]}")
        first = self.n
        self.fh.write(np.ascontiguousarray(arr, self.dtype).tobytes())
        self.n += arr.shape[0]
        return first

    def close(self) -> None:
        self.fh.close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.n,) + self.item_shape}
        with open(self.path, "wb") as out, open(self.raw, "rb") as src:
            np.lib.format.write_array_header_2_0(out, header)
            shutil.copyfileobj(src, out, 16 << 20)
        self.raw.unlink()

    def discard(self) -> None:
        """Close and delete the partial data (the run failed; no .npy is written)."""
        self.fh.close()
        self.raw.unlink(missing_ok=True)


class _FieldRunner:
    """Generates fields in task order, in ``workers`` spawned processes when > 1, and appends each
    field's patches to its split's ``.npy`` and its rows to :attr:`nuclei` and :attr:`boxes`."""

    def __init__(self, out: Path, patch_size: int, workers: int, total: int, progress: bool | None) -> None:
        from tqdm import tqdm

        self.appenders = {s: _NpyAppender(out / "patches" / f"{s}.npy", (3, patch_size, patch_size)) for s in SPLITS}
        self.nuclei: list[pd.DataFrame] = []
        self.boxes: list[pd.DataFrame] = []
        self.n_skipped = 0
        self.bar = tqdm(total=total, unit="nuc", desc="synth benchmark",
                        disable=(not progress) if progress is not None else None)
        # spawn, not fork: the caller may hold threads (torch, BLAS) that a forked child would inherit locked
        self.executor = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                         if workers > 1 else None)

    def run(self, tasks: list[_Task]) -> Counter:
        """Run tasks in order; returns extracted nuclei per (sample, line)."""
        got: Counter = Counter()
        results = self.executor.map(_run_task, tasks) if self.executor else map(_run_task, tasks)
        for res in results:
            nuc = res.nuclei
            ext = nuc["extracted"].to_numpy()
            first = self.appenders[res.task.split].append(res.patches)
            rows = np.full(len(nuc), -1, np.int64)
            rows[ext] = first + np.arange(int(ext.sum()))
            nuc["patch_row"] = rows
            self.nuclei.append(nuc)
            self.boxes.append(res.boxes)
            self.n_skipped += res.n_border_skipped
            for name in nuc.loc[ext, "cell_line"]:
                got[(res.task.sample, name)] += 1
            self.bar.update(len(res.task.lines_for_nuclei))
        return got

    def close(self, finished: bool) -> None:
        """Stop the workers and write the patch files; a failed run leaves none that looks complete."""
        self.bar.close()
        if self.executor:
            self.executor.shutdown()
        for a in self.appenders.values():
            a.close() if finished else a.discard()


def _split_fields(n_fields: int, rng: np.random.Generator) -> list[str]:
    """80/10/10 split of one line's fields (val and test get >= 1 field when there are >= 3)."""
    if n_fields < 3:
        return ["train"] * n_fields
    n_val = max(1, int(math.floor(0.1 * n_fields + 0.5)))
    n_test = max(1, int(math.floor(0.1 * n_fields + 0.5)))
    labels = ["val"] * n_val + ["test"] * n_test + ["train"] * (n_fields - n_val - n_test)
    return [labels[i] for i in rng.permutation(n_fields)]


def _chunks(items: list[str], k: int) -> list[list[str]]:
    return [items[i:i + k] for i in range(0, len(items), k)]


def mixture_counts(fraction: float, n: int) -> int:
    """Nuclei from MNA lines in a mixture of ``n``: ``round(fraction * n)`` (half up)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"mixture fraction must be in [0, 1], got {fraction}")
    return int(math.floor(fraction * n + 0.5))


def _benchmark_size(size: str | BenchmarkSize) -> BenchmarkSize:
    """A size preset by name (:data:`SIZES`), or the given one."""
    if not isinstance(size, str):
        return size
    if size not in SIZES:
        raise InputError(f"unknown benchmark size {size!r}; choose from {sorted(SIZES)}")
    return SIZES[size]


def _mixture_plan(lines: tuple[CellLine, ...], fractions: tuple[float, ...],
                  n: int) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    """Nuclei wanted per mixture sample and cell line, and each sample's MNA-line share.

    Sample ``mix_050`` holds ``round(0.5 * n)`` nuclei of the MNA lines and the rest of the
    non-MNA lines, each group spread over its lines in turn.

    Raises:
        ValueError: a fraction outside [0, 1], or mixtures without an MNA and a non-MNA line.
    """
    mna_lines = [l.name for l in lines if l.mna]
    non_lines = [l.name for l in lines if not l.mna]
    if fractions and (not mna_lines or not non_lines):
        raise ValueError("mixtures need at least one MNA and one non-MNA line")
    want: dict[str, dict[str, int]] = {}
    targets: dict[str, float] = {}
    for fr in fractions:
        n_mna = mixture_counts(fr, n)
        need = Counter()
        for i in range(n_mna):
            need[mna_lines[i % len(mna_lines)]] += 1
        for i in range(n - n_mna):
            need[non_lines[i % len(non_lines)]] += 1
        want[f"mix_{int(round(fr * 100)):03d}"] = dict(need)
        targets[f"mix_{int(round(fr * 100)):03d}"] = float(fr)
    return want, targets


def _remove_benchmark_files(out: Path) -> None:
    """Delete what a benchmark writes into ``out`` (other files there stay)."""
    for name in ("fields", "patches"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("nuclei.parquet", "boxes.parquet", "config.json", "summary.json"):
        (out / name).unlink(missing_ok=True)


def _clear_output(out: Path, overwrite: bool) -> None:
    """Make ``out/fields`` and ``out/patches``; an earlier benchmark in ``out`` goes only with ``overwrite``.

    Raises:
        InputError: ``out`` is not empty and ``overwrite`` is off.
    """
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out} is not empty; pass --overwrite to replace the benchmark in it")
        _remove_benchmark_files(out)
    (out / "fields").mkdir(parents=True, exist_ok=True)
    (out / "patches").mkdir(parents=True, exist_ok=True)


def make_benchmark(
    out,
    seed: int = 0,
    size: str | BenchmarkSize = "cpu",
    beta: float = 0.0,
    *,
    workers: int = 1,
    lines: tuple[CellLine, ...] = DEFAULT_LINES,
    acquisition: Acquisition = NOMINAL,
    acquisition_jitter: float = 0.0,
    mixture_acquisition: Acquisition = SHIFTED,
    mixture_fractions: tuple[float, ...] = MIXTURE_FRACTIONS,
    scene: Scene | None = None,
    normalisation: str = DEFAULT_NORMALISATION,
    overwrite: bool = False,
    progress: bool | None = None,
    command: str | None = None,
) -> dict:
    """Generate a benchmark folder.

    Args:
        out: output directory (created; must be empty or absent unless ``overwrite``).
        seed: master seed; same seed -> byte-identical arrays and tables.
        size: ``"tiny"``, ``"cpu"``, ``"paper"`` or a :class:`BenchmarkSize`.
        beta: auto-label flip rate for the training pool (paper 2.2.1); mixtures are not flipped.
        workers: processes generating fields (results do not depend on it).
        lines: cell lines (the default four: two MNA, two non-MNA).
        acquisition: imaging conditions of the training pool.
        acquisition_jitter: 0 = every pool field imaged with ``acquisition``; > 0 = each pool
            field draws its own conditions around it (``synth.acquisition.jittered`` at this
            strength, at most 2), like scans from many scanner days. Scenes do not change.
        mixture_acquisition: imaging conditions of the mixture samples (shifted by default).
        mixture_fractions: MNA-line shares of the mixture samples.
        scene: scene settings; default ``Scene(scale=size.scale)``.
        normalisation: how patches are normalised (one of ``genuine_core.patches.NORMALISATIONS``).
        overwrite: replace an existing benchmark in ``out``.
        progress: show a progress bar (None = when on a terminal).

    Returns:
        The summary dict (also written to ``summary.json``).

    Raises:
        ValueError / InputError: bad arguments or a non-empty output directory.
    """
    size = _benchmark_size(size)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not 0.0 <= acquisition_jitter <= MAX_ACQUISITION_JITTER:
        raise ValueError(f"acquisition_jitter must be in [0, {MAX_ACQUISITION_JITTER:g}], got {acquisition_jitter}")
    check_normalisation(normalisation)  # before anything is written
    by_name = lines_by_name(tuple(lines))
    mix_want, mix_targets = _mixture_plan(lines, mixture_fractions, size.mixture_nuclei)
    scene = scene or Scene(scale=size.scale)
    out = Path(out)
    _clear_output(out, overwrite)
    try:  # a full disk or Ctrl-C half way: no half benchmark left (one without nuclei.parquet, refused later)
        common = dict(shape=tuple(size.field_shape), patch_size=size.patch_size, scene=scene, lines=tuple(lines),
                      out=str(out), normalisation=normalisation)

        def pool_tasks(round_: int, wanted: dict[str, int], splits: dict[str, list[str]] | None) -> list[_Task]:
            tasks = []
            for li, name in enumerate(by_name):
                per = _chunks([name] * wanted.get(name, 0), size.nuclei_per_field)
                for k, chunk in enumerate(per):
                    split = splits[name][k] if splits else "train"
                    acq, acq_name = acquisition, "nominal"
                    if acquisition_jitter:
                        rng = np.random.default_rng(np.random.SeedSequence([seed, _STAGE_JITTER, round_, li, k]))
                        acq, acq_name = jittered(acquisition, rng, acquisition_jitter), "jittered"
                    tasks.append(_Task(f"{name}_r{round_}_{k:04d}", (seed, _STAGE_POOL, round_, li, k), chunk, split,
                                       name, acq, acq_name, beta, **common))
            return tasks

        def mix_tasks(round_: int, wanted: dict[str, dict[str, int]]) -> list[_Task]:
            tasks = []
            for si, (sample, need) in enumerate(wanted.items()):
                names = [n for n, c in need.items() for _ in range(c)]
                rng = np.random.default_rng(np.random.SeedSequence([seed, _STAGE_MIX, round_, si, 999]))
                names = [names[i] for i in rng.permutation(len(names))]
                for k, chunk in enumerate(_chunks(names, size.nuclei_per_field)):
                    tasks.append(_Task(f"{sample}_r{round_}_{k:04d}", (seed, _STAGE_MIX, round_, si, k), chunk, "mixture",
                                       sample, mixture_acquisition, "shifted", 0.0, **common))
            return tasks

        # planned counts
        pool_want = {name: size.nuclei_per_line for name in by_name}
        n_fields = {name: math.ceil(size.nuclei_per_line / size.nuclei_per_field) for name in by_name}
        split_rng = np.random.default_rng(np.random.SeedSequence([seed, _STAGE_SPLIT]))
        splits = {name: _split_fields(n_fields[name], split_rng) for name in by_name}

        total = size.nuclei_per_line * len(by_name) + size.mixture_nuclei * len(mix_want)
        runner = _FieldRunner(out, size.patch_size, workers, total, progress)
        finished = False
        try:
            # training pool, then top-up rounds (into train) for nuclei that did not fit or were not extracted
            got = runner.run(pool_tasks(0, pool_want, splits))
            for round_ in range(1, 6):
                short = {n: pool_want[n] - got[(n, n)] for n in by_name if got[(n, n)] < pool_want[n]}
                if not short:
                    break
                runner.bar.total += sum(short.values())
                got.update(runner.run(pool_tasks(round_, short, None)))
            # mixtures, topped up until each (sample, line) count is exact
            got_mix = runner.run(mix_tasks(0, mix_want))
            for round_ in range(1, 6):
                short = {s: {n: c - got_mix[(s, n)] for n, c in need.items() if got_mix[(s, n)] < c}
                         for s, need in mix_want.items()}
                short = {s: d for s, d in short.items() if d}
                if not short:
                    break
                runner.bar.total += sum(sum(d.values()) for d in short.values())
                got_mix.update(runner.run(mix_tasks(round_, short)))
            finished = True
        except BrokenProcessPool as exc:
            raise RuntimeError(
                f"a worker process of make_benchmark(workers={workers}) died: a script that calls it with "
                "workers > 1 must do so under `if __name__ == \"__main__\":` (workers are spawned and re-import "
                "the script); otherwise the machine may be out of memory. workers=1 uses no worker processes") from exc
        finally:
            runner.close(finished)

        nuclei = pd.concat(runner.nuclei, ignore_index=True)
        boxes = pd.concat(runner.boxes, ignore_index=True)
        # mixtures: keep exactly the planned number per (sample, line) among extracted nuclei
        extra = _drop_surplus_mixture(nuclei, mix_want)
        if extra:
            logger.info("mixtures: %d surplus extracted nuclei left out of the samples", extra)
        nuclei.to_parquet(out / "nuclei.parquet", index=False)
        boxes.to_parquet(out / "boxes.parquet", index=False)

        config = {
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "size": asdict(size),
            "beta": float(beta),
            "patch_size": size.patch_size,
            "patch_normalisation": normalisation,
            "lines": [{"name": l.name, "mna": l.mna, "natural_noise": l.natural_noise} for l in lines],
            "acquisitions": {"nominal": acquisition.to_dict(), "shifted": mixture_acquisition.to_dict()},
            "acquisition_jitter": {"strength": float(acquisition_jitter), "log_half_width": JITTER_LOG_HALF_WIDTH},
            "scene_scale": scene.scale,
            "mixture_fractions": list(mixture_fractions),
            "splits": "train/val/test 80/10/10 by field within each line; mixtures on shifted acquisition",
            "flip_applies_to": ["train", "val", "test"],
            **({"command": command} if command else {}),
        }
        summary = summarise(nuclei, mix_targets)
        summary["n_border_skipped"] = int(runner.n_skipped)
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        return summary
    except OSError as exc:  # a full disk: the line names the benchmark folder
        _remove_benchmark_files(out)
        named = atomic.naming(exc, out)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        _remove_benchmark_files(out)
        raise


def _drop_surplus_mixture(nuclei: pd.DataFrame, want: dict[str, dict[str, int]]) -> int:
    """Mark surplus extracted mixture nuclei as not part of the sample (never happens unless
    a top-up field over-delivers). Patches stay in the file; their nuclei rows get ``sample`` ''."""
    n = 0
    mix = nuclei["split"].eq("mixture") & nuclei["patch_row"].ge(0)
    for (sample, line), grp in nuclei[mix].groupby(["sample", "cell_line"]):
        keep = want.get(sample, {}).get(line, 0)
        if len(grp) > keep:
            nuclei.loc[grp.index[keep:], "sample"] = ""
            n += len(grp) - keep
    return n


def summarise(nuclei: pd.DataFrame, mix_targets: dict[str, float] | None = None) -> dict:
    """Summary of a benchmark's nuclei table (what summary.json holds).

    Args:
        nuclei: the benchmark's nuclei table.
        mix_targets: target MNA-line share per mixture sample name.

    Returns:
        dict with per-split and per-line counts, realised label-noise rates, and per mixture
        sample the target and realised MNA-line share among extracted nuclei and the true MNA share.
    """
    ext = nuclei[nuclei["patch_row"] >= 0]
    pool = ext[ext["split"] != "mixture"]
    out: dict = {"n_nuclei": int(len(nuclei)), "n_extracted": int(len(ext))}
    out["per_split"] = {s: int((ext["split"] == s).sum()) for s in SPLITS}
    out["per_line"] = {
        name: {
            "n": int(len(g)),
            **{s: int((g["split"] == s).sum()) for s in ("train", "val", "test")},
            "label_noise_rate": float(g["label_noisy"].mean()),
            "natural_noise_rate": float(g["natural"].mean()),
            "flip_rate": float(g["flipped"].mean()),
            "true_mna_rate": float(g["true_label"].mean()),
            "merged_signals_per_nucleus": float(g["n_merged"].mean()),
        }
        for name, g in pool.groupby("cell_line")
    }
    out["label_noise_rate"] = float(pool["label_noisy"].mean()) if len(pool) else 0.0
    out["natural_noise_rate"] = float(pool["natural"].mean()) if len(pool) else 0.0
    out["flip_rate"] = float(pool["flipped"].mean()) if len(pool) else 0.0
    out["label_noise_rate_per_split"] = {
        s: float(pool.loc[pool["split"] == s, "label_noisy"].mean()) for s in ("train", "val", "test")
        if (pool["split"] == s).any()
    }
    mixtures = {}
    mix = ext[(ext["split"] == "mixture") & (ext["sample"] != "")]
    for sample, g in mix.groupby("sample"):
        n = len(g)
        n_mna = int(g["line_label"].sum())
        target = (mix_targets or {}).get(sample)
        mixtures[sample] = {
            "target_fraction": target,
            "n": n,
            "n_mna_line": n_mna,
            "realised_fraction": n_mna / n,
            "within_one_nucleus": None if target is None else bool(abs(n_mna - target * n) <= 1.0),
            "true_mna_fraction": float(g["true_label"].mean()),
        }
    out["mixtures"] = mixtures
    return out


def load_benchmark(path, split: str) -> BenchmarkSplit:
    """Open one split of a benchmark folder.

    Args:
        path: benchmark directory written by :func:`make_benchmark`.
        split: ``train``, ``val``, ``test`` or ``mixture``.

    Returns:
        BenchmarkSplit with memory-mapped patches, aligned nuclei rows and patch-coordinate boxes.

    Raises:
        InputError: unknown split, missing or inconsistent files.
    """
    from genuine_core.patches import boxes_to_patch

    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {SPLITS}")
    root = Path(path)
    files = [root / "nuclei.parquet", root / "boxes.parquet", root / "patches" / f"{split}.npy"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{root} is not a synthetic benchmark (missing {', '.join(missing)})")
    nuclei = pd.read_parquet(files[0])
    nuclei = nuclei[(nuclei["split"] == split) & (nuclei["patch_row"] >= 0)]
    nuclei = nuclei.sort_values("patch_row", kind="stable").reset_index(drop=True)
    patches = np.load(files[2], mmap_mode="r")
    if len(patches) != len(nuclei) or not np.array_equal(nuclei["patch_row"].to_numpy(), np.arange(len(nuclei))):
        raise InputError(f"{root}: {split} patches ({len(patches)}) and nuclei rows ({len(nuclei)}) do not match")
    boxes = pd.read_parquet(files[1])
    table = nuclei[["field_id", "nucleus_id", "patch_y0", "patch_x0"]].rename(
        columns={"field_id": "scan_id", "patch_y0": "y0", "patch_x0": "x0"})
    pboxes = boxes_to_patch(boxes.rename(columns={"field_id": "scan_id"}), table, size=patches.shape[-1])
    pboxes = pboxes.rename(columns={"scan_id": "field_id"})
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{root}/config.json is missing or not valid JSON ({exc})") from exc
    normalisation = str(config.get("patch_normalisation", LEGACY_NORMALISATION))
    try:
        check_normalisation(normalisation)
    except ValueError as exc:
        raise InputError(f"{root}/config.json: {exc}") from None
    return BenchmarkSplit(patches=patches, nuclei=nuclei, boxes=pboxes, normalisation=normalisation)
