"""Certificates for the simulator, made with `cryptography` and cached for the process.

* a simulator root CA: trust it (ProbeContext(extra_ca_pem=authority().ca_pem)) and the
  simulated provider endpoints look like real, valid HTTPS;
* an "inspection" CA nobody trusts: what a TLS-inspecting firewall presents;
* per host, on demand: valid, expired, expiring (in 10 days), wrong-host, self-signed,
  inspected certificates.

EC P-256 keys: generating one takes about a millisecond, so hundreds of terminals are cheap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_MODES = ("valid", "expired", "expiring", "wrong_host", "self_signed", "inspected")
EXPIRING_DAYS = 10  # "expiring": valid, from the simulator CA, expiring in this many days
WRONG_HOST = "wrong-host.sim.invalid"


def _name(cn: str, org: str = "TermPulse Simulator") -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class _Issuer:
    def __init__(self, cn: str, org: str) -> None:
        now = dt.datetime.now(dt.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(cn, org)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()


class CertAuthority:
    """Issues and caches the simulator's certificates and server SSL contexts."""

    def __init__(
        self,
        root: tuple[str, str] = ("TermPulse Simulator Root CA", "TermPulse Simulator"),
        inspection: tuple[str, str] = ("Contoso SSL Inspection CA", "Contoso Firewall"),
    ) -> None:
        """(common name, organisation) of the root and of the inspection CA: a test can make
        a CA of its own, which nothing else trusts."""
        self.root = _Issuer(*root)
        self.inspection = _Issuer(*inspection)
        self._dir = Path(tempfile.mkdtemp(prefix="termpulse-sim-certs-"))
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        self._der: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()  # contexts may be asked for from several threads

    @property
    def ca_pem(self) -> str:
        """Trust this (and only this) to see the simulated endpoints as valid."""
        return self.root.pem

    def server_context(self, host: str, mode: str = "valid") -> ssl.SSLContext:
        key = (host, mode)
        with self._lock:
            if key not in self._contexts:
                self._contexts[key] = self._make_context(host, mode)
            return self._contexts[key]

    def fingerprint(self, host: str, mode: str = "valid") -> str:
        """SHA-256 of the certificate the simulator presents for (host, mode)."""
        self.server_context(host, mode)
        return hashlib.sha256(self._der[(host, mode)]).hexdigest()

    def _make_context(self, host: str, mode: str) -> ssl.SSLContext:
        if mode not in CERT_MODES:
            raise ValueError(f"unknown certificate mode {mode!r}")
        cert, key = self._issue(host, mode)
        stem = self._dir / f"{abs(hash((host, mode))):x}-{mode}"
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        chain = cert.public_bytes(serialization.Encoding.PEM)
        cert_path.write_bytes(chain)
        key_path.write_bytes(_pem_key(key))
        self._der[(host, mode)] = cert.public_bytes(serialization.Encoding.DER)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)
        return ctx

    def _issue(self, host: str, mode: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject_host = WRONG_HOST if mode == "wrong_host" else host
        issuer = {"self_signed": None, "inspected": self.inspection}.get(mode, self.root)
        not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=365)
        if mode == "expired":
            not_before, not_after = now - dt.timedelta(days=400), now - dt.timedelta(days=35)
        elif mode == "expiring":
            not_before, not_after = (
                now - dt.timedelta(days=355),
                now + dt.timedelta(days=EXPIRING_DAYS, hours=1),
            )
        subject = _name(
            subject_host, "Simulated terminal" if mode == "self_signed" else "TermPulse Simulator"
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.name if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([_san(subject_host)]), critical=False)
        )
        cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
        return cert, key


@lru_cache(maxsize=1)
def authority() -> CertAuthority:
    """The process-wide simulator CA (certificates are made once per run)."""
    return CertAuthority()
