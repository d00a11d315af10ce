"""Kafka's DescribeUserScramCredentials and AlterUserScramCredentials over the SCRAM users of
`kafka.sasl_credentials_file` (sasl.py), the file `edgebus kafka-user` edits.

Describe gives each user's mechanisms and iterations, never keys. Alter writes the file as the
CLI does (a new file renamed over the old, mode 0600): an upsertion brings Kafka's salted password
(the client salts and hashes; the password never travels), from which the StoredKey and ServerKey
the file keeps are derived; a deletion removes one mechanism (the user when none is left). The
file is re-read when it changes, so a user added this way can authenticate at once.

Rules, as Kafka's (describe and alter on the cluster there): describing needs status on the
cluster, altering admin; refused: CLUSTER_AUTHORIZATION_FAILED for every user named. Errors are
Kafka's: UNSUPPORTED_SASL_MECHANISM for a mechanism that is not SCRAM-SHA-256/512 (or with no
credentials file configured), UNACCEPTABLE_CREDENTIAL for iterations outside the file's bounds or
an empty name, RESOURCE_NOT_FOUND for a deletion of nothing, DUPLICATE_RESOURCE for a user and
mechanism named twice in one request.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.config import read_yaml_file
from edgebus.errors import ConfigError
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka import sasl
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.shape import response

log = logging.getLogger("edgebus.kafka")

DESCRIBE_SCRAM, ALTER_SCRAM = 50, 51
CLUSTER_DENIED = DENIED_CODE[Kind.CLUSTER]
UNSUPPORTED_SASL_MECHANISM, RESOURCE_NOT_FOUND, DUPLICATE_RESOURCE = 33, 91, 92
UNACCEPTABLE_CREDENTIAL = 93
SCRAM_MECHANISMS = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}  # Kafka's ScramMechanism numbers
MECHANISM_NAMES = {v: k for k, v in SCRAM_MECHANISMS.items()}


def _denied(ctx: Any, conn: Any, op: Op) -> str | None:
    return refused(ctx, conn, Kind.CLUSTER, op, "*")


# --- DescribeUserScramCredentials ----------------------------------------------------------------
def _scram_users(ctx: Any) -> dict[str, dict[str, Any]]:
    creds = ctx.parts.get("sasl_users")
    if creds is None:  # no SASL configured: no users
        return {}
    # Re-read if it changed, as for authentication; a broken file keeps the users read before
    # (sasl.py logs it at the next authentication).
    with contextlib.suppress(ConfigError):
        creds.reload()
    users: dict[str, dict[str, Any]] = creds.users
    return users


def describe_user_scram_credentials(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    why = _denied(ctx, conn, Op.STATUS)
    if why:  # as Kafka: the error at the top and for each user named
        return response(header, error_code=CLUSTER_DENIED, error_message=why, results=[
            dict(user=u.name, error_code=CLUSTER_DENIED, error_message=why, credential_infos=[])
            for u in req.users or ()])
    users = _scram_users(ctx)
    # null or empty: every user (librdkafka sends an empty list)
    names = [u.name for u in req.users or ()] or sorted(users)
    out: list[dict[str, Any]] = []
    for name in names:
        mechs = users.get(name)
        if names.count(name) > 1:
            out.append(dict(user=name, error_code=DUPLICATE_RESOURCE, credential_infos=[],
                            error_message=f"user {name!r} is named more than once"))
        elif not mechs:
            out.append(dict(user=name, error_code=RESOURCE_NOT_FOUND, credential_infos=[],
                            error_message=f"no SCRAM credentials for user {name!r}"))
        else:
            out.append(dict(user=name, error_code=E.NONE, error_message=None, credential_infos=[
                dict(mechanism=SCRAM_MECHANISMS[m], iterations=e["iterations"])
                for m, e in sorted(mechs.items()) if m in SCRAM_MECHANISMS]))
    return response(header, error_code=E.NONE, error_message=None, results=out)


# --- AlterUserScramCredentials ------------------------------------------------------------------
def _entry(mechanism: str, iterations: int, salt: bytes, salted: bytes) -> dict[str, Any]:
    """What the credentials file keeps (sasl.scram_entry's form) from Kafka's salted password."""
    h = sasl.HASHES[mechanism]
    client_key = hmac.new(salted, b"Client Key", h).digest()
    return {"salt": base64.b64encode(salt).decode(), "iterations": iterations,
            "stored_key": base64.b64encode(hashlib.new(h, client_key).digest()).decode(),
            "server_key": base64.b64encode(hmac.new(salted, b"Server Key", h).digest()).decode()}


def _check(name: str, mechanism: int, seen: set[tuple[str, int]],
           iterations: int | None = None) -> tuple[int, str] | None:
    if (name, mechanism) in seen:
        return DUPLICATE_RESOURCE, f"user {name!r} and mechanism {mechanism} named twice"
    seen.add((name, mechanism))
    if not name or len(name) > sasl.MAX_USER:
        return UNACCEPTABLE_CREDENTIAL, f"a user name of 1..{sasl.MAX_USER} characters"
    if mechanism not in MECHANISM_NAMES:
        return UNSUPPORTED_SASL_MECHANISM, f"mechanism {mechanism}: 1 (SCRAM-SHA-256) or 2 (SCRAM-SHA-512)"
    if iterations is not None and not sasl.MIN_ITERATIONS <= iterations <= sasl.MAX_ITERATIONS:
        return UNACCEPTABLE_CREDENTIAL, (f"iterations {iterations} outside "
                                         f"{sasl.MIN_ITERATIONS}..{sasl.MAX_ITERATIONS}")
    return None


def alter_user_scram_credentials(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    names = list(dict.fromkeys([d.name for d in req.deletions] + [u.name for u in req.upsertions]))
    why = _denied(ctx, conn, Op.ADMIN)
    path = ctx.settings.sasl_credentials_file if ctx.settings.sasl_mechanisms else None
    if why or path is None:
        code, msg = ((CLUSTER_DENIED, why) if why else (UNSUPPORTED_SASL_MECHANISM, (
            "SCRAM is not configured here (kafka.sasl_mechanisms, kafka.sasl_credentials_file)")))
        return response(header, results=[dict(user=n, error_code=code, error_message=msg)
                                         for n in names])
    doc: dict[str, Any] = (read_yaml_file(path) or {}) if path.exists() else {}
    errors: dict[str, tuple[int, str]] = {}
    seen: set[tuple[str, int]] = set()
    changes: list[tuple[str, str, dict[str, Any] | None]] = []
    for d in req.deletions:
        bad = _check(d.name, d.mechanism, seen)
        mech = MECHANISM_NAMES.get(d.mechanism, "")
        if bad is None and mech not in (doc.get(d.name) or {}):
            bad = RESOURCE_NOT_FOUND, f"user {d.name!r} has no {mech} credential"
        if bad is not None:
            errors.setdefault(d.name, bad)
        changes.append((d.name, mech, None))
    for u in req.upsertions:
        bad = _check(u.name, u.mechanism, seen, u.iterations)
        if bad is not None:
            errors.setdefault(u.name, bad)
            continue
        mech = MECHANISM_NAMES[u.mechanism]
        changes.append((u.name, mech, _entry(mech, u.iterations, u.salt, u.salted_password)))
    applied = [c for c in changes if c[0] not in errors]  # a user with an error is left as is
    for name, mech, entry in applied:
        mechs = doc.setdefault(name, {})
        if entry is None:
            mechs.pop(mech, None)
            if not mechs:
                del doc[name]
        else:
            mechs[mech] = entry
    if applied:
        try:
            sasl.save_users(path, doc)
        except OSError as e:
            return response(header, results=[dict(
                user=n, error_code=E.KAFKA_STORAGE_ERROR,
                error_message=f"cannot write {path}: {e.strerror}") for n in names])
        log.info("SCRAM credentials changed for %s (Kafka AlterUserScramCredentials, by %r)",
                 ", ".join(sorted({c[0] for c in applied})), conn)
    return response(header, results=[
        dict(user=n, error_code=errors[n][0], error_message=errors[n][1]) if n in errors
        else dict(user=n, error_code=E.NONE, error_message=None) for n in names])


APIS: list[KafkaApi] = [
    KafkaApi(DESCRIBE_SCRAM, 0, 0, describe_user_scram_credentials),
    KafkaApi(ALTER_SCRAM, 0, 0, alter_user_scram_credentials),
]
