"""The harness itself: the cluster is real and migrated, identities switch as PostgREST does."""

from tests.support import acting_as


def test_every_migration_is_recorded(db):
    from shared.ops.migrate import migration_files

    recorded = {row["filename"] for row in db.execute("select filename from private.schema_migrations")}
    assert recorded == {m.name for m in migration_files()}


def test_acting_as_switches_role_and_claims(db, client_a):
    with acting_as(db, client_a):
        row = db.execute("select current_user as role, auth.uid() as uid").fetchone()
    assert row == {"role": "authenticated", "uid": client_a.id}
    assert db.execute("select current_user as role").fetchone()["role"] == "postgres"
