"""What a piece of code imports, run in a fresh interpreter (this one has imported everything)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys


def modules_imported_by(code: str, packages: tuple[str, ...]) -> list[str]:
    """Run ``code`` in a new Python process; return the modules of ``packages`` it imported.

    Raises
    ------
    AssertionError
        If the code fails (with its stderr).
    """
    script = (
        "import sys\n"
        f"{code}\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {packages!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return list(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
