"""The docs a user reads stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from carafe.cli.config_cmd import reference_markdown
from carafe.cli.main import app

REPO = Path(__file__).resolve().parent.parent


def test_configuration_reference_is_generated_from_the_models() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == reference_markdown(), (
        "docs/configuration.md is stale: run `carafe config reference > docs/configuration.md`"
    )


def test_readme_commands_exist_in_the_cli() -> None:
    readme = (REPO / "README.md").read_text()
    runner = CliRunner()
    used = set(re.findall(r"^carafe ([a-z]+(?: [a-z]+)?)", readme, flags=re.M))
    assert used, "README shows no carafe commands"
    for command in sorted(used):
        out = runner.invoke(app, [*command.split(), "--help"])
        assert out.exit_code == 0, f"`carafe {command}` in README.md does not exist: {out.output}"


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_example_config_loads() -> None:
    from carafe.config import load_config

    cfg = load_config(REPO / "examples" / "carafe.yaml")
    assert cfg.indexer.sources and (REPO / cfg.indexer.sources[0].path).is_dir()
