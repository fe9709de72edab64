"""Fixtures of the aggregator tests: the storage backends (`backend`, `pg_cluster`)."""

from tests.support.storage_fixtures import backend, pg_cluster

__all__ = ["backend", "pg_cluster"]
