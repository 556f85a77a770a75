"""`therapy-db deploy`: deploy.yaml's validation, the bundles it builds, and the
gcloud commands it prints or runs.

The bundle tests do what Cloud Functions does with an upload: each function's
bundle is copied alone into an empty folder, its requirements.txt is installed
into a fresh virtual environment (one per distinct requirements file, made once
per run, from pip's cache), and `functions-framework --source main.py --target
<entry_point>` serves it from that folder with that environment's Python and no
access to the repository. It must answer requests. The same functions must keep
serving from the repository root, as the README's local run does.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import http.client
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.ops import cli
from shared.ops.deploy import (
    DeployConfigError, DeployError, REQUIRED_SETTINGS, SECRET_SETTINGS, build_bundle, defined_functions, deploy,
    load_config, pinned_requirements, requirements_text, runtime_requirements, shared_modules,
)
from shared.ops.localpg import free_port
from shared.settings import ENVIRONMENT_VARIABLES
from tests.functions_fixtures import JWT_SECRET, LINK_SECRET, service_token, user_token

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = load_config(REPO_ROOT)
FUNCTIONS = [spec.name for spec in CONFIG.functions]
SERVER_START_SECONDS = 60
DEV_ONLY = ("pytest", "pyyaml", "selenium", "schemathesis", "hypothesis")
SECRET_VALUES = {
    "DATABASE_URL": "postgresql://functions:db-password-7f3a9c@db.example.test:5432/postgres",
    "SUPABASE_JWT_SECRET": "jwt-secret-value-c0ffee-0123456789abcdef0123456789",
    "CANCELLATION_LINK_SECRET": "link-secret-value-b16b00b5-0123456789abcdef",
    "GOOGLE_SERVICE_ACCOUNT_JSON": '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQ-fake\\n"}',
}
PLAIN_VALUES = {
    "PUBLIC_FUNCTIONS_URL": "https://europe-west1-therapy.cloudfunctions.net",
    "GOOGLE_CALENDAR_DELEGATE": "true",
    "SENTRY_DSN": "https://public-key@o1.ingest.sentry.io/2",
}


# -- deploy.yaml's validation ---------------------------------------------------------------

@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The parts of the repository deploy.yaml is checked against: functions/ and deploy.yaml."""
    shutil.copytree(REPO_ROOT / "functions", tmp_path / "functions",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "deploy.yaml", tmp_path / "deploy.yaml")
    return tmp_path


def _edit(root: Path, change) -> None:
    document = yaml.safe_load((root / "deploy.yaml").read_text())
    change(document)
    (root / "deploy.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def _function(document: dict, name: str) -> dict:
    return next(entry for entry in document["functions"] if entry["name"] == name)


def _set(path: list, value: Any):
    def change(document: dict) -> None:
        target = document
        for key in path[:-1]:
            target = _function(target, key) if key in FUNCTIONS else target[key]
        target[path[-1]] = value
    return change


def _drop(path: list):
    def change(document: dict) -> None:
        target = document
        for key in path[:-1]:
            target = _function(target, key) if key in FUNCTIONS else target[key]
        del target[path[-1]]
    return change


def _unlist(name: str):
    def change(document: dict) -> None:
        document["functions"] = [entry for entry in document["functions"] if entry["name"] != name]
    return change


def _duplicate(name: str):
    def change(document: dict) -> None:
        document["functions"].append(copy.deepcopy(_function(document, name)))
    return change


FUNCTION_KEYS = "name, source, entry_point, trigger, schedule, settings, memory, timeout, max_instances"
UNKNOWN_SETTING = "(not in shared.settings.ENVIRONMENT_VARIABLES)"

MISTAKES = [
    ("unknown top-level key", _set(["function"], []),
     ["deploy.yaml: unknown key 'function' (known: defaults, secrets, env, functions)"]),
    ("unknown function key", _set(["booking-create", "entrypoint"], "booking_create"),
     [f"deploy.yaml: function booking-create: unknown key 'entrypoint' (known: {FUNCTION_KEYS})"]),
    ("missing entry point", _drop(["booking-cancel", "entry_point"]),
     ["deploy.yaml: function booking-cancel: missing key 'entry_point'"]),
    ("entry point main.py does not define", _set(["booking-cancel", "entry_point"], "booking_cancell"),
     ["deploy.yaml: function booking-cancel: entry point 'booking_cancell' is not a function defined in "
      "functions/booking-cancel/main.py"]),
    ("entry point main.py only imports", _set(["booking-cancel", "entry_point"], "cancel_booking"),
     ["deploy.yaml: function booking-cancel: entry point 'cancel_booking' is not a function defined in "
      "functions/booking-cancel/main.py"]),
    ("source without main.py", _set(["token-cancel", "source"], "functions/token_cancel"),
     ["deploy.yaml: function token-cancel: source functions/token_cancel has no main.py",
      "deploy.yaml: functions/token-cancel has a main.py but is not listed under functions:"]),
    ("function folder not listed", _unlist("calendar-sync"),
     ["deploy.yaml: functions/calendar-sync has a main.py but is not listed under functions:"]),
    ("function listed twice", _duplicate("booking-create"),
     ["deploy.yaml: function booking-create: listed twice"]),
    ("unknown setting", _set(["booking-create", "settings"], ["DATABASE_URL", "DATABASE_URI"]),
     [f"deploy.yaml: function booking-create: unknown setting 'DATABASE_URI' {UNKNOWN_SETTING}"]),
    ("secret setting not under secrets", _drop(["secrets", "CANCELLATION_LINK_SECRET"]),
     ["deploy.yaml: function booking-create: CANCELLATION_LINK_SECRET holds a secret; list it under secrets: so "
      "that it comes from Secret Manager",
      "deploy.yaml: function token-cancel: CANCELLATION_LINK_SECRET holds a secret; list it under secrets: so "
      "that it comes from Secret Manager",
      "deploy.yaml: function booking-reschedule: CANCELLATION_LINK_SECRET holds a secret; list it under secrets: "
      "so that it comes from Secret Manager",
      "deploy.yaml: function notifications: CANCELLATION_LINK_SECRET holds a secret; list it under secrets: so "
      "that it comes from Secret Manager"]),
    ("unknown setting under secrets", _set(["secrets", "JWT_SECRET"], "jwt"),
     [f"deploy.yaml: secrets: unknown setting 'JWT_SECRET' {UNKNOWN_SETTING}"]),
    ("secret's value written in env", _set(["env", "SUPABASE_JWT_SECRET"], "not-so-secret"),
     ["deploy.yaml: env: SUPABASE_JWT_SECRET is a secret; list it under secrets: instead of writing its value here"]),
    ("unknown setting in env", _set(["env", "PROXY_HOPS"], 1),
     [f"deploy.yaml: env: unknown setting 'PROXY_HOPS' {UNKNOWN_SETTING}"]),
    ("unknown trigger", _set(["booking-create", "trigger"], "cron"),
     ["deploy.yaml: function booking-create: trigger must be http or schedule, got 'cron'"]),
    ("scheduled function without schedule", _drop(["calendar-sync", "schedule"]),
     ["deploy.yaml: function calendar-sync: a scheduled function needs schedule: (a cron expression)"]),
    ("schedule that is not cron", _set(["recurring-dispatcher", "schedule"], "daily at 2"),
     ["deploy.yaml: function recurring-dispatcher: schedule must be a five-field cron expression, got 'daily at 2'"]),
    ("schedule on an http function", _set(["booking-create", "schedule"], "0 2 * * *"),
     ["deploy.yaml: function booking-create: schedule is only for trigger: schedule"]),
    ("unknown default", _set(["defaults", "cpu"], 2),
     ["deploy.yaml: defaults: unknown key 'cpu' (known: runtime, region, memory, timeout, max_instances, "
      "allow_unauthenticated)"]),
    ("runtime older than the project", _set(["defaults", "runtime"], "python310"),
     ["deploy.yaml: defaults: runtime must be python311 or a later Python runtime, got 'python310'"]),
    ("memory without unit", _set(["defaults", "memory"], 256),
     ["deploy.yaml: defaults: memory must look like 256Mi or 1Gi, got 256"]),
    ("timeout in minutes", _set(["recurring-dispatcher", "timeout"], "9m"),
     ["deploy.yaml: function recurring-dispatcher: timeout must be seconds from 1s to 3600s, got '9m'"]),
    ("no instances", _set(["calendar-sync", "max_instances"], 0),
     ["deploy.yaml: function calendar-sync: max_instances must be a whole number of at least 1, got 0"]),
    ("function name gcloud refuses", _set(["booking-create", "name"], "Booking_Create"),
     ["deploy.yaml: function Booking_Create: name must be lower-case letters, digits and hyphens, starting with a "
      "letter"]),
]


@pytest.mark.parametrize("change, expected", [pytest.param(change, expected, id=name)
                                              for name, change, expected in MISTAKES])
def test_deploy_yaml_mistake_is_reported_in_one_line(repo_copy: Path, change, expected: list[str]):
    _edit(repo_copy, change)
    with pytest.raises(DeployConfigError) as raised:
        load_config(repo_copy)
    assert raised.value.problems == expected
    assert all("\n" not in problem for problem in raised.value.problems)


def test_deploy_yaml_that_is_not_yaml_names_the_line(repo_copy: Path):
    (repo_copy / "deploy.yaml").write_text("functions:\n  - name: booking-create\n    source: [functions\n")
    with pytest.raises(DeployConfigError) as raised:
        load_config(repo_copy)
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith("deploy.yaml: not valid YAML (line ")


def test_every_mistake_is_reported_at_once(repo_copy: Path):
    _edit(repo_copy, _set(["booking-create", "trigger"], "cron"))
    _edit(repo_copy, _set(["defaults", "runtime"], "python39"))
    with pytest.raises(DeployConfigError) as raised:
        load_config(repo_copy)
    assert len(raised.value.problems) == 2


def test_the_repository_deploy_yaml_is_valid_and_lists_every_function_folder():
    folders = {path.parent.relative_to(REPO_ROOT).as_posix() for path in REPO_ROOT.glob("functions/*/main.py")}
    assert {spec.source for spec in CONFIG.functions} == folders
    for spec in CONFIG.functions:
        assert spec.entry_point in defined_functions(REPO_ROOT / spec.source / "main.py")
        assert set(spec.settings) <= set(ENVIRONMENT_VARIABLES)
        assert {name for name in spec.settings if name in SECRET_SETTINGS} <= set(CONFIG.secrets)


def test_cli_reports_a_deploy_yaml_mistake_as_error_lines_and_exit_status_1(repo_copy: Path, monkeypatch, capsys):
    _edit(repo_copy, _set(["booking-create", "trigger"], "cron"))
    monkeypatch.setattr("shared.ops.deploy.REPO_ROOT", repo_copy)
    assert cli.main(["deploy", "--build-dir", str(repo_copy / "build")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: deploy.yaml: function booking-create: trigger must be http or schedule, got 'cron'"]


def test_deploying_an_unknown_function_names_the_listed_ones(tmp_path: Path, capsys):
    assert cli.main(["deploy", "booking-craete", "--build-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: deploy.yaml lists no function 'booking-craete'; it lists {', '.join(FUNCTIONS)}"]


# -- bundles ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every function's bundle, as `therapy-db deploy` builds it."""
    out = tmp_path_factory.mktemp("bundles")
    requirements = requirements_text(pinned_requirements(runtime_requirements(REPO_ROOT), CONFIG.runtime))
    return {spec.name: build_bundle(spec, out, requirements=requirements) for spec in CONFIG.functions}


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("name", FUNCTIONS)
def test_bundle_holds_main_py_and_exactly_the_shared_modules_it_imports(bundles: dict[str, Path], name: str):
    bundle, spec = bundles[name], CONFIG.function(name)
    assert (bundle / "main.py").read_bytes() == (REPO_ROOT / spec.source / "main.py").read_bytes()
    shipped = {path.relative_to(bundle).as_posix() for path in bundle.rglob("*.py")} - {"main.py"}
    assert "shared/__init__.py" in shipped
    assert not [path for path in shipped if path.startswith("shared/ops")]
    # Every shipped module is imported by main.py or by another shipped module, and every shared
    # module those import is shipped.
    imported = set().union(*(_imported_modules(bundle / path) for path in shipped | {"main.py"}))
    as_module = {path.removesuffix(".py").removesuffix("/__init__").replace("/", "."): path for path in shipped}
    assert set(as_module) - {"shared"} <= imported
    needed = {name for name in imported
              if name.startswith("shared.") and (REPO_ROOT / f"{name.replace('.', '/')}.py").exists()}
    assert needed <= set(as_module)
    for path in shipped:
        assert (bundle / path).read_bytes() == (REPO_ROOT / path).read_bytes()


def test_requirements_pin_every_runtime_dependency_transitively_and_no_dev_tool(bundles: dict[str, Path]):
    lines = [line for line in (bundles["booking-create"] / "requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert all(len(line.split("==")) == 2 for line in lines)
    names = {name.lower().replace("_", "-") for name in pins}
    # Direct dependencies, their extras (psycopg[binary], PyJWT[crypto]) and what those need in turn.
    assert {"psycopg", "psycopg-binary", "functions-framework", "pyjwt", "cryptography", "flask", "werkzeug",
            "google-api-python-client", "google-auth", "sentry-sdk", "itsdangerous"} <= names
    assert not names & set(DEV_ONLY)
    from importlib import metadata
    for name, version in pins.items():
        assert metadata.version(name) == version
    # One requirements file for every function: the closure of pyproject.toml's dependencies.
    assert len({(bundle / "requirements.txt").read_text() for bundle in bundles.values()}) == 1


def test_a_function_importing_the_deploy_tooling_cannot_be_bundled(tmp_path: Path):
    (tmp_path / "shared" / "ops").mkdir(parents=True)
    for module in ("shared/__init__.py", "shared/ops/__init__.py", "shared/ops/migrate.py", "shared/helpers.py"):
        (tmp_path / module).write_text("")
    (tmp_path / "shared" / "helpers.py").write_text("from shared.ops import migrate\n")
    (tmp_path / "main.py").write_text("from shared import helpers\n")
    with pytest.raises(DeployError, match=r"^shared/helpers\.py imports shared\.ops: the deploy and local-run "
                                          r"tooling is not part of a function"):
        shared_modules(tmp_path / "main.py", tmp_path)


def test_relative_and_nested_imports_inside_shared_are_followed(tmp_path: Path):
    (tmp_path / "shared" / "sub").mkdir(parents=True)
    files = {
        "shared/__init__.py": "",
        "shared/a.py": "from . import b\ndef f():\n    from .sub import c\n",
        "shared/b.py": "",
        "shared/sub/__init__.py": "",
        "shared/sub/c.py": "from ..d import thing\n",
        "shared/d.py": "thing = 1\n",
        "shared/unused.py": "",
        "main.py": "import shared.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    found = {path.as_posix() for path in shared_modules(tmp_path / "main.py", tmp_path)}
    assert found == {"shared/__init__.py", "shared/a.py", "shared/b.py", "shared/sub/__init__.py",
                     "shared/sub/c.py", "shared/d.py"}


def test_requirement_that_is_not_installed_is_refused():
    with pytest.raises(DeployError, match=r"^surely-not-installed-pkg-0xq \(needed by pyproject\.toml\) is not "
                                          r"installed here; install the project first \(pip install -e \.\)$"):
        pinned_requirements(["surely-not-installed-pkg-0xq>=1"])


def test_installed_version_outside_pyproject_range_is_refused():
    from importlib import metadata
    installed = metadata.version("PyYAML")
    with pytest.raises(DeployError) as raised:
        pinned_requirements(["PyYAML>=999"])
    assert str(raised.value) == (f"PyYAML {installed} is installed, but pyproject.toml needs PyYAML>=999; "
                                 "reinstall the project")


def test_rebuild_refuses_to_empty_a_folder_it_did_not_build(tmp_path: Path):
    (tmp_path / "booking-create").mkdir()
    (tmp_path / "booking-create" / "notes.txt").write_text("mine")
    with pytest.raises(DeployError, match="is not empty and was not built by therapy-db deploy"):
        build_bundle(CONFIG.function("booking-create"), tmp_path, requirements="")
    assert (tmp_path / "booking-create" / "notes.txt").read_text() == "mine"


# -- the gcloud commands ------------------------------------------------------------------------

def _run_deploy(tmp_path: Path, *, run: bool = False, environ: dict[str, str] | None = None, **options):
    out, err = io.StringIO(), io.StringIO()
    status = deploy(run=run, out_dir=tmp_path / "build", environ=environ if environ is not None else
                    {**SECRET_VALUES, **PLAIN_VALUES}, out=out, err=err, **options)
    return status, out.getvalue(), err.getvalue()


def _commands(printed: str) -> dict[str, list[str]]:
    commands = [shlex.split(line) for line in printed.splitlines() if line.startswith("gcloud ")]
    return {command[3]: command for command in commands}


def _flag(command: list[str], name: str) -> str | None:
    values = [part.split("=", 1)[1] for part in command if part.startswith(f"--{name}=")]
    assert len(values) <= 1
    return values[0] if values else None


def test_dry_run_is_the_default_and_prints_one_gcloud_command_per_function(tmp_path: Path, capsys, monkeypatch):
    for name, value in {**SECRET_VALUES, **PLAIN_VALUES}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["deploy", "--build-dir", str(tmp_path / "build")]) == 0
    printed = capsys.readouterr().out
    commands = _commands(printed)
    assert list(commands) == FUNCTIONS
    for spec in CONFIG.functions:
        command = commands[spec.name]
        assert command[:5] == ["gcloud", "functions", "deploy", spec.name, "--gen2"]
        assert "--trigger-http" in command and "--allow-unauthenticated" in command
        assert _flag(command, "runtime") == "python311"
        assert _flag(command, "region") == CONFIG.region
        assert _flag(command, "entry-point") == spec.entry_point
        assert _flag(command, "source") == str(tmp_path / "build" / spec.name)
        assert (_flag(command, "memory"), _flag(command, "timeout"), _flag(command, "max-instances")) == (
            spec.memory, spec.timeout, str(spec.max_instances))
        assert (tmp_path / "build" / spec.name / "main.py").exists()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_secrets_come_from_secret_manager_and_other_settings_from_env_vars(tmp_path: Path, name: str):
    status, printed, _ = _run_deploy(tmp_path, only=[name])
    assert status == 0
    command, spec = _commands(printed)[name], CONFIG.function(name)
    secrets = dict(item.split("=", 1) for item in (_flag(command, "set-secrets") or "").split(",") if item)
    assert secrets == {setting: f"{CONFIG.secrets[setting]}:latest" for setting in spec.settings
                       if setting in CONFIG.secrets}
    env_vars = dict(item.split("=", 1) for item in (_flag(command, "set-env-vars") or "").split(",") if item)
    expected = {setting: value for setting, value in {**CONFIG.env, **PLAIN_VALUES}.items()
                if setting in spec.settings}
    assert env_vars == expected
    if not expected:
        assert "--clear-env-vars" in command


def test_dry_run_never_prints_or_bundles_a_secret_value(tmp_path: Path):
    status, printed, warnings = _run_deploy(tmp_path)
    assert status == 0
    built = "".join(path.read_text(errors="replace") for path in (tmp_path / "build").rglob("*") if path.is_file())
    for name, value in SECRET_VALUES.items():
        for shown in (printed, warnings, built):
            assert value not in shown, name
    assert "--set-secrets=" in printed


def test_env_file_values_override_the_environment(tmp_path: Path):
    env_file = tmp_path / "production.env"
    env_file.write_text("# production\nGOOGLE_CALENDAR_DELEGATE=true\nexport SENTRY_DSN='https://k@sentry.test/9'\n")
    status, printed, _ = _run_deploy(tmp_path, only=["booking-create"], env_file=env_file)
    assert status == 0
    env_vars = _flag(_commands(printed)["booking-create"], "set-env-vars")
    assert "GOOGLE_CALENDAR_DELEGATE=true" in env_vars.split(",")
    assert "SENTRY_DSN=https://k@sentry.test/9" in env_vars.split(",")


def test_values_holding_commas_use_gclouds_other_delimiter(tmp_path: Path):
    environ = {**PLAIN_VALUES, "SUPABASE_JWT_ISSUER": "https://a.test/auth/v1,legacy"}
    status, printed, _ = _run_deploy(tmp_path, only=["booking-create"], environ=environ)
    assert status == 0
    env_vars = _flag(_commands(printed)["booking-create"], "set-env-vars")
    # gcloud's `^D^` prefix: the items are separated by D, here a character no value holds.
    assert env_vars[0] == env_vars[2] == "^"
    delimiter = env_vars[1]
    assert delimiter != "," and delimiter not in "".join(environ.values())
    assert "SUPABASE_JWT_ISSUER=https://a.test/auth/v1,legacy" in env_vars[3:].split(delimiter)


def test_dry_run_warns_when_a_required_setting_has_no_value(tmp_path: Path):
    status, printed, warnings = _run_deploy(tmp_path, only=["booking-create"], environ={})
    assert status == 0 and _commands(printed)
    assert warnings.splitlines() == [
        "warning: booking-create needs PUBLIC_FUNCTIONS_URL; set it in the environment or in --env-file "
        "(--run refuses to deploy without it)"]


def test_run_refuses_to_deploy_without_a_required_setting(tmp_path: Path):
    ran: list[list[str]] = []
    status, _, errors = _run_deploy(tmp_path, run=True, environ={}, runner=lambda command: ran.append(command) or 0)
    assert status == 1 and ran == []
    assert "error: booking-create needs PUBLIC_FUNCTIONS_URL; set it in the environment or in --env-file" in errors


def test_run_runs_each_printed_command_and_stops_at_the_first_failure(tmp_path: Path):
    ran: list[list[str]] = []

    def runner(command: list[str]) -> int:
        ran.append(command)
        return 2 if command[3] == "booking-cancel" else 0

    status, printed, errors = _run_deploy(tmp_path, run=True, runner=runner)
    assert status == 2
    assert [command[3] for command in ran] == FUNCTIONS[:FUNCTIONS.index("booking-cancel") + 1]
    assert [f"deploying {c[3]}: {shlex.join(c)}" for c in ran] == printed.splitlines()
    assert errors.splitlines()[-1] == ("error: deploying booking-cancel failed (gcloud exited 2); later functions "
                                       "were not deployed")


def test_run_without_gcloud_on_path_says_so(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    status, _, errors = _run_deploy(tmp_path, run=True)
    assert status == 1
    assert errors.splitlines()[-1] == ("error: gcloud was not found on PATH; install the Google Cloud CLI, or drop "
                                       "--run to print the commands")


def test_required_settings_are_known_settings():
    assert REQUIRED_SETTINGS <= set(ENVIRONMENT_VARIABLES) and SECRET_SETTINGS <= set(ENVIRONMENT_VARIABLES)


# -- serving: from the repository, and from a bundle alone ----------------------------------------

@pytest.fixture(scope="session")
def bundle_environments(tmp_path_factory: pytest.TempPathFactory):
    """Fresh virtual environments with only a requirements.txt installed; one per distinct file."""
    made: dict[str, Path] = {}

    def environment_for(requirements: Path) -> Path:
        key = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
        if key not in made:
            venv = tmp_path_factory.mktemp(f"venv-{key}")
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            # The project's pip installs into the new environment (pip --python), using pip's cache.
            installed = subprocess.run(
                [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                 "--disable-pip-version-check", "-r", str(requirements)],
                capture_output=True, text=True)
            assert installed.returncode == 0, installed.stderr[-3000:]
            made[key] = venv
        return made[key]

    return environment_for


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"functions-framework exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"functions-framework did not listen on {port}:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serving(executable: Path, cwd: Path, source: str, target: str, environment: dict[str, str],
            log: Path) -> Iterator[int]:
    """`functions-framework --source SOURCE --target TARGET --port N` run in `cwd`; yields N."""
    port = free_port()
    with open(log, "w") as output:
        process = subprocess.Popen([str(executable), "--source", source, "--target", target, "--port", str(port)],
                                   cwd=cwd, env=environment, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Probe:
    """A request to a served function and what its answer must show."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    status: int
    shows: str


def _json(payload: dict[str, Any], **headers: str) -> tuple[bytes, dict[str, str]]:
    return json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}


def _bearer(token: str) -> str:
    return f"Bearer {token}"


UNKNOWN_USER = _bearer(user_token(uuid.uuid4()))  # a valid token of a user with no profile
SERVICE_KEY = _bearer(service_token())

PROBES: dict[str, list[Probe]] = {
    "booking-create": [
        Probe("POST", "/", *_json({"specialist_id": str(uuid.uuid4()), "starts_at": "2026-12-01T10:00:00+00:00"}),
              401, '"error":"UNAUTHORIZED"'),
        # The token verifies, then the database is asked for the caller's profile.
        Probe("POST", "/", *_json({}, Authorization=UNKNOWN_USER), 401, "No profile for this user"),
    ],
    "booking-cancel": [
        Probe("POST", "/", *_json({"booking_id": str(uuid.uuid4()), "reason": "ill"}), 401, '"error":"UNAUTHORIZED"'),
        Probe("POST", "/", *_json({}, Authorization=UNKNOWN_USER), 401, "No profile for this user"),
    ],
    "booking-reschedule": [
        Probe("POST", "/", *_json({"booking_id": str(uuid.uuid4()), "starts_at": "2026-12-01T10:00:00+00:00"}),
              401, '"error":"UNAUTHORIZED"'),
        Probe("POST", "/", *_json({}, Authorization=UNKNOWN_USER), 401, "No profile for this user"),
    ],
    "calendar-sync": [
        Probe("POST", "/", b"", {}, 401, '"error":"UNAUTHORIZED"'),
        Probe("POST", "/", b"", {"Authorization": SERVICE_KEY}, 200, '"success":true'),
    ],
    "recurring-dispatcher": [
        Probe("POST", "/", b"", {}, 401, '"error":"UNAUTHORIZED"'),
        Probe("POST", "/", *_json({"dry_run": True}, Authorization=SERVICE_KEY), 200, '"dry_run":true'),
    ],
    "intake-form": [
        Probe("GET", f"/?booking_id={uuid.uuid4()}", None, {}, 401, '"error":"UNAUTHORIZED"'),
        Probe("POST", "/", *_json({}, Authorization=UNKNOWN_USER), 401, "No profile for this user"),
    ],
    "notifications": [
        Probe("POST", "/", b"", {}, 401, '"error":"UNAUTHORIZED"'),
        # No SMTP_URL in the bundle's environment: email is off, and says so.
        Probe("POST", "/", b"", {"Authorization": SERVICE_KEY}, 200, '"email":"off"'),
    ],
    "recording-url": [
        Probe("POST", "/", *_json({"recording_id": str(uuid.uuid4())}), 401, '"error":"UNAUTHORIZED"'),
        Probe("POST", "/", *_json({}, Authorization=UNKNOWN_USER), 401, "No profile for this user"),
    ],
    "recording-expiry": [
        Probe("POST", "/", b"", {}, 401, '"error":"UNAUTHORIZED"'),
        # Nothing is due, so Storage is never asked (and need not be configured here).
        Probe("POST", "/", b"", {"Authorization": SERVICE_KEY}, 200, '"removed":0'),
    ],
    "token-cancel": [
        Probe("GET", "/", None, {}, 404, "This cancellation link is not valid"),
        Probe("GET", "/?token=forged.token", None, {}, 404, "This cancellation link is not valid"),
    ],
}


def _request(port: int, probe: Probe) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(probe.method, probe.path, body=probe.body, headers=probe.headers)
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type") or "", answer.read().decode()
    finally:
        connection.close()


def _serving_environment(database_url: str, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "DATABASE_URL": database_url,
            "SUPABASE_JWT_SECRET": JWT_SECRET, "CANCELLATION_LINK_SECRET": LINK_SECRET, **extra}


def _assert_answers(port: int, name: str) -> None:
    for probe in PROBES[name]:
        status, content_type, text = _request(port, probe)
        assert (status, probe.shows in text) == (probe.status, True), (probe, status, text[:300])
        assert content_type.startswith("text/html" if name == "token-cancel" else "application/json")


def test_every_function_has_probes():
    assert set(PROBES) == set(FUNCTIONS)


@pytest.mark.slow
@pytest.mark.parametrize("name", FUNCTIONS)
def test_bundle_alone_in_a_fresh_environment_serves_the_function(
        name: str, bundles: dict[str, Path], bundle_environments, database_url: str, tmp_path: Path):
    alone = tmp_path / "upload"
    shutil.copytree(bundles[name], alone)
    venv = bundle_environments(alone / "requirements.txt")
    environment = _serving_environment(database_url)
    # The fresh environment knows nothing of the repository: `shared` comes from the bundle.
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import shared, sys; print(shared.__file__)"],
                           cwd=alone, env=environment, capture_output=True, text=True)
    assert probe.stdout.strip() == str(alone / "shared" / "__init__.py"), probe.stderr
    spec = CONFIG.function(name)
    with serving(venv / "bin" / "functions-framework", alone, "main.py", spec.entry_point, environment,
                 tmp_path / "server.log") as port:
        _assert_answers(port, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_serves_from_the_repository_root(name: str, database_url: str, tmp_path: Path):
    spec = CONFIG.function(name)
    executable = Path(sys.executable).parent / "functions-framework"
    with serving(executable, REPO_ROOT, f"{spec.source}/main.py", spec.entry_point,
                 _serving_environment(database_url), tmp_path / "server.log") as port:
        _assert_answers(port, name)


def test_the_notifications_bundle_carries_its_email_templates(bundles: dict[str, Path]):
    shipped = REPO_ROOT / "shared/notifications/templates"
    bundled = bundles["notifications"] / "shared/notifications/templates"
    assert sorted(p.name for p in bundled.iterdir()) == sorted(p.name for p in shipped.iterdir())
    assert all((bundled / p.name).read_bytes() == p.read_bytes() for p in shipped.iterdir())
    assert not (bundles["booking-create"] / "shared/notifications").exists()
