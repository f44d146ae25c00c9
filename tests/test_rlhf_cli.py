"""``python -m llmcourse.rlhf``: one entry point that hands each command to its module."""

from __future__ import annotations

import pytest

from llmcourse.rlhf.__main__ import COMMANDS, main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"python -m llmcourse.rlhf {name}" in out for name in COMMANDS)


@pytest.mark.parametrize("argv", [[], ["bogus"]])
def test_a_missing_or_unknown_command_is_an_error(argv, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "choose from reward, dpo, ppo, grpo, course" in err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_reaches_its_module(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    assert f"llmcourse.rlhf.{name}" in capsys.readouterr().out  # the module's own usage line
