"""``aimmerging bench``: run the benchmark suite of the repository's ``benchmarks/`` folder.

::

    aimmerging bench [--quick] [--only overhead,throughput,...] [--output DIR]

Each benchmark module (``benchmarks/<name>.py``) has ``run(quick, output) -> dict``:
it writes ``<name>.json`` (every ratio under a key containing ``ratio``; the training
benchmarks' achieved FLOP/s under ``flops``, as fractions of this machine's matmul peak
under keys starting with ``fraction_of``; the machine, its CPU flags and load under
``machine``) into the output folder and returns its figures with a one-line ``summary``,
printed here.
A combined ``summary.json`` is written at the end; it keeps the entries (with their
dates) of the benchmarks that this call did not re-run, in the same mode. The folder is found in the
current directory, then next to the package's source tree (an editable install),
or at ``$AIMMERGING_BENCHMARKS``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from .errors import ConfigError
from .io import atomic_write_text

BENCHMARKS = ("overhead", "throughput", "evaluation", "scaling", "memory", "precision")
PACKAGE = "aimmerging_benchmarks"


def find_benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder holding ``overhead.py`` and its siblings."""
    candidates = []
    if os.environ.get("AIMMERGING_BENCHMARKS"):
        candidates.append(Path(os.environ["AIMMERGING_BENCHMARKS"]))
    candidates.append(Path.cwd() / "benchmarks")
    candidates.append(Path(__file__).resolve().parents[2] / "benchmarks")
    for c in candidates:
        if (c / "overhead.py").is_file():
            return c.resolve()
    raise ConfigError("bench: no benchmarks/ folder found (run from the repository root, "
                      "or set AIMMERGING_BENCHMARKS)")


def load_benchmark(name: str, folder: Optional[Path] = None):
    """Import ``benchmarks/<name>.py`` (any module there) as ``aimmerging_benchmarks.<name>``."""
    folder = folder or find_benchmarks_dir()
    if PACKAGE not in sys.modules:
        init = folder / "__init__.py"
        spec = importlib.util.spec_from_file_location(PACKAGE, init,
                                                      submodule_search_locations=[str(folder)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = pkg
        spec.loader.exec_module(pkg)
    return importlib.import_module(f"{PACKAGE}.{name}")


def _parse_only(value: Optional[str]) -> list[str]:
    if value is None:
        return list(BENCHMARKS)
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"bench --only: give at least one benchmark; known: {', '.join(BENCHMARKS)}")
    for n in names:
        if n not in BENCHMARKS:
            raise ConfigError(f"bench --only: unknown benchmark {n!r}; known: {', '.join(BENCHMARKS)}")
    return names


def _previous_entries(path: Path, mode: str) -> dict:
    """The entries of an existing ``summary.json`` of the same mode (kept for benchmarks not re-run)."""
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = previous.get("benchmarks") if isinstance(previous, dict) else None
    if not isinstance(entries, dict) or previous.get("mode") != mode:
        return {}
    return {k: {"measured_on": "unknown", **v} if isinstance(v, dict) else v for k, v in entries.items()}


def cmd_bench(args) -> int:
    names = _parse_only(args.only)
    folder = find_benchmarks_dir()
    mode = "quick" if args.quick else "full"
    output = Path(args.output) if args.output else folder / "results" / mode
    output.mkdir(parents=True, exist_ok=True)
    print(f"aimmerging bench ({mode}): {', '.join(names)} -> {output}", flush=True)
    combined: dict = {"mode": mode, "benchmarks": _previous_entries(output / "summary.json", mode)}
    failed = []
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        try:
            figures = load_benchmark(name, folder).run(args.quick, output)
        except Exception as exc:   # one failing benchmark must not hide the others' figures
            failed.append(name)
            traceback.print_exc()
            print(f"{name}: FAILED ({type(exc).__name__}: {exc})", flush=True)
            combined["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        spent = time.perf_counter() - t0
        print(f"{figures.get('summary', name)} [{spent:.0f} s]", flush=True)
        combined["benchmarks"][name] = {
            "summary": figures.get("summary"), "seconds": round(spent, 1),
            "measured_on": time.strftime("%Y-%m-%d"),
            "ratios": _ratios(figures), "fractions_of_peak": _fractions(figures),
            "targets": figures.get("targets", {})}
        facts = figures.get("machine") or _written_machine(output / f"{name}.json")
        if facts:
            combined["machine"] = facts
    combined["seconds"] = round(time.perf_counter() - t_all, 1)
    atomic_write_text(output / "summary.json", json.dumps(combined, indent=2) + "\n")
    print(f"done in {combined['seconds']:.0f} s; figures in {output}", flush=True)
    return 1 if failed else 0


def _written_machine(path: Path) -> Optional[dict]:
    """The ``machine`` record (CPU model and flags, load) of a benchmark's JSON file, if any."""
    try:
        facts = json.loads(path.read_text(encoding="utf-8")).get("machine")
    except (OSError, ValueError, AttributeError):
        return None
    return facts if isinstance(facts, dict) else None


def _ratios(figures: dict, prefix: str = "") -> dict:
    """Every value under a key containing ``ratio`` (nested keys joined with dots)."""
    out = {}
    for k, v in figures.items():
        if k == "targets":
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_ratios(v, key + "."))
        elif "ratio" in str(k) and isinstance(v, (int, float)):
            out[key] = v if v == v and abs(v) != float("inf") else None   # JSON has no NaN
    return out


def _fractions(figures: dict, prefix: str = "", inside: bool = False) -> dict:
    """Every achieved FLOP/s as a fraction of a measured matmul peak: the values under keys
    starting with ``fraction_of`` (nested keys joined with dots; see ``benchmarks/_flops.py``)."""
    out = {}
    for k, v in figures.items():
        key, here = f"{prefix}{k}", inside or str(k).startswith("fraction_of")
        if isinstance(v, dict):
            out.update(_fractions(v, key + ".", here))
        elif here and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v if v == v and abs(v) != float("inf") else None
    return out


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run the performance benchmarks (benchmarks/)")
    p.add_argument("--quick", action="store_true",
                   help="tiny models and few steps (a few minutes on a laptop CPU)")
    p.add_argument("--only", default=None, metavar="NAME,...",
                   help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    p.add_argument("--output", default=None,
                   help="folder for the JSON files (default: benchmarks/results/{quick,full})")
    p.set_defaults(func=cmd_bench)
