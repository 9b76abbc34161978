"""The performance benchmarks run by ``aimmerging bench`` (see src/aimmerging/bench.py).

Each module has ``run(quick: bool, output: Path) -> dict``: it writes ``<name>.json``
into ``output`` (every ratio under a key whose name contains ``ratio``, the targets
with ``met`` flags, the machine) and returns the figures with a ``summary`` line.
"""
