"""Each process's command line, read from the Procfile: the one place it is written.

`run_pipeline`, the tests' and the bench's process starters all ask here, so what they start is
what an operator's Procfile runner (honcho, foreman, a platform) starts. A line is expanded as the
runner's shell would: `$NAME`, `${NAME}` and `${NAME:-default}` from the environment given, then
split into words; `python` is this interpreter, and another program is taken from this
interpreter's directory when it is installed there (the virtualenv's `gunicorn`), else from PATH.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::-(?P<default>[^}]*))?\}|(?P<plain>\w+))")


def procfile_lines(path: Path = PROCFILE) -> dict[str, str]:
    """Process name -> its command line as written, in the file's order (comments and blank lines
    left out)."""
    lines = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            lines[name.strip()] = command.strip()
    return lines


def expand(command: str, environ: Mapping[str, str]) -> str:
    """`$NAME`, `${NAME}` and `${NAME:-default}` (the default also when NAME is set but empty, as in a
    shell); an unset variable without a default becomes empty."""

    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        default = match.group("default")
        if default is not None:
            return environ.get(name) or default
        return environ.get(name, "")

    return _VARIABLE.sub(value, command)


def procfile_command(
    name: str,
    *,
    environ: Mapping[str, str] | None = None,
    options: Mapping[str, str] | None = None,
    path: Path = PROCFILE,
) -> list[str]:
    """The argv of the Procfile's process `name`, expanded with `environ` (default: this process's
    environment). `options` sets `--flag value` pairs: a flag the line has gets the new value in
    place, another is appended (e.g. the tests' `--poll-seconds 1`)."""
    lines = procfile_lines(path)
    if name not in lines:
        raise KeyError(f"the Procfile has no process {name!r} (it has {', '.join(lines)})")
    argv = shlex.split(expand(lines[name], os.environ if environ is None else environ))
    for flag, flag_value in (options or {}).items():
        if flag in argv[:-1]:
            argv[argv.index(flag) + 1] = flag_value
        else:
            argv += [flag, flag_value]
    return [_program(argv[0]), *argv[1:]]


def _program(word: str) -> str:
    if word == "python":
        return sys.executable
    installed = Path(sys.executable).parent / word
    return str(installed) if installed.exists() else word
