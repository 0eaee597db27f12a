"""The documentation stays true to the code: the module map, the command line, no machine
paths and no example that stops working on a later date."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from twisted_rta.tap import Options

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO / name for name in listed if (REPO / name).is_file()]


def test_every_module_is_in_the_module_map_and_every_listed_one_exists() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    listed = set(re.findall(r"`((?:twisted_rta|twisted/plugins)/[\w/]+\.py)`", text))
    modules = {
        str(path.relative_to(REPO))
        for root in ("twisted_rta", "twisted/plugins")
        for path in (REPO / root).rglob("*.py")
    }
    # Empty package markers say nothing worth a row.
    modules = {name for name in modules if (REPO / name).stat().st_size or "__init__" not in name}
    assert sorted(modules - listed) == [], "modules missing from docs/architecture.md"
    assert sorted(listed - modules) == [], "docs/architecture.md lists modules that are gone"


def test_the_readme_documents_every_command_line_option() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    options = Options()
    names = [parameter[0] for parameter in options.optParameters]
    names += [name[4:].replace("_", "-") for name in dir(options) if name.startswith("opt_")]
    names = [name for name in names if name not in ("help",)]
    missing = [name for name in names if f"--{name}" not in section]
    assert missing == []


def test_the_readme_points_only_inside_the_repository() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "../shared" not in readme and "DESIGN.md" not in readme
    assert "docs/architecture.md" in readme


def test_no_committed_file_names_a_path_of_a_developer_machine() -> None:
    machine_path = re.compile(r"(?<![\w.])/(?:work|root|home/\w+)/")
    offenders = [
        str(path.relative_to(REPO))
        for path in tracked_files()
        if path.suffix in {".md", ".py", ".yaml", ".yml", ".toml", ".service", ".socket", ".lua"}
        and path.name != "test_docs.py"
        and machine_path.search(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []


def test_readme_request_examples_carry_no_fixed_date() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    requests = [line for line in readme.splitlines() if line.lstrip().startswith("-d ")]
    assert requests, "the README shows request bodies"
    dated = [line for line in requests if re.search(r"\d{4}-\d{2}-\d{2}T", line)]
    assert dated == []
