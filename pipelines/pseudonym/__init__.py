"""Pseudonymisation on the agent: no raw identifier leaves the site.

Public surface:
    TenantKey(secret, epoch) / TenantKey.from_hex(hex64, epoch=1) / KeyRing
    Pseudonymiser(key, policy=None): .record(r) .ip(a) .token(v) .text(s) .mac(m)
    PrivacyPolicy(...) / PrivacyPolicy.from_section(section)
    FieldClass, classify(name)
    find_leaks(records, pseudonymiser=None, *, raw=None)   (pipelines.pseudonym.leakguard)
    reidentify: Reidentifier(key).address(text, mode) / .token(token, candidates)
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
