"""The DuckDB store: schema and every SQL statement of GENUINE.

Modules (each returns pandas DataFrames / plain values; SQL uses bound parameters only):

- ``db``: :class:`~store.db.Store` (one connection per process, a cursor per thread, transactions);
  ``location``: which store file (``--db``, ``$GENUINE_DB``, the default)
- ``schema.sql`` + ``migrations``: versioned, idempotent schema
- ``samples``, ``registry`` (models), ``scans`` (one-transaction scan writes), ``nuclei``
- ``labels``: append-only label events and the current curated label
- ``review``: the review queue and progress; ``summary``: per sample x model MNA fractions
- ``umap``: fitted maps and coordinates; ``probes``: probe runs
- ``ingest``: files / benchmark folders -> store; ``demo``: the demo store; ``export``
- ``check``: integrity check and info; ``scale``: synthetic bulk rows for benchmarks
- ``cli_*``: the ``genuine ingest | umap | demo | export | store`` subcommands
"""
