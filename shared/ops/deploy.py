"""Deploying the functions to Google Cloud Functions (2nd gen), driven by deploy.yaml.

For each function, ``therapy-db deploy``:

1. validates deploy.yaml (unknown keys, entry points that ``main.py`` does not
   define, function folders it does not list, settings that shared.settings does
   not know, secrets passed as plain values), each problem one line;
2. builds the folder gcloud uploads: the function's ``main.py`` at its root, the
   modules of ``shared/`` it imports (followed transitively, never
   ``shared/ops``, which is tooling), and a ``requirements.txt`` pinning every
   runtime dependency of pyproject.toml, and theirs, to the version installed
   here — the versions the tests ran with;
3. prints the ``gcloud functions deploy`` command (the default, ``--dry-run``),
   or runs it (``--run``). Settings listed under ``secrets:`` are mounted from
   Secret Manager (``--set-secrets NAME=secret:latest``) and their values are
   never read, printed or passed; the others go in ``--set-env-vars``, with the
   values of the deploying shell's environment (or ``--env-file``), falling back
   to deploy.yaml's ``env:``.

Scheduled functions are HTTP functions too: pg_cron calls them with the service
key (sql/0014_cron_jobs.sql), so every function is deployed with
``--trigger-http``. They are deployed ``--allow-unauthenticated`` because the
callers present Supabase JWTs, which Google's IAM cannot check; each function
verifies them itself (shared/auth.py).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from shared.ops.migrate import REPO_ROOT
from shared.settings import ENVIRONMENT_VARIABLES

DEPLOY_FILE = "deploy.yaml"
BUILD_DIR = REPO_ROOT / ".local" / "deploy"
BUNDLE_MARKER = ".therapy-bundle"  # only folders holding it are ever emptied by a rebuild

TOP_LEVEL_KEYS = ("defaults", "secrets", "env", "functions")
DEFAULT_KEYS = ("runtime", "region", "memory", "timeout", "max_instances", "allow_unauthenticated")
FUNCTION_REQUIRED_KEYS = ("name", "source", "entry_point", "trigger")
FUNCTION_OPTIONAL_KEYS = ("schedule", "settings", "memory", "timeout", "max_instances")
TRIGGERS = ("http", "schedule")
BUILT_IN_DEFAULTS: dict[str, Any] = {
    "runtime": "python311",
    "region": "europe-west1",
    "memory": "256Mi",
    "timeout": "60s",
    "max_instances": 10,
    "allow_unauthenticated": True,
}
# Settings whose value is a credential: deploy.yaml must take them from Secret Manager.
SECRET_SETTINGS = frozenset({
    "DATABASE_URL", "SUPABASE_JWT_SECRET", "CANCELLATION_LINK_SECRET", "GOOGLE_SERVICE_ACCOUNT_JSON",
    "SMTP_URL",  # carries the SMTP password
    "SUPABASE_SERVICE_ROLE_KEY",
})
# Settings a function cannot work without (README's configuration table).
REQUIRED_SETTINGS = frozenset({
    "DATABASE_URL", "SUPABASE_JWT_SECRET", "PUBLIC_FUNCTIONS_URL", "CANCELLATION_LINK_SECRET",
})

_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_RUNTIME = re.compile(r"python3(\d{1,2})")
_REGION = re.compile(r"[a-z]+-[a-z]+\d+")
_MEMORY = re.compile(r"\d+(Mi|Gi|M|G|MB|GB)")
_TIMEOUT = re.compile(r"(\d+)s")
_SECRET_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_CRON_FIELD = re.compile(r"[0-9*/,\-]+")
MAX_TIMEOUT_SECONDS = 3600  # an HTTP function of the 2nd generation may run an hour at most


class DeployError(RuntimeError):
    """The functions cannot be built or deployed; the message says why in one line per problem."""


class DeployConfigError(DeployError):
    """deploy.yaml is not valid; `problems` holds one line per mistake."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# -- deploy.yaml ----------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    source: str  # folder, relative to the repository root
    entry_point: str
    trigger: str  # http | schedule
    schedule: str | None
    settings: tuple[str, ...]
    memory: str
    timeout: str
    max_instances: int


@dataclass(frozen=True)
class DeployConfig:
    runtime: str
    region: str
    allow_unauthenticated: bool
    secrets: Mapping[str, str]  # setting -> Secret Manager secret name
    env: Mapping[str, str]  # fixed, non-secret values of settings
    functions: tuple[FunctionSpec, ...]

    def function(self, name: str) -> FunctionSpec:
        for spec in self.functions:
            if spec.name == name:
                return spec
        raise DeployError(f"deploy.yaml lists no function {name!r}; it lists "
                          f"{', '.join(spec.name for spec in self.functions)}")


def _keys(mapping: Mapping, known: Iterable[str], where: str, problems: list[str]) -> None:
    known = tuple(known)
    for key in mapping:
        if key not in known:
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(known)})")


def defined_functions(main_py: Path) -> set[str]:
    """Names of the functions defined at the top level of a main.py (read with ast, not imported)."""
    tree = ast.parse(main_py.read_text(encoding="utf-8"), filename=str(main_py))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _check_size_settings(values: Mapping[str, Any], where: str, problems: list[str]) -> None:
    if "memory" in values and not (isinstance(values["memory"], str) and _MEMORY.fullmatch(values["memory"])):
        problems.append(f"{where}: memory must look like 256Mi or 1Gi, got {values['memory']!r}")
    if "timeout" in values:
        match = _TIMEOUT.fullmatch(str(values["timeout"])) if isinstance(values["timeout"], str) else None
        if not match or not 1 <= int(match.group(1)) <= MAX_TIMEOUT_SECONDS:
            problems.append(f"{where}: timeout must be seconds from 1s to {MAX_TIMEOUT_SECONDS}s, "
                            f"got {values['timeout']!r}")
    if "max_instances" in values:
        value = values["max_instances"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{where}: max_instances must be a whole number of at least 1, got {value!r}")


def _check_cron(expression: Any) -> bool:
    if not isinstance(expression, str):
        return False
    parts = expression.split()
    return len(parts) == 5 and all(_CRON_FIELD.fullmatch(part) for part in parts)


def _setting_names(value: Any, where: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"{where}: settings must be a list of variable names")
        return []
    for name in value:
        if name not in ENVIRONMENT_VARIABLES:
            problems.append(f"{where}: unknown setting {name!r} (not in shared.settings.ENVIRONMENT_VARIABLES)")
    return value


def load_config(root: Path = REPO_ROOT, path: Path | None = None) -> DeployConfig:
    """Reads and validates deploy.yaml; every mistake is reported at once (DeployConfigError)."""
    path = path or root / DEPLOY_FILE
    label = path.name
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeployConfigError([f"{label}: cannot be read ({exc.strerror})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise DeployConfigError([f"{label}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(document, dict):
        raise DeployConfigError([f"{label}: must be a mapping with a functions: list"])

    problems: list[str] = []
    _keys(document, TOP_LEVEL_KEYS, label, problems)

    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"{label}: defaults must be a mapping")
        defaults = {}
    _keys(defaults, DEFAULT_KEYS, f"{label}: defaults", problems)
    merged = {**BUILT_IN_DEFAULTS, **defaults}
    runtime = merged["runtime"]
    runtime_match = _RUNTIME.fullmatch(runtime) if isinstance(runtime, str) else None
    if not runtime_match or int(runtime_match.group(1)) < 11:
        problems.append(f"{label}: defaults: runtime must be python311 or a later Python runtime, got {runtime!r}")
    if not (isinstance(merged["region"], str) and _REGION.fullmatch(merged["region"])):
        problems.append(f"{label}: defaults: region must be a Google Cloud region such as europe-west1, "
                        f"got {merged['region']!r}")
    if not isinstance(merged["allow_unauthenticated"], bool):
        problems.append(f"{label}: defaults: allow_unauthenticated must be true or false, "
                        f"got {merged['allow_unauthenticated']!r}")
    _check_size_settings(defaults, f"{label}: defaults", problems)

    secrets = document.get("secrets") or {}
    if not isinstance(secrets, dict):
        problems.append(f"{label}: secrets must map each secret setting to its Secret Manager name")
        secrets = {}
    for setting, secret in secrets.items():
        if setting not in ENVIRONMENT_VARIABLES:
            problems.append(f"{label}: secrets: unknown setting {setting!r} "
                            "(not in shared.settings.ENVIRONMENT_VARIABLES)")
        if not (isinstance(secret, str) and _SECRET_NAME.fullmatch(secret)):
            problems.append(f"{label}: secrets: {setting} must name a Secret Manager secret "
                            f"(letters, digits, - and _), got {secret!r}")

    env = document.get("env") or {}
    if not isinstance(env, dict):
        problems.append(f"{label}: env must map settings to fixed values")
        env = {}
    for setting, value in env.items():
        if setting not in ENVIRONMENT_VARIABLES:
            problems.append(f"{label}: env: unknown setting {setting!r} (not in shared.settings.ENVIRONMENT_VARIABLES)")
        elif setting in SECRET_SETTINGS or setting in secrets:
            problems.append(f"{label}: env: {setting} is a secret; list it under secrets: instead of writing "
                            "its value here")
        if not isinstance(value, (str, int, float, bool)):
            problems.append(f"{label}: env: {setting} must be a single value, got {value!r}")

    entries = document.get("functions")
    if not isinstance(entries, list) or not entries:
        problems.append(f"{label}: functions must be a non-empty list")
        entries = []

    functions: list[FunctionSpec] = []
    seen: set[str] = set()
    listed_sources: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"{label}: functions[{index}] must be a mapping")
            continue
        name = entry.get("name")
        where = f"{label}: function {name}" if isinstance(name, str) and name else f"{label}: functions[{index}]"
        count_before = len(problems)
        _keys(entry, FUNCTION_REQUIRED_KEYS + FUNCTION_OPTIONAL_KEYS, where, problems)
        for key in FUNCTION_REQUIRED_KEYS:
            if entry.get(key) in (None, ""):
                problems.append(f"{where}: missing key {key!r}")
        if isinstance(name, str) and name:
            if not _NAME.fullmatch(name):
                problems.append(f"{where}: name must be lower-case letters, digits and hyphens, "
                                "starting with a letter")
            if name in seen:
                problems.append(f"{where}: listed twice")
            seen.add(name)

        source, entry_point = entry.get("source"), entry.get("entry_point")
        main_py = None
        if isinstance(source, str) and source:
            listed_sources.add(Path(source).as_posix().rstrip("/"))
            folder = (root / source).resolve()
            main_py = folder / "main.py"
            if not folder.is_relative_to(root.resolve()):
                problems.append(f"{where}: source {source} is outside the repository")
                main_py = None
            elif not main_py.is_file():
                problems.append(f"{where}: source {source} has no main.py")
                main_py = None
        if main_py is not None and isinstance(entry_point, str) and entry_point:
            try:
                defined = defined_functions(main_py)
            except SyntaxError as exc:
                problems.append(f"{where}: {source}/main.py does not parse (line {exc.lineno}): {exc.msg}")
            else:
                if entry_point not in defined:
                    problems.append(f"{where}: entry point {entry_point!r} is not a function defined in "
                                    f"{source}/main.py")

        trigger, schedule = entry.get("trigger"), entry.get("schedule")
        if trigger not in (None, "") and trigger not in TRIGGERS:
            problems.append(f"{where}: trigger must be http or schedule, got {trigger!r}")
        if trigger == "schedule" and schedule is None:
            problems.append(f"{where}: a scheduled function needs schedule: (a cron expression)")
        if trigger == "http" and schedule is not None:
            problems.append(f"{where}: schedule is only for trigger: schedule")
        if schedule is not None and not _check_cron(schedule):
            problems.append(f"{where}: schedule must be a five-field cron expression, got {schedule!r}")

        settings = _setting_names(entry.get("settings", []), where, problems)
        for setting in settings:
            if setting in SECRET_SETTINGS and setting not in secrets:
                problems.append(f"{where}: {setting} holds a secret; list it under secrets: so that it comes "
                                "from Secret Manager")
        _check_size_settings(entry, where, problems)
        if len(problems) == count_before:
            functions.append(FunctionSpec(
                name=name, source=Path(source).as_posix().rstrip("/"), entry_point=entry_point, trigger=trigger,
                schedule=schedule, settings=tuple(settings),
                memory=entry.get("memory", merged["memory"]), timeout=entry.get("timeout", merged["timeout"]),
                max_instances=entry.get("max_instances", merged["max_instances"]),
            ))

    functions_dir = root / "functions"
    if functions_dir.is_dir():
        for main_py in sorted(functions_dir.glob("*/main.py")):
            folder = main_py.parent.relative_to(root).as_posix()
            if folder not in listed_sources:
                problems.append(f"{label}: {folder} has a main.py but is not listed under functions:")

    if problems:
        raise DeployConfigError(problems)
    return DeployConfig(
        runtime=merged["runtime"], region=merged["region"],
        allow_unauthenticated=merged["allow_unauthenticated"],
        secrets=dict(secrets), env={key: _env_text(value) for key, value in env.items()},
        functions=tuple(functions),
    )


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- the shared/ code a function imports ----------------------------------------------


def _imported_names(module: Path, package: str) -> set[str]:
    """Absolute dotted names a module imports (and, for `from X import a`, also X.a)."""
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    names: set[str] = set()
    for node in ast.walk(tree):  # nested imports (inside functions) count too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def shared_modules(main_py: Path, root: Path = REPO_ROOT, package: str = "shared") -> list[Path]:
    """The files of `package` that `main_py` needs, followed through every import, relative to root.

    Tooling (`shared.ops`) is never part of a function: importing it is an error.
    """
    package_dir = root / package
    needed: set[Path] = set()
    pending: list[tuple[Path, str, str]] = [(main_py, "", str(main_py.relative_to(root)))]
    while pending:
        module, module_package, shown = pending.pop()
        for name in sorted(_imported_names(module, module_package)):
            if name != package and not name.startswith(package + "."):
                continue
            if name == f"{package}.ops" or name.startswith(f"{package}.ops."):
                raise DeployError(f"{shown} imports {name}: the deploy and local-run tooling is not part of a "
                                  "function; move what it needs out of shared/ops")
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                relative = Path(*parts[:depth])
                candidates = [(root / relative / "__init__.py", ".".join(parts[:depth])),
                              (root / relative.with_suffix(".py"), ".".join(parts[: depth - 1]))]
                for candidate, candidate_package in candidates:
                    if candidate.is_file() and candidate not in needed:
                        needed.add(candidate)
                        pending.append((candidate, candidate_package, str(candidate.relative_to(root))))
    if not needed:
        return []
    needed.add(package_dir / "__init__.py")
    return sorted(path.relative_to(root) for path in needed if path.is_file())


# -- requirements.txt ------------------------------------------------------------------


def _target_environment(runtime: str) -> dict[str, str]:
    """Marker values of the cloud runtime: Linux, CPython, the runtime's Python version."""
    environment = dict(default_environment())
    match = _RUNTIME.fullmatch(runtime)
    if match:
        version = f"3.{match.group(1)}"
        environment.update(python_version=version, python_full_version=f"{version}.0")
    environment.update(sys_platform="linux", platform_system="Linux", os_name="posix",
                       implementation_name="cpython", platform_python_implementation="CPython")
    return environment


def runtime_requirements(root: Path = REPO_ROOT) -> list[str]:
    """The `dependencies` of pyproject.toml (runtime only, not the dev extra)."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    return list(project.get("dependencies", []))


def pinned_requirements(requirements: Iterable[str], runtime: str = BUILT_IN_DEFAULTS["runtime"],
                        distribution: Callable[[str], metadata.Distribution] = metadata.distribution) -> list[str]:
    """`name==version` for every distribution the requirements need, transitively, as installed here.

    Extras are followed (``psycopg[binary]`` brings psycopg-binary); markers are
    evaluated for the cloud runtime. A requirement that is not installed, or whose
    installed version does not satisfy it, is an error: the bundle would not be
    what the tests ran with.
    """
    environment = _target_environment(runtime)
    pins: dict[str, str] = {}
    visited: set[tuple[str, str]] = set()
    pending: list[tuple[str, str]] = [(text, "pyproject.toml") for text in requirements]
    while pending:
        text, wanted_by = pending.pop()
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise DeployError(f"{wanted_by} has a requirement that cannot be read: {text!r} ({exc})") from None
        key = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras)
        if all((key, extra) in visited for extra in ["", *extras]):
            continue
        try:
            dist = distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise DeployError(f"{requirement.name} (needed by {wanted_by}) is not installed here; install the "
                              "project first (pip install -e .)") from None
        version = dist.version
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            raise DeployError(f"{requirement.name} {version} is installed, but {wanted_by} needs "
                              f"{requirement.name}{requirement.specifier}; reinstall the project")
        pins[key] = f"{dist.metadata['Name']}=={version}"
        for extra in ["", *extras]:
            if (key, extra) in visited:
                continue
            visited.add((key, extra))
            for dependency in dist.requires or []:
                parsed = Requirement(dependency)
                if parsed.marker is None or parsed.marker.evaluate({**environment, "extra": extra}):
                    parsed.marker = None
                    pending.append((str(parsed), dist.metadata["Name"]))
    return sorted(pins.values(), key=str.lower)


def requirements_text(pins: Iterable[str]) -> str:
    header = ("# Written by `therapy-db deploy` from pyproject.toml: every runtime dependency and theirs,\n"
              "# pinned to the version installed where the bundle was built (the one the tests ran with).\n")
    return header + "".join(f"{pin}\n" for pin in pins)


# -- bundles -----------------------------------------------------------------------------


def _empty_folder(folder: Path) -> None:
    if folder.exists():
        if not folder.is_dir():
            raise DeployError(f"{folder} exists and is not a folder")
        if any(folder.iterdir()) and not (folder / BUNDLE_MARKER).exists():
            raise DeployError(f"{folder} is not empty and was not built by therapy-db deploy; "
                              "choose another --build-dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def build_bundle(spec: FunctionSpec, out_dir: Path, *, requirements: str, root: Path = REPO_ROOT) -> Path:
    """Writes the folder gcloud uploads for `spec` into out_dir/<name> and returns it."""
    bundle = Path(out_dir) / spec.name
    _empty_folder(bundle)
    main_py = root / spec.source / "main.py"
    shutil.copy2(main_py, bundle / "main.py")
    for module in shared_modules(main_py, root):
        target = bundle / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / module, target)
        # Files a package reads at run time (the email templates) travel with it.
        templates = (root / module).parent / "templates"
        if module.name == "__init__.py" and templates.is_dir():
            shutil.copytree(templates, target.parent / "templates", dirs_exist_ok=True)
    (bundle / "requirements.txt").write_text(requirements, encoding="utf-8")
    # gcloud uploads the whole folder; the marker stays out of the upload.
    (bundle / ".gcloudignore").write_text(f"{BUNDLE_MARKER}\n.gcloudignore\n__pycache__/\n", encoding="utf-8")
    (bundle / BUNDLE_MARKER).write_text("built by therapy-db deploy; emptied on every build\n", encoding="utf-8")
    return bundle


# -- gcloud ------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (as in .env.example); blank lines and # comments skipped."""
    values: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DeployError(f"{path}: cannot be read ({exc.strerror})") from None
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        if not separator or not key.strip():
            raise DeployError(f"{path}, line {number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


@dataclass
class Plan:
    """One function's deployment: its bundle and its gcloud command."""

    spec: FunctionSpec
    bundle: Path
    command: list[str]
    missing_required: list[str] = field(default_factory=list)  # required settings that have no value

    @property
    def shell(self) -> str:
        return shlex.join(self.command)


def _env_vars_argument(values: Mapping[str, str]) -> str:
    pairs = [f"{name}={value}" for name, value in values.items()]
    if not any("," in pair for pair in pairs):
        return ",".join(pairs)
    # gcloud's escaping for values holding the list separator: ^DELIM^ picks another one.
    for delimiter in "@;|#~:":
        if not any(delimiter in pair for pair in pairs):
            return f"^{delimiter}^" + delimiter.join(pairs)
    raise DeployError("the settings' values use every delimiter gcloud accepts; simplify them")


def gcloud_command(config: DeployConfig, spec: FunctionSpec, bundle: Path, values: Mapping[str, str],
                   project: str | None = None) -> tuple[list[str], list[str]]:
    """The gcloud command for one function, and the required settings that have no value."""
    command = [
        "gcloud", "functions", "deploy", spec.name, "--gen2",
        f"--runtime={config.runtime}", f"--region={config.region}", f"--source={bundle}",
        f"--entry-point={spec.entry_point}", "--trigger-http",
    ]
    if config.allow_unauthenticated:
        command.append("--allow-unauthenticated")
    command += [f"--memory={spec.memory}", f"--timeout={spec.timeout}", f"--max-instances={spec.max_instances}"]
    if project:
        command.append(f"--project={project}")
    plain: dict[str, str] = {}
    secrets: dict[str, str] = {}
    missing: list[str] = []
    for setting in spec.settings:
        if setting in config.secrets:
            secrets[setting] = f"{config.secrets[setting]}:latest"
        elif values.get(setting, "") != "":
            plain[setting] = values[setting]
        elif setting in REQUIRED_SETTINGS:
            missing.append(setting)
    command.append(f"--set-env-vars={_env_vars_argument(plain)}" if plain else "--clear-env-vars")
    if secrets:
        command.append("--set-secrets=" + ",".join(f"{name}={ref}" for name, ref in secrets.items()))
    else:
        command.append("--clear-secrets")
    return command, missing


def plan(config: DeployConfig, out_dir: Path, *, environ: Mapping[str, str], only: Iterable[str] = (),
         project: str | None = None, root: Path = REPO_ROOT) -> list[Plan]:
    """Builds the bundles (of `only`, or of every function) and their commands."""
    chosen = [config.function(name) for name in only] if only else list(config.functions)
    requirements = requirements_text(pinned_requirements(runtime_requirements(root), config.runtime))
    values = {**config.env, **{k: v for k, v in environ.items() if k not in config.secrets}}
    plans = []
    for spec in chosen:
        bundle = build_bundle(spec, out_dir, requirements=requirements, root=root)
        command, missing = gcloud_command(config, spec, bundle, values, project)
        plans.append(Plan(spec, bundle, command, missing_required=missing))
    return plans


def deploy(*, run: bool, root: Path | None = None, out_dir: Path = BUILD_DIR, only: Iterable[str] = (),
           project: str | None = None, env_file: Path | None = None, environ: Mapping[str, str] | None = None,
           out=None, err=None, runner: Callable[[list[str]], int] | None = None) -> int:
    """What `therapy-db deploy` does; returns the exit status."""
    root = root or REPO_ROOT
    out, err = out or sys.stdout, err or sys.stderr
    config = load_config(root)
    values = dict(os.environ if environ is None else environ)
    if env_file is not None:
        values.update(read_env_file(env_file))
    local = f"3.{sys.version_info.minor}"
    target = _target_environment(config.runtime)["python_version"]
    if local != target:
        print(f"note: building on Python {local} for {config.runtime}; requirements.txt pins the versions "
              "installed here", file=err)
    plans = plan(config, Path(out_dir), environ=values, only=only, project=project, root=root)
    missing = [(p.spec.name, name) for p in plans for name in p.missing_required]
    for function, name in missing:
        print(f"{'error' if run else 'warning'}: {function} needs {name}; set it in the environment or in "
              "--env-file" + ("" if run else " (--run refuses to deploy without it)"), file=err)
    if run and missing:
        return 1
    if not run:
        print(f"# Dry run: bundles built in {Path(out_dir)}; nothing deployed. Run with --run to deploy.", file=out)
        for p in plans:
            print(p.shell, file=out)
        return 0
    if runner is None:
        if shutil.which("gcloud") is None:
            print("error: gcloud was not found on PATH; install the Google Cloud CLI, or drop --run to print "
                  "the commands", file=err)
            return 1
        runner = lambda command: subprocess.run(command).returncode  # noqa: E731
    for p in plans:
        print(f"deploying {p.spec.name}: {p.shell}", file=out, flush=True)
        status = runner(p.command)
        if status != 0:
            print(f"error: deploying {p.spec.name} failed (gcloud exited {status}); later functions were not "
                  "deployed", file=err)
            return status
    print(f"{len(plans)} function(s) deployed.", file=out)
    return 0
