"""A private Sigstore made with `cryptography`: Fulcio CA, CT log, Rekor, in one object.

It issues Fulcio-style leaf certificates (code-signing EKU, SAN email or URI, OIDC issuer
extension, an embedded SCT signed by its CT log key), makes Rekor entries with a SET signed by
its Rekor key, and writes the matching `trusted_root.json`. Every knob a negative test needs
(wrong SCT key, no EKU, another root) is a parameter, so each test mutates one thing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from gitdock.runtime.trust.signature import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    LegacySignature,
    make_simple_signing_payload,
)

UTC = dt.UTC
SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ISSUER_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
ISSUER_V1_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER = "https://token.actions.example.com"
EMAIL = "ci@example.com"


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ca(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    start: dt.datetime,
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gitdock.test"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    issuer_name, signer = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True
        )
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(signer, hashes.SHA384())


@dataclass
class Leaf:
    """An issued signing certificate and its private key."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class PrivateSigstore:
    """Root + intermediate CA, CT log key and Rekor key, made fresh per instance."""

    start: dt.datetime = field(default_factory=lambda: dt.datetime(2024, 1, 1, tzinfo=UTC))

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.root = _ca("fulcio-root", self.root_key, None, self.start)
        self.intermediate_key = ec.generate_private_key(ec.SECP384R1())
        self.intermediate = _ca(
            "fulcio-intermediate", self.intermediate_key, (self.root.subject, self.root_key), self.start
        )
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.log_index = 0

    # --- the trusted root ------------------------------------------------------------------------

    def trusted_root(self) -> str:
        """`trusted_root.json` naming this Sigstore's CA, Rekor key and CT log key."""
        start = _rfc3339(self.start)

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            spki = _spki(key.public_key())
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(hashlib.sha256(spki).digest())},
            }

        doc = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key, "https://rekor.gitdock.test")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "gitdock.test", "commonName": "fulcio-root"},
                    "uri": "https://fulcio.gitdock.test",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))}
                            for c in (self.intermediate, self.root)
                        ]
                    },
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [log(self.ct_key, "https://ctfe.gitdock.test")],
            "timestampAuthorities": [],
        }
        return json.dumps(doc, indent=2)

    # --- Fulcio ------------------------------------------------------------------------------------

    def _leaf_builder(
        self,
        key: ec.EllipticCurvePrivateKey,
        issued: dt.datetime,
        *,
        email: str | None,
        uri: str | None,
        issuer: str,
        issuer_v1: bool,
        code_signing: bool,
    ) -> x509.CertificateBuilder:
        names: list[x509.GeneralName] = []
        if email:
            names.append(x509.RFC822Name(email))
        if uri:
            names.append(x509.UniformResourceIdentifier(uri))
        usages = [ExtendedKeyUsageOID.CODE_SIGNING if code_signing else ExtendedKeyUsageOID.CLIENT_AUTH]
        if issuer_v1:
            issuer_ext = x509.UnrecognizedExtension(ISSUER_V1_OID, issuer.encode())
        else:
            raw = issuer.encode()
            issuer_ext = x509.UnrecognizedExtension(ISSUER_OID, b"\x0c" + _der_length(len(raw)) + raw)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(issued)
            .not_valid_after(issued + dt.timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .add_extension(issuer_ext, critical=False)
        )

    def _sct(self, tbs: bytes, when: dt.datetime, ct_key: ec.EllipticCurvePrivateKey) -> bytes:
        """An RFC 6962 SCT list (TLS encoding) over the precertificate `tbs`."""
        millis = int(when.timestamp() * 1000)
        issuer_hash = hashlib.sha256(_spki(self.intermediate_key.public_key())).digest()
        signed = (
            b"\x00\x00"
            + millis.to_bytes(8, "big")
            + b"\x00\x01"
            + issuer_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + b"\x00\x00"
        )
        signature = ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        log_id = hashlib.sha256(_spki(ct_key.public_key())).digest()
        sct = (
            b"\x00"
            + log_id
            + millis.to_bytes(8, "big")
            + b"\x00\x00"
            + b"\x04\x03"
            + len(signature).to_bytes(2, "big")
            + signature
        )
        entry = len(sct).to_bytes(2, "big") + sct
        return len(entry).to_bytes(2, "big") + entry

    def issue(
        self,
        *,
        email: str | None = EMAIL,
        uri: str | None = None,
        issuer: str = ISSUER,
        issued: dt.datetime | None = None,
        issuer_v1: bool = False,
        code_signing: bool = True,
        sct: bool = True,
        sct_key: ec.EllipticCurvePrivateKey | None = None,
        sct_over: bytes | None = None,
    ) -> Leaf:
        """A ten-minute leaf certificate, with an SCT by the CT log key (or `sct_key`).

        `sct_over` makes the SCT sign other precertificate bytes than this certificate's.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        issued = issued or self.start + dt.timedelta(days=1)
        builder = self._leaf_builder(
            key, issued, email=email, uri=uri, issuer=issuer, issuer_v1=issuer_v1, code_signing=code_signing
        )
        if sct:
            pre = builder.sign(self.intermediate_key, hashes.SHA384())
            sct_list = self._sct(sct_over or pre.tbs_certificate_bytes, issued, sct_key or self.ct_key)
            value = b"\x04" + _der_length(len(sct_list)) + sct_list
            builder = builder.add_extension(x509.UnrecognizedExtension(SCT_OID, value), critical=False)
        return Leaf(key, builder.sign(self.intermediate_key, hashes.SHA384()))

    # --- Rekor ---------------------------------------------------------------------------------------

    def rekor_entry(
        self,
        leaf: Leaf,
        signed_hash: str,
        signature: bytes,
        integrated: int,
        *,
        rekor_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> dict[str, Any]:
        """A hashedrekord entry and its SET: {body, integratedTime, logID, logIndex, set}."""
        body = {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": signed_hash}},
                "signature": {"content": _b64(signature), "publicKey": {"content": _b64(leaf.pem.encode())}},
            },
        }
        self.log_index += 1
        payload = {
            "body": _b64(json.dumps(body, separators=(",", ":")).encode()),
            "integratedTime": integrated,
            "logID": hashlib.sha256(_spki(self.rekor_key.public_key())).hexdigest(),
            "logIndex": self.log_index,
        }
        canonical = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        payload["set"] = _b64((rekor_key or self.rekor_key).sign(canonical, ec.ECDSA(hashes.SHA256())))
        return payload

    def sign_legacy(
        self,
        docker_reference: str,
        digest: str,
        leaf: Leaf | None = None,
        *,
        integrated: int | None = None,
        rekor: bool = True,
        rekor_key: ec.EllipticCurvePrivateKey | None = None,
        chain: bool = True,
    ) -> LegacySignature:
        """A cosign keyless `.sig` layer: payload, signature, certificate, chain, Rekor bundle."""
        leaf = leaf or self.issue()
        payload = make_simple_signing_payload(docker_reference, digest)
        signature = leaf.key.sign(payload, ec.ECDSA(hashes.SHA256()))
        annotations = {SIGNATURE_ANNOTATION: _b64(signature), CERTIFICATE_ANNOTATION: leaf.pem}
        if chain:
            annotations[CHAIN_ANNOTATION] = "".join(
                c.public_bytes(serialization.Encoding.PEM).decode() for c in (self.intermediate, self.root)
            )
        if rekor:
            when = (
                integrated
                if integrated is not None
                else int(leaf.certificate.not_valid_before_utc.timestamp()) + 60
            )
            entry = self.rekor_entry(
                leaf, hashlib.sha256(payload).hexdigest(), signature, when, rekor_key=rekor_key
            )
            annotations[BUNDLE_ANNOTATION] = json.dumps(
                {"SignedEntryTimestamp": entry.pop("set"), "Payload": entry}, separators=(",", ":")
            )
        return LegacySignature(payload, SIMPLE_SIGNING_MEDIA_TYPE, annotations)

    def sign_bundle(self, digest: str, leaf: Leaf | None = None, *, version: str = "0.3") -> bytes:
        """A Sigstore bundle (v0.1 or v0.3) with a message signature over the manifest digest."""
        leaf = leaf or self.issue()
        message = bytes.fromhex(digest.split(":", 1)[1])
        signature = leaf.key.sign(message, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        when = int(leaf.certificate.not_valid_before_utc.timestamp()) + 60
        entry = self.rekor_entry(leaf, message.hex(), signature, when)
        cert_der = leaf.certificate.public_bytes(serialization.Encoding.DER)
        tlog = {
            "logIndex": str(entry["logIndex"]),
            "logId": {"keyId": _b64(bytes.fromhex(entry["logID"]))},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": str(entry["integratedTime"]),
            "inclusionPromise": {"signedEntryTimestamp": entry["set"]},
            "canonicalizedBody": entry["body"],
        }
        if version == "0.3":
            media_type = "application/vnd.dev.sigstore.bundle.v0.3+json"
            material: dict[str, Any] = {"certificate": {"rawBytes": _b64(cert_der)}}
        else:
            media_type = f"application/vnd.dev.sigstore.bundle+json;version={version}"
            material = {"x509CertificateChain": {"certificates": [{"rawBytes": _b64(cert_der)}]}}
        material["tlogEntries"] = [tlog]
        doc = {
            "mediaType": media_type,
            "verificationMaterial": material,
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(message)},
                "signature": _b64(signature),
            },
        }
        return json.dumps(doc).encode()
