"""A private Sigstore made with `cryptography`: Fulcio CA, CT log, Rekor v1 and v2, a TSA.

It issues Fulcio-style leaf certificates (code-signing EKU, SAN email or URI, OIDC issuer
extension, an embedded SCT signed by its CT log key), makes Rekor entries with a SET signed by
its Rekor key, Rekor v2 entries (an RFC 6962 inclusion proof in a growing Merkle tree and a
checkpoint signed as a C2SP note), RFC 3161 TimeStampResponses signed by its TSA (CMS built
with asn1crypto), and writes the matching `trusted_root.json`. Every knob a negative test
needs (wrong SCT key, no EKU, another root, another TSA) is a parameter, so each test mutates
one thing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# asn1crypto ships no type information; it only builds the test TSA's tokens.
from asn1crypto import cms, core, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from gitdock.runtime.trust.keyless import TIMESTAMP_ANNOTATION
from gitdock.runtime.trust.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient
from gitdock.runtime.trust.signature import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    LegacySignature,
    make_simple_signing_payload,
    referrers_tag,
)
from gitdock.specs.reference import ImageReference

UTC = dt.UTC
SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ISSUER_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
ISSUER_V1_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER = "https://token.actions.example.com"
EMAIL = "ci@example.com"


def _spki(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> bytes:
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


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gitdock.test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class Tsa:
    """An RFC 3161 timestamp authority: a root CA and a signing certificate (EKU timeStamping)."""

    start: dt.datetime
    days: int = 3650

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.root = _ca("tsa-root", self.root_key, None, self.start)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name("tsa"))
            .issuer_name(self.root.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.start)
            .not_valid_after(self.start + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()), critical=False
            )
            .sign(self.root_key, hashes.SHA384())
        )

    def authority(self, valid_for: dict[str, str] | None = None) -> dict[str, Any]:
        """This TSA as a trusted root `timestampAuthorities` item (chain leaf first)."""
        return {
            "subject": {"organization": "gitdock.test", "commonName": "tsa"},
            "uri": "https://tsa.gitdock.test",
            "certChain": {
                "certificates": [
                    {"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))}
                    for c in (self.certificate, self.root)
                ]
            },
            "validFor": valid_for or {"start": _rfc3339(self.start)},
        }

    def timestamp(self, message: bytes, at: dt.datetime) -> bytes:
        """A DER TimeStampResp (status granted) whose token says SHA-256(`message`) existed at `at`."""
        info = tsp.TSTInfo(
            {
                "version": "v1",
                "policy": "1.3.6.1.4.1.57264.2",
                "message_imprint": {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "hashed_message": hashlib.sha256(message).digest(),
                },
                "serial_number": x509.random_serial_number(),
                "gen_time": at,
            }
        ).dump()
        cert_der = self.certificate.public_bytes(serialization.Encoding.DER)
        cert = asn1_x509.Certificate.load(cert_der)
        attrs = cms.CMSAttributes(
            [
                cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
                cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(info).digest()]}),
                cms.CMSAttribute(
                    {
                        "type": "signing_certificate_v2",
                        "values": [{"certs": [{"cert_hash": hashlib.sha256(cert_der).digest()}]}],
                    }
                ),
            ]
        )
        signer = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    {"issuer_and_serial_number": {"issuer": cert.issuer, "serial_number": cert.serial_number}}
                ),
                "digest_algorithm": {"algorithm": "sha256"},
                "signed_attrs": attrs,
                "signature_algorithm": {"algorithm": "sha256_ecdsa"},
                "signature": self.key.sign(attrs.dump(), ec.ECDSA(hashes.SHA256())),
            }
        )
        signed = cms.SignedData(
            {
                "version": "v3",
                "digest_algorithms": [{"algorithm": "sha256"}],
                "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(info)},
                "certificates": [cert],
                "signer_infos": [signer],
            }
        )
        token = {"content_type": "signed_data", "content": signed}
        return bytes(tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump())


def _largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962's MTH over leaf data."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = _largest_power_of_two_below(len(leaves))
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def merkle_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962's audit PATH(m, D[n]), leaf side first."""
    if len(leaves) == 1:
        return []
    k = _largest_power_of_two_below(len(leaves))
    if index < k:
        return [*merkle_path(index, leaves[:k]), merkle_root(leaves[k:])]
    return [*merkle_path(index - k, leaves[k:]), merkle_root(leaves[:k])]


@dataclass(frozen=True)
class Stamp:
    """Which RFC 3161 timestamp to add: by `tsa` (this Sigstore's), at `at`, over `over` bytes."""

    tsa: Tsa | None = None
    at: dt.datetime | None = None
    over: bytes | None = None


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
    # The Rekor v2 log signs checkpoints with Ed25519 (as the public-good log2025-1 does), its
    # key hint then the C2SP key id; else with ECDSA P-256, its hint the log id's prefix.
    rekor2_ed25519: bool = False

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
        # Rekor v2: its own log key, and the leaves of its Merkle tree (grows with each entry).
        self.rekor2_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
            ed25519.Ed25519PrivateKey.generate()
            if self.rekor2_ed25519
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.v2_leaves: list[bytes] = [b"genesis"]
        self.tsa = Tsa(self.start)

    # --- the trusted root ------------------------------------------------------------------------

    def trusted_root(self, *, tsa_valid_for: dict[str, str] | None = None) -> str:
        """`trusted_root.json` naming this Sigstore's CA, Rekor keys, CT log key and TSA."""
        start = _rfc3339(self.start)

        def log(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, url: str) -> dict[str, Any]:
            spki = _spki(key.public_key())
            details = (
                "PKIX_ED25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "PKIX_ECDSA_P256_SHA_256"
            )
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(spki),
                    "keyDetails": details,
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(hashlib.sha256(spki).digest())},
            }

        doc = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [
                log(self.rekor_key, "https://rekor.gitdock.test"),
                log(self.rekor2_key, "https://log2025-1.rekor.gitdock.test"),
            ],
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
            "timestampAuthorities": [self.tsa.authority(tsa_valid_for)],
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

    # --- Rekor v2 -------------------------------------------------------------------------------

    def rekor_v2_body(self, leaf: Leaf, signed_hash: str, signature: bytes) -> bytes:
        """A hashedrekord 0.0.2 entry body, as rekor-tiles canonicalises it."""
        body = {
            "apiVersion": "0.0.2",
            "kind": "hashedrekord",
            "spec": {
                "hashedRekordV002": {
                    "data": {"algorithm": "SHA2_256", "digest": _b64(bytes.fromhex(signed_hash))},
                    "signature": {
                        "content": _b64(signature),
                        "verifier": {
                            "x509Certificate": {
                                "rawBytes": _b64(leaf.certificate.public_bytes(serialization.Encoding.DER))
                            },
                            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                        },
                    },
                }
            },
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    def checkpoint(self, size: int, root: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> str:
        """A C2SP signed note over the tree head, signed by the Rekor v2 key (or `key`)."""
        origin = "log2025-1.rekor.gitdock.test"
        text = f"{origin}\n{size}\n{_b64(root)}\n"
        signer = key or self.rekor2_key
        if isinstance(signer, ed25519.Ed25519PrivateKey):
            raw = signer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            hint = hashlib.sha256(origin.encode() + b"\n\x01" + raw).digest()[:4]
            signature = signer.sign(text.encode())
        else:
            hint = hashlib.sha256(_spki(signer.public_key())).digest()[:4]
            signature = signer.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
        return f"{text}\n\u2014 {origin} {_b64(hint + signature)}\n"

    def rekor_v2_entry(
        self, body: bytes, *, checkpoint_key: ec.EllipticCurvePrivateKey | None = None
    ) -> dict[str, Any]:
        """Append `body` (and two later leaves) to the log; the bundle tlog entry with its proof."""
        index = len(self.v2_leaves)
        self.v2_leaves += [body, f"later-{index}-a".encode(), f"later-{index}-b".encode()]
        leaves = list(self.v2_leaves)
        root = merkle_root(leaves)
        index_text = str(index)
        return {
            "logIndex": index_text,
            "logId": {"keyId": _b64(hashlib.sha256(_spki(self.rekor2_key.public_key())).digest())},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
            "inclusionProof": {
                "logIndex": index_text,
                "rootHash": _b64(root),
                "treeSize": str(len(leaves)),
                "hashes": [_b64(h) for h in merkle_path(index, leaves)],
                "checkpoint": {"envelope": self.checkpoint(len(leaves), root, checkpoint_key)},
            },
            "canonicalizedBody": _b64(body),
        }

    # --- signing ---------------------------------------------------------------------------------

    def stamp(self, signature: bytes, leaf: Leaf, stamp: Stamp | None) -> list[bytes]:
        """The bundle's timestamps for `stamp` (none without one), over the signature by default."""
        if stamp is None:
            return []
        when = stamp.at or leaf.certificate.not_valid_before_utc + dt.timedelta(seconds=60)
        return [(stamp.tsa or self.tsa).timestamp(stamp.over or signature, when)]

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
        stamp: Stamp | None = None,
    ) -> LegacySignature:
        """A cosign keyless `.sig` layer: payload, signature, certificate, chain, Rekor bundle.

        With `stamp`, a TSA timestamp goes in cosign's rfc3161timestamp annotation.
        """
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
        for token in self.stamp(signature, leaf, stamp):
            annotations[TIMESTAMP_ANNOTATION] = json.dumps({"SignedRFC3161Timestamp": _b64(token)})
        return LegacySignature(payload, SIMPLE_SIGNING_MEDIA_TYPE, annotations)

    def sign_message(self, digest: str, leaf: Leaf) -> bytes:
        """The leaf's message signature over the manifest digest (a prehashed SHA-256)."""
        message = bytes.fromhex(digest.split(":", 1)[1])
        return leaf.key.sign(message, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def sign_bundle(
        self,
        digest: str,
        leaf: Leaf | None = None,
        *,
        version: str = "0.3",
        rekor: str = "v1",
        stamp: Stamp | None = None,
        checkpoint_key: ec.EllipticCurvePrivateKey | None = None,
        logged_signature: bytes | None = None,
        logged_leaf: Leaf | None = None,
    ) -> bytes:
        """A Sigstore bundle (v0.1-v0.3) with a message signature over the manifest digest.

        `rekor` is "v1" (an entry with a SET), "v2" (hashedrekord 0.0.2 with an inclusion proof
        and checkpoint, signed by `checkpoint_key` if given, recording `logged_signature` and
        `logged_leaf` if given) or "none"; with `stamp`, a TSA timestamp goes in timestampVerificationData.
        """
        leaf = leaf or self.issue()
        message = bytes.fromhex(digest.split(":", 1)[1])
        signature = self.sign_message(digest, leaf)
        cert_der = leaf.certificate.public_bytes(serialization.Encoding.DER)
        if version == "0.3":
            media_type = "application/vnd.dev.sigstore.bundle.v0.3+json"
            material: dict[str, Any] = {"certificate": {"rawBytes": _b64(cert_der)}}
        else:
            media_type = f"application/vnd.dev.sigstore.bundle+json;version={version}"
            material = {"x509CertificateChain": {"certificates": [{"rawBytes": _b64(cert_der)}]}}
        material["tlogEntries"] = []
        if rekor == "v1":
            material["tlogEntries"] = [self._bundle_tlog_v1(leaf, message, signature)]
        elif rekor == "v2":
            body = self.rekor_v2_body(logged_leaf or leaf, message.hex(), logged_signature or signature)
            material["tlogEntries"] = [self.rekor_v2_entry(body, checkpoint_key=checkpoint_key)]
        if stamp is not None:
            tokens = self.stamp(signature, leaf, stamp)
            material["timestampVerificationData"] = {
                "rfc3161Timestamps": [{"signedTimestamp": _b64(t)} for t in tokens]
            }
        doc = {
            "mediaType": media_type,
            "verificationMaterial": material,
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(message)},
                "signature": _b64(signature),
            },
        }
        return json.dumps(doc).encode()

    def _bundle_tlog_v1(self, leaf: Leaf, message: bytes, signature: bytes) -> dict[str, Any]:
        when = int(leaf.certificate.not_valid_before_utc.timestamp()) + 60
        entry = self.rekor_entry(leaf, message.hex(), signature, when)
        return {
            "logIndex": str(entry["logIndex"]),
            "logId": {"keyId": _b64(bytes.fromhex(entry["logID"]))},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": str(entry["integratedTime"]),
            "inclusionPromise": {"signedEntryTimestamp": entry["set"]},
            "canonicalizedBody": entry["body"],
        }


def attach_bundle(client: RegistryClient, ref: ImageReference, digest: str, data: bytes) -> str:
    """Attach a Sigstore bundle to `digest` as an OCI artifact, listed under the referrers fallback tag.

    The tag's index is replaced, so this is the image's only bundle. Returns the artifact digest.
    """
    layer = client.push_blob(ref, data)
    config = client.push_blob(ref, b"{}")
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SIGSTORE_BUNDLE_MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": SIGSTORE_BUNDLE_MEDIA_TYPE, "digest": layer, "size": len(data)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": 0},
        }
    ).encode()
    artifact_digest = client.put_manifest(ref, f"bundle-{digest[7:19]}", artifact, OCI_MANIFEST)
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": artifact_digest,
        "size": len(artifact),
        "artifactType": SIGSTORE_BUNDLE_MEDIA_TYPE,
    }
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    client.put_manifest(ref, referrers_tag(digest), index, OCI_INDEX)
    return artifact_digest
