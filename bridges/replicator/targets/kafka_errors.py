"""librdkafka's failures as edgebus errors, for the Kafka target (kafka.py, kafka_pull.py).

A refused login (a wrong SASL password, an unknown user, a TLS handshake the cluster rejects)
does not come back from the call that needed the connection: librdkafka reports it to the
client's `error_cb`, and the call fails with a bare "Broker transport failure". ReportedErrors
is that callback; kafka_error() turns the failure into KafkaAuthenticationError when an
authentication error was reported, so that the operator reads what is wrong instead of a link
that seems merely down.
"""

from __future__ import annotations

from typing import Any

from edgebus.errors import AuthenticationError, TargetUnavailableError

# KafkaError codes of a refused login or TLS handshake (confluent_kafka.KafkaError._AUTHENTICATION,
# SASL_AUTHENTICATION_FAILED, _SSL), listed here so that this module needs no librdkafka to load.
AUTH_CODES = frozenset({-169, 58, -181})


class KafkaAuthenticationError(AuthenticationError):
    """The link's Kafka cluster refused its credentials or its TLS handshake."""

    hint = ("check the link's kafka: settings (sasl.mechanism, sasl.username, sasl.password_file, "
            "ssl.*) against the cluster's users and certificates")


class KafkaUnavailableError(TargetUnavailableError):
    """The link's Kafka cluster cannot be reached, or did not answer in time."""

    hint = ("edgebus itself is fine: check that the Kafka cluster at the link's address is up "
            "and reachable from this host")


class ReportedErrors:
    """A librdkafka `error_cb`: keeps the last authentication error a client reported."""

    def __init__(self) -> None:
        self.auth: str | None = None

    def __call__(self, err: Any) -> None:
        if err.code() in AUTH_CODES:
            self.auth = err.str()


def kafka_error(e: BaseException, where: str, reported: ReportedErrors | None = None) -> Exception:
    """A librdkafka failure as an edgebus error: authentication refusals are not retried
    quietly (the operator must act), everything else is the link being down."""
    err: Any = e.args[0] if e.args else None
    text = err.str() if hasattr(err, "str") else str(e)
    name = err.name() if hasattr(err, "name") else ""
    code = err.code() if hasattr(err, "code") else None
    if code in AUTH_CODES or "AUTH" in name or "SASL" in text or "SSL" in name:
        return KafkaAuthenticationError(f"{where}: {text}")
    if reported is not None and reported.auth is not None:
        return KafkaAuthenticationError(f"{where}: {reported.auth}")
    return KafkaUnavailableError(f"{where}: {text}")
