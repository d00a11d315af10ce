"""SASL on the Kafka listener: SaslHandshake (v1) and SaslAuthenticate (v0-2), mechanisms PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, 7677), users from `kafka.sasl_credentials_file`.

The file keeps, per user and SCRAM hash, only what a SCRAM server needs: salt, iterations,
StoredKey and ServerKey (never a password). PLAIN is checked against the same entry: the
password given is salted and hashed the same way and compared with StoredKey. `edgebus
kafka-user add` writes entries (`scram_entry`). The file is re-read when it changes, so users
are added without a restart. With SASL configured, a connection may call nothing but ApiVersions
and the SASL APIs until it authenticates; then `conn.principal` is the user name (the
access-control rules map it).

Handshake v0 (raw SASL tokens outside Kafka frames) is not supported: every client of the last
years uses v1 and SaslAuthenticate.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from edgebus.config import read_yaml_file
from edgebus.errors import ConfigError
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.codec import build, response_module
from edgebus.server.kafka.framing import MAX_KAFKA_FRAME
from edgebus.server.logrepeat import bound_repeats

if TYPE_CHECKING:
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.listeners.stream import Connection

log = bound_repeats(logging.getLogger("edgebus.kafka"), logging.WARNING)  # a looping client: a few lines

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
DEFAULT_ITERATIONS = 8192  # above the 4096 RFC 7677 asks at least
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 1_000_000  # the bound keeps a bad file from stalling the loop
MAX_USER = 255


# --- the credentials file ------------------------------------------------------------------------

def scram_entry(password: str, mechanism: str, iterations: int = DEFAULT_ITERATIONS,
                salt: bytes | None = None) -> dict[str, Any]:
    """What the credentials file stores for `password` under a SCRAM mechanism."""
    import hashlib
    import hmac
    import secrets

    h = HASHES[mechanism]
    salt = salt if salt is not None else secrets.token_bytes(24)
    salted = hashlib.pbkdf2_hmac(h, password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", h).digest()
    return {"salt": base64.b64encode(salt).decode(), "iterations": iterations,
            "stored_key": base64.b64encode(hashlib.new(h, client_key).digest()).decode(),
            "server_key": base64.b64encode(hmac.new(salted, b"Server Key", h).digest()).decode()}


class Credentials:
    """The users of `kafka.sasl_credentials_file`, re-read when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self.users: dict[str, dict[str, dict[str, Any]]] = {}
        self.reload()

    def reload(self) -> None:
        try:
            st = self.path.stat()
        except OSError as e:
            raise ConfigError(f"kafka.sasl_credentials_file: cannot read {self.path}: {e.strerror}") from None
        if st.st_mtime == self._mtime:
            return
        if st.st_mode & 0o077:  # salted keys still allow an offline dictionary attack
            raise ConfigError(f"kafka.sasl_credentials_file: {self.path} is readable by its group or "
                              f"others (mode {st.st_mode & 0o777:04o}); chmod 0600 it")
        doc = read_yaml_file(self.path) or {}
        if not isinstance(doc, dict):
            raise ConfigError(f"{self.path}: expected a mapping of user name -> mechanisms")
        users: dict[str, dict[str, dict[str, Any]]] = {}
        for user, mechs in doc.items():
            if not isinstance(user, str) or not 0 < len(user) <= MAX_USER or not isinstance(mechs, dict):
                raise ConfigError(f"{self.path}: {user!r}: expected a user name -> mechanism entries")
            entry: dict[str, dict[str, Any]] = {}
            for mech, spec in mechs.items():
                if mech not in HASHES or not isinstance(spec, dict):
                    raise ConfigError(f"{self.path}: {user}: unknown mechanism {mech!r} "
                                      f"(expected {', '.join(HASHES)})")
                try:
                    it = int(spec["iterations"])
                    if not MIN_ITERATIONS <= it <= MAX_ITERATIONS:
                        raise ValueError(f"iterations {it} outside {MIN_ITERATIONS}..{MAX_ITERATIONS}")
                    entry[mech] = {"salt": base64.b64decode(spec["salt"]), "iterations": it,
                                   "stored_key": base64.b64decode(spec["stored_key"]),
                                   "server_key": base64.b64decode(spec["server_key"])}
                except (KeyError, ValueError, TypeError) as err:
                    raise ConfigError(f"{self.path}: {user}: {mech}: {err}") from None
            users[user] = entry
        self.users, self._mtime = users, st.st_mtime

    def get(self, user: str, mechanism: str) -> dict[str, Any] | None:
        try:
            self.reload()
        except ConfigError as e:  # keep serving the users read before; say why once per change
            log.error("%s (still using the previous version)", e)
            self._mtime = self.path.stat().st_mtime if self.path.exists() else None
        return self.users.get(user, {}).get(mechanism)

    def check_plain(self, user: str, password: str) -> bool:
        """PLAIN: the password, salted and hashed as for SCRAM, against StoredKey."""
        import hashlib
        import hmac

        for mech, h in HASHES.items():
            e = self.get(user, mech)
            if e is None:
                continue
            salted = hashlib.pbkdf2_hmac(h, password.encode("utf-8"), e["salt"], e["iterations"])
            stored = hashlib.new(h, hmac.new(salted, b"Client Key", h).digest()).digest()
            return hmac.compare_digest(stored, e["stored_key"])
        return False


def init(ctx: KafkaContext) -> list[Any]:
    path = ctx.settings.sasl_credentials_file
    if ctx.settings.sasl_mechanisms and path is not None:
        ctx.parts["sasl_users"] = Credentials(path)
    return []


# --- the APIs ------------------------------------------------------------------------------------

def handshake(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    mod = response_module(SASL_HANDSHAKE, header.request_api_version)
    offered = ctx.settings.sasl_mechanisms
    if req.mechanism not in offered or getattr(conn, "principal", None) is not None:
        return build(mod.SaslHandshakeResponse, error_code=ErrorCode.unsupported_sasl_mechanism
                     if req.mechanism not in offered else ErrorCode.illegal_sasl_state,
                     mechanisms=tuple(offered))
    conn.sasl_mechanism = req.mechanism  # type: ignore[attr-defined]
    conn.sasl_state = None  # type: ignore[attr-defined]
    return build(mod.SaslHandshakeResponse, error_code=ErrorCode.none, mechanisms=tuple(offered))


def authenticate(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    mod = response_module(SASL_AUTHENTICATE, header.request_api_version)
    mech = getattr(conn, "sasl_mechanism", None)
    users: Credentials | None = ctx.parts.get("sasl_users")
    if mech is None or users is None:
        conn.close_after_answer = True  # type: ignore[attr-defined]  # as Kafka does
        return build(mod.SaslAuthenticateResponse, error_code=ErrorCode.illegal_sasl_state,
                     error_message="SaslHandshake first", auth_bytes=b"")
    user: str | None
    try:
        if mech == "PLAIN":
            reply, user = b"", _plain(users, req.auth_bytes)
        else:
            reply, user = _scram(users, conn, mech, req.auth_bytes)
    except _Failed as e:
        log.warning("%r (%s): SASL %s authentication failed: %s", conn,
                    getattr(conn, "peer_addr", "?"), mech, e)
        conn.close_after_answer = True  # type: ignore[attr-defined]
        return build(mod.SaslAuthenticateResponse, error_code=ErrorCode.sasl_authentication_failed,
                     error_message=f"authentication failed ({mech})", auth_bytes=b"")
    if user is not None:
        conn.principal = user  # type: ignore[attr-defined]
        conn.kafka_auth_required = False  # type: ignore[attr-defined]
        conn.proto.frames.limit(MAX_KAFKA_FRAME)
        conn.sasl_state = None  # type: ignore[attr-defined]
        log.info("%r (%s) authenticated as %s (%s)", conn, getattr(conn, "peer_addr", "?"), user, mech)
    return build(mod.SaslAuthenticateResponse, error_code=ErrorCode.none, error_message=None,
                 auth_bytes=reply, session_lifetime=0)


class _Failed(Exception):
    pass


def _plain(users: Credentials, data: bytes) -> str:
    parts = data.split(b"\0")
    if len(parts) != 3:
        raise _Failed("malformed PLAIN message")
    authz, user_b, password_b = parts
    try:
        user, password = user_b.decode("utf-8"), password_b.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failed("user or password is not UTF-8") from None
    if authz and authz != user_b:
        raise _Failed("authorization id differs from the user")
    if not users.check_plain(user, password):
        raise _Failed(f"wrong password or unknown user {user!r}")
    return user


def _attrs(msg: str) -> dict[str, str]:
    out = {}
    for part in msg.split(","):
        if len(part) >= 2 and part[1] == "=":
            out[part[0]] = part[2:]
    return out


def _scram(users: Credentials, conn: Any, mech: str, data: bytes) -> tuple[bytes, str | None]:
    """(the server's message, the user once the exchange is complete, else None)."""
    # hashlib, hmac and secrets (libcrypto) only once someone authenticates: an idle supervisor
    # does not carry them.
    import hashlib
    import hmac
    import secrets

    h = HASHES[mech]
    try:
        msg = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failed("SCRAM message is not UTF-8") from None
    state = getattr(conn, "sasl_state", None)
    if state is None:  # client-first: gs2 header, then n=user,r=nonce
        if not msg.startswith(("n,", "y,")):
            raise _Failed("channel binding is not supported")
        bare = msg.split(",", 2)[2] if msg.count(",") >= 2 else ""
        a = _attrs(bare)
        user = a.get("n", "").replace("=2C", ",").replace("=3D", "=")
        cnonce = a.get("r", "")
        if not user or not cnonce:
            raise _Failed("malformed client-first message")
        e = users.get(user, mech)
        if e is None:
            raise _Failed(f"unknown user {user!r}")
        nonce = cnonce + base64.b64encode(secrets.token_bytes(18)).decode()
        server_first = f"r={nonce},s={base64.b64encode(e['salt']).decode()},i={e['iterations']}"
        conn.sasl_state = (user, bare, server_first, nonce, e)
        return server_first.encode(), None
    user, bare, server_first, nonce, e = state
    a = _attrs(msg)
    if a.get("r") != nonce or "p" not in a or "c" not in a:
        raise _Failed("malformed client-final message or wrong nonce")
    without_proof = msg[: msg.rindex(",p=")]
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    try:
        proof = base64.b64decode(a["p"], validate=True)
    except ValueError:
        raise _Failed("malformed proof") from None
    signature = hmac.new(e["stored_key"], auth_message, h).digest()
    if len(proof) != len(signature):
        raise _Failed("malformed proof")
    client_key = bytes(x ^ y for x, y in zip(proof, signature, strict=True))
    if not hmac.compare_digest(hashlib.new(h, client_key).digest(), e["stored_key"]):
        raise _Failed(f"wrong password for {user!r}")
    server_sig = hmac.new(e["server_key"], auth_message, h).digest()
    return f"v={base64.b64encode(server_sig).decode()}".encode(), user


APIS: list[KafkaApi] = [
    KafkaApi(SASL_HANDSHAKE, 1, 1, handshake, before_auth=True),
    KafkaApi(SASL_AUTHENTICATE, 0, 2, authenticate, before_auth=True),
]


def add_user(path: Path, user: str, password: str, mechanisms: tuple[str, ...] = tuple(HASHES)) -> None:
    """Write (or replace) `user` in the credentials file, mode 0600 (`edgebus kafka-user add`)."""
    doc: dict[str, Any] = {}
    if path.exists():
        doc = read_yaml_file(path) or {}
    doc[user] = {m: scram_entry(password, m) for m in mechanisms}
    _write(path, doc)


def remove_user(path: Path, user: str) -> bool:
    """Remove `user` from the credentials file; False if it was not there."""
    doc: dict[str, Any] = (read_yaml_file(path) or {}) if path.exists() else {}
    if doc.pop(user, None) is None:
        return False
    _write(path, doc)
    return True


def save_users(path: Path, doc: dict[str, Any]) -> None:
    """Write the whole credentials file (user -> mechanism -> scram_entry), mode 0600."""
    _write(path, doc)


def _write(path: Path, doc: dict[str, Any]) -> None:
    import yaml

    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f)
    os.replace(tmp, path)
