"""Command-line options that belong where they are used (issue 10, point 10)."""

from __future__ import annotations

import pytest

import main as bot_main


def test_run_options_work_without_the_word_run_as_it_is_the_default() -> None:
    options = bot_main.parse_options(["--adopt", "--resume-halted"])
    assert (options.command, options.adopt, options.resume_halted) == ("run", True, True)
    assert bot_main.parse_options(["run", "--adopt"]).adopt


def test_the_demo_does_not_offer_live_trading(capsys: pytest.CaptureFixture[str]) -> None:
    assert bot_main.main(["demo", "--help"]) == 0
    assert "--live" not in capsys.readouterr().out
    assert bot_main.main(["demo", "--live"]) == 2
    assert "unrecognized arguments: --live" in capsys.readouterr().err


def test_refusals_name_the_config_file_that_was_given(tmp_path) -> None:
    """The refusal lines said "config.json" even when --config named another file."""
    from tests.conftest import run_main, write_json

    mine = write_json(tmp_path / "my-settings.json", {"dry_run": True})
    proc = run_main(["--config", str(mine), "--live", "--duration", "1"], cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert f"--live given but {mine} has dry_run true" in line and " config.json " not in line
