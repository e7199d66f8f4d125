"""The README's command examples are run on the sample store and must print what they show
(a stale example fails the build instead of misleading a newcomer)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from tests.conftest import gridmap_exe

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = re.compile(r"```sh\n\$ gridmap ([^\n]+)\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_examples():
    assert len(examples()) >= 2


def test_every_example_prints_what_the_readme_shows(sample_store):
    for command, shown in examples():
        out = subprocess.run([gridmap_exe(), "--store", str(sample_store),
                              *shlex.split(command)], capture_output=True, text=True,
                             timeout=120)
        printed = (out.stdout + out.stderr).rstrip("\n")
        assert printed == shown.rstrip("\n"), f"README example `gridmap {command}` is stale"
