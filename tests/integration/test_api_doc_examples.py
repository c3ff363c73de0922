"""docs/api.md's worked session, run against the real API: every request of its console blocks is sent,
and every answer it shows must hold of the real one, so that code and docs cannot drift apart.

How an answer shown in the doc is read (JSON, plus the doc's `…`):
- every key shown exists in the real answer with the same JSON type; literals (numbers, strings,
  booleans, null) are equal; an object shown without `…` has exactly the keys shown;
- `"…"` is any string; a bare `…` any value; `…` among an object's members means "more keys", as the last
  element of an array "more elements" (the elements shown come first);
- a string with text before `…` (`"sub_5f0c…"`) names one value: its first occurrence takes the real one
  (which must start with the same `word_` prefix), later occurrences in answers must equal it, and in
  commands (`$API/subscriptions/sub_5f0c…/test`) they are replaced by it.
What the relay would have done between two requests (the API sends nothing itself) is written into the
database by the test, as noted at each step below."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psycopg
import pytest

from rowhook.settings import Settings
from tests.integration.api_harness import PUBLIC_TARGET, TABLES, serve_api

ROOT = Path(__file__).resolve().parents[2]
API_DOC = ROOT / "docs" / "api.md"
SESSION_HEADING = "## A worked session"
ELLIPSIS = "…"
PUBLIC_ADDRESS = PUBLIC_TARGET.split("/")[2]  # what the doc's receiver host resolves to here
Conn = psycopg.Connection[dict[str, Any]]
LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


# --- the doc's answers: JSON with elisions ------------------------------------------------------------


class Anything:
    """A bare `…`: any value."""


@dataclass
class Named:
    """A string with text before `…`: one value, bound at its first occurrence."""

    name: str

    @property
    def prefix(self) -> str:
        match = re.match(r"[A-Za-z]+_", self.name)
        return match.group(0) if match else ""


@dataclass
class Shown:
    """An object or array as the doc shows it; `more` when it ends with `…`."""

    value: dict[str, Any] | list[Any]
    more: bool = False


class DocJson:
    """A small recursive-descent reader of JSON in which `…` may stand for values, members or elements."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def read(self) -> Any:
        value = self.value()
        self.space()
        if self.at != len(self.text):
            self.fail("text after the answer")
        return value

    def fail(self, what: str) -> NoReturn:
        raise ValueError(f"{what} at {self.text[self.at : self.at + 40]!r} in answer:\n{self.text}")

    def space(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def peek(self, token: str) -> bool:
        self.space()
        return self.text.startswith(token, self.at)

    def take(self, token: str) -> None:
        if not self.peek(token):
            self.fail(f"expected {token!r}")
        self.at += len(token)

    def value(self) -> Any:
        self.space()
        if self.peek(ELLIPSIS):
            self.take(ELLIPSIS)
            return Anything()
        if self.peek("{"):
            return self.members()
        if self.peek("["):
            return self.elements()
        if self.peek('"'):
            text = self.string()
            if text == ELLIPSIS:
                return str  # any string
            return Named(text) if ELLIPSIS in text else text
        match = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null").match(self.text, self.at)
        if not match:
            self.fail("expected a value")
        self.at = match.end()
        literal = match.group(0)
        if literal in LITERALS:
            return LITERALS[literal]
        return float(literal) if match.group(1) or match.group(2) else int(literal)

    def string(self) -> str:
        match = re.compile(r'"(?:[^"\\\n]|\\.)*"').match(self.text, self.at)
        if not match:
            self.fail("unterminated string (a string in an answer must stay on one line)")
        self.at = match.end()
        return str(json.loads(match.group(0)))

    def members(self) -> Shown:
        self.take("{")
        shown = Shown({})
        assert isinstance(shown.value, dict)
        while not self.peek("}"):
            if self.peek(ELLIPSIS):
                self.take(ELLIPSIS)
                shown.more = True
            else:
                key = self.string() if self.peek('"') else self.fail("expected a key")
                self.take(":")
                shown.value[str(key)] = self.value()
            if not self.peek("}"):
                self.take(",")
        self.take("}")
        return shown

    def elements(self) -> Shown:
        self.take("[")
        shown = Shown([])
        assert isinstance(shown.value, list)
        while not self.peek("]"):
            if self.peek(ELLIPSIS):  # after the elements shown (or alone, `[…]`): more of them
                self.take(ELLIPSIS)
                shown.more = True
            else:
                shown.value.append(self.value())
            if not self.peek("]"):
                self.take(",")
        self.take("]")
        return shown


JSON_TYPES: dict[type, str] = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number"}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return "number"
    return JSON_TYPES[type(value)]


@dataclass
class Session:
    """The values bound so far: shell variables ($TOKEN, $API) and the doc's named values (sub_5f0c…)."""

    variables: dict[str, str] = field(default_factory=dict)
    named: dict[str, str] = field(default_factory=dict)

    def expand(self, command: str) -> str:
        for name, value in self.named.items():
            command = command.replace(name, value)
        if ELLIPSIS in command:
            raise AssertionError(f"a named value is used before an answer showed it: {command}")
        return re.sub(r"\$(\w+)", lambda m: self.variables[m.group(1)], command)

    def check(self, shown: Any, real: Any, path: str = "$") -> None:
        """Fails naming the path of the first thing the doc shows that the real answer does not hold."""
        if isinstance(shown, Anything):
            return
        if shown is str:
            assert isinstance(real, str), f"{path}: the doc shows a string, the API answers {real!r}"
            return
        if isinstance(shown, Named):
            assert isinstance(real, str), f"{path}: the doc shows a string, the API answers {real!r}"
            if shown.name in self.named:
                assert real == self.named[shown.name], f"{path}: {shown.name} was {self.named[shown.name]!r}"
            else:
                assert real.startswith(shown.prefix), f"{path}: {real!r} does not start with {shown.prefix!r}"
                self.named[shown.name] = real
            return
        if isinstance(shown, Shown) and isinstance(shown.value, dict):
            assert isinstance(real, dict), f"{path}: the doc shows an object, the API answers {real!r}"
            missing = [key for key in shown.value if key not in real]
            assert not missing, f"{path}: the doc shows {missing}, which the API does not answer: {real}"
            if not shown.more:
                unshown = sorted(set(real) - set(shown.value))
                assert not unshown, f"{path}: the API answers {unshown}, which the doc does not show (or `…`)"
            for key, value in shown.value.items():
                self.check(value, real[key], f"{path}.{key}")
            return
        if isinstance(shown, Shown):
            assert isinstance(shown.value, list)
            assert isinstance(real, list), f"{path}: the doc shows an array, the API answers {real!r}"
            if shown.more:
                assert len(real) >= len(shown.value), f"{path}: fewer elements than the doc shows: {real}"
            else:
                assert len(real) == len(shown.value), (
                    f"{path}: {len(real)} elements, the doc shows {shown.value}"
                )
            for index, value in enumerate(shown.value):
                self.check(value, real[index], f"{path}[{index}]")
            return
        assert json_type(real) == json_type(shown) and real == shown, (
            f"{path}: the doc shows {shown!r}, the API answers {real!r}"
        )


# --- the doc's console blocks ---------------------------------------------------------------------------


@dataclass
class Example:
    command: str  # one shell command, continuation lines joined
    answer: str  # what the doc shows after it ("" when nothing)


def session_section() -> str:
    text = API_DOC.read_text()
    start = text.index(SESSION_HEADING)
    end = text.find("\n## ", start + len(SESSION_HEADING))
    return text[start : end if end != -1 else len(text)]


def fenced_blocks(section: str, info: str) -> list[str]:
    return re.findall(rf"^```{info}\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


def complete(command: str) -> bool:
    """False while a quoted string (a -d body over several lines) is still open."""
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


def examples() -> list[Example]:
    found: list[Example] = []
    for block in fenced_blocks(session_section(), "console"):
        lines = iter(block.splitlines())
        for line in lines:
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\") or not complete(command):
                    command = command.removesuffix("\\") + "\n" + next(lines)
                found.append(Example(command=command, answer=""))
            else:
                assert found, f"an answer before any command in docs/api.md: {line}"
                found[-1].answer += line + "\n"
    return found


def curl(command: str) -> httpx.Response:
    """Send what the doc's `curl -s [-X M] [-H h]... [-d body] URL` sends."""
    args = shlex.split(command)
    assert args[0] == "curl", command
    method, headers, body, url = "GET", {}, None, ""
    words = iter(args[1:])
    for word in words:
        if word == "-s":
            continue
        if word == "-X":
            method = next(words)
        elif word == "-H":
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(words)
            method = "POST" if method == "GET" else method
        elif word.startswith("http"):
            url = word
        else:
            raise AssertionError(f"a curl option this test does not know: {word}")
    return httpx.request(method, url, headers=headers, content=body, timeout=30)


def rowhook_cli(command: str, db_url: str) -> str:
    args = shlex.split(command)
    assert args[0] == "rowhook", command
    done = subprocess.run(
        [sys.executable, "-m", "rowhook.cli", *args[1:], "--database-url", db_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# --- what happens between the requests -------------------------------------------------------------------


def relay_worked(conn: Conn, session: Session) -> None:
    """Before the delivery log is read: the relay sent the ping (200), and a task created in proj1
    (key 77, event 1042) failed 8 times with 500 'upstream exploded'."""
    sub = session.named["sub_5f0c…"]
    conn.execute(
        "UPDATE rowhook.deliveries SET status = 'succeeded', attempts = 1, finished_at = now(),"
        " last_attempt_at = now(), last_duration_ms = 12, last_status_code = 200 WHERE event_type = 'ping'"
    )
    conn.execute("SELECT rowhook.expand_changes()")  # what was captured so far: events before 1042
    conn.execute("SELECT setval(pg_get_serial_sequence('rowhook.outbox', 'id'), 1041)")
    conn.execute("INSERT INTO tasks (id, account_id, project_id, title) VALUES (77, 'acme', 1, 'call Amy')")
    conn.execute("SELECT rowhook.expand_changes()")  # the relay's fan-out: event 1042
    row = conn.execute(
        "INSERT INTO rowhook.deliveries (subscription_id, account, event_id, event_type, key, status,"
        " attempts, last_status_code, last_error, finished_at, last_attempt_at, last_duration_ms,"
        " last_response, created_at)"
        " SELECT %s, 'acme', id, 'tasks.created', key, 'failed', 8, 500, NULL, now(), now(), 41,"
        " 'upstream exploded', clock_timestamp() FROM rowhook.outbox WHERE id = 1042 RETURNING id",
        (sub,),
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO rowhook.delivery_attempts (delivery_id, duration_ms, status_code, response_body)"
        " SELECT %s, 41, 500, 'upstream exploded' FROM generate_series(1, 7)",
        (row["id"],),
    )


def events_in_window(conn: Conn, session: Session) -> None:
    """Before the replay: 17 events of proj1's tasks happened in the doc's window (the morning of
    2026-11-29): task 77's creation and 16 more."""
    conn.execute(
        "INSERT INTO tasks (account_id, project_id, title) SELECT 'acme', 1, 'task ' || n"
        " FROM generate_series(1, 16) AS n"
    )
    conn.execute(
        "INSERT INTO tasks (account_id, project_id, title) VALUES ('acme', 2, 'not proj1'),"
        " ('globex', 4, 'not acme')"
    )
    conn.execute("SELECT rowhook.expand_changes()")
    conn.execute("UPDATE rowhook.outbox SET occurred_at = '2026-11-29T10:00:00Z'")


# Run before the first command holding the key.
BEFORE: dict[str, Callable[[Conn, Session], None]] = {
    "/deliveries?limit=10": relay_worked,
    "/replay": events_in_window,
}


def app_tables(conn: Conn) -> None:
    """The app's projects and tasks, watched by the doc's own SQL, and its rows: acme's projects
    proj1, Website and Mobile, and one of another account."""
    for statement in TABLES.split(";"):
        if statement.strip().startswith(("CREATE TABLE projects", "CREATE TABLE tasks")):
            conn.execute(statement)  # type: ignore[call-overload]
    (sql,) = fenced_blocks(session_section(), "sql")
    conn.execute(sql)  # type: ignore[call-overload]
    conn.execute(
        "INSERT INTO projects (id, account_id, name) VALUES (1, 'acme', 'proj1'), (2, 'acme', 'Website'),"
        " (3, 'acme', 'Mobile'), (4, 'globex', 'Secret plans')"
    )


async def resolve_doc_hosts(host: str) -> list[str]:
    """hooks.example.com is a public host in the doc; here it resolves without DNS."""
    return [PUBLIC_ADDRESS]


@pytest.fixture
def served(conn: Conn, db_url: str) -> Iterator[str]:
    app_tables(conn)
    with serve_api(Settings(), db_url, resolver=resolve_doc_hosts) as url:
        yield url


def test_the_doc_parses_into_requests_and_answers() -> None:
    found = examples()
    assert sum(e.command.startswith("curl") for e in found) >= 9
    for example in found:
        if example.answer.strip():
            DocJson(example.answer).read()  # raises naming the place it cannot read


def test_every_answer_of_the_worked_session_holds_against_the_api(
    served: str, conn: Conn, db_url: str
) -> None:
    session = Session()
    for example in examples():
        if match := re.fullmatch(r"(\w+)=\$\((.*)\)", example.command):
            session.variables[match.group(1)] = rowhook_cli(match.group(2), db_url)
            continue
        if match := re.fullmatch(r"API=(\S+)", example.command):
            session.variables["API"] = served  # the doc's http://127.0.0.1:8000
            continue
        for key, step in BEFORE.items():
            if key in example.command:
                step(conn, session)
        response = curl(session.expand(example.command))
        context = f"\n$ {example.command}\n{response.status_code} {response.text}"
        if not example.answer.strip():
            assert response.status_code < 400, context
            continue
        shown = DocJson(example.answer).read()
        try:
            session.check(shown, response.json())
        except AssertionError as exc:
            raise AssertionError(f"{exc}{context}") from None
