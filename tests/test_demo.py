"""The demo: its stream, its settings and its printed report."""

from pathlib import Path

from aimmerging.config import build_config, load_config
from aimmerging.data.demo import DEMO_TASKS, demo_stream
from aimmerging.demo import DEMO_CONFIG, format_report

REPO = Path(__file__).resolve().parents[1]


def test_configs_demo_yaml_is_the_demo_setting():
    assert load_config(REPO / "configs" / "demo.yaml") == build_config(DEMO_CONFIG)


def test_demo_stream_is_deterministic_with_distinct_answer_sets():
    a, b = demo_stream(seed=0), demo_stream(seed=0)
    assert [t.train for t in a] == [t.train for t in b]
    assert [t.info.name for t in a] == list(DEMO_TASKS) and len(a) >= 4
    answer_sets = [set(ex.output for ex in t.train) for t in a]
    for i in range(len(answer_sets)):
        for j in range(i + 1, len(answer_sets)):
            assert not answer_sets[i] & answer_sets[j]
    instructions = {t.train[0].input.split("\n")[0] for t in a}
    assert len(instructions) == len(a)
    for t in a:   # train and test sets do not overlap
        assert not {ex.input for ex in t.train} & {ex.input for ex in t.test}


def test_report_table():
    metrics = {"tasks": ["a", "b"], "accuracy_matrix": [[90.0, 80.0], [None, 70.0]],
               "op": 75.0, "bwt": -10.0, "merges": 3, "effective_merges": 2}
    text = format_report(metrics, {"b": 3})
    assert "OP 75.0   BWT -10.0   merges 3 (2 with alpha_past > 0)" in text
    assert text.splitlines()[3].split() == ["b", "-", "70.0", "3"]
