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
