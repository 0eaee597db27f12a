"""The documentation stays true to the code: the module map, the command line, no machine
paths and no example that stops working on a later date."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import attrs

from twisted_rta.aggregation.rules import AGGREGATIONS, MetricRule, builtin_rules, web_rules
from twisted_rta.config import load_config, rules_of
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


def readme_yaml_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```yaml\n(.*?)^```", readme, re.S | re.M)


def test_every_yaml_example_in_the_readme_loads(tmp_path: Path) -> None:
    blocks = readme_yaml_blocks()
    assert blocks, "the README shows metric rules"
    for index, block in enumerate(blocks):
        path = tmp_path / f"block{index}.yaml"
        path.write_text(block, encoding="utf-8")
        config = load_config(path)  # raises ConfigError naming the key path
        rules_of(config.metrics.builtin, config.metrics.rules, web=config.metrics.web)


def test_the_readme_writes_the_builtin_preset_as_its_rules(tmp_path: Path) -> None:
    (preset,) = [block for block in readme_yaml_blocks() if "builtin: false" in block]
    path = tmp_path / "preset.yaml"
    path.write_text(preset, encoding="utf-8")
    written = [rule for rule in load_config(path).metrics.rules if isinstance(rule, MetricRule)]
    # The preset is bounded by limits.max_dimension_values, a written rule by max_series.
    assert [attrs.evolve(rule, max_series=None) for rule in written] == list(builtin_rules())


def test_the_readme_writes_the_web_preset_as_its_rules(tmp_path: Path) -> None:
    (preset,) = [block for block in readme_yaml_blocks() if "web: false" in block]
    path = tmp_path / "web.yaml"
    path.write_text(preset, encoding="utf-8")
    written = [rule for rule in load_config(path).metrics.rules if isinstance(rule, MetricRule)]
    # The preset is bounded by limits.max_dimension_values, a written rule by max_series.
    assert [attrs.evolve(rule, max_series=None) for rule in written] == list(web_rules())


def test_the_commented_rules_of_the_shipped_config_load(tmp_path: Path) -> None:
    text = (REPO / "config" / "rta.yaml").read_text(encoding="utf-8")
    section = text[text.index("\nmetrics:\n") :]
    lines = section.splitlines()
    start = lines.index("  #   rules:")
    uncommented = [
        "  " + line.removeprefix("  #   ") if i >= start and line.startswith("  #   ") else line
        for i, line in enumerate(lines)
        if line.strip() != "rules: []"
    ]
    path = tmp_path / "rta.yaml"
    path.write_text("\n".join(uncommented) + "\n", encoding="utf-8")
    config = load_config(path)
    rules = rules_of(config.metrics.builtin, config.metrics.rules, web=config.metrics.web)
    examples = [rule for rule in config.metrics.rules if isinstance(rule, MetricRule)]
    shown = {aggregation for rule in examples for aggregation, _ in rule.aggregations()}
    assert shown == set(AGGREGATIONS) and rules.drops, "an example of each kind and a drop"
