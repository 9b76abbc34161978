"""Where the tests find the benchmark data (never copied into the project).

``$AIMMERGING_TEST_DATA``, else ``<repo>/../shared/data``, else ``/work/shared/data``.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    candidates = [os.environ.get("AIMMERGING_TEST_DATA"), REPO.parent / "shared" / "data",
                  "/work/shared/data"]
    for cand in candidates:
        if cand and Path(cand).is_dir():
            return Path(cand).resolve()
    return (REPO.parent / "shared" / "data").resolve()


DATA_ROOT = data_root()
