"""A secured local cluster: SASL/SCRAM-SHA-512 users, ACLs (StandardAuthorizer) and TLS.

:class:`ClusterSecurity` is what :class:`eos.testing.kafka.KafkaCluster` needs
to start its nodes secured:

- every node listens with ``SASL_PLAINTEXT`` (clients and inter-broker
  traffic) and ``SASL_SSL`` (clients over TLS), both SCRAM-SHA-512; the
  controller listener stays ``PLAINTEXT`` on 127.0.0.1 (KRaft controllers do
  not support SCRAM; its ANONYMOUS principal is a super user, as brokers
  register with the controller through it);
- the SCRAM credentials of an admin (super user) and of the application
  users are written into the metadata log when the storage is formatted
  (``--add-scram``), so they exist before any node starts;
- the KRaft ``StandardAuthorizer`` is on and denies what no ACL allows, so an
  application user can do exactly what its ACLs say;
- a self-signed certificate for ``127.0.0.1``/``localhost`` is made at start-up
  with Java's ``keytool`` (PKCS12 keystore for the brokers, PEM for clients).

Passwords are random per cluster unless given, and never appear in a ``repr``.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

__all__ = ["MECHANISM", "ClusterSecurity", "SaslUser", "application_acls", "grant"]

MECHANISM = "SCRAM-SHA-512"
_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class SaslUser:
    """A SCRAM user: name and password (the password is kept out of ``repr``)."""

    name: str
    password: str = field(repr=False)

    @property
    def principal(self) -> str:
        """``User:<name>``, as ACLs name it."""
        return f"User:{self.name}"


def _password() -> str:
    return secrets.token_urlsafe(18)


@dataclass
class ClusterSecurity:
    """SASL users, ACL enforcement and TLS material for one local cluster.

    Args:
        users: Application users (besides the admin) to create.
        admin: The super user that tests and tools use to create ACLs.
    """

    users: tuple[SaslUser, ...] = ()
    admin: SaslUser = field(default_factory=lambda: SaslUser("admin", _password()))
    directory: Path | None = None
    _store_password: str = field(default_factory=_password, repr=False)

    @classmethod
    def with_users(cls, *names: str) -> ClusterSecurity:
        """Security with one application user per name, each with a random password."""
        return cls(users=tuple(SaslUser(n, _password()) for n in names))

    def user(self, name: str) -> SaslUser:
        """The user called ``name`` (the admin too)."""
        for user in (self.admin, *self.users):
            if user.name == name:
                return user
        raise KeyError(name)

    @property
    def ca_path(self) -> Path:
        """The PEM certificate clients trust (``ssl.ca.location``)."""
        return self._dir() / "ca.pem"

    @property
    def keystore_path(self) -> Path:
        return self._dir() / "broker.p12"

    def _dir(self) -> Path:
        if self.directory is None:
            raise RuntimeError("ClusterSecurity.prepare() was not called")
        return self.directory

    def prepare(self, directory: Path, java: str) -> None:
        """Make the broker keystore and the clients' PEM certificate with ``keytool``."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        keytool = shutil.which("keytool", path=str(Path(java).parent)) or shutil.which("keytool")
        if keytool is None:
            raise RuntimeError("keytool (part of the JDK) is needed to make the TLS certificate")
        common = ["-storetype", "PKCS12", "-storepass", self._store_password, "-noprompt"]
        if not self.keystore_path.exists():
            subprocess.run(
                [
                    keytool, "-genkeypair", "-alias", "kafka", "-keyalg", "RSA", "-keysize", "2048",
                    "-validity", "30", "-dname", "CN=localhost",
                    "-ext", "SAN=ip:127.0.0.1,dns:localhost",
                    "-keystore", str(self.keystore_path), "-keypass", self._store_password,
                    *common,
                ],
                check=True,
                capture_output=True,
            )  # fmt: skip
        subprocess.run(
            [
                keytool, "-exportcert", "-rfc", "-alias", "kafka",
                "-keystore", str(self.keystore_path), "-file", str(self.ca_path), *common,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def format_arguments(self) -> list[str]:
        """``StorageTool format`` arguments that create every SCRAM credential."""
        args: list[str] = []
        for user in (self.admin, *self.users):
            args += ["--add-scram", f"{MECHANISM}=[name={user.name},password={user.password}]"]
        return args

    def server_settings(self, port: int, tls_port: int, controller_port: int) -> dict[str, str]:
        """``server.properties`` entries of one node."""
        jaas = f'{_LOGIN} required username="{self.admin.name}" password="{self.admin.password}";'
        return {
            "listeners": (
                f"SASL_PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{tls_port},"
                f"CONTROLLER://127.0.0.1:{controller_port}"
            ),
            "advertised.listeners": (
                f"SASL_PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{tls_port}"
            ),
            "listener.security.protocol.map": (
                "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
            ),
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "sasl.enabled.mechanisms": MECHANISM,
            f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore_path),
            "ssl.keystore.password": self._store_password,
            "ssl.key.password": self._store_password,
            "authorizer.class.name": _AUTHORIZER,
            "super.users": f"User:{self.admin.name};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def client_settings(self, user: SaslUser | str, *, tls: bool = False) -> dict[str, str]:
        """librdkafka settings to connect as ``user`` (SASL_SSL with ``tls``).

        Use with the cluster's ``bootstrap_servers`` (or ``tls_bootstrap_servers``).
        """
        if isinstance(user, str):
            user = self.user(user)
        settings = {
            "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
            "sasl.mechanism": MECHANISM,
            "sasl.username": user.name,
            "sasl.password": user.password,
        }
        if tls:
            settings["ssl.ca.location"] = str(self.ca_path)
        return settings

    def properties(self, user: SaslUser | str, *, tls: bool = False) -> str:
        """The same as lines of an eos properties file (unprefixed: for both clients)."""
        return "".join(f"{k}={v}\n" for k, v in self.client_settings(user, tls=tls).items())


def application_acls(
    principal: str,
    *,
    application_id: str,
    input_topics: Sequence[str],
    output_topics: Sequence[str] = (),
    dead_letter_topic: str | None = None,
    create_topics: bool = True,
) -> list[AclBinding]:
    """Exactly the ACLs an eos application needs (what docs/security.md lists).

    - READ on the input topics and on the group ``application_id``;
    - WRITE on the output topics and the dead-letter topic;
    - READ and WRITE on the changelog topics (``<application_id>-`` prefix: written in
      the transaction, read back to restore), DESCRIBE_CONFIGS to check they are
      compacted;
    - WRITE and DESCRIBE on the transactional ids (``<application_id>-`` prefix);
    - CREATE on the changelog prefix and the dead-letter topic, when eos is to create
      them (``create_topics``).

    Args:
        principal: ``User:<name>``.
        application_id: The application's id.
        input_topics: Topics it reads.
        output_topics: Topics it writes (``ctx.send``).
        dead_letter_topic: Its dead-letter topic, if any.
        create_topics: Whether eos creates the changelog and dead-letter topics.
    """
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    allow = AclPermissionType.ALLOW
    prefix = f"{application_id}-"

    def acl(
        kind: ResourceType, name: str, pattern: ResourcePatternType, operation: AclOperation
    ) -> AclBinding:
        return AclBinding(kind, name, pattern, principal, "*", operation, allow)

    acls = [acl(ResourceType.TOPIC, t, literal, AclOperation.READ) for t in input_topics]
    acls.append(acl(ResourceType.GROUP, application_id, literal, AclOperation.READ))
    acls += [acl(ResourceType.TOPIC, t, literal, AclOperation.WRITE) for t in output_topics]
    if dead_letter_topic is not None:
        acls.append(acl(ResourceType.TOPIC, dead_letter_topic, literal, AclOperation.WRITE))
    for operation in (AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE_CONFIGS):
        acls.append(acl(ResourceType.TOPIC, prefix, prefixed, operation))
    for operation in (AclOperation.WRITE, AclOperation.DESCRIBE):
        acls.append(acl(ResourceType.TRANSACTIONAL_ID, prefix, prefixed, operation))
    if create_topics:
        acls.append(acl(ResourceType.TOPIC, prefix, prefixed, AclOperation.CREATE))
        if dead_letter_topic is not None:
            acls.append(acl(ResourceType.TOPIC, dead_letter_topic, literal, AclOperation.CREATE))
    return acls


def grant(
    admin_settings: Mapping[str, str | int | float | bool], acls: Sequence[AclBinding]
) -> None:
    """Create ``acls`` with a super user's client settings; wait until each is created."""
    admin = AdminClient(dict(admin_settings))
    unique = list({str(acl): acl for acl in acls}.values())  # the client refuses duplicates
    for future in admin.create_acls(unique, request_timeout=30).values():
        future.result(30)
