"""The installed `zaya-data` command reaches every command the README documents."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_commands() -> list[str]:
    table = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"^\| `zaya-data (\w+)", table, flags=re.M)))


def test_the_readme_documents_every_command() -> None:
    assert documented_commands() == ["audit", "build", "explain", "export", "rsa", "show", "verify"]


@pytest.mark.parametrize("command", documented_commands())
def test_each_documented_command_answers_help_through_the_entry_point(command: str) -> None:
    r = subprocess.run([sys.executable, "-m", "zaya_data.cli", command, "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: zaya-data {command}")


def test_an_unknown_command_is_a_usage_error() -> None:
    r = subprocess.run([sys.executable, "-m", "zaya_data.cli", "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 'frobnicate'" in r.stderr
