"""A private dockerd that listens on TCP with mutual TLS, as a remote engine would.

Certificates are made here with ``cryptography``: a CA, a server certificate for the daemon's
address and a client certificate (``make_certs``); ``make_certs`` again gives a second,
unrelated CA for the wrong-CA tests. The daemon runs like ``SecondDockerd`` (its own network
namespace, data root, exec root, pidfile and unix socket for the test's own ``docker`` calls)
and also listens on ``tcp://<addr>:2376`` with ``--tlsverify``. The namespace is reached over a
veth pair the test creates (10.213.x.1 here, 10.213.x.2 in the namespace): a TCP port on the
namespace's loopback would not be reachable from the host. Nothing here imports gitdock.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .dockerd import SecondDockerd

TLS_PORT = 2376


@dataclass(frozen=True)
class Certs:
    """PEM files: the CA, the server's pair (for dockerd) and the client's pair (for gitdock)."""

    ca: Path
    server_cert: Path
    server_key: Path
    cert: Path  # the client's
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    subject: str,
    usage: x509.ObjectIdentifier,
    ip: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if ip is not None:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certs(directory: Path, server_ip: str) -> Certs:
    """A throwaway CA, a server certificate for ``server_ip`` and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gitdock test CA {secrets.token_hex(3)}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server, server_key = _issue(ca_key, ca_name, server_ip, ExtendedKeyUsageOID.SERVER_AUTH, server_ip)
    client, client_key = _issue(ca_key, ca_name, "gitdock", ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server-cert.pem").write_bytes(server.public_bytes(pem))
    (directory / "cert.pem").write_bytes(client.public_bytes(pem))
    return Certs(
        ca=directory / "ca.pem",
        server_cert=directory / "server-cert.pem",
        server_key=_write_key(directory / "server-key.pem", server_key),
        cert=directory / "cert.pem",
        key=_write_key(directory / "key.pem", client_key),
    )


class TlsDockerd(SecondDockerd):
    """``start()`` makes the certificates (in ``cert_dir``), the veth pair and the daemon."""

    def __init__(self, cert_dir: Path, tag: str | None = None) -> None:
        super().__init__(tag)
        octet = secrets.randbelow(250) + 2
        self.host_ip, self.ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.tcp_host = f"tcp://{self.ip}:{TLS_PORT}"
        self.veth = f"v{self.tag}"[:15]
        self.certs = make_certs(cert_dir, self.ip)

    def _ip(self, *args: str, netns: bool = False) -> None:
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}"] if netns else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

    def _add_namespace(self) -> None:
        self._ip("netns", "add", self.netns)
        self._netns_added = True  # SecondDockerd.close() deletes it, and the veth pair with it
        self._ip("link", "set", "lo", "up", netns=True)
        self._ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.veth)
        self._ip("link", "set", self.veth, "up")
        self._ip("addr", "add", f"{self.ip}/30", "dev", "eth0", netns=True)
        self._ip("link", "set", "eth0", "up", netns=True)

    def start(self, timeout: float = 60) -> TlsDockerd:
        if not self._netns_added:
            self._add_namespace()
        tls = ["--tlsverify", f"--tlscacert={self.certs.ca}", f"--tlscert={self.certs.server_cert}"]
        tls += [f"--tlskey={self.certs.server_key}", "-H", f"tcp://{self.ip}:{TLS_PORT}"]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    *["nsenter", f"--net=/run/netns/{self.netns}", "dockerd", "-H", self.host, *tls],
                    *["--data-root", str(self.data_root), "--exec-root", str(self.exec_root)],
                    *["--pidfile", str(self.pidfile), "--live-restore"],
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            probe = subprocess.run(
                ["docker", "-H", self.host, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                check=False,
                timeout=10,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline or (self._proc is not None and self._proc.poll() is not None):
                raise RuntimeError(f"the TLS dockerd did not answer within {timeout}s; see {self.log}")
            time.sleep(0.1)

    def tls_env(self) -> dict[str, str]:
        """The environment the Docker CLI (and gitdock) reads for this engine."""
        return {
            "DOCKER_HOST": self.tcp_host,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.certs.ca.parent),
        }

    def __enter__(self) -> TlsDockerd:
        return self.start()
