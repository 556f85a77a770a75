"""Command line of the project: ``therapy-db migrate``, ``therapy-db up``, ``therapy-db deploy`` and
``therapy-db intake-reencrypt``.

``up`` brings the suite up locally: the database (``DATABASE_URL`` when set,
otherwise a local cluster under ``.local/pg`` that it starts itself), every
migration and policy applied, and the connection URL printed. ``deploy`` builds
each function's upload folder from deploy.yaml and prints (``--run``: runs) its
``gcloud functions deploy`` command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.ops.localpg import ClusterError, LocalCluster
from shared.ops.migrate import REPO_ROOT, MigrationError, migrate

LOCAL_DIR = REPO_ROOT / ".local" / "pg"
BUILD_DIR = REPO_ROOT / ".local" / "deploy"  # where `deploy` builds the bundles


def _database_url(args: argparse.Namespace) -> tuple[str, LocalCluster | None]:
    url = args.database_url or os.environ.get("DATABASE_URL")
    if url:
        return url, None
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


def cmd_up(args: argparse.Namespace) -> int:
    url, cluster = _database_url(args)
    migrate(url, log=lambda line: print(line, file=sys.stderr))
    if cluster:
        print(f"PostgreSQL ({cluster.binaries.source}, pg_cron {'on' if cluster.has_pg_cron else 'off'}) "
              f"data in {cluster.directory}", file=sys.stderr)
    functions_url = f"http://127.0.0.1:{args.port}/functions/v1"
    print(f"DATABASE_URL={url}", flush=True)
    if args.detach:
        return 0
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("PUBLIC_FUNCTIONS_URL", functions_url)
    for name, value in LOCAL_DEFAULTS.items():
        if not os.environ.get(name):
            os.environ[name] = value
            print(f"{name} not set; using the local development value {value!r}", file=sys.stderr)
    print(f"FUNCTIONS_URL={functions_url}", flush=True)
    print("Ready. Ctrl-C stops it.", file=sys.stderr, flush=True)
    from shared.ops.serve import serve

    try:
        serve(port=args.port)
    finally:
        if cluster:
            cluster.stop()
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from shared.ops import practice_settings
    from shared.ops.migrate import _connect, apply_settings

    url, _ = _database_url(args)
    apply_settings(url)
    with _connect(url) as conn:
        for name, value in practice_settings.current(conn).items():
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="therapy-db", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="migrate this database instead of DATABASE_URL / the local one")
    parser.add_argument("--local-dir", default=str(LOCAL_DIR), help="where the local cluster lives")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply sql/ then policies/ (skipping what already ran)").set_defaults(
        func=cmd_migrate)
    up = sub.add_parser("up", help="start the local database, migrate it, print its URL and wait")
    up.add_argument("--detach", action="store_true", help="start and migrate the database only, then return")
    up.add_argument("--port", type=int, default=8000, help="where the functions are served (default 8000)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the local database").set_defaults(func=cmd_down)
    sub.add_parser("settings", help="write the practice settings set in the environment to the database, "
                                    "then print them all").set_defaults(func=cmd_settings)
    deploy = sub.add_parser("deploy", help="build each function's upload folder from deploy.yaml and print "
                                           "(--run: run) its gcloud command")
    deploy.add_argument("functions", nargs="*", metavar="NAME", help="only these functions (default: all)")
    mode = deploy.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="run", action="store_false", default=False,
                      help="build and print the commands only (the default)")
    mode.add_argument("--run", dest="run", action="store_true", help="run the gcloud commands")
    deploy.add_argument("--project", help="Google Cloud project (default: gcloud's configured one)")
    deploy.add_argument("--env-file", help="NAME=value lines for the non-secret settings (over the environment)")
    deploy.add_argument("--build-dir", default=str(BUILD_DIR),
                        help="where the bundles are built (default .local/deploy)")
    deploy.set_defaults(func=cmd_deploy)
    reencrypt = sub.add_parser("intake-reencrypt", help="re-encrypt every intake form under the newest key of "
                                                        "INTAKE_ENCRYPTION_KEYS, in batches (resumable)")
    reencrypt.add_argument("--batch-size", type=int, default=1000, help="forms per transaction (default 1000)")
    reencrypt.set_defaults(func=cmd_intake_reencrypt)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MigrationError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
