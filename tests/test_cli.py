"""The roadcover command line: help, version, stage commands and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import __version__
from pipeline.cli import EXIT_ERROR, main
from tests.imports import modules_imported_by


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("roads", "ingest", "snap", "coverage", "export", "simulate", "run"):
        assert command in out


def test_help_lists_the_stages_one_per_line_in_data_order() -> None:
    roadcover = Path(sys.executable).with_name("roadcover")
    done = subprocess.run([roadcover, "--help"], capture_output=True, text=True, check=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert not [line for line in lines if "\\b" in line or "\b" in line]
    stages, also = (
        lines.index("  Stages, in the order data flows through them:"),
        lines.index("  Also:"),
    )
    listed = [line.split()[0] for line in lines[stages + 1 : also]]
    assert listed == ["roads", "ingest", "snap", "coverage", "export"]  # DESIGN.md's chain
    # the export line names every export command
    export_line = lines[stages + 1 + listed.index("export")]
    commands = subprocess.run(
        [roadcover, "export", "--help"], capture_output=True, text=True, check=True
    )
    exports = commands.stdout.split("Commands:", 1)[1].split()
    for command in ("tiles", "feed", "priorities"):
        assert command in exports and command in export_line, export_line
    tools = [line.split()[0] for line in lines[also + 1 : lines.index("Options:")]]
    assert tools == ["simulate", "run", "serve", "keys", "credits", "storage"]


def test_roads_build_writes_the_roads_folder(tiny_osm: Path, tmp_path: Path) -> None:
    assert main(["roads", "build", str(tiny_osm), "-o", str(tmp_path / "roads")]) == 0
    assert {p.name for p in (tmp_path / "roads").iterdir()} == {
        "edges.parquet", "nodes.parquet", "meta.json", ".roadcover.lock"
    }  # fmt: skip


def test_bad_input_is_one_line_on_stderr_with_no_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.osm.pbf"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "roads", "build", str(missing), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_ERROR
    assert result.stderr.strip() == f"roadcover: error: {missing}: OSM extract not found"


def test_an_unwritable_output_is_one_line_naming_it(tiny_osm: Path) -> None:
    # /dev/null is a file, so no folder can be made under it (root may write anywhere else)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "roads", "build", str(tiny_osm), "-o",
         "/dev/null/roads"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == EXIT_ERROR
    assert result.stderr.strip().splitlines()[-1] == (
        "roadcover: error: /dev/null/roads: Not a directory"
    )
    assert "Traceback" not in result.stderr


def test_bad_config_is_reported_with_the_key(tmp_path: Path, tiny_osm: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("regions: [{name: x, osm: x.osm}]\nroads: {network: boats}\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "roads", "build", str(tiny_osm), "-o", str(tmp_path),
         "--config", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == EXIT_ERROR
    assert "'roads.network' has value 'boats'" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_imports_no_data_library() -> None:
    """A command imports its stage, the config loader and I/O itself; --help needs none."""
    heavy = ("pandas", "geopandas", "pyarrow", "shapely", "jsonschema", "yaml")
    code = "from pipeline.cli import main\nassert main(['--help']) == 0"
    assert modules_imported_by(code, heavy) == []


def test_the_process_command_imports_its_stage_with_the_collector_paused() -> None:
    """In its own process, ``roadcover snap`` imports its modules with no collection running
    and freezes what they made (then collects again, as before); a call of ``main`` does not.

    Checked in fresh interpreters, around modules not imported yet (whose import runs
    collections as a call's does): in the command's process their objects end frozen with no
    collection during the import, and the collector is on after; as a call, nothing is frozen.
    """
    code = (
        "import gc, json\nimport pipeline.cli as cli\ncli._OWN_PROCESS = {own}\n"
        "counts = []\ngc.callbacks.append(lambda phase, info: counts.append(phase))\n"
        "before = gc.get_freeze_count()\n"
        "with cli._imports_out_of_collection():\n"
        "    import difflib, email.message, fractions, ipaddress, statistics\n"
        "print(json.dumps([gc.get_freeze_count() - before, len(counts), gc.isenabled()]))"
    )
    found = {}
    for own in (True, False):
        done = subprocess.run(
            [sys.executable, "-c", code.format(own=own)], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        found[own] = json.loads(done.stdout.splitlines()[-1])
    frozen, collections, enabled = found[True]
    assert frozen > 100 and collections == 0 and enabled
    assert found[False][0] == 0 and found[False][1] > 0 and found[False][2]


def test_the_process_command_leaves_its_objects_to_the_exit_a_call_does_not() -> None:
    """``main()`` of the process's command line freezes the objects left out of the garbage
    collector (the exit would go through them all); ``main(args)``, a call, changes nothing."""
    import gc
    import json

    code = (
        "import gc, json, sys\nfrom pipeline.cli import main\n"
        "sys.argv = ['roadcover', '--version']\nbefore = gc.get_freeze_count()\n"
        "status = main()\nprint(json.dumps([status, before, gc.get_freeze_count()]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    status, before, after = json.loads(done.stdout.splitlines()[-1])
    assert status == 0 and before == 0 and after > 1000  # the modules' objects, at least
    frozen = gc.get_freeze_count()
    assert main(["--version"]) == 0
    assert gc.get_freeze_count() == frozen


def test_a_local_path_argument_is_parsed_without_the_config_loader(tmp_path: Path) -> None:
    """A command's path arguments are checked without importing storage or the config loader
    (a command imports those when it runs, with the collector paused); a URL's scheme is."""
    code = (
        "from pipeline.cli import Location\n"
        f"assert Location(file_okay=False).convert({str(tmp_path)!r}, None, None).is_dir()"
    )
    loaders = {"pipeline.storage", "pipeline.config", "jsonschema", "yaml"}
    packages = ("pipeline", "jsonschema", "yaml")
    assert sorted(loaders & set(modules_imported_by(code, packages))) == []
    url = "from pipeline.cli import Location\nLocation().convert('s3://bucket/x', None, None)"
    assert "pipeline.storage" in modules_imported_by(url, packages)


def test_the_process_command_imports_numba_with_coverage_hidden_unless_it_measures() -> None:
    """In its own process, ``roadcover snap``'s imports do not see coverage.py (numba would
    import its 41 modules); as a call, or under a coverage measurement started with the
    process (coverage.py already imported), they do, and coverage.py stays importable."""
    code = (
        "import json, sys\nimport pipeline.cli as cli\ncli._OWN_PROCESS = {own}\n"
        "{measured}"
        "with cli._hidden_from_numba():\n"
        "    import numba.misc.coverage_support as support\n"
        "seen = support.coverage_available\nimport coverage\n"
        "print(json.dumps([seen, coverage.Coverage is not None]))"
    )
    found = {}
    for own, measured in ((True, ""), (False, ""), (True, "import coverage\n")):
        script = code.format(own=own, measured=measured)
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        found[own, measured != ""] = json.loads(done.stdout.splitlines()[-1])
    assert found == {(True, False): [False, True], (False, False): [True, True],
                     (True, True): [True, True]}  # fmt: skip


def test_the_process_command_hides_yaml_from_numba_unless_numba_has_its_config_file(
    tmp_path: Path,
) -> None:
    """In its own process, ``roadcover snap``'s imports do not see PyYAML, which numba imports
    to read ``.numba_config.yaml`` in the working folder; with that file there they do, and
    numba takes its settings from it."""
    code = (
        "import json, sys\nimport pipeline.cli as cli\ncli._OWN_PROCESS = True\n"
        "with cli._hidden_from_numba():\n    import numba\n"
        "print(json.dumps([numba.config.BOUNDSCHECK, 'yaml' in sys.modules]))"
    )
    env = {name: value for name, value in os.environ.items() if name != "NUMBA_BOUNDSCHECK"}
    found = {}
    for name, numba_config in (("plain", None), ("configured", "boundscheck: 1\n")):
        folder = tmp_path / name
        folder.mkdir()
        if numba_config is not None:
            (folder / ".numba_config.yaml").write_text(numba_config, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            cwd=folder, env=env,
        )  # fmt: skip
        found[name] = json.loads(done.stdout.splitlines()[-1])
    assert found == {"plain": [None, False], "configured": [1, True]}


_EXIT_SCRIPT = """
import atexit, logging, sys, threading, time
import pipeline.cli as cli

class TornDown:
    def __del__(self):
        print("torn down", flush=True)

left = TornDown()  # a module's object: finalized when Python tears the modules down
atexit.register(print, "exit handler")
logging.basicConfig(stream=sys.stderr)
logging.getLogger("probe").warning("logged")
sys.stdout.write("unflushed ")  # buffered: stdout is a pipe
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
cli._exit_at_once(3)
print("returned")
"""


@pytest.mark.parametrize("case", ["alone", "thread"])
def test_the_exit_at_once_runs_the_exit_handlers_and_flushes_unless_a_thread_runs(
    case: str,
) -> None:
    """Alone, the process ends with the status given: exit handlers run, output flushed,
    modules not torn down. With a (non-daemon) thread running, Python's exit waits for it."""
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, case], capture_output=True, text=True, timeout=60
    )
    assert "logged" in done.stderr
    if case == "alone":
        assert (done.returncode, done.stdout.split()) == (3, ["unflushed", "exit", "handler"])
    else:
        assert done.returncode == 0
        assert done.stdout.split() == ["unflushed", "returned", "thread", "done", "exit",
                                       "handler", "torn", "down"]  # fmt: skip
