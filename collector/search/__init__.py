"""Search over pseudonymised records: filters, address and prefix search,
forward-pseudonymised indicators, cursor pages, NDJSON export.

One job per module: `keys` (tenant keys, forward only), `index` (the derived
address and token index, a write path), `query` (parsing a request into a query),
`searcher` (SQL through the store's dialect, pages, export).
"""

from collector.search.index import (
    AddressIndex,
    Restriction,
    Restrictions,
    RestrictionsHook,
    addresses_of,
    identifiers_of,
    net_range,
)
from collector.search.keys import TenantKeys
from collector.search.query import (
    DEFAULT_LIMIT,
    MAX_INDICATORS,
    MAX_LIMIT,
    MAX_TEXT,
    Network,
    NoKeyError,
    QueryError,
    SearchQuery,
    decode_cursor,
    encode_cursor,
    mask_addresses,
    parse_identifiers,
    parse_network,
    parse_query,
    parse_subjects,
    parse_time,
    parse_token,
    parse_window,
    subject_classes,
    token_key,
    unknown_names,
)
from collector.search.searcher import Page, Searcher, match_subject, ndjson

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_INDICATORS",
    "MAX_LIMIT",
    "MAX_TEXT",
    "AddressIndex",
    "Network",
    "NoKeyError",
    "Page",
    "QueryError",
    "Restriction",
    "Restrictions",
    "RestrictionsHook",
    "SearchQuery",
    "Searcher",
    "TenantKeys",
    "addresses_of",
    "decode_cursor",
    "encode_cursor",
    "identifiers_of",
    "mask_addresses",
    "match_subject",
    "ndjson",
    "net_range",
    "parse_identifiers",
    "parse_network",
    "parse_query",
    "parse_subjects",
    "parse_time",
    "parse_token",
    "parse_window",
    "subject_classes",
    "token_key",
    "unknown_names",
]
