"""Who may take part, checked before any Flower process starts: the TLS files of the
server and of a site, a site's private key, whether a site's TLS setting fits the
server's, and the site keys the server admits (each bound to one site name).

Every problem is a :class:`DeployError` whose message names the file or address.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path


class DeployError(RuntimeError):
    """A Flower process could not start or stopped; the message says what to check."""


@dataclass
class Tls:
    """TLS files: the CA certificate sites trust, and the server's certificate and key
    (with subject alternative names for every address sites dial, and 127.0.0.1)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class SiteKey:
    """A site allowed in, and the public key it must sign with: the key admits that site
    only (``fedbcs serve --site-key NAME=FILE``, or ``FILE`` for a site named like its
    file, ``site-a.pub`` -> ``site-a``)."""

    name: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> SiteKey:
        name, sep, path = text.partition("=")
        if not sep:
            name, path = Path(text).name.removesuffix(".pub"), text
        if not name or not path:
            raise ValueError(f"--site-key {text!r}: give NAME=FILE or FILE")
        return cls(name, Path(path).expanduser().resolve())

    def fingerprint(self) -> str:
        return hashlib.sha256(self.path.read_bytes().split()[1]).hexdigest()


def check_site_keys(keys: tuple[SiteKey, ...]) -> None:
    """Each site once, each key once, every file a readable OpenSSH public key."""
    names: dict[str, Path] = {}
    prints: dict[str, str] = {}
    for key in keys:
        if not key.path.is_file():
            raise DeployError(f"--site-key {key.name}={key.path}: no such file")
        fields = key.path.read_bytes().split()
        if len(fields) < 2 or not fields[0].startswith((b"ecdsa-", b"ssh-", b"sk-")):
            raise DeployError(
                f"--site-key {key.path}: not an OpenSSH public key (the site's .pub file, "
                "e.g. from ssh-keygen -t ecdsa -b 384)"
            )
        if key.name in names:
            raise DeployError(f"--site-key: site {key.name!r} is given twice "
                              f"({names[key.name]} and {key.path})")  # fmt: skip
        print_ = key.fingerprint()
        if print_ in prints:
            raise DeployError(
                f"--site-key: {key.path} is the same key as site {prints[print_]!r}'s; a key "
                "admits one site"
            )
        names[key.name], prints[print_] = key.path, key.name


def check_certificates(path: Path, flag: str) -> None:
    """``path`` holds PEM certificates; a :class:`DeployError` naming it otherwise."""
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as err:
        raise DeployError(
            f"{flag} {path}: not a PEM certificate ({_first_line(err)}); give the CA "
            "certificate file (-----BEGIN CERTIFICATE-----)"
        ) from None


def check_server_files(tls: Tls) -> None:
    """The server's TLS files: certificates, a private key, and the key of the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    check_certificates(tls.ca, "--ca")
    check_certificates(tls.cert, "--cert")
    key = _private_key(tls.key, "--key", pem_only=True)
    cert = x509.load_pem_x509_certificates(tls.cert.read_bytes())[0]
    der = serialization.PublicFormat.SubjectPublicKeyInfo
    as_der = serialization.Encoding.DER
    if cert.public_key().public_bytes(as_der, der) != key.public_key().public_bytes(as_der, der):
        raise DeployError(f"--key {tls.key} is not the private key of --cert {tls.cert}")


def check_site_key(path: Path) -> None:
    """A site's private key: an EC key (what Flower signs with), and the key of its
    ``.pub`` file when one lies beside it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = _private_key(path, "--key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeployError(
            f"--key {path}: a {type(key).__name__.removeprefix('_')} key; site keys are EC "
            "keys (ssh-keygen -t ecdsa -b 384 -N '' -f site-a)"
        )
    public = path.with_name(path.name + ".pub")
    if public.is_file():
        ssh = serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        mine = key.public_key().public_bytes(*ssh).split()[:2]
        if public.read_bytes().split()[:2] != mine:
            raise DeployError(
                f"--key {path} does not match its public key {public} (the server admits the "
                "site whose .pub it was given)"
            )


def _private_key(path: Path, flag: str, pem_only: bool = False):
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    if b"CERTIFICATE-----" in data:
        raise DeployError(f"{flag} {path}: a certificate, not a private key")
    loaders = [serialization.load_pem_private_key]
    if not pem_only:
        loaders.insert(0, serialization.load_ssh_private_key)
    for load in loaders:
        try:
            return load(data, password=None)
        except (ValueError, TypeError):
            continue
        except Exception as err:  # e.g. an unsupported algorithm: still the file's fault
            raise DeployError(f"{flag} {path}: not a usable private key ({err})") from None
    kinds = "PEM" if pem_only else "OpenSSH or PEM"
    raise DeployError(f"{flag} {path}: not an unencrypted {kinds} private key")


def probe_server(address: str, ca: Path | None, timeout: float = 5.0) -> None:
    """Dial the server once and say what does not fit before a SuperNode retries in
    silence: a TLS server joined with ``--insecure``, a plain server joined with TLS, a
    certificate the ``--ca`` did not sign. A server that does not answer yet is no error
    (the site waits for it)."""
    import ssl

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except (OSError, ValueError):
        return
    with raw:
        if ca is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            try:
                context.wrap_socket(raw, server_hostname=host).close()
            except (ssl.SSLError, OSError):
                return  # no TLS: as --insecure expects
            raise DeployError(
                f"the server at {address} uses TLS, and this site was started with "
                "--insecure: pass --ca with the CA certificate the server's operator gave you"
            )
        context = ssl.create_default_context(cafile=str(ca))
        try:
            context.wrap_socket(raw, server_hostname=host).close()
        except ssl.SSLCertVerificationError as err:
            raise DeployError(
                f"the server at {address} presents a certificate that --ca {ca} does not "
                f"verify ({err.verify_message}): is it the CA of this server, and does the "
                "server's certificate name this address?"
            ) from None
        except (ssl.SSLError, OSError) as err:
            raise DeployError(
                f"the server at {address} does not speak TLS ({_first_line(err)}): was it "
                "started with --insecure? Then join with --insecure too"
            ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
