"""The ``bastion`` entry point only dispatches: every command listed, each loaded only when run.

Start-up cost is measured in ``bench/`` (``python -X importtime``); these tests pin what is
loaded, which is what the cost follows from.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import COMMANDS, Command, build_parser, main

REPO = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("gateway", "pki", "inference")
# What a command's module may load only when that command needs it: the ML stack and the web
# server stack. None of it belongs on the path of `bastion --help` or `bastion audit verify`.
HEAVY = ("torch", "transformers", "spacy", "presidio_analyzer", "uvicorn", "starlette")
COMMAND_MODULES = (
    "gateway.cli.serve",
    "gateway.cli.dev",
    "gateway.cli.pki",
    "gateway.cli.policy",
    "gateway.cli.audit",
    "gateway.cli.secrets",
    "gateway.cli.bundle",
    "gateway.cli.doctor",
    "pki.cli.hsm",
    "inference.cli.model",
    "inference.cli.worker",
)


def _modules_after(code: str, *args: str) -> dict[str, object]:
    """Run ``code`` (which sets ``rc``) in a fresh interpreter; return rc and what it imported."""
    script = (
        "import json, sys\n"
        f"{code}\n"
        "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`bastion --help` names every command with its help line, in the table's order."""
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    positions = [out.find(f"    {command.name} ") for command in COMMANDS]
    assert all(p >= 0 for p in positions), out
    assert positions == sorted(positions)
    flat = " ".join(out.split())
    for command in COMMANDS:
        assert " ".join(command.help.split()) in flat


@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_each_command_module_loads_and_registers_its_name(command: Command) -> None:
    """Each command's module imports, adds a parser under its name with the help line that
    `bastion --help` shows, and gives every action it accepts a function to run."""
    parser = argparse.ArgumentParser(prog="bastion")
    subparsers = parser.add_subparsers(dest="command")
    command.load()(subparsers)
    assert list(subparsers.choices) == [command.name]
    [listed] = subparsers._choices_actions
    assert listed.help == command.help
    own = subparsers.choices[command.name]
    actions = [a for a in own._actions if isinstance(a, argparse._SubParsersAction)]
    leaves = list(actions[0].choices.values()) if actions else [own]
    for leaf in leaves:
        assert callable(leaf.get_default("func")), leaf.prog


def test_the_table_names_each_command_module_once() -> None:
    """Every module that defines a command is reached by exactly one entry of the table, so a
    new command cannot exist without `bastion` knowing it (nor be dropped silently)."""
    source = (REPO / "gateway/cli/__init__.py").read_text(encoding="utf-8")
    loaded = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".cli"):
            loaded += [f"{node.module}.{alias.name}" for alias in node.names]
    assert sorted(loaded) == sorted(COMMAND_MODULES)
    assert len({c.name for c in COMMANDS}) == len(COMMANDS) == len(COMMAND_MODULES)


def test_help_loads_no_command_module() -> None:
    """`bastion --help` imports the dispatcher and the error root only: no command's module,
    no config models, nothing heavy."""
    result = _modules_after(
        "from gateway.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    rc = exc.code"
    )
    assert result["rc"] == 0
    modules = set(result["modules"])  # type: ignore[call-overload]
    assert not modules & set(COMMAND_MODULES)
    assert not {m for m in modules if m.split(".")[0] in ("pydantic", *HEAVY)}


def test_running_one_command_loads_only_that_command(tmp_path: Path) -> None:
    """`bastion audit verify` loads the audit command and the audit package, and no other
    command's module, no torch, spaCy, Presidio or web server."""
    from gateway.audit import AuditConfig, open_store

    trail = tmp_path / "audit.db"
    open_store(AuditConfig(backend="sqlite", path=trail), create=True).close()
    result = _modules_after(
        "from gateway.cli import main\nrc = main(sys.argv[1:])",
        "audit",
        "verify",
        "--sqlite",
        str(trail),
    )
    assert result["rc"] in (0, 1)  # an empty trail may verify or be refused; never a traceback
    modules = set(result["modules"])  # type: ignore[call-overload]
    assert "gateway.audit" in modules
    assert modules & set(COMMAND_MODULES) == {"gateway.cli.audit"}
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


def test_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelled command is a usage error naming the choices, not a silent no-op."""
    with pytest.raises(SystemExit) as stop:
        build_parser(["audti"]).parse_args(["audti"])
    assert stop.value.code == 2
    assert "invalid choice: 'audti'" in capsys.readouterr().err


def _string_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_product_module_imports_by_string() -> None:
    """Product code imports with `import` statements only, so mypy and readers see every seam
    (no importlib.import_module, no __import__)."""
    offenders = [
        hit
        for package in PRODUCT_PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for hit in _string_imports(path)
    ]
    assert offenders == []


@pytest.mark.parametrize("command", ["serve", "worker", "dev"], ids=["serve", "worker", "dev"])
def test_a_command_help_loads_no_config_models(command: str) -> None:
    """`bastion serve --help` (and worker, dev) registers its options without importing the
    config models, the web server or the ML stack."""
    result = _modules_after(
        "from gateway.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    rc = exc.code",
        command,
        "--help",
    )
    assert result["rc"] == 0
    modules = set(result["modules"])  # type: ignore[call-overload]
    assert not modules & {"gateway.config", "inference.config", "pki.hsm"}
    assert not {m for m in modules if m.split(".")[0] in ("pydantic", *HEAVY)}
