"""A real Flower deployment on 127.0.0.1 for tests: `fedbcs serve` and one `fedbcs join`
per site, each a separate process group, plus test credentials (CA, server certificate,
site key pairs) made with ``cryptography``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

FEDBCS = str(Path(sys.executable).parent / "fedbcs")
TINY = [
    "--image-size", "32", "--batch-size", "4", "--set", "model.width=4",
    "--set", "data.synthetic.images_per_site=10",
]  # fmt: skip


def descendants(pid: int) -> list[int]:
    """Every process started (transitively) by ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    def __init__(self, root: Path, tls: dict[str, Path] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.tls = tls
        self.server: subprocess.Popen | None = None
        self.sites: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}

    def serve(self, *args: str) -> subprocess.Popen:
        security = (
            ["--ca", str(self.tls["ca"]), "--cert", str(self.tls["cert"]),
             "--key", str(self.tls["key"])]
            if self.tls else ["--insecure"]
        )  # fmt: skip
        command = [FEDBCS, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--home", str(self.root / "server"), *security, *args]  # fmt: skip
        log = (self.root / "serve.log").open("ab")
        self.server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        return self.server

    def join(
        self, site: str, *args: str, insecure: bool | None = None, log: str | None = None
    ) -> subprocess.Popen:
        """Start a site; ``log`` names its log and state (default: the site's name)."""
        plain = self.tls is None if insecure is None else insecure
        security = ["--insecure"] if plain else ["--ca", str(self.tls["ca"])]
        own = log or site
        command = [FEDBCS, "join", "--server", f"127.0.0.1:{self.port}", "--site", site,
                   "--state-dir", str(self.root / own), "--port", str(free_port()),
                   *security, *args]  # fmt: skip
        output = (self.root / f"{own}.log").open("ab")
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        self.sites[own] = process
        return process

    def kill(self, site: str) -> None:
        """SIGKILL the site's processes, its SuperNode and whatever that started (a crash,
        a pulled cable)."""
        process = self.sites.pop(site)
        for pid in [process.pid, *descendants(process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()

    def wait_server(self, timeout: float) -> int:
        return self.server.wait(timeout)

    def log(self, name: str = "serve") -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.server is not None and self.server.poll() is not None:
                raise AssertionError(f"the server exited while waiting for {what}:\n{self.log()}")
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-3000:]}")

    def close(self) -> None:
        for process in [*self.sites.values(), self.server]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.sites.values(), self.server]:
            if process is not None:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def make_credentials(folder: Path, sites: list[str]) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an EC P-384
    OpenSSH key pair per site (what node authentication takes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    pem, ssh = serialization.Encoding.PEM, serialization.Encoding.OpenSSH
    plain = serialization.NoEncryption()
    days = dt.timedelta(days=1)

    def certificate(subject: str, issuer: x509.Name, key, signer, extension, critical: bool):
        builder = x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
        builder = builder.public_key(key.public_key()).serial_number(x509.random_serial_number())
        builder = builder.not_valid_before(now - days).not_valid_after(now + 2 * days)
        return builder.add_extension(extension, critical=critical).sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP384R1())
    authority = x509.BasicConstraints(ca=True, path_length=None)
    ca = certificate("fedbcs test CA", name("fedbcs test CA"), ca_key, ca_key, authority, True)
    server_key = ec.generate_private_key(ec.SECP384R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    alt = x509.SubjectAlternativeName(sans)
    server = certificate("127.0.0.1", ca.subject, server_key, ca_key, alt, False)
    paths = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(server.public_bytes(pem))
    pkcs8 = serialization.PrivateFormat.PKCS8
    paths["key"].write_bytes(server_key.private_bytes(pem, pkcs8, plain))
    for site in sites:
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = folder / site, folder / f"{site}.pub"
        private.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, plain))
        openssh = serialization.PublicFormat.OpenSSH
        public.write_bytes(key.public_key().public_bytes(ssh, openssh))
        paths[site], paths[f"{site}.pub"] = private, public
    return paths
