"""Synthetic FISH fields, benchmarks and probes with exact ground truth.

Public API:
    make_field, SynthField, Scene            -- one synthetic scan (fields.py)
    Acquisition, NOMINAL, SHIFTED, jittered  -- imaging conditions (acquisition.py)
    CellLine, Phenotype, DEFAULT_LINES       -- genotype models (lines.py)
    make_benchmark, load_benchmark, BenchmarkSplit, SIZES  -- benchmark folders (benchmark.py)
    make_probe, ProbeBatch                   -- probe patches for paper section 4.3 (probe.py)
"""

from genuine_core.synth.benchmark import (
    MIXTURE_FRACTIONS, SIZES, BenchmarkSize, BenchmarkSplit, load_benchmark, make_benchmark, summarise,
)
from genuine_core.synth.acquisition import NOMINAL, SHIFTED, Acquisition, acquire, jittered
from genuine_core.synth.fields import BOX_COLUMNS, NUCLEI_COLUMNS, Scene, SynthField, make_field
from genuine_core.synth.lines import DEFAULT_LINES, CellLine, Phenotype, uniform, with_natural_noise
from genuine_core.synth.nuclei import Layout, NucleusStyle
from genuine_core.synth.probe import ProbeBatch, make_probe, synthetic_backgrounds
from genuine_core.synth.signals import CLUSTER, MYCN, NMI, SignalStyle

__all__ = [
    "make_benchmark", "load_benchmark", "BenchmarkSplit", "BenchmarkSize", "SIZES", "MIXTURE_FRACTIONS", "summarise",
    "Acquisition", "NOMINAL", "SHIFTED", "acquire", "jittered",
    "Scene", "SynthField", "make_field", "NUCLEI_COLUMNS", "BOX_COLUMNS",
    "CellLine", "Phenotype", "DEFAULT_LINES", "uniform", "with_natural_noise",
    "ProbeBatch", "make_probe", "synthetic_backgrounds",
    "Layout", "NucleusStyle", "SignalStyle", "NMI", "MYCN", "CLUSTER",
]
