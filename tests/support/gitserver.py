"""Real git repositories and servers for tests: file://, HTTP (git http-backend), SSH (sshd).

Nothing here fakes git: repositories are made with pygit2, served by git's own CGI behind
http.server, or by Debian's sshd running git-upload-pack. Everything binds 127.0.0.1 on a
random port and is torn down by the caller (context managers).
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pygit2

GIT_HTTP_BACKEND = Path("/usr/lib/git-core/git-http-backend")
SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen")

SIGNATURE = pygit2.Signature("Gitdock Test", "test@gitdock.invalid", 1_700_000_000, 0)


@dataclass(frozen=True)
class Exec:
    """A file with the executable bit set."""

    data: bytes


@dataclass(frozen=True)
class Link:
    """A symbolic link pointing at `target`."""

    target: str


FileContent = str | bytes | Exec | Link


def _build_tree(repo: pygit2.Repository, files: Mapping[str, FileContent]) -> pygit2.Oid:
    children: dict[str, dict[str, FileContent]] = {}
    builder = repo.TreeBuilder()
    for name, content in sorted(files.items()):
        head, sep, rest = name.partition("/")
        if sep:
            children.setdefault(head, {})[rest] = content
            continue
        if isinstance(content, Exec):
            builder.insert(name, repo.create_blob(content.data), pygit2.enums.FileMode.BLOB_EXECUTABLE)
        elif isinstance(content, Link):
            builder.insert(name, repo.create_blob(content.target.encode()), pygit2.enums.FileMode.LINK)
        else:
            data = content.encode() if isinstance(content, str) else content
            builder.insert(name, repo.create_blob(data), pygit2.enums.FileMode.BLOB)
    for name, sub in children.items():
        builder.insert(name, _build_tree(repo, sub), pygit2.enums.FileMode.TREE)
    oid: pygit2.Oid = builder.write()
    return oid


class Upstream:
    """A bare repository playing the remote; `commit` writes whole-tree snapshots to a branch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        self._tick = 0

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def commit(
        self,
        files: Mapping[str, FileContent],
        message: str = "update",
        branch: str = "main",
        parents: list[str] | None = None,
    ) -> str:
        """Commit `files` as the full tree on `branch` (parent: the branch tip unless given)."""
        ref = f"refs/heads/{branch}"
        if parents is None:
            parents = [str(self.repo.references[ref].target)] if ref in self.repo.references else []
        self._tick += 1
        sig = pygit2.Signature(SIGNATURE.name, SIGNATURE.email, SIGNATURE.time + self._tick, 0)
        tree = _build_tree(self.repo, files)
        oid = self.repo.create_commit(None, sig, sig, message, tree, [pygit2.Oid(hex=p) for p in parents])
        self.repo.references.create(ref, oid, force=True)
        return str(oid)

    def tag(self, name: str, target: str, annotated: bool = True) -> None:
        if annotated:
            self.repo.create_tag(
                name, pygit2.Oid(hex=target), pygit2.enums.ObjectType.COMMIT, SIGNATURE, name
            )
        else:
            self.repo.references.create(f"refs/tags/{name}", pygit2.Oid(hex=target))

    def delete_branch(self, branch: str) -> None:
        self.repo.references.delete(f"refs/heads/{branch}")


_HANDED_OUT: set[int] = set()
_FIRST_PORT = 10_000  # below: ports services are more likely to claim


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out on its own (bind to 0, a connect's source port)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port free now, for a server the caller (or a child) binds later.

    The port is picked below the kernel's ephemeral range and never twice in one session: a
    port got by binding to 0 and released comes from the range the kernel also draws connect()
    source ports and other bind-to-0 callers from, so between release and the later bind a
    busy machine can hand it to someone else (the server then fails with EADDRINUSE).
    """
    rng = random.SystemRandom()
    high = _ephemeral_low()
    for _ in range(200):
        port = rng.randrange(_FIRST_PORT, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:  # no SO_REUSEADDR: a port in TIME_WAIT is not free either
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_FIRST_PORT}-{high - 1} after 200 tries")


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --- HTTP: git http-backend (CGI) behind http.server ---------------------------------------


@dataclass
class HttpGitServer:
    base_url: str  # http://127.0.0.1:PORT ; repos at base_url/<name relative to root>
    requests: list[str]


def _make_cgi_handler(
    root: Path, auth: tuple[str, str] | None, log: list[str]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _handle(self) -> None:
            log.append(f"{self.command} {self.path}")
            if auth is not None:
                expected = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": "127.0.0.1",
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            proc = subprocess.run(
                [str(GIT_HTTP_BACKEND)], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = proc.stdout.partition(b"\r\n\r\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode("latin-1").split("\r\n"):
                if not line:
                    continue
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.strip().split()[0])
                else:
                    headers.append((key, value.strip()))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _handle
        do_POST = _handle

    return Handler


@contextmanager
def serve_http(
    root: Path, auth: tuple[str, str] | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[HttpGitServer]:
    """Serve every repository under `root` over smart HTTP; optional basic auth and TLS (cert, key)."""
    log: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_cgi_handler(root, auth, log))
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield HttpGitServer(f"{scheme}://127.0.0.1:{server.server_address[1]}", log)
    finally:
        server.shutdown()
        server.server_close()


def make_tls_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1. Returns (ca_cert, cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gitdock test CA")])
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
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


# --- a server that accepts connections and never answers -----------------------------------


@contextmanager
def serve_black_hole() -> Iterator[int]:
    """Listen on a random port, accept every connection and never send a byte. Yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


# --- SSH: Debian's sshd running git-upload-pack --------------------------------------------


def has_sshd() -> bool:
    return SSHD.exists() and SSH_KEYGEN is not None and os.geteuid() == 0


def keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    """Generate an OpenSSH key pair at `path` (+ `.pub`). Returns the private key path."""
    assert SSH_KEYGEN is not None
    args = [SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", "gitdock-test", "-f", str(path)]
    if kind == "rsa":
        args[2:2] = ["-b", "2048"]
    subprocess.run(args, check=True)
    return path


@dataclass
class SshGitServer:
    port: int
    host_key_pub: str  # "ssh-ed25519 AAAA..." as in a known_hosts line, without the host part
    client_key: Path
    user: str

    def url(self, repo_path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo_path}"

    def known_hosts_line(self, hashed: bool = False) -> str:
        host = f"[127.0.0.1]:{self.port}"
        if hashed:
            import hashlib
            import hmac

            salt = os.urandom(20)
            digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
            host = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
        return f"{host} {self.host_key_pub}\n"


@contextmanager
def serve_ssh(
    workdir: Path, host_key_type: str = "ed25519", client_key_type: str = "ed25519"
) -> Iterator[SshGitServer]:
    """Run sshd -D on 127.0.0.1:<random> with generated host and client keys (root login by key)."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = keygen(workdir / "host_key", host_key_type)
    client_key = keygen(workdir / "client_key", client_key_type)
    authorized = workdir / "authorized_keys"
    authorized.write_text((workdir / "client_key.pub").read_text())
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                "PidFile none",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir sshd insists on
    log = (workdir / "sshd.log").open("wb")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port)
        pub = (workdir / "host_key.pub").read_text().split()
        yield SshGitServer(port, f"{pub[0]} {pub[1]}", client_key, "root")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
