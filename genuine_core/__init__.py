"""GENUINE core: FISH images, synthetic data, segmentation, patches, models, inference.

Importing this package is light: heavy dependencies (torch, cellpose, umap) are
imported by the submodules that need them. It never imports streamlit or duckdb.
"""

__version__ = "0.1.0"
