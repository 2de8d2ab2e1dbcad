"""The layout in docs/architecture.md names the repository's real files and folders."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NESTED_INDENT = 2  # a name indented this much lies in the folder of the line above it


def layout_paths(text: str) -> list[str]:
    """Return the paths the ``## Layout`` block names, each relative to the repository root."""
    block = re.search(r"^## Layout\n+```\n(.*?)```", text, re.MULTILINE | re.DOTALL)
    assert block, "docs/architecture.md has no ## Layout code block"
    paths: list[str] = []
    folder = ""
    for line in block.group(1).splitlines():
        indent = len(line) - len(line.lstrip(" "))
        names = re.split(r"\s{2,}", line.strip())[0]
        if indent > NESTED_INDENT or not names:
            continue  # the continuation of a description
        prefix = folder if indent == NESTED_INDENT else ""
        for name in names.split(", "):
            paths.append(prefix + name.split(" ")[0])
        if indent == 0 and names.endswith("/"):
            folder = names
    return paths


def test_every_path_of_the_layout_exists() -> None:
    paths = layout_paths((ROOT / "docs" / "architecture.md").read_text())
    assert {"pipeline/simulate/", "pipeline/workflow_files/", "pipeline/configs/demo.yaml"} <= set(
        paths
    )
    assert [path for path in paths if not (ROOT / path).exists()] == []


def test_a_layout_naming_a_missing_folder_is_caught() -> None:
    text = "## Layout\n\n```\npipeline/    the package\n  nowhere/   not a folder\n```\n"
    assert layout_paths(text) == ["pipeline/", "pipeline/nowhere/"]
    assert not (ROOT / "pipeline" / "nowhere").exists()
