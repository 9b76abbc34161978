"""aimmerging: continual learning of language models with Adaptive Iterative Model Merging.

Implements AIMMerging (Feng et al., EMNLP 2025) as specified in SPEC.md, with the
baselines, benchmarks, metrics and plots around it.
"""

__version__ = "0.1.0"
