"""Who is asking, and whether a browser may ask this (docs/HTTP.md, "Security").

- Authentication: `http.users_file` maps user names to secrets. A request presents one as
  `Authorization: Bearer <secret>` (programs) or HTTP basic `user:secret` (a browser's login
  prompt, which it then repeats on every request of the console, the event stream included). The
  user name is the connection's principal. Without a users file (loopback only, config.py refuses
  anything else) nobody is asked.
- DNS rebinding: without authentication, the Host header must name a loopback address, so a web
  page whose name was re-pointed at 127.0.0.1 cannot read the API through the victim's browser.
- CSRF: no GET changes anything; a state-changing request with an `Origin` header (every browser
  sends one on POST, PATCH, DELETE) must come from this server's own origin, and bodies must be
  application/json (exchange.Request.json), which a cross-site form cannot send.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from edgebus.config import MIN_TOKEN_CHARS, read_yaml_file
from edgebus.errors import AuthenticationError, ConfigError, NotAuthenticatedError
from edgebus.secretfiles import check_private

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
REALM = 'Basic realm="edgebus", charset="UTF-8"'


def load_users(path: Path | None) -> dict[str, str]:
    """http.users_file: user -> secret ({} without a file). Like replica.tokens_file, a file other
    users can read is refused."""
    if path is None:
        return {}
    check_private(path, "http.users_file")
    doc = read_yaml_file(path)
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{path}: expected a mapping of user name -> secret")
    out: dict[str, str] = {}
    for user, secret in doc.items():
        if not isinstance(user, str) or not user or ":" in user or len(user) > 64:
            raise ConfigError(f"{path}: {user!r} is not a user name (1-64 characters, no ':')")
        if not isinstance(secret, str) or len(secret) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{path}: the secret of {user} must be a string of at least "
                              f"{MIN_TOKEN_CHARS} characters")
        out[user] = secret
    return out


class Authenticator:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    @property
    def required(self) -> bool:
        return bool(self.users)

    def principal(self, authorization: str | None) -> str:
        """The user a request's Authorization header proves, "" when none is required;
        AuthenticationError (401) otherwise."""
        if not self.users:
            return ""
        import hmac  # hashlib's OpenSSL is 3.6 MB of RSS: only where there are secrets to compare
        if not authorization:
            raise AuthenticationError("authentication required: HTTP basic (user and secret) "
                                      "or Authorization: Bearer <secret>")
        scheme, _, cred = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            for user, secret in self.users.items():
                if hmac.compare_digest(secret.encode(), cred.strip().encode()):
                    return user
        elif scheme == "basic":
            try:
                user, _, secret = base64.b64decode(cred.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthenticationError("malformed basic credentials") from None
            known = self.users.get(user)
            # compare_digest even for an unknown user, so timing does not tell users apart
            if hmac.compare_digest((known or "\0").encode(), secret.encode()) and known:
                return user
        else:
            raise AuthenticationError(f"unsupported authorization scheme {scheme!r}")
        raise AuthenticationError("wrong user or secret")


def is_loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port)."""
    h = host.strip().lower()
    if h.startswith("["):
        h = h[1:].partition("]")[0]
    elif h.count(":") == 1:
        h = h.partition(":")[0]
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_origin(method: str, origin: str | None, host: str | None, fetch_site: str | None) -> None:
    """NotAuthenticatedError (403) for a state-changing request a browser sent from another
    site. Requests without Origin (curl, programs) pass: they carry no ambient credentials of a
    victim's browser."""
    if method in SAFE_METHODS:
        return
    if fetch_site is not None and fetch_site.strip().lower() == "cross-site":
        raise NotAuthenticatedError("cross-site request refused (Sec-Fetch-Site: cross-site)")
    if origin is None:
        return
    o = urlsplit(origin.strip())
    if origin.strip() == "null" or not o.netloc or o.netloc.lower() != (host or "").strip().lower():
        raise NotAuthenticatedError(
            f"cross-origin {method} refused: Origin {origin!r} is not this server ({host!r})")
