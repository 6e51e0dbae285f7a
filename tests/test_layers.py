"""The layers of pyproject.toml's [tool.importlinter] hold (docs/architecture.md): nothing imports a
higher layer and no app's modules import each other in a cycle. `make test` runs `lint-imports`
too; this keeps a plain `pytest` run honest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_linter_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
