"""Image trust: every image pinned to a digest and checked against a signature policy.

Modules in pipeline order:

- `keys`: cosign-format keys (pure, apart from reading a password).
- `signature`: the signature maths: payloads, bundles, Rekor entries (pure).
- `policy`: the TrustPolicy model and rule matching (pure).
- `registry`: the OCI registry seam, the only trust module that does network I/O.
- `verify`: `verify_image`, one image against the policy, and its cache.
- `resolve`: a project's images resolved to digests and verified, before planning.
- `sign`: the publisher side, signing an image and pushing the signature.
- `errors`: `TrustError`, the root of the package's refusals.
"""
