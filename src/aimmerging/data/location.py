"""Where the benchmark data is: ``--data DIR``, ``$AIMMERGING_DATA``, or the config's ``data.dir``.

The configs in ``configs/`` name ``data.dir: ../shared/data/<benchmark>`` (this repository's
checkout keeps the data beside it). A user who downloaded the data elsewhere passes
``--data DIR`` (or sets ``AIMMERGING_DATA=DIR``) with ``DIR`` in the place of
``../shared/data``: the run reads ``DIR/<benchmark>`` (the last part of the config's
``data.dir``, e.g. ``data_longsequence``) when that folder exists, else ``DIR`` itself (a
benchmark folder of either layout, or a folder holding several: docs/data.md). Relative
paths count from the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from aimmerging.errors import ConfigError, missing_folder

__all__ = ["DATA_ENV", "DATA_SOURCES", "add_data_arg", "data_dir_for", "locate_data",
           "missing_data_message"]

#: the environment variable that stands in for --data
DATA_ENV = "AIMMERGING_DATA"
#: where the paper's benchmark data comes from (docs/data.md gives the commands)
DATA_SOURCES = ("git clone https://github.com/WoodScene/AimMerging (its data_longsequence/ and "
                "data_superni/), or O-LoRA's CL_Benchmark (https://github.com/cmnfriend/O-LoRA)")


def data_dir_for(root: str, config_dir: Optional[str], flag: str) -> str:
    """The ``data.dir`` a run reads when ``root`` is given by ``flag`` (``--data`` or the
    environment variable) for a config whose ``data.dir`` is ``config_dir``.

    ``root/<last part of config_dir>`` when that is a folder, else ``root``. Raises
    ConfigError when ``root`` is not a folder.
    """
    text = os.path.expanduser(str(root).strip())
    if not text:
        raise ConfigError(f"{flag}: empty path")
    if not Path(text).is_dir():
        raise ConfigError(f"{flag}: {missing_folder(text)} is not a folder; the benchmark data "
                          f"comes from: {DATA_SOURCES}; see docs/data.md")
    if isinstance(config_dir, str) and config_dir.strip():
        name = Path(os.path.normpath(os.path.expanduser(config_dir))).name
        if name not in ("", ".", "..") and (Path(text) / name).is_dir():
            return os.path.normpath(os.path.join(text, name))
    return os.path.normpath(text)


def locate_data(raw: dict, overrides: Sequence[str] = (), data: Optional[str] = None) -> dict:
    """A config file's dict with ``data.dir`` from ``--data DIR`` (``data``), else from
    ``$AIMMERGING_DATA`` for a relative ``data.dir`` (see the module docstring; the ``--set``
    ``overrides`` are applied afterwards, by the caller). Raises ConfigError when ``--data``
    and ``--set data.dir`` are both given, or when the folder given is not one."""
    sets_dir = any(item.split("=", 1)[0].strip() == "data.dir" for item in overrides)
    if data is not None and sets_dir:
        raise ConfigError("--data and --set data.dir both name the benchmark data: give one")
    section = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    current = section.get("dir")
    env = os.environ.get(DATA_ENV, "").strip()
    if data is not None:
        found = data_dir_for(data, current, "--data")
    elif env and not sets_dir and isinstance(current, str) and current.strip() and \
            not os.path.isabs(os.path.expanduser(current)):
        found = data_dir_for(env, current, DATA_ENV)
    else:
        return raw
    return {**raw, "data": {**section, "dir": found}}


def missing_data_message(path) -> str:
    """The one-line error for a ``data.dir`` that is not a folder: how to give the data."""
    return (f"data.dir: {missing_folder(path)} is not a folder: pass --data DIR or set "
            f"{DATA_ENV}=DIR, DIR being the downloaded benchmark data ({DATA_SOURCES}; "
            f"see docs/data.md)")


def add_data_arg(parser) -> None:
    """``--data DIR`` on an argparse parser (``run``, ``compare``, ``data check``/``show``)."""
    parser.add_argument("--data", metavar="DIR", default=None,
                        help=f"the benchmark data, in the place of the config's ../shared/data: "
                             f"DIR/<last part of data.dir> when that folder exists, else DIR "
                             f"(default: ${DATA_ENV}, else the config's data.dir; docs/data.md)")
