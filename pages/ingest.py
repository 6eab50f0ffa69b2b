"""Ingest: upload scans, map their channels with a preview (one mapping for all, or one per scan), and run the
store's ingest.

Uploaded files are header-checked and previewed from memory: nothing is written before the
Ingest button (so a new store's folder holds no orphan uploads). A file that fails the check is
named with the reason and left out. The others are ingested one by one with
``store.ingest.ingest_upload`` (bytes kept under ``<store>_files/uploads/`` only for stored
scans; one transaction per scan, recorded under the file's original name; a file that fails is
reported and skipped, the others are stored). After a
scan is stored the whole app reruns on bumped revisions, so the sidebar and every page
see it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import streamlit as st

from genuine_core import plotting
from genuine_core.errors import GenuineError, InputError
from pages import common
from store.location import store_exists

common.require_entrypoint()

KINDS = ["case", "mixture", "cell-line"]
GENOTYPES = {"unknown": None, "MNA": "MNA", "non-MNA": "non-MNA"}
NONE = "none"
RESULT_KEY = "ingest_result"
REMOVED_KEY = "ingest_removed"
REMOVE_ERROR_KEY = "ingest_remove_error"
NAME_KEY = "ingest_sample"
NAME_DEFAULT_KEY = "_ingest_sample_default"  # (upload set, default name) last put into the name box


def plural(n: int, word: str) -> str:
    """'1 scan', '2 scans'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def reason(message: str, *names: str) -> str:
    """An ingest message as a sentence, without the file name or path it starts with (shown beside it)."""
    from store.ingest import without_file_name

    message = without_file_name(message, *names)
    # no full stop after a number: it may end a command to copy (e.g. 'genuine store remove-scan 4')
    return message if message[-1:] in ".!?" or message[-1:].isdigit() else message + "."


@st.cache_data(show_spinner=False, max_entries=16)
def channel_count(file_id: str, _data: bytes) -> int | None:
    """Channels of an upload (``file_id``, its bytes ``_data``) from its header (None when unreadable)."""
    from genuine_core.io import channel_count as count

    try:
        return count(_data)
    except GenuineError:
        return None


@st.cache_data(show_spinner=False, max_entries=16)
def preview(file_id: str, _data: bytes, name: str, mapping: tuple) -> tuple[bytes, list[tuple[str, bytes]], str]:
    """Display RGB (NMI, MYCN, DAPI) and each channel of an upload (``file_id``, its bytes ``_data``) read with
    ``mapping``, as PNG bytes (Streamlit would send arrays as JPEG, which blurs small coloured signals);
    (rgb, channels, shape).

    Raises:
        InputError: the file or the mapping is not usable.
    """
    from genuine_core.io import ChannelMap, decode_scan
    from genuine_core.pipeline import display_image, encode_image

    scan = decode_scan(_data, Path(name).name, ChannelMap(*mapping))
    img = scan.image
    step = max(1, int(np.ceil(max(img.shape[:2]) / 600)))  # preview at most ~600 px
    small = display_image(img[::step, ::step])
    chans = plotting.patch_channels(np.moveaxis(small.astype(np.float32) / 255.0, -1, 0))
    pngs = [(name, encode_image(img)) for name, img in chans]
    return encode_image(small), pngs, f"{img.shape[1]} x {img.shape[0]} px, source {scan.source_shape} {scan.source_dtype}"


@st.cache_resource(show_spinner="Loading models ...")
def ingest_models(db: str, models_rev: int):
    """The models an ingest runs (``store.ingest.resolve_models``), loaded once per model revision."""
    from store.ingest import resolve_models

    from store.registry import as_stored

    store = common.store_at(db)
    return as_stored(store, resolve_models(store))


def planned_models(path: Path) -> list[str]:
    """Names of the models an ingest will run (active registered models with a folder, else the shipped ones)."""
    from genuine_core.pipeline import model_folders

    if store_exists(path):
        reg = common.models(str(path), common.rev("models"))
        names = reg.loc[reg["folder"].notna() & reg["retired_at"].isna(), "name"].tolist() if len(reg) else []
        if len(reg):  # retired models score no new scan
            return names or ["(no active registered model has a folder: nuclei are stored without predictions)"]
    return [f.name for f in model_folders()] or ["(no models: nuclei are stored without predictions)"]


def default_mapping(n_channels: int | None) -> tuple:
    """The preselected ``(nmi, mycn, dapi)`` for a scan of ``n_channels``: 3+ channels RGB = (NMI, MYCN, DAPI);
    2 = (none, 0, 1); 1 = DAPI only."""
    n = n_channels or 3
    return (0, 1, 2) if n >= 3 else (None, 0, 1) if n == 2 else (None, None, 0)


def fits(mapping: tuple, n_channels: int | None) -> bool:
    """Whether every channel ``mapping`` names exists in a scan of ``n_channels``."""
    return all(c is None or c < (n_channels or 3) for c in mapping)


def channel_mapping(n_channels: int | None, key: str, preset: tuple | None = None) -> tuple:
    """Three selectboxes role -> source channel; returns ``(nmi, mycn, dapi)`` (None = absent).

    The boxes show ``preset`` (when its channels exist, else :func:`default_mapping`) until the user
    changes one of them: a scan's row follows the batch mapping until changed."""
    n = n_channels or 3
    options = list(range(n))
    start = preset if preset is not None and fits(preset, n) else default_mapping(n)
    colours = ("red", "green", "blue") if n in (3, 4) else ()  # RGB(A) files name their channels by colour

    def label(c) -> str:
        return c if c == NONE else f"{c} · {colours[c]}" if c < len(colours) else f"channel {c}"

    roles = ("nmi", "mycn", "dapi")
    choices = {r: options if r == "dapi" else [NONE] + options for r in roles}
    start = tuple(NONE if v is None else v for v in start)
    now = tuple(st.session_state.get(f"{key}_{r}") for r in roles)
    chosen_by_user = all(v in choices[r] for r, v in zip(roles, now)) and now != st.session_state.get(f"_{key}_preset")
    if not chosen_by_user:  # new, a channel this scan lacks, or as preset: (still) the preset
        for r, v in zip(roles, start):
            st.session_state[f"{key}_{r}"] = v
    st.session_state[f"_{key}_preset"] = start
    chosen = []
    for col, role, title in zip(st.columns(3), roles, ("NMI (reference) channel", "MYCN channel", "DAPI channel")):
        picked = col.selectbox(title, choices[role], key=f"{key}_{role}", format_func=label)
        chosen.append(None if picked == NONE else int(picked))
    return tuple(chosen)


def run_ingest(store, files: list, maps: list[tuple], sample: str, kind: str, expected: float | None,
               genotype: str | None) -> list[tuple[str, str, str, str | None]]:
    """Ingest uploaded ``files`` one by one (``store.ingest.ingest_upload``), each read with its channel
    mapping in ``maps``, with a progress bar.

    Returns:
        ``(file name, status, message, sample holding the scan or None)`` per file: a stored
        scan is in ``sample``; an already stored one in the sample that holds it.
    """
    from genuine_core.io import ChannelMap
    from store.ingest import ingest_upload, uploads_dir

    models = ingest_models(str(store.path), common.rev("models"))
    bar = st.progress(0.0, text=f"Ingesting {plural(len(files), 'scan')} ...")
    rows = []
    for k, (f, mapping) in enumerate(zip(files, maps, strict=True)):
        bar.progress(k / len(files), text=f"Scan {k + 1} of {len(files)}: {f.name}")
        data = f.getvalue()
        try:
            report = ingest_upload(store, uploads_dir(store.path), f.name, data, sample, kind=kind,
                                   expected=expected, genotype=genotype, models=models,
                                   channel_map=ChannelMap(*mapping), by=common.reviewer() or None)
        except GenuineError as exc:  # e.g. the sample exists with other attributes, the store is busy
            rows.append((f.name, "failed", reason(str(exc)), None))
            continue
        if any(o.status == "stored" for o in report.outcomes):
            # at once, before the next Streamlit call: leaving the page stops this script there, and
            # every session must still see the new scan, its nuclei' labels and the models it registered
            common.bump("data", "labels", "models")
        for o in report.outcomes:
            holder = sample if o.status == "stored" else o.holder
            rows.append((f.name, o.status, reason(o.message, o.path, Path(o.path).name, f.name), holder))
    bar.progress(1.0, text="Done")
    return rows


def show_outcomes(rows: list[tuple[str, str, str, str | None]]) -> None:
    """One line per file (stored / already stored / failed) and a link to each sample holding its scans."""
    for name, status, message, _ in rows:
        if status == "stored":
            st.success(f"**{name}**: {message}", icon=":material/check_circle:")
        elif status == "duplicate":  # the CLI's remove-scan cannot open the store the app holds: point here
            message = re.sub(r"remove the stored scan first with: genuine store remove-scan (\d+)\.?$",
                             r"remove scan \1 under **Stored scans** below first, then upload it again.", message)
            st.info(f"**{name}**: {message}", icon=":material/content_copy:")
        else:
            st.error(f"**{name}** was not stored: {message}", icon=":material/error:")
    for sample in dict.fromkeys(holder for *_, holder in rows if holder is not None):
        st.page_link("pages/cases.py", label=f"Open case {sample}", icon=":material/arrow_forward:",
                     query_params={"case": sample})


def default_sample_name(names: list[str]) -> None:
    """Put the default sample name of the valid uploads ``names`` (the stem of a single scan, else
    none) into the name box when the upload set changed, unless the user typed a name there.

    The name box is not in a form: a form would hold a typed name back until it is submitted,
    and a change of uploads would overwrite it."""
    key = tuple(names)
    last_key, last_default = st.session_state.get(NAME_DEFAULT_KEY, ((), ""))
    if key == last_key and NAME_KEY in st.session_state:
        return
    default = Path(names[0]).stem if len(names) == 1 else ""
    current = st.session_state.get(NAME_KEY)
    if current is None or current.strip() in ("", last_default):  # not typed by the user
        st.session_state[NAME_KEY] = default
    st.session_state[NAME_DEFAULT_KEY] = (key, default)


def remove_clicked(scan_id: int, who: str) -> None:
    """Remove button callback: remove the scan; the confirmation is used up either way."""
    from store import signout
    from store.scans import remove_scan

    st.session_state.pop(f"ingest_remove_sure_{scan_id}", None)
    try:
        store = common.get_store()
        gone = remove_scan(store, scan_id, by=who)
        stale = signout.changed_note(store, gone.sample)
    except GenuineError as exc:
        st.session_state[REMOVE_ERROR_KEY] = str(exc)
        return
    st.session_state[REMOVED_KEY] = (f"Scan {gone.scan_id} ({gone.file_name}, sample '{gone.sample}') removed by "
                                      f"{who}: {gone.rows.get('nuclei', 0)} nuclei and their predictions."
                                      + (f" {stale[0].upper()}{stale[1:]}." if stale else ""))
    st.session_state.pop(RESULT_KEY, None)  # an earlier ingest's outcome may name the removed scan
    common.bump("data", "labels", "models")  # models: their prediction and scan counts


def exclude_clicked(scan_id: int, who: str) -> None:
    """Exclude button callback: an 'exclude' label event for each nucleus of the scan not excluded yet."""
    from store import signout
    from store.labels import exclude_scan

    st.session_state.pop(f"ingest_exclude_sure_{scan_id}", None)
    try:
        store = common.get_store()
        n = exclude_scan(store, scan_id, who, note="on the Ingest page")
        stale = signout.changed_note(store, signout.scan_sample(store, scan_id)) if n else None
    except GenuineError as exc:
        st.session_state[REMOVE_ERROR_KEY] = str(exc)
        return
    st.session_state[REMOVED_KEY] = (f"Scan {scan_id}: {n} nuclei excluded by {who}; they are left out of every "
                                      "call (**Undo exclusion** here takes it back in one step)." if n else
                                      f"Scan {scan_id}: every nucleus was already excluded.")
    if stale:  # the sign-out in force rests on numbers this exclusion changed
        st.session_state[REMOVED_KEY] += f" {stale[0].upper()}{stale[1:]}."
    common.bump("labels")


def unexclude_clicked(scan_id: int, who: str) -> None:
    """Undo exclusion button callback: undo the scan's latest exclusion in one step."""
    from store import signout
    from store.labels import unexclude_scan

    st.session_state.pop(f"ingest_unexclude_sure_{scan_id}", None)
    try:
        store = common.get_store()
        n = unexclude_scan(store, scan_id, who)
        stale = signout.changed_note(store, signout.scan_sample(store, scan_id))
    except GenuineError as exc:
        st.session_state[REMOVE_ERROR_KEY] = str(exc)
        return
    st.session_state[REMOVED_KEY] = (f"Scan {scan_id}: exclusion undone by {who}; its {n} nuclei are back to "
                                      "their earlier decisions."
                                      + (f" {stale[0].upper()}{stale[1:]}." if stale else ""))
    common.bump("labels")


def unexclude_row(store, scan_id: int, who: str) -> None:
    """An Undo exclusion action, with its confirmation, when the scan's latest exclusion still stands."""
    from store.labels import scan_exclusion_standing

    standing = scan_exclusion_standing(store, scan_id)
    if not standing:
        return
    _, c2, c3 = st.columns([3, 2, 1.2], vertical_alignment="bottom")
    sure = c2.checkbox("Yes, undo the exclusion", key=f"ingest_unexclude_sure_{scan_id}", disabled=not who)
    c3.button("Undo exclusion", key="ingest_unexclude", disabled=not (who and sure), icon=":material/undo:",
              on_click=unexclude_clicked, args=(int(scan_id), who))
    nuclei = "1 nucleus" if standing == 1 else f"{standing} nuclei"
    st.caption(f"Undo exclusion returns the {nuclei} its latest exclusion still holds to their "
               "earlier decisions (an undo event each, in your name); nuclei decided again since stay as they are.")


def remove_scan_section() -> None:
    """Stored scans with a Remove action (a scan read with the wrong channel map is removed, then uploaded again)
    or, for a scan whose nuclei carry label events, an Exclude action."""
    from store.scans import scan_overview

    path = common.db_path()
    if not store_exists(path):
        return
    scans = scan_overview(common.store_at(str(path)))
    with st.expander("Stored scans · remove or exclude one", icon=":material/delete:"):  # a fixed label keeps it open
        if scans.empty:
            st.caption("No scans stored yet.")
            return
        st.caption(f"{len(scans)} scans in the store.")
        st.caption("A scan ingested with the wrong channel mapping is a duplicate when uploaded again: remove it "
                   "here first. Removing deletes the scan, its nuclei and everything derived from them in one "
                   "transaction; a scan with label events on its nuclei (**ever labelled**, undone decisions too) "
                   "is kept (the audit trail is never deleted). **Reviewed**: nuclei with a current decision. "
                   "**Excluded**: of the reviewed nuclei, those excluded; all of them = the scan counts in no call.")
        names = {"id": "scan", "file_name": "file", "channel_map": "channel map", "backend": "segmentation",
                 "n_nuclei": "nuclei", "n_models": "models", "curated_nuclei": "reviewed",
                 "excluded_nuclei": "excluded", "labelled_nuclei": "ever labelled",
                 "ingested_at": "ingested (UTC)"}
        st.dataframe(scans.drop(columns="sha256").rename(columns=names), hide_index=True, key="ingest_scans",
                     height=min(38 + 35 * len(scans), 320))
        labels = {int(r.id): f"scan {r.id} · {r.file_name} · {r.sample}" for r in scans.itertuples(index=False)}
        c1, c2, c3 = st.columns([3, 2, 1.2], vertical_alignment="bottom")
        scan_id = c1.selectbox("Scan", list(labels), format_func=labels.get, key="ingest_remove_id")
        who = common.reviewer()
        chosen = scans.set_index("id").loc[scan_id]
        labelled = int(chosen["labelled_nuclei"])
        kept = (f"{labelled} of its nuclei carry curators' label events, so it cannot be removed (the audit trail "
                "is never deleted)")
        if labelled and int(chosen["excluded_nuclei"]) == int(chosen["n_nuclei"]):
            st.caption(kept + "; every nucleus of it is excluded already, so it counts in no call.")
            unexclude_row(common.store_at(str(path)), int(scan_id), who)
        elif labelled:  # remove_scan refuses it: offer to take it out of every call instead
            sure = c2.checkbox("Yes, exclude its nuclei", key=f"ingest_exclude_sure_{scan_id}", disabled=not who)
            c3.button("Exclude scan", key="ingest_exclude", type="primary", disabled=not (who and sure),
                      icon=":material/block:", on_click=exclude_clicked, args=(int(scan_id), who))
            st.caption(kept + ". Excluding gives each of its nuclei an 'exclude' decision in your name: the scan is "
                       "left out of every call, and the file still counts as stored.")
            unexclude_row(common.store_at(str(path)), int(scan_id), who)  # an exclusion partly decided over
        else:
            sure = c2.checkbox("Yes, remove it", key=f"ingest_remove_sure_{scan_id}", disabled=not who)  # per scan
            c3.button("Remove scan", key="ingest_remove", type="primary", disabled=not (who and sure),
                      icon=":material/delete:", on_click=remove_clicked, args=(int(scan_id), who))
        error = st.session_state.pop(REMOVE_ERROR_KEY, None)
        if error:
            st.error(error, icon=":material/error:")
        if not who:
            st.caption("Enter your name under **Reviewer** in the sidebar to remove or exclude a scan.")


def main() -> None:
    common.page_header("Ingest", "Upload FISH scans (TIFF or PNG), map their channels, and score them with every "
                                 "registered model. Each scan is stored in one transaction.")
    if store_exists(common.db_path()):
        common.store_or_stop()  # a store that cannot be opened (busy, newer, no store): say why, offer no upload
    removed = st.session_state.pop(REMOVED_KEY, None)
    if removed:
        st.success(removed, icon=":material/delete:")
    upload_section()
    remove_scan_section()


def readable_uploads(files: list) -> list:
    """The uploads whose header passes the check (read from memory: nothing is written yet); a
    warning names each of the others."""
    from genuine_core.io import inspect_scan

    valid = []
    for f in files:
        try:
            inspect_scan(f.getvalue(), name=Path(f.name).name)
        except InputError as exc:
            st.warning(f"**{f.name}** will not be ingested: {reason(str(exc), f.name, Path(f.name).name)}",
                       icon=":material/warning:")
            continue
        valid.append(f)
    return valid


def mapping_problem(mapping: tuple, n_channels: int | None) -> str | None:
    """Why ``mapping`` cannot read a scan of ``n_channels`` (None: it can, and it names both probes)."""
    from genuine_core.io import ChannelMap

    try:
        cmap = ChannelMap(*mapping)
    except ValueError as exc:  # ChannelMap validation (e.g. the same channel twice)
        return f"Invalid channel mapping: {exc}"
    if not fits(mapping, n_channels):
        return f"the scan has {n_channels} channels, the mapping needs channel {cmap.max_index()}"
    try:  # a scan without a probe channel would be called non-MNA for want of signals
        cmap.require_probes()
    except InputError as exc:
        return f"Choose the probe channels: {exc}"
    return None


def per_scan_maps(valid: list, counts: list, batch: tuple) -> list[tuple]:
    """A channel mapping row per scan, each preselected with the ``batch`` mapping where the scan has its
    channels; the mappings in the order of ``valid``."""
    maps = []
    for f, n in zip(valid, counts):
        st.markdown(f"`{f.name}` · {plural(n, 'channel') if n else 'unknown number of channels'}")
        maps.append(channel_mapping(n, f"ingest_map_{f.file_id}", batch))
    return maps


def mapping_section(valid: list) -> tuple[list[tuple], bool]:
    """The channel mapping of each upload, previewed on one of them: ``(nmi, mycn, dapi)`` source channels
    (None = absent) per scan, and whether every mapping fits its scan and names both probes.

    One mapping serves all scans unless **Set the channel map per scan** is on, or the scans' channel
    counts differ: then each scan gets its own, the batch mapping preselected where it fits."""
    st.subheader("Channel mapping")
    counts = [channel_count(f.file_id, f.getvalue()) for f in valid]
    n_ch = counts[0]  # the first scan's channels define the batch mapping's choices
    differ = len(set(counts)) > 1
    per_scan = differ
    if len(valid) > 1 and not differ:
        per_scan = st.toggle("Set the channel map per scan", key="ingest_per_scan",
                             help="each scan follows the mapping below until you change its own")
    channels = plural(n_ch, 'channel') if n_ch else 'unknown number of channels'
    st.caption(f"`{valid[0].name}`: {channels}. Code order is (NMI, MYCN, DAPI) = (red, green, blue)." if not per_scan
               else ("The scans' channel counts differ: each has its own mapping. " if differ else "")
               + f"Code order is (NMI, MYCN, DAPI) = (red, green, blue). **All scans** (for `{valid[0].name}`'s "
               f"{channels}): each scan below follows this mapping until you change its own.")
    batch = channel_mapping(n_ch, "ingest_map")
    maps = [batch] * len(valid)
    if per_scan:
        with st.container(border=True):
            maps = per_scan_maps(valid, counts, batch)
    pick = 0
    if len(valid) > 1:
        help_ = "Each scan is read with its own mapping." if per_scan else \
            f"The same mapping is used for all {len(valid)} scans: check each of them here."
        pick = st.selectbox("Preview", range(len(valid)), format_func=lambda i: valid[i].name, key="ingest_preview",
                            help=help_)
    shown = valid[pick]  # the scan previewed, with its mapping
    problems = [(f.name, mapping_problem(m, c)) for f, m, c in zip(valid, maps, counts)]
    problems = [(name, p) for name, p in problems if p]
    for name, problem in (problems[:1] if not per_scan else problems):
        st.error(problem if not per_scan else f"`{name}`: {problem}", icon=":material/error:")
    ok = not problems
    if fits(maps[pick], counts[pick]):
        try:
            rgb, chans, shape = preview(shown.file_id, shown.getvalue(), shown.name, maps[pick])
            cols = st.columns([2, 1, 1, 1])
            cols[0].image(rgb, caption=f"`{shown.name}` composite · {shape}", width="stretch", output_format="PNG")
            for col, (name, img) in zip(cols[1:], chans):
                col.image(img, caption=name, width="stretch", output_format="PNG")
        except GenuineError as exc:
            ok = False
            st.error(f"`{shown.name}` cannot be read with this mapping: {exc}", icon=":material/error:")
        except ValueError:  # an invalid mapping: said above
            pass
    return maps, ok


def upload_section() -> None:
    """Upload, header check, channel mapping with preview, sample fields and the ingest with its outcomes."""
    path = common.db_path()
    if not store_exists(path):
        common.empty_state()
        st.caption(f"The first ingest creates the store at `{path}`.")
    files = st.file_uploader("Scans", type=["tif", "tiff", "png"], accept_multiple_files=True, key="ingest_files",
                             help="RGB or multi-channel; one sample may hold several scans")
    last = st.session_state.get(RESULT_KEY)
    if not files:
        if last:
            show_outcomes(last)
        return
    valid = readable_uploads(files)
    if not valid:
        return

    maps, ok = mapping_section(valid)

    st.subheader("Sample")
    st.caption("Scored by: " + ", ".join(f"`{m}`" for m in planned_models(path)) +
               " · segmentation: the default backend")
    default_sample_name([f.name for f in valid])
    with st.container(border=True):  # no form: a typed name is kept when the uploads change (see above)
        c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
        sample = c1.text_input("Sample name", key=NAME_KEY)
        kind = c2.selectbox("Kind", KINDS, key="ingest_kind")
        genotype = c3.selectbox("Genotype", list(GENOTYPES), key="ingest_genotype",
                                help="a known genotype gives every nucleus an automatic label")
        expected = c4.number_input("Expected MNA %", min_value=0.0, max_value=100.0, value=None, step=5.0,
                                   key="ingest_expected", help="known mixture fraction, if any")
        go = st.button(f"Ingest {plural(len(valid), 'scan')}", type="primary", disabled=not ok,
                       icon=":material/play_arrow:", key="ingest_go")
    if not go:
        if last:
            show_outcomes(last)
        return
    if not sample.strip():
        st.error("Give the sample a name.", icon=":material/error:")
        return
    try:
        store = common.get_store(create=True)
        rows = run_ingest(store, valid, maps, sample.strip(), kind,
                          None if expected is None else float(expected) / 100.0, GENOTYPES[genotype])
    except GenuineError as exc:
        common.show_error(exc)
        return
    st.session_state[RESULT_KEY] = rows
    if any(status == "stored" for _, status, _, _ in rows):
        st.rerun(scope="app")  # the sidebar (drawn before this page) and every page read the new data
    show_outcomes(rows)


main()
