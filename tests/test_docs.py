"""The generated reference pages (docs/configuration.md, docs/cli.md) match the code."""

from pathlib import Path

from pydantic import create_model

from aimmerging import config as config_module
from aimmerging import docgen

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_generated_pages_are_up_to_date():
    assert docgen.write_pages(DOCS, check=True) == [], "run `aimmerging docs` and commit docs/"


def test_every_leaf_key_is_documented():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    keys = docgen.leaf_keys()
    assert {"seed", "data.n_test", "method.s_init", "train.lr", "eval.max_new_tokens"} <= set(keys)
    for key in keys:
        assert f"| `{key}` |" in text, key


def test_a_new_config_field_makes_the_page_stale(monkeypatch, tmp_path):
    docgen.write_pages(tmp_path)
    assert docgen.write_pages(tmp_path, check=True) == []
    train = create_model("TrainConfig", __base__=config_module.TrainConfig, new_knob=(int, 1))
    train.model_fields["new_knob"].description = "a knob added after the page was written"
    run = create_model("RunConfig", __base__=config_module.RunConfig, train=(train, train()))
    monkeypatch.setattr(config_module, "RunConfig", run)
    assert docgen.write_pages(tmp_path, check=True) == ["configuration.md"]
    docgen.write_pages(tmp_path)
    assert "| `train.new_knob` |" in (tmp_path / "configuration.md").read_text(encoding="utf-8")


def test_a_field_without_a_description_is_refused(monkeypatch):
    import pytest

    run = create_model("RunConfig", __base__=config_module.RunConfig, undocumented=(int, 0))
    monkeypatch.setattr(config_module, "RunConfig", run)
    with pytest.raises(ValueError, match="undocumented"):
        docgen.config_reference()


def test_cli_page_lists_every_command():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for command in ("run", "demo", "compare", "plot", "export", "bench", "data check", "data show", "docs"):
        assert f"## `aimmerging {command}`" in text, command


def test_study_summaries_match_the_committed_results():
    """README.md's and docs/results.md's study tables are what the committed
    docs/results/cpu_small/ gives (aimmerging docs rewrites them)."""
    assert docgen.write_blocks(DOCS.parent, check=True) == [], "run `aimmerging docs` and commit"


def test_the_checkout_is_found_from_the_current_folder(tmp_path, monkeypatch):
    """`aimmerging docs` works on the checkout it runs in, not the one it is imported from."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "aimmerging"\n')
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "docs" / "sub")
    assert docgen._default_folder() == tmp_path / "docs"
    monkeypatch.chdir(tmp_path.parent)
    assert docgen._default_folder() == DOCS
