from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from serve_app.cli import cli


def test_classify_jsonl(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"prompt": "Write a limerick about cats"}\n\n'
        '{"prompt": "Write a Rust function that parses a date"}\n'
        "not json\n"
        '{"text": "no prompt key"}\n'
        '{"prompt": "What is the capital of Spain?"}\n'
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["classify", "--input", str(src), "--output", str(out)])
    assert result.exit_code == 1  # two bad lines
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("task_type") for r in rows] == ["creative_writing", "coding", None, None, "simple_queries"]
    assert rows[2] == {"line": 4, "error": "not JSON: Expecting value"}
    assert rows[3]["line"] == 5 and "prompt" in rows[3]["error"]
    assert set(rows[0]) == {"task_type", "probabilities", "complexity"}


def test_classify_clean_file_exits_zero(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "hello"}\n')
    result = CliRunner().invoke(cli, ["classify", "--input", str(src), "--engine", "keyword"])
    assert result.exit_code == 0
    assert json.loads(result.output)["task_type"] in (
        "simple_queries",
        "creative_writing",
        "analysis",
        "coding",
    )


def test_check_config_reports_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("server: {port: 0}\n")
    result = CliRunner().invoke(cli, ["check-config", "--config", str(bad)])
    assert result.exit_code == 2
    assert "server.port" in result.output
    ok = CliRunner().invoke(cli, ["check-config"])
    assert ok.exit_code == 0 and "coding" in ok.output
