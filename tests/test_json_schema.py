"""One JSON schema for every --json: docs/json.schema.json covers every command that has --json, refuses the old
keys, and accepts docs/json.md's examples and the committed benchmark results. (Each command's real output is
checked against it where that command is tested, through the `valid_report` fixture.)"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import click
import pytest
from jsonschema import Draft202012Validator

from prosemc.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "json.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
EXAMPLES = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", (ROOT / "docs" / "json.md").read_text(),
                                                       re.S)]
ALIASES = {"cache": "cache list"}  # `prosemc cache --json` is `cache list --json`


def json_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every command path (as "cache list") whose command takes --json."""
    found = set()
    for name, command in group.commands.items():
        path = prefix + (name,)
        if any("--json" in getattr(param, "opts", ()) for param in command.params):
            found.add(ALIASES.get(" ".join(path), " ".join(path)))
        if isinstance(command, click.Group):
            found |= json_commands(command, path)
    return found


def errors(document: dict) -> list[str]:
    """One line per violation: where, and the message with the offending value itself left out (it can be long)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message.replace(repr(e.instance), '<value>')[:300]}"
            for e in VALIDATOR.iter_errors(document)]


def test_the_schema_is_valid_and_names_every_command_with_json():
    Draft202012Validator.check_schema(SCHEMA)
    commands = set(SCHEMA["$defs"]["node"]["then"]["properties"]["command"]["enum"])
    assert json_commands(cli) == commands
    dispatched = {rule["if"]["properties"]["command"]["const"] for rule in SCHEMA["allOf"] if "if" in rule}
    assert dispatched == commands  # every command has its own required keys


def test_docs_have_a_valid_example_of_every_command():
    for example in EXAMPLES:
        assert errors(example) == [], example["command"]
    assert {e["command"] for e in EXAMPLES} == set(SCHEMA["$defs"]["node"]["then"]["properties"]["command"]["enum"])
    assert any("results" in e for e in EXAMPLES if e["command"] == "encode")  # a batch too
    assert any("results" in e for e in EXAMPLES if e["command"] == "query")


def example(command: str) -> dict:
    return copy.deepcopy(next(e for e in EXAMPLES if e["command"] == command and "results" not in e))


@pytest.mark.parametrize("change, complaint", [
    (lambda d: d.update(encoder="lite"), "should not be valid"),                          # the old name of `model`
    (lambda d: d.update(codec="metaae/1"), "is not valid under any of the given schemas"),  # codec is an object
    (lambda d: d.update(layers=6), "is not of type 'array'"),                           # layers is a list
    (lambda d: d.update(total_bytes=10), "should not be valid"),
    (lambda d: d["layers"][0].update(layer_bytes=[1]), "should not be valid"),          # at every depth
    (lambda d: d["layers"][0].pop("bytes"), "'bytes' is a required property"),
    (lambda d: d.update(tokens=[49, 1280]), "is not valid under any of the given schemas"),
    (lambda d: d.update(schema=2), "1 was expected"),
    (lambda d: d.pop("timings_ms"), "'timings_ms' is a required property"),
])
def test_the_schema_refuses_the_old_keys_and_shapes(change, complaint):
    document = example("encode")
    assert errors(document) == []
    change(document)
    assert any(complaint in line for line in errors(document)), errors(document)


def test_committed_benchmark_results_follow_the_schema():
    results = {path.name: json.loads(path.read_text()) for path in sorted((ROOT / "docs" / "bench").glob("*.json"))}
    current = {name: doc for name, doc in results.items() if "schema" in doc}
    assert {"speed-metaae.json", "container.json"} <= set(current)  # rerun since schema 1
    for name, document in current.items():
        assert errors(document) == [], name
