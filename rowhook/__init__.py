"""rowhook: row changes in PostgreSQL turned into signed webhooks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rowhook")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+checkout"
