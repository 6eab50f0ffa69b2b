-- GENUINE store, schema version 1. Idempotent: every statement is IF NOT EXISTS.
-- Global ids come from sequences. Foreign keys are not declared (they would slow bulk
-- loads and block derived-data refreshes); `genuine store check` verifies references.
-- Label events are append-only: no code path updates or deletes them.

CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    note       VARCHAR
);

CREATE SEQUENCE IF NOT EXISTS sample_ids START 1;
CREATE SEQUENCE IF NOT EXISTS scan_ids START 1;
CREATE SEQUENCE IF NOT EXISTS nucleus_ids START 1;
CREATE SEQUENCE IF NOT EXISTS model_ids START 1;
CREATE SEQUENCE IF NOT EXISTS label_event_ids START 1;
CREATE SEQUENCE IF NOT EXISTS umap_fit_ids START 1;
CREATE SEQUENCE IF NOT EXISTS probe_run_ids START 1;

CREATE TABLE IF NOT EXISTS samples (
    id           BIGINT PRIMARY KEY DEFAULT nextval('sample_ids'),
    name         VARCHAR NOT NULL UNIQUE,
    kind         VARCHAR NOT NULL CHECK (kind IN ('cell-line', 'mixture', 'case', 'probe')),
    expected_mna DOUBLE CHECK (expected_mna IS NULL OR (expected_mna >= 0 AND expected_mna <= 1)),
    genotype     VARCHAR,           -- 'MNA' / 'non-MNA' give every nucleus an auto label
    notes        VARCHAR,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS scans (
    id               BIGINT PRIMARY KEY,
    sample_id        BIGINT NOT NULL,
    file_name        VARCHAR NOT NULL,
    path             VARCHAR,
    sha256           VARCHAR NOT NULL UNIQUE,
    height           INTEGER NOT NULL,
    width            INTEGER NOT NULL,
    source_shape     VARCHAR,         -- JSON list, as stored in the file
    source_dtype     VARCHAR,
    channel_map      VARCHAR NOT NULL, -- JSON {"nmi": 0, "mycn": 1, "dapi": 2}
    acquisition      VARCHAR,         -- JSON, free-form acquisition metadata
    segmentation     VARCHAR,         -- JSON {"backend": ..., ...}
    patch_size       INTEGER NOT NULL,
    -- patch_normalisation VARCHAR: added by migration step 2 (store/migrations.py)
    -- pixel_sha256 VARCHAR: added by migration step 8 (the decoded pixels' fingerprint; NULL: not known)
    split            VARCHAR,         -- benchmark split (train/val/test/mixture) when synthetic
    label_source     VARCHAR,         -- where the nuclei's auto/true labels come from (genotype, benchmark)
    n_nuclei         INTEGER NOT NULL,
    n_border_skipped INTEGER NOT NULL,
    preview_png      BLOB,            -- display RGB, uint8 PNG
    masks_npz        BLOB,            -- instance masks (H, W) int32, compressed .npz bytes
    ingested_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS nuclei (
    id         BIGINT PRIMARY KEY,    -- global nucleus id (nucleus_id everywhere else)
    scan_id    BIGINT NOT NULL,
    mask_label INTEGER NOT NULL,      -- label in the scan's instance mask
    cy         DOUBLE NOT NULL,       -- centroid, scan pixels
    cx         DOUBLE NOT NULL,
    bbox_y0    INTEGER NOT NULL,      -- bbox in scan pixels, *1 exclusive
    bbox_x0    INTEGER NOT NULL,
    bbox_y1    INTEGER NOT NULL,
    bbox_x1    INTEGER NOT NULL,
    area       INTEGER NOT NULL,      -- pixels
    mean_nmi   DOUBLE,                -- mean raw intensity in [0, 1] inside the mask
    mean_mycn  DOUBLE,
    mean_dapi  DOUBLE,
    cropped    BOOLEAN NOT NULL DEFAULT false,
    auto_label TINYINT CHECK (auto_label IN (0, 1)),  -- from the scan's genotype (noisy); NULL unknown
    true_label TINYINT CHECK (true_label IN (0, 1)),  -- synthetic ground truth; NULL unknown
    patch_png  BLOB,                  -- model input patch as RGB uint8 PNG (P x P)
    UNIQUE (scan_id, mask_label)
);

-- Automatic labels, one row per (nucleus, kind): 'auto' and 'truth'. Kept as columns of
-- nuclei (written with the nucleus, read without extra joins); this view is the table form.
CREATE OR REPLACE VIEW labels AS
SELECT n.id AS nucleus_id, 'auto' AS kind, n.auto_label AS label, c.label_source AS source
FROM nuclei n JOIN scans c ON c.id = n.scan_id WHERE n.auto_label IS NOT NULL
UNION ALL
SELECT n.id, 'truth', n.true_label, c.label_source
FROM nuclei n JOIN scans c ON c.id = n.scan_id WHERE n.true_label IS NOT NULL;

-- Ground-truth details of synthetic nuclei matched to segmented ones.
CREATE TABLE IF NOT EXISTS synthetic_truth (
    nucleus_id  BIGINT PRIMARY KEY,
    gt_id       INTEGER NOT NULL,     -- nucleus id in the ground-truth mask
    match_iou   DOUBLE NOT NULL,
    cell_line   VARCHAR,
    n_nmi       INTEGER,
    n_mycn      INTEGER,
    n_cluster   INTEGER,
    noise       VARCHAR
);

-- Curators' decisions. APPEND-ONLY. value: '1' MNA, '0' non-MNA, 'exclude' (not a nucleus /
-- artefact), 'unset' (back to no decision, written by undo). previous: the curated value
-- before this event ('unset' when there was none).
CREATE TABLE IF NOT EXISTS label_events (
    id         BIGINT PRIMARY KEY DEFAULT nextval('label_event_ids'),
    nucleus_id BIGINT NOT NULL,
    value      VARCHAR NOT NULL CHECK (value IN ('0', '1', 'exclude', 'unset')),
    previous   VARCHAR NOT NULL CHECK (previous IN ('0', '1', 'exclude', 'unset')),
    reviewer   VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    note       VARCHAR,
    undoes     BIGINT                 -- id of the event this one reverts, if an undo
    -- blind BOOLEAN: added by migration step 9 (TRUE: decided in blind review, others' decisions hidden; NULL: not)
);

-- Current curated label: the latest event per nucleus (by event id), unless it is 'unset'.
CREATE OR REPLACE VIEW curated_labels AS
SELECT nucleus_id,
       value,
       CASE value WHEN '1' THEN 1 WHEN '0' THEN 0 END AS label,
       value = 'exclude' AS excluded,
       reviewer,
       created_at,
       id AS event_id
FROM (
    SELECT *, row_number() OVER (PARTITION BY nucleus_id ORDER BY id DESC) AS rn
    FROM label_events
) latest
WHERE rn = 1 AND value <> 'unset';

-- store_events (who registered, retired, reinstated, relocated or removed a model, who relocated or removed a
-- scan): added by migration step 3, its retire/reinstate actions by step 4, relocate model/scan by step 10.
-- sign_outs (pathologists' final call per sample, append-only): added by migration step 6.

CREATE TABLE IF NOT EXISTS models (
    id            BIGINT PRIMARY KEY DEFAULT nextval('model_ids'),
    name          VARCHAR NOT NULL UNIQUE,
    kind          VARCHAR NOT NULL,   -- genuine / resnet / detector / ratio
    preset        VARCHAR,
    patch_size    INTEGER NOT NULL,
    checksum      VARCHAR NOT NULL,   -- weights identity (sha256 of the folder's checksum list)
    uncertainty_method VARCHAR NOT NULL DEFAULT 'unknown', -- mc_dropout_std | entropy | unknown
    config        VARCHAR NOT NULL,   -- JSON
    metrics       VARCHAR,            -- JSON
    folder        VARCHAR,
    registered_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    -- retired_at TIMESTAMP, retired_by VARCHAR: added by migration step 4 (NULL: the model scores new scans)
);

-- Which models scored which scan (a scan ingested before a model was registered lacks it).
CREATE TABLE IF NOT EXISTS scan_models (
    scan_id       BIGINT NOT NULL,
    model_id      BIGINT NOT NULL,
    n_predictions INTEGER NOT NULL,
    seconds       DOUBLE,
    -- mc_samples INTEGER: added by migration step 5 (MC-dropout passes of the uncertainty; 0: entropy; NULL: not recorded)
    PRIMARY KEY (scan_id, model_id)
);

CREATE TABLE IF NOT EXISTS predictions (
    model_id        BIGINT NOT NULL,
    nucleus_id      BIGINT NOT NULL,
    prob            FLOAT NOT NULL,
    prob_calibrated FLOAT NOT NULL,
    uncertainty     FLOAT,
    call            TINYINT NOT NULL CHECK (call IN (0, 1)),
    det_nmi         INTEGER,          -- detected signal counts (detector-based models)
    det_mycn        INTEGER,
    det_cluster     INTEGER,
    PRIMARY KEY (model_id, nucleus_id)
);

-- Derived, per nucleus over all its predictions (written with them; rebuilt by
-- store.scans.refresh_review_stats). Makes the review queue one scan of this table.
-- From schema step 7 over the trusted models only (active, validation not weak: store.review_stats);
-- mean_prob, min_call, max_call and min_margin there may be NULL (no trusted model scored the nucleus).
CREATE TABLE IF NOT EXISTS review_stats (
    nucleus_id  BIGINT PRIMARY KEY,
    scan_id     BIGINT NOT NULL,
    sample_id   BIGINT NOT NULL,
    auto_label  TINYINT,
    n_models    INTEGER NOT NULL,
    mean_prob   FLOAT NOT NULL,       -- mean calibrated probability
    spread      FLOAT NOT NULL,       -- max - min probability across models
    min_call    TINYINT NOT NULL,
    max_call    TINYINT NOT NULL,
    min_margin  FLOAT NOT NULL,       -- min |calibrated probability - 0.5|
    max_uncertainty FLOAT,            -- max uncertainty, any method
    max_mc_std  FLOAT,                -- max uncertainty of models reporting an MC-dropout std
    max_entropy FLOAT                 -- max uncertainty of models reporting entropy
);

-- Detector boxes in PATCH coordinates; cls 1 NMI, 2 MYCN, 3 MYCN cluster.
CREATE TABLE IF NOT EXISTS detections (
    model_id   BIGINT NOT NULL,
    nucleus_id BIGINT NOT NULL,
    cls        TINYINT NOT NULL CHECK (cls IN (1, 2, 3)),
    x1         FLOAT NOT NULL,
    y1         FLOAT NOT NULL,
    x2         FLOAT NOT NULL,
    y2         FLOAT NOT NULL,
    score      FLOAT NOT NULL
);

CREATE TABLE IF NOT EXISTS embeddings (
    model_id   BIGINT NOT NULL,
    nucleus_id BIGINT NOT NULL,
    vector     FLOAT[] NOT NULL,
    PRIMARY KEY (model_id, nucleus_id)
);

CREATE TABLE IF NOT EXISTS umap_fits (
    id             BIGINT PRIMARY KEY DEFAULT nextval('umap_fit_ids'),
    model_id       BIGINT NOT NULL,
    fitted_at      TIMESTAMP NOT NULL,
    reference      VARCHAR NOT NULL,  -- which nuclei the reducer was fitted on
    n_reference    INTEGER NOT NULL,
    params         VARCHAR NOT NULL,  -- JSON UMAP parameters incl. seed
    reducer_path   VARCHAR NOT NULL,  -- relative to the store's folder
    reducer_sha256 VARCHAR NOT NULL
);

-- Derived data: replaced when a model's UMAP is refitted.
CREATE TABLE IF NOT EXISTS umap_coords (
    model_id   BIGINT NOT NULL,
    nucleus_id BIGINT NOT NULL,
    fit_id     BIGINT NOT NULL,
    x          FLOAT NOT NULL,
    y          FLOAT NOT NULL,
    fitted_on  BOOLEAN NOT NULL,      -- true: in the reference set; false: placed by transform
    PRIMARY KEY (model_id, nucleus_id)
);

CREATE TABLE IF NOT EXISTS probe_runs (
    id         BIGINT PRIMARY KEY DEFAULT nextval('probe_run_ids'),
    model_id   BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by VARCHAR,
    params     VARCHAR NOT NULL,      -- JSON probe settings (counts, sizes, n per condition, seed)
    n_results  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS probe_results (
    run_id          BIGINT NOT NULL,
    idx             INTEGER NOT NULL,
    n_nmi           INTEGER NOT NULL,
    n_mycn          INTEGER NOT NULL,
    n_cluster       INTEGER NOT NULL DEFAULT 0,
    signal_size     FLOAT,
    prob            FLOAT NOT NULL,
    prob_calibrated FLOAT,
    call            TINYINT,
    umap_x          FLOAT,
    umap_y          FLOAT,
    patch_png       BLOB,
    PRIMARY KEY (run_id, idx)
);
