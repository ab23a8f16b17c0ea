"""Pseudonymisation on the agent: no raw identifier leaves the site (docs/privacy.md).

Public surface:
    TenantKey(secret, epoch) / TenantKey.from_hex(hex64, epoch=1) / .key_id / KeyRing
    Pseudonymiser(key, policy=None): .record(r) .records(rs) .ip(a) .mac(m) .token(v) .text(s)
        .id_token(cls, value) .contact(s)   the keyed token of a user/email/phone/host/person
    PrivacyPolicy(...) / PrivacyPolicy.from_section(section)   the `[privacy]` table
    FieldClass, classify(name)
    find_leaks(records, pseudonymiser=None, *, raw=None) -> [(record id, field)]
    leakguard.find_leaks_by_class / ingest_findings / label_findings   every class
    subjects.parse_subjects(text) / forward(subjects, p)   `user:adaeze` subject files
    pipelines.pseudonym.reverse.Reidentifier(key, policy): .address(text, mode) .mac(text)
        .token(token, candidates)   for the privileged key holder only
Modules: classes (the identifier class table), keys, cryptopan, ipcrypt, scan (finding
addresses in text), grammar + grammars/*.toml (log grammars as data), idscan (finding
names, e-mails, phones, address-bearing hosts), known (names the tenant has learnt),
geo, policy, core (the pseudonymiser), leakguard, subjects, reverse.
"""

from pipelines.pseudonym.core import Pseudonymiser, non_identifying
from pipelines.pseudonym.errors import KeyMaterialError, PolicyError, PseudonymError
from pipelines.pseudonym.keys import KeyRing, TenantKey, rotation_due
from pipelines.pseudonym.leakguard import find_leaks
from pipelines.pseudonym.policy import FieldClass, PrivacyPolicy, classify

__all__ = [
    "FieldClass",
    "KeyMaterialError",
    "KeyRing",
    "PolicyError",
    "PrivacyPolicy",
    "PseudonymError",
    "Pseudonymiser",
    "TenantKey",
    "classify",
    "find_leaks",
    "non_identifying",
    "rotation_due",
]
