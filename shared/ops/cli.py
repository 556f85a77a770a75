"""Command line of the project: ``therapy-db migrate``, ``therapy-db up``, ``therapy-db demo``,
``therapy-db deploy`` and ``therapy-db intake-reencrypt``.

``up`` brings the suite up locally: the database (``DATABASE_URL`` when set,
otherwise a local cluster under ``.local/pg`` that it starts itself), every
migration and policy applied, PostgREST at ``/rest/v1`` and the functions at
``/functions/v1`` on one port, and the URLs and keys printed. ``demo`` seeds a
small practice and prints its people's tokens. ``deploy`` builds
each function's upload folder from deploy.yaml and prints (``--run``: runs) its
``gcloud functions deploy`` command.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import psycopg

from shared.ops.localpg import ClusterError, LocalCluster
from shared.ops.migrate import REPO_ROOT, MigrationError, migrate

LOCAL_DIR = REPO_ROOT / ".local" / "pg"
BUILD_DIR = REPO_ROOT / ".local" / "deploy"  # where `deploy` builds the bundles


def read_dotenv(path: Path = REPO_ROOT / ".env", environ: dict | None = None) -> list[str]:
    """Sets NAME=value lines of ``.env`` that the environment does not already set (the
    environment wins, as with docker compose and the Supabase CLI); returns the names set.
    Blank lines and # comments are skipped; a value may be quoted."""
    environ = os.environ if environ is None else environ
    if not path.is_file():
        return []
    set_names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name and name not in environ:
            environ[name] = value
            set_names.append(name)
    return set_names


def check_database_url(url: str) -> str:
    """The URL itself, or a sentence saying it cannot be one (never a traceback)."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise MigrationError(
            f"DATABASE_URL is not a PostgreSQL connection URL ({reason}); "
            "expected postgresql://user:password@host:port/database.") from None
    return url


def _database_url(args: argparse.Namespace) -> tuple[str, LocalCluster | None]:
    url = args.database_url or os.environ.get("DATABASE_URL")
    if url:
        return check_database_url(url), None
    cluster = LocalCluster(Path(args.local_dir))
    cluster.init()
    cluster.start()
    return cluster.url(), cluster


def cmd_migrate(args: argparse.Namespace) -> int:
    url, _ = _database_url(args)
    applied = migrate(url)
    print(f"{len(applied)} migration(s) applied; the database is up to date.")
    return 0


LOCAL_DEFAULTS = {
    # Local development only: fixed, public values so a fresh checkout runs at once.
    "SUPABASE_JWT_SECRET": "local-development-jwt-secret-not-for-production-use",
    "CANCELLATION_LINK_SECRET": "local-development-link-secret-not-for-production-use",
    # 32 bytes spelling out what they are: anyone can read them, so nothing real may be encrypted with them.
    "INTAKE_ENCRYPTION_KEYS": "1:bG9jYWwtZGV2ZWxvcG1lbnQtaW50YWtlLWtleS0wMDE=",
}


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _running_up(lock: Path) -> tuple[int, str] | None:
    """(process id, port) of a `therapy-db up` serving this local cluster, if one still runs."""
    try:
        pid, port = lock.read_text().split()[:2]
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return None
    return (int(pid), port) if int(pid) != os.getpid() else None


def cmd_up(args: argparse.Namespace) -> int:
    from shared.ops.postgrest import INSTALL_HINT, Postgrest, PostgrestError, api_keys, authenticator_uri, find_binary

    use_local = not (args.database_url or os.environ.get("DATABASE_URL"))
    lock = Path(args.local_dir) / "up.pid"
    if use_local and not args.detach:
        running = _running_up(lock)
        if running:
            raise ClusterError(
                f"therapy-db up is already running for this checkout (process {running[0]}, "
                f"http://127.0.0.1:{running[1]}); use that one, or stop it with Ctrl-C first.")
    if not args.detach and not _port_is_free(args.port):
        raise ClusterError(f"Port {args.port} is already in use; choose another with --port (or PORT).")
    shared_cluster = use_local and LocalCluster(Path(args.local_dir)).is_running()
    url, cluster = _database_url(args)
    migrate(url, log=lambda line: print(line, file=sys.stderr))
    if cluster:
        print(f"PostgreSQL ({cluster.binaries.source}, pg_cron {'on' if cluster.has_pg_cron else 'off'}) "
              f"data in {cluster.directory}", file=sys.stderr)
    base_url = f"http://127.0.0.1:{args.port}"
    functions_url = f"{base_url}/functions/v1"
    print(f"DATABASE_URL={url}", flush=True)
    if args.detach:
        return 0
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("PUBLIC_FUNCTIONS_URL", functions_url)
    for name, value in LOCAL_DEFAULTS.items():
        if not os.environ.get(name):
            os.environ[name] = value
            print(f"{name} not set; using the local development value {value!r}", file=sys.stderr)
    postgrest = None
    if find_binary() is None:
        print(f"PostgREST is not installed, so /rest/v1 is not served: {INSTALL_HINT}.", file=sys.stderr)
    else:
        postgrest = Postgrest(os.environ.get("POSTGREST_DB_URI") or authenticator_uri(url),
                              os.environ["SUPABASE_JWT_SECRET"])
    if use_local:
        lock.write_text(f"{os.getpid()} {args.port}\n")
    try:
        if postgrest:
            try:
                postgrest.start()
            except PostgrestError as exc:
                # A database PostgREST cannot log in to (a hosted project's, say) still gets its functions.
                print(f"{exc}\n/rest/v1 is not served; POSTGREST_DB_URI sets the URI PostgREST logs in with.",
                      file=sys.stderr)
                postgrest = None
        if postgrest:
            os.environ["POSTGREST_URL"] = postgrest.url
            keys = api_keys(os.environ["SUPABASE_JWT_SECRET"])
            print(f"SUPABASE_URL={base_url}", flush=True)
            print(f"SUPABASE_ANON_KEY={keys['anon']}", flush=True)
            print(f"SUPABASE_SERVICE_ROLE_KEY={keys['service_role']}", flush=True)
        print(f"FUNCTIONS_URL={functions_url}", flush=True)
        from shared.ops.serve import serve

        paths = "/rest/v1, /functions/v1" if postgrest else "/functions/v1"
        serve(port=args.port, on_ready=lambda: print(
            f"Ready on {base_url} ({paths}). Ctrl-C stops it.", file=sys.stderr, flush=True))
    finally:
        if postgrest:
            postgrest.stop()
        if use_local:
            lock.unlink(missing_ok=True)
        # A cluster that was already running (`up --detach`, or started by hand) is left running.
        if cluster and not shared_cluster:
            cluster.stop()
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from shared.ops import practice_settings
    from shared.ops.migrate import _connect, apply_settings

    url, _ = _database_url(args)
    apply_settings(url)
    with _connect(url) as conn:
        for name, value in practice_settings.current(conn).items():
            if isinstance(value, list):  # as the variable is written: REMINDER_OFFSETS_MINUTES=1440,120,15
                value = ",".join(map(str, value))
            print(f"{name.upper()}={'' if value is None else value}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster(Path(args.local_dir))
    cluster.stop()
    print("stopped")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    # Imported here: deploying needs PyYAML and packaging, which migrating and serving do not.
    from shared.ops.deploy import DeployError, deploy

    try:
        return deploy(run=args.run, out_dir=Path(args.build_dir), only=args.functions, project=args.project,
                      env_file=Path(args.env_file) if args.env_file else None)
    except DeployError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 1


def cmd_intake_reencrypt(args: argparse.Namespace) -> int:
    """Re-encrypts every intake form under the newest key of INTAKE_ENCRYPTION_KEYS (resumable)."""
    import psycopg

    from shared.intake.keys import key_ring
    from shared.intake.reencrypt import reencrypt, versions_in_use
    from shared.settings import SettingsError

    url, _ = _database_url(args)
    try:
        ring = key_ring()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with psycopg.connect(url) as conn:
        print(f"forms by key version before: {versions_in_use(conn) or 'none'}; newest key: {ring.newest}")
    report = reencrypt(url, ring, batch_size=args.batch_size)
    with psycopg.connect(url) as conn:
        print(f"forms by key version after: {versions_in_use(conn) or 'none'}")
    print(f"{report.reencrypted} form(s) re-encrypted in {report.batches} batch(es), {report.seconds:.2f} s "
          f"({report.rows_per_second:.0f} rows/s)")
    for session_id in report.unreadable[:20]:
        print(f"error: the intake form of session {session_id} cannot be decrypted; it was left as it is",
              file=sys.stderr)
    if report.left_on_older_keys:
        print(f"{report.left_on_older_keys} form(s) still under an older key: run the command again "
              "(unreadable forms stay until they are dealt with)", file=sys.stderr)
        return 1
    print(f"every form is under key version {ring.newest}: older keys can be removed from INTAKE_ENCRYPTION_KEYS")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from shared.ops.demo import SPECIALIST, exports

    url, _ = _database_url(args)
    migrate(url, log=lambda _line: None)
    secret = os.environ.get("SUPABASE_JWT_SECRET") or LOCAL_DEFAULTS["SUPABASE_JWT_SECRET"]
    lines = exports(url, secret, f"http://127.0.0.1:{args.port}")
    print(f"Demo practice ready: {SPECIALIST[1]} (every day 08:00-18:00 Europe/London) and two clients; "
          "tokens valid for a day.", file=sys.stderr)
    print("\n".join(lines), flush=True)
    return 0


def _default_port() -> int:
    raw = os.environ.get("PORT", "")
    return int(raw) if raw.isdigit() else 8000


def main(argv: list[str] | None = None) -> int:
    # The shared options are accepted before and after the subcommand (`therapy-db migrate --database-url …`);
    # unset, they are absent from the namespace (SUPPRESS), so a subcommand never undoes the main parser's.
    def common_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--database-url", default=argparse.SUPPRESS,
                            help="use this database instead of DATABASE_URL / the local one")
        parser.add_argument("--local-dir", default=argparse.SUPPRESS,
                            help="where the local cluster lives (default .local/pg)")
        return parser

    parser = common_options(argparse.ArgumentParser(prog="therapy-db", description=__doc__.splitlines()[0]))
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        found = common_options(sub.add_parser(name, help=help, description=help))
        found.set_defaults(func=func)
        return found

    command("migrate", "apply sql/ then policies/ (skipping what already ran)", cmd_migrate)
    up = command("up", "start the local database, migrate it, serve PostgREST (/rest/v1) and the functions "
                       "(/functions/v1) on one port, print the URLs and keys, and wait", cmd_up)
    up.add_argument("--detach", action="store_true", help="start and migrate the database only, then return")
    up.add_argument("--port", type=int, default=_default_port(),
                    help="where /rest/v1 and /functions/v1 are served (default: PORT or 8000)")
    demo = command("demo", "seed a demo practice (a specialist with hours and a rate, two clients) and print "
                           "export lines with their ids and day-long access tokens", cmd_demo)
    demo.add_argument("--port", type=int, default=_default_port(),
                      help="the port `therapy-db up` serves on, for SUPABASE_URL (default: PORT or 8000)")
    command("down", "stop the local database", cmd_down)
    command("settings", "write the practice settings set in the environment to the database, "
                        "then print them all", cmd_settings)
    deploy = command("deploy", "build each function's upload folder from deploy.yaml and print "
                               "(--run: run) its gcloud command", cmd_deploy)
    deploy.add_argument("functions", nargs="*", metavar="NAME", help="only these functions (default: all)")
    mode = deploy.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="run", action="store_false", default=False,
                      help="build and print the commands only (the default)")
    mode.add_argument("--run", dest="run", action="store_true", help="run the gcloud commands")
    deploy.add_argument("--project", help="Google Cloud project (default: gcloud's configured one)")
    deploy.add_argument("--env-file", help="NAME=value lines for the non-secret settings (over the environment)")
    deploy.add_argument("--build-dir", default=str(BUILD_DIR),
                        help="where the bundles are built (default .local/deploy)")
    reencrypt = command("intake-reencrypt", "re-encrypt every intake form under the newest key of "
                                           "INTAKE_ENCRYPTION_KEYS, in batches (resumable)",
                        cmd_intake_reencrypt)
    reencrypt.add_argument("--batch-size", type=int, default=1000, help="forms per transaction (default 1000)")
    args = parser.parse_args(argv)
    if args.command != "deploy":  # deploy reads its settings from --env-file or the shell, never a local .env
        read_dotenv()
    args.database_url = getattr(args, "database_url", None)
    args.local_dir = getattr(args, "local_dir", str(LOCAL_DIR))
    try:
        return args.func(args)
    except (MigrationError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
