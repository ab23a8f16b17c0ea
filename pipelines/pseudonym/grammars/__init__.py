"""Log grammars as data: one TOML table per log family (see docs/privacy.md)."""
