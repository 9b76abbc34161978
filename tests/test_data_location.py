"""--data DIR and $AIMMERGING_DATA in the place of the configs' ../shared/data (docs/data.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

from aimmerging.config import load_config
from aimmerging.data.location import DATA_ENV
from aimmerging.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CPU_SMALL = REPO / "configs" / "cpu_small.yaml"
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)


def _root(tmp_path: Path) -> Path:
    """A downloaded data folder as the AimMerging clone lays it out (empty benchmark folders)."""
    for name in ("data_longsequence", "data_superni"):
        (tmp_path / "clone" / name).mkdir(parents=True)
    return tmp_path / "clone"


def test_data_stands_in_for_the_folder_above_the_benchmark(tmp_path: Path) -> None:
    root = _root(tmp_path)
    assert load_config(CPU_SMALL, data=str(root)).data.dir == str(root / "data_longsequence")
    bench = root / "data_longsequence"                      # the benchmark folder itself
    assert load_config(CPU_SMALL, data=str(bench)).data.dir == str(bench)
    assert load_config(REPO / "configs" / "order6.yaml", data=str(root)).data.dir == \
        str(root / "data_superni")
    assert load_config(REPO / "configs" / "demo.yaml", data=str(root)).data.dir == str(root)


def test_the_environment_variable_replaces_relative_folders_only(tmp_path: Path, monkeypatch) -> None:
    root = _root(tmp_path)
    monkeypatch.setenv(DATA_ENV, str(root))
    assert load_config(CPU_SMALL).data.dir == str(root / "data_longsequence")
    assert load_config(REPO / "configs" / "demo.yaml").data.dir is None     # the demo stays the demo
    own = tmp_path / "mine"
    own.mkdir()
    assert load_config(CPU_SMALL, [f"data.dir={own}"]).data.dir == str(own)   # --set wins
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dir: {own}, order: 1}}\n")
    assert load_config(config).data.dir == str(own)          # an absolute data.dir is kept
    other = _root(tmp_path / "other")
    assert load_config(CPU_SMALL, data=str(other)).data.dir == str(other / "data_longsequence")


def test_data_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"--data and --set data.dir both name"):
        load_config(CPU_SMALL, ["data.dir=x"], data=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^--data: .*nowhere.* is not a folder; the benchmark "
                                          r"data comes from: git clone https://github.com/WoodScene/AimMerging"):
        load_config(CPU_SMALL, data=str(tmp_path / "nowhere"))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=rf"^{DATA_ENV}: .*nowhere.* is not a folder"):
        load_config(CPU_SMALL)


def test_a_missing_folder_says_how_to_give_the_data(tmp_path: Path, monkeypatch) -> None:
    from aimmerging.compare import compare_runs
    from aimmerging.runner import load_tasks

    monkeypatch.chdir(tmp_path)                              # a fresh clone: no ../shared/data
    cfg = load_config(CPU_SMALL)
    expected = (rf"^data.dir: ../shared/data/data_longsequence \(relative to {tmp_path}\) is not a "
                rf"folder: pass --data DIR or set {DATA_ENV}=DIR, DIR being the downloaded benchmark "
                rf"data \(git clone https://github.com/WoodScene/AimMerging .*CL_Benchmark .*docs/data.md\)$")
    with pytest.raises(ConfigError, match=expected):
        load_tasks(cfg)
    with pytest.raises(ConfigError, match=expected):
        compare_runs(CPU_SMALL, ["seq_lora"], output=tmp_path / "cmp", fwt=False, progress=False)
    assert not (tmp_path / "cmp").exists()
    with pytest.raises(ConfigError, match=r"^--data: nope \(relative to"):
        compare_runs(CPU_SMALL, ["seq_lora"], output=tmp_path / "cmp", data="nope")


@pytest.mark.skipif(DATA_ROOT != (REPO.parent / "shared" / "data").resolve(),
                    reason="the benchmark data is not at ../shared/data")
def test_our_checkout_reads_the_same_folder_either_way(monkeypatch) -> None:
    """Runs made with the configs' ../shared/data compare equal when the data is given by
    --data or the variable (compare and --resume check data.dir as an absolute path)."""
    from aimmerging.rundir import config_differences

    monkeypatch.chdir(REPO)
    plain = load_config(CPU_SMALL)
    saved = {**plain.model_dump(mode="json")}
    flag = load_config(CPU_SMALL, data="../shared/data")
    assert flag.data.dir == os.path.normpath("../shared/data/data_longsequence")
    monkeypatch.setenv(DATA_ENV, str(DATA_ROOT))
    env = load_config(CPU_SMALL)
    assert Path(env.data.dir) == DATA_ROOT / "data_longsequence"
    assert config_differences(saved, flag) == [] and config_differences(saved, env) == []


def test_run_and_compare_take_data(tmp_path: Path) -> None:
    from aimmerging.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "c.yaml", "--data", "D"]).data == "D"
    assert parser.parse_args(["compare", "c.yaml", "--methods", "replay", "--output", "o",
                              "--data", "D"]).data == "D"
    assert parser.parse_args(["data", "check", "c.yaml", "--data", "D"]).data == "D"
