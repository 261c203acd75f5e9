"""Throwaway TLS material for tests: a certificate authority and certificates it signs.

Made with the ``openssl`` command-line tool (the ``cryptography`` package is
not a leadflow dependency). Keys are EC P-256, unencrypted PKCS#8 PEM, and
certificates last two days: this is for a test broker on loopback, never
for production.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from streams.errors import InfraError
from streams.infra.process import require_tool

__all__ = ["CertificateAuthority", "IssuedCertificate", "make_ca", "pkcs12_keystore"]

_DAYS = "2"
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate, its private key and the CA certificate that signed it (PEM files)."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA that issues certificates (:meth:`issue`)."""

    cert: Path
    key: Path

    def issue(
        self,
        directory: Path,
        name: str,
        hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    ) -> IssuedCertificate:
        """Sign a new key for ``name`` valid for ``hosts`` (server and client use)."""
        directory.mkdir(parents=True, exist_ok=True)
        key, csr, cert = (directory / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
        ext = directory / f"{name}.ext"
        sans = ",".join(_san(host) for host in hosts)
        ext.write_text(
            f"subjectAltName={sans}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
        )
        _openssl("req", "-new", *_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        _openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-set_serial", str(secrets.randbits(63)), "-days", _DAYS, "-sha256",
            "-extfile", ext, "-out", cert,
        )  # fmt: skip
        csr.unlink()
        ext.unlink()
        return IssuedCertificate(cert=cert, key=key, ca=self.cert)


def make_ca(directory: Path, name: str = "leadflow test CA") -> CertificateAuthority:
    """Create a new self-signed CA in ``directory`` (``<slug>-ca.pem`` and ``.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    cert, key = directory / f"{slug}.pem", directory / f"{slug}.key"
    _openssl(
        "req", "-x509", *_KEY, "-keyout", key, "-out", cert, "-days", _DAYS, "-sha256",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return CertificateAuthority(cert=cert, key=key)


def pkcs12_keystore(issued: IssuedCertificate, path: Path, password: str) -> Path:
    """Bundle a certificate, its key and its CA into a PKCS#12 keystore (for a JVM)."""
    _openssl(
        "pkcs12", "-export", "-in", issued.cert, "-inkey", issued.key,
        "-certfile", issued.ca, "-name", "leadflow", "-out", path,
        "-passout", f"pass:{password}",
    )  # fmt: skip
    return path


def _san(host: str) -> str:
    try:
        ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def _openssl(*args: str | Path) -> None:
    openssl = require_tool("openssl", "install OpenSSL (Debian: apt-get install openssl)")
    proc = subprocess.run([openssl, *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise InfraError(
            f"openssl {args[0]} failed (exit {proc.returncode}): " + " | ".join(detail)
        )
