"""API fixtures: a seeded store on SQLite or a throw-away PostgreSQL schema."""

from api_kit import env

__all__ = ["env"]
