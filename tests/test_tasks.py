"""The arithmetic shift task: the rule, the ID/OOD moduli, spans, tokenization, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mi_probe.cli.app import app
from mi_probe.cli.task_cmds import parse_int_set
from typer.testing import CliRunner

from mi_probe.attention import signal_mask
from mi_probe.errors import ParameterError
from mi_probe.probe_data import load_probe_data
from mi_probe.tasks import ArithmeticTask, task_vocabulary, write_arithmetic
from mi_probe.train import build_word_tokenizer, data_words


def _values(rec, task):
    """(markers, values) parsed back from the prompt text."""
    words = rec["prompt"].split()
    decode = (lambda w: ord(w) - 97) if task.encoding == "letters" else int
    return words[0:-1:2], [decode(w) for w in words[1::2]]


@pytest.mark.parametrize("encoding", ["letters", "numbers"])
def test_records_follow_the_progression_rule(encoding):
    task = ArithmeticTask(encoding=encoding)
    for ood in (False, True):
        for rec in task.records(200, seed=3, ood=ood):
            k, d = rec["k"], rec["d"]
            markers, values = _values(rec, task)
            assert markers == ["S", "N"] * 5 and rec["prompt"].endswith(" S")
            signals = values[::2]
            assert signals == [(rec["s0"] + t * d) % k for t in range(5)]
            assert 1 <= d < k and all(0 <= v < k for v in values)
            assert rec["answer"] == (rec["s0"] + 5 * d) % k
            assert rec["target"] == " " + task.encode(rec["answer"])
            spans = [rec["prompt"][a:b] for a, b in rec["signal_spans"]]
            assert spans == [task.encode(v) for v in signals]
            noise = [rec["prompt"][a:b] for a, b in rec["noise_spans"]]
            assert noise == [task.encode(v) for v in values[1::2]]
            assert (k == 13) != ood


def test_max_d_caps_the_step():
    task = ArithmeticTask(max_d=4, ood_k=(3, 20))
    ds = {ood: {r["d"] for r in task.records(500, seed=0, ood=ood)} for ood in (False, True)}
    assert ds[False] == {1, 2, 3, 4} and ds[True] == {1, 2, 3, 4}
    assert {r["d"] for r in task.records(300, seed=0, ood=True) if r["k"] == 3} == {1, 2}
    with pytest.raises(ParameterError, match="max_d"):
        ArithmeticTask(max_d=0)


def test_ood_moduli_are_drawn_from_the_set_without_13():
    ks = {rec["k"] for rec in ArithmeticTask().records(2000, seed=0, ood=True)}
    assert ks == set(range(5, 26)) - {13}


def test_files_are_seeded_and_test_prompts_avoid_train(tmp_path):
    a = write_arithmetic(tmp_path / "a", n_train=300, n_test=100, seed=7)
    b = write_arithmetic(tmp_path / "b", n_train=300, n_test=100, seed=7)
    c = write_arithmetic(tmp_path / "c", n_train=300, n_test=100, seed=8)
    assert sorted(a) == ["id_test", "id_train", "ood_test", "ood_train"]
    for split in a:
        assert a[split].read_bytes() == b[split].read_bytes()
        assert a[split].read_bytes() != c[split].read_bytes()
    for dist in ("id", "ood"):
        train = {json.loads(x)["prompt"] for x in a[f"{dist}_train"].read_text().splitlines()}
        test = [json.loads(x)["prompt"] for x in a[f"{dist}_test"].read_text().splitlines()]
        assert len(test) == 100 and not train & set(test)
    settings = json.loads((tmp_path / "a" / "task.json").read_text())
    assert settings["k"] == 13 and 13 not in settings["ood_k"]


def test_bad_settings_are_rejected():
    with pytest.raises(ParameterError, match="K = 30"):
        ArithmeticTask(ood_k=(5, 30))
    with pytest.raises(ParameterError, match="encoding"):
        ArithmeticTask(encoding="roman")
    with pytest.raises(ParameterError, match="length"):
        ArithmeticTask(length=2)
    assert parse_int_set("5-7, 9") == (5, 6, 7, 9)
    with pytest.raises(ParameterError):
        parse_int_set("5-x")


def test_word_tokenizer_makes_y_the_value_and_marks_signal_tokens(tmp_path):
    paths = write_arithmetic(tmp_path, n_train=20, n_test=20, seed=1)
    records = [json.loads(x) for x in paths["id_train"].read_text().splitlines()]
    words = data_words(records)
    # OOD letters (n..y) are in the vocabulary although ID data only holds a..m
    assert set(task_vocabulary(records[0])) <= set(words) and "y" in words
    tok = build_word_tokenizer(words)
    probe = load_probe_data(paths["ood_test"], tok, samples=None)
    for ex in probe.examples:
        assert tok.convert_ids_to_tokens(ex.target_id) == chr(97 + ex.meta["answer"])
        assert tok.unk_token_id not in ex.input_ids
        mask = signal_mask(ex)
        assert np.flatnonzero(mask).tolist() == [1, 5, 9, 13, 17]


def test_cli_writes_the_four_files(tmp_path):
    res = CliRunner().invoke(app, ["data", "arithmetic", "--out", str(tmp_path), "--n-train",
                                   "10", "--n-test", "5", "--ood-k", "5-8"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [
        "id_test.jsonl", "id_train.jsonl", "ood_test.jsonl", "ood_train.jsonl"]
    ks = {json.loads(x)["k"] for x in (tmp_path / "ood_train.jsonl").read_text().splitlines()}
    assert ks <= {5, 6, 7, 8}
    bad = CliRunner().invoke(app, ["data", "arithmetic", "--out", str(tmp_path), "--k", "40"])
    assert bad.exit_code == 2 and "K = 40" in bad.output and "Traceback" not in bad.output
