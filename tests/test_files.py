"""The shared file helpers: the tolerant JSON reader every summary, trial record and stored measurement goes through."""

from __future__ import annotations

import os

from mlp_research.files import atomic_write, read_json_object


def test_an_absent_file_is_none_without_a_word(tmp_path, capsys):
    assert read_json_object(str(tmp_path / "summary.json")) is None
    assert capsys.readouterr().err == ""


def test_a_json_object_written_atomically_reads_back(tmp_path):
    path = str(tmp_path / "summary.json")
    atomic_write(path, '{"val_acc": 0.85}\n')
    assert read_json_object(path) == {"val_acc": 0.85}


def test_damage_is_one_warning_line_naming_the_path_and_the_reason(tmp_path, capsys):
    cases = {"truncated.json": '{"val_acc": 0.8', "list.json": "[1, 2]", "empty.json": ""}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    os.symlink(tmp_path / "nowhere.json", tmp_path / "dangling.json")  # a dangling link is damage, not absence
    for name in [*cases, "dangling.json"]:
        assert read_json_object(str(tmp_path / name)) is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4
    for name, line in zip([*cases, "dangling.json"], lines):
        assert line.startswith(f"warning: {tmp_path / name}: cannot read it (") and line.endswith("); ignoring it")
    assert "a JSON list, not an object" in lines[1] and "No such file or directory" in lines[3]


def test_the_caller_words_what_happens_instead(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{")
    assert read_json_object(str(tmp_path / "results.json"), "unreadable ({reason}); measuring again") is None
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {tmp_path / 'results.json'}: unreadable (") and "measuring again" in err
