"""The signature checks printed in docs/payload.md accept real rowhook signatures and reject forgeries."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rowhook.webhooks import event_body, new_secret, ping_body, signature_header

DOC = (Path(__file__).resolve().parents[2] / "docs" / "payload.md").read_text()
BODY = json.dumps({"id": "evt_1", "type": "tasks.created", "data": {"title": "é"}}).encode()


def example(language: str) -> str:
    match = re.search(rf"<!-- docs-example: {language} -->\n```\w+\n(.*?)```", DOC, re.DOTALL)
    assert match, f"no {language} example in docs/payload.md"
    return match.group(1)


def headers(secrets: list[str], timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, "msg_1", timestamp, BODY),
    }


def cases() -> list[tuple[str, dict[str, str], bytes, bool]]:
    secret, old, stranger = new_secret(), new_secret(), new_secret()
    return [
        (secret, headers([secret]), BODY, True),
        (secret, headers([secret, old]), BODY, True),  # during a rotation
        (old, headers([secret, old]), BODY, True),
        (stranger, headers([secret]), BODY, False),
        (secret, headers([secret]), BODY + b" ", False),
        (secret, headers([secret], int(time.time()) - 3600), BODY, False),
    ]


def test_the_python_example() -> None:
    namespace: dict[str, Any] = {}
    exec(example("python"), namespace)
    for secret, hdrs, body, valid in cases():
        assert namespace["verify"](secret, hdrs, body) is valid


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_node_example() -> None:
    runs = [
        {"secret": s, "headers": h, "body": base64.b64encode(b).decode(), "valid": v}
        for s, h, b, v in cases()
    ]
    script = example("node") + (
        "\nconst runs = JSON.parse(process.argv[1]);\n"
        "const results = runs.map((r) => verify(r.secret, r.headers, Buffer.from(r.body, 'base64')));\n"
        "console.log(JSON.stringify(results));\n"
    )
    done = subprocess.run(
        ["node", "-e", script, json.dumps(runs)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [r["valid"] for r in runs]


def test_the_body_table_and_example_name_exactly_the_fields_of_a_push() -> None:
    section = DOC.split("## Body", 1)[1].split("## Headers", 1)[0]
    table = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.DOTALL).group(1))  # type: ignore[union-attr]
    event = {
        "event_id": 1,
        "resource": "tasks",
        "op": "updated",
        "key": "1",
        "account": "acme",
        "occurred_at": datetime.now(UTC),
        "data": {},
        "previous": {},
    }
    assert table == set(event_body(event)) == set(example)
    assert set(ping_body("sub_1", "tasks", "acme")) <= table  # a ping is shaped like an event
