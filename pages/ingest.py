"""Ingest: upload scans, map their channels with a preview, and run the store's ingest.

Uploaded files are header-checked and saved under the store's folder
(``<store>_files/uploads/``, ``store.ingest.save_upload``), then ingested one by one with
``store.ingest.ingest_upload`` (one transaction per scan; a bad file is reported and
skipped, the others are stored; a refused file leaves the store unchanged).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from genuine_core import plotting
from genuine_core.errors import GenuineError, InputError
from pages import common

common.require_entrypoint()

KINDS = ["case", "mixture", "cell-line"]
GENOTYPES = {"unknown": None, "MNA": "MNA", "non-MNA": "non-MNA"}
NONE = "none"


@st.cache_data(show_spinner=False, max_entries=16)
def channel_count(path: str, mtime: float) -> int | None:
    """Channels of a scan file from its header (None when it cannot be read at all)."""
    from genuine_core.io import channel_count as count

    try:
        return count(path)
    except GenuineError:
        return None


@st.cache_data(show_spinner=False, max_entries=16)
def preview(path: str, mtime: float, mapping: tuple) -> tuple[np.ndarray, list[tuple[str, np.ndarray]], str]:
    """Display RGB (NMI, MYCN, DAPI) and each channel of a scan read with ``mapping``; (rgb, channels, shape).

    Raises:
        InputError: the file or the mapping is not usable.
    """
    from genuine_core.io import ChannelMap, read_scan
    from genuine_core.pipeline import display_image

    scan = read_scan(path, ChannelMap(*mapping))
    img = scan.image
    step = max(1, int(np.ceil(max(img.shape[:2]) / 600)))  # preview at most ~600 px
    small = display_image(img[::step, ::step])
    chans = plotting.patch_channels(np.moveaxis(small.astype(np.float32) / 255.0, -1, 0))
    return small, chans, f"{img.shape[1]} x {img.shape[0]} px, source {scan.source_shape} {scan.source_dtype}"


@st.cache_resource(show_spinner="Loading models ...")
def ingest_models(db: str, models_rev: int):
    """The models an ingest runs (``store.ingest.resolve_models``), loaded once per model revision."""
    from store.ingest import resolve_models

    return resolve_models(common.store_at(db))


def planned_models(path: Path) -> list[str]:
    """Names of the models an ingest will run (registered models with a folder, else the shipped ones)."""
    from genuine_core.pipeline import model_folders

    if path.is_file():
        reg = common.models(str(path), common.rev("models"))
        names = reg.loc[reg["folder"].notna(), "name"].tolist() if len(reg) else []
        if len(reg):
            return names or ["(no registered model has a folder: nuclei are stored without predictions)"]
    return [f.name for f in model_folders()] or ["(no models: nuclei are stored without predictions)"]


def channel_mapping(n_channels: int | None, key: str) -> tuple:
    """Three selectboxes role -> source channel; returns ``(nmi, mycn, dapi)`` (None = absent)."""
    n = n_channels or 3
    options = list(range(n))
    # distinct defaults: 3+ channels RGB = (NMI, MYCN, DAPI); 2 = (none, 0, 1); 1 = DAPI only
    d_nmi, d_mycn, d_dapi = (0, 1, 2) if n >= 3 else (None, 0, 1) if n == 2 else (None, None, 0)
    colours = ("red", "green", "blue") if n in (3, 4) else ()  # RGB(A) files name their channels by colour

    def label(c) -> str:
        return c if c == NONE else f"{c} · {colours[c]}" if c < len(colours) else f"channel {c}"

    c1, c2, c3 = st.columns(3)
    nmi = c1.selectbox("NMI (reference) channel", [NONE] + options, index=0 if d_nmi is None else d_nmi + 1,
                       key=f"{key}_nmi", format_func=label)
    mycn = c2.selectbox("MYCN channel", [NONE] + options, index=0 if d_mycn is None else d_mycn + 1,
                        key=f"{key}_mycn", format_func=label)
    dapi = c3.selectbox("DAPI channel", options, index=d_dapi, key=f"{key}_dapi", format_func=label)
    return (None if nmi == NONE else int(nmi), None if mycn == NONE else int(mycn), int(dapi))


def run_ingest(store, files: list, mapping: tuple, sample: str, kind: str, expected: float | None,
               genotype: str | None) -> list:
    """Ingest uploaded ``files`` one by one (``store.ingest.ingest_upload``) with a progress bar; the outcomes."""
    from genuine_core.io import ChannelMap
    from store.ingest import ingest_upload, uploads_dir

    models = ingest_models(str(store.path), common.rev("models"))
    bar = st.progress(0.0, text=f"Ingesting {len(files)} scan(s) ...")
    outcomes = []
    for k, f in enumerate(files):
        bar.progress(k / len(files), text=f"Scan {k + 1} of {len(files)}: {f.name}")
        report = ingest_upload(store, uploads_dir(store.path), f.name, f.getvalue(), sample, kind=kind,
                               expected=expected, genotype=genotype, models=models,
                               channel_map=ChannelMap(*mapping))
        outcomes.extend(report.outcomes)
    bar.progress(1.0, text="Done")
    common.bump("data", "labels", "models")
    return outcomes


def show_outcomes(outcomes: list, sample: str) -> None:
    """One line per file (stored / already stored / failed) and a link to the case."""
    stored = [o for o in outcomes if o.status == "stored"]
    for o in outcomes:
        name = Path(o.path).name.split("_", 1)[-1]
        if o.status == "stored":
            st.success(f"**{name}**: {o.message}", icon=":material/check_circle:")
        elif o.status == "duplicate":
            st.info(f"**{name}**: {o.message}", icon=":material/content_copy:")
        else:
            st.error(f"**{name}** was not stored: {o.message}", icon=":material/error:")
    if stored or any(o.status == "duplicate" for o in outcomes):
        st.page_link("pages/cases.py", label=f"Open case {sample}", icon=":material/arrow_forward:",
                     query_params={"case": sample})


def main() -> None:
    common.page_header("Ingest", "Upload FISH scans (TIFF or PNG), map their channels, and score them with every "
                                 "registered model. Each scan is stored in one transaction.")
    path = common.db_path()
    if not path.is_file():
        common.empty_state()
        st.caption(f"The first ingest creates the store at `{path}`.")
    files = st.file_uploader("Scans", type=["tif", "tiff", "png"], accept_multiple_files=True, key="ingest_files",
                             help="RGB or multi-channel; one sample may hold several scans")
    last = st.session_state.get("ingest_result")
    if not files:
        if last:
            show_outcomes(*last)
        return
    from store.ingest import save_upload, uploads_dir

    folder = uploads_dir(path)
    first, first_name = None, ""
    for f in files:  # header check; the first readable upload is previewed
        try:
            saved = save_upload(folder, f.name, f.getvalue())
        except InputError as exc:
            st.warning(f"{exc} It will not be ingested.", icon=":material/warning:")
            continue
        if first is None:
            first, first_name = saved, f.name

    st.subheader("Channel mapping")
    n_ch = channel_count(str(first), first.stat().st_mtime) if first is not None else None
    st.caption(f"`{first_name or files[0].name}`: {n_ch if n_ch else '?'} channel(s). The same mapping is used "
               "for every uploaded file; code order is (NMI, MYCN, DAPI) = (red, green, blue).")
    mapping = channel_mapping(n_ch, "ingest_map")
    ok = first is not None
    try:
        if first is not None:
            rgb, chans, shape = preview(str(first), first.stat().st_mtime, mapping)
            cols = st.columns([2, 1, 1, 1])
            cols[0].image(rgb, caption=f"composite · {shape}", width="stretch")
            for col, (name, img) in zip(cols[1:], chans):
                col.image(img, caption=name, width="stretch")
    except GenuineError as exc:
        ok = False
        st.error(f"`{first_name}` cannot be read with this mapping: {exc}", icon=":material/error:")
    except ValueError as exc:  # ChannelMap validation (e.g. the same channel twice)
        ok = False
        st.error(f"Invalid channel mapping: {exc}", icon=":material/error:")

    st.subheader("Sample")
    st.caption("Scored by: " + ", ".join(f"`{m}`" for m in planned_models(path)) +
               " · segmentation: the default backend")
    with st.form("ingest_form", border=True):
        c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
        default = Path(files[0].name).stem if len(files) == 1 else ""
        sample = c1.text_input("Sample name", value=default, key="ingest_sample")
        kind = c2.selectbox("Kind", KINDS, key="ingest_kind")
        genotype = c3.selectbox("Genotype", list(GENOTYPES), key="ingest_genotype",
                                help="a known genotype gives every nucleus an automatic label")
        expected = c4.number_input("Expected MNA %", min_value=0.0, max_value=100.0, value=None, step=5.0,
                                   key="ingest_expected", help="known mixture fraction, if any")
        go = st.form_submit_button(f"Ingest {len(files)} scan(s)", type="primary", disabled=not ok,
                                   icon=":material/play_arrow:")
    if not go:
        if last:
            show_outcomes(*last)
        return
    if not sample.strip():
        st.error("Give the sample a name.", icon=":material/error:")
        return
    try:
        store = common.get_store(create=True)
        outcomes = run_ingest(store, files, mapping, sample.strip(), kind,
                              None if expected is None else float(expected) / 100.0, GENOTYPES[genotype])
    except GenuineError as exc:
        common.show_error(exc)
        return
    st.session_state["ingest_result"] = (outcomes, sample.strip())
    show_outcomes(outcomes, sample.strip())


main()
