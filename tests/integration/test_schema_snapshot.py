"""Migrations only grow: all of them installed give exactly sql/schema.sql, and landed ones never change."""

from __future__ import annotations

import difflib
import hashlib

from rowhook.schema_snapshot import snapshot
from rowhook.sqlfiles import migration_files, sql_dir

# sha256 of each migration that has landed on main. A landed migration is never edited: a change is a
# new numbered file (see "Adding a migration" in CONTRIBUTING.md), whose digest joins this list once merged.
LANDED = {
    "0001_schema.sql": "cc5647b2eee444d50def9fdece1fd7d5f0779661ad7056a34e413576cf3cbff3",
    "0002_capture.sql": "4c94c795a69192d8f7fbcce208fe62157d22a734dc0f187b7fab4d4bd099eb56",
    "0003_delivery.sql": "8f95375e7833ba61d3715edcc1c9d3999d5ec04654f41c64f0a52c12e35b9e98",
    "0004_tenancy.sql": "5fab8e6ae52b5b6777a54ed40ef89881f821ef823a326165a6972351c46c8ad1",
    "0005_deleted_subscriptions.sql": "9a65a70ea16feeb6eb4d921439e875ae5d513f2b8320b003d504e4001ba9c4fb",
    "0006_delivery_bookkeeping.sql": "b2ba018b669d153d46caf6f08d0cb057ae31f90d52dd0f2a590da66050936e5c",
    "0007_claim_by_subscription.sql": "fbf42ebaeae2a25ee3869ec6a8b264a8c6d3d58e94c38123eb48ce50bc5386d2",
    "0008_push_headers_columns.sql": "4fbde721fe3b732b7dfed0688ead29c33995e494bc180c436f3a6644bac645b1",
    "0009_tokens_idempotency.sql": "e786bf446d1e7ce381cf55783d5572a8fa2eb42d60eb844810e05aed35c38ce0",
    "0010_rate_limit.sql": "32f49b50873d4c03cf99ba9ad8c66ea271ef40ef7e6e0cab7cac95978052ecd8",
    "0011_statement_capture.sql": "7e9c178d16f155f3dd98d592da0f42fc85810bf1fca5ada3334af771d203a2f5",
    "0012_failing_probe.sql": "ca569120388a9a276e2b7fe209af7e903810c431ca918de64ae996ed99d01839",
    "0013_update_capture.sql": "cce24b54368e506288d568371529d30e900329095bbf6eacb5930e5e9a7b204e",
    "0014_expand_generic_plans.sql": "19dfbe496c7759f349a174423c5c1a3e5494511cf35121feb2d75b2ff32d2989",
    "0015_delivery_queue_and_log.sql": "caafe4f0a185ebf42c9858da4ec881353271958a5902c3dded0587dbcfe76420",
    "0016_pg_cost_per_delivery.sql": "b763d0eaa4c1c9ecfb72480b74afd0ebbf6de4bbf3bbb97a618e93db05461963",
}


def test_all_migrations_install_exactly_the_schema_snapshot() -> None:
    expected = (sql_dir() / "schema.sql").read_text()
    installed = snapshot()
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            installed.splitlines(keepends=True),
            "sql/schema.sql",
            "installed",
        )
    )
    assert not diff, "run `python -m rowhook.schema_snapshot > sql/schema.sql` and review:\n" + diff


def test_landed_migrations_are_unchanged() -> None:
    found = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in migration_files()}
    for name, digest in LANDED.items():
        assert found.get(name) == digest, (
            f"{name} has landed and must not change; add a new migration instead"
        )
