"""Atomic text files behind the result tables."""

import csv

import pytest

from promptrl.common.files import csv_text, write_text_atomic


def test_write_text_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "deep" / "table.md"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.md"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results" / "table.csv"
    write_text_atomic(path, "kept")
    with pytest.raises(TypeError):
        write_text_atomic(path, None)  # type: ignore[arg-type]
    assert path.read_text() == "kept"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]  # no temp file left behind


def test_csv_text_round_trips_quotes_and_commas():
    rows = [["cheetah-vel", "Prompt Diffuser (dt)", "-49.2"], ["ant-dir", 'a, "quoted" name', "1"]]
    text = csv_text(["suite", "method", "mean"], rows)
    assert list(csv.reader(text.splitlines())) == [["suite", "method", "mean"], *rows]
