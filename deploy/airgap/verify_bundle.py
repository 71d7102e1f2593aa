#!/usr/bin/env python3
"""Verify a Bastion offline bundle before anything from it is installed. STANDARD LIBRARY ONLY.

Usage::

    python3 verify_bundle.py BUNDLE_DIR --pubkey KEY.pem [--fingerprint SHA256HEX] [--json]

1. ``manifest.sig`` must be a valid signature over the exact bytes of ``manifest.json`` under the
   operator's public key (Ed25519, RFC 8032; or ECDSA P-256/SHA-256 from the HSM, FIPS 186-4).
   Both are implemented here in pure Python because ``cryptography`` is not installed yet when
   this runs. Nothing in the manifest is read before the signature verifies.
2. Every file the manifest lists must exist, be a regular file, and have the listed size and
   SHA-256; any file in the bundle the manifest does not list is refused (``manifest.json`` and
   ``manifest.sig`` excepted), as is any symlink or special file.

Every problem is named on its own line (``REFUSED: path: what``). Exit status: 0 verified,
2 refused (bad signature, mismatch, missing or extra file), 1 usage error. The public key's
SHA-256 fingerprint (over its DER SubjectPublicKeyInfo, as ``openssl pkey -pubin -outform DER |
sha256sum`` prints it) is shown so it can be compared with the one received out of band.

Kept to the standard library and Python 3.9+ on purpose: it runs on a bare Debian 12 host.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import stat
import sys

FORMAT = "bastion-bundle/1"
UNSIGNED_NAMES = ("manifest.json", "manifest.sig")
_CHUNK = 1 << 20


class VerifyError(Exception):
    """The bundle is refused; the message names the problem."""


# -- Ed25519 (RFC 8032, section 5.1.7) -----------------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _ed_add(a, b):
    # Extended homogeneous coordinates (RFC 8032 section 5.1.4).
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = 2 * t1 * t2 * _D % _P
    dd = 2 * z1 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _ed_mul(scalar, point):
    result = (0, 1, 1, 0)  # neutral element
    while scalar > 0:
        if scalar & 1:
            result = _ed_add(result, point)
        point = _ed_add(point, point)
        scalar >>= 1
    return result


def _ed_equal(a, b):
    x1, y1, z1, _ = a
    x2, y2, z2, _ = b
    return (x1 * z2 - x2 * z1) % _P == 0 and (y1 * z2 - y2 * z1) % _P == 0


def _ed_decompress(data):
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        if sign:
            return None
        x = 0
    else:
        x = pow(x2, (_P + 3) // 8, _P)
        if (x * x - x2) % _P != 0:
            x = x * _SQRT_M1 % _P
        if (x * x - x2) % _P != 0:
            return None
        if (x & 1) != sign:
            x = _P - x
    return (x, y, 1, x * y % _P)


_ED_GY = 4 * pow(5, _P - 2, _P) % _P
_ED_G = _ed_decompress(_ED_GY.to_bytes(32, "little"))


def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """RFC 8032 Ed25519 verification: [S]B == R + [k]A."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a_point = _ed_decompress(public_key)
    r_point = _ed_decompress(signature[:32])
    if a_point is None or r_point is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little")
    return _ed_equal(_ed_mul(s, _ED_G), _ed_add(r_point, _ed_mul(k % _L, a_point)))


# -- ECDSA P-256 / SHA-256 (FIPS 186-4, SEC 1 section 4.1.4) ------------------------------------

_EC_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_EC_A = _EC_P - 3
_EC_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_EC_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_EC_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)


def _ec_on_curve(point):
    x, y = point
    return (
        0 <= x < _EC_P and 0 <= y < _EC_P and (y * y - x * x * x - _EC_A * x - _EC_B) % _EC_P == 0
    )


def _ec_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    (x1, y1), (x2, y2) = a, b
    if x1 == x2:
        if (y1 + y2) % _EC_P == 0:
            return None
        slope = (3 * x1 * x1 + _EC_A) * pow(2 * y1, -1, _EC_P) % _EC_P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, _EC_P) % _EC_P
    x3 = (slope * slope - x1 - x2) % _EC_P
    return (x3, (slope * (x1 - x3) - y1) % _EC_P)


def _ec_mul(scalar, point):
    result = None
    while scalar > 0:
        if scalar & 1:
            result = _ec_add(result, point)
        point = _ec_add(point, point)
        scalar >>= 1
    return result


def _ec_point(data):
    if len(data) == 65 and data[0] == 4:
        point = (int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:], "big"))
    elif len(data) == 33 and data[0] in (2, 3):
        x = int.from_bytes(data[1:], "big")
        y = pow((x * x * x + _EC_A * x + _EC_B) % _EC_P, (_EC_P + 1) // 4, _EC_P)
        if (y & 1) != (data[0] & 1):
            y = _EC_P - y
        point = (x, y)
    else:
        return None
    return point if _ec_on_curve(point) else None


def ecdsa_p256_verify(public_point: bytes, signature_der: bytes, message: bytes) -> bool:
    """ECDSA P-256 with SHA-256; the signature in DER (``ECDSA-Sig-Value``)."""
    q = _ec_point(public_point)
    if q is None:
        return False
    try:
        body, rest = _der_take(signature_der, 0x30)
        r_bytes, body = _der_take(body, 0x02)
        s_bytes, body = _der_take(body, 0x02)
    except VerifyError:
        return False
    if rest or body:
        return False
    r, s = int.from_bytes(r_bytes, "big"), int.from_bytes(s_bytes, "big")
    if not (1 <= r < _EC_N and 1 <= s < _EC_N):
        return False
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    w = pow(s, -1, _EC_N)
    point = _ec_add(_ec_mul(e * w % _EC_N, _EC_G), _ec_mul(r * w % _EC_N, q))
    return point is not None and point[0] % _EC_N == r


# -- public keys: PEM SubjectPublicKeyInfo -------------------------------------------------------

_OID_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112
_OID_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
_OID_P256 = bytes.fromhex("2a8648ce3d030107")  # 1.2.840.10045.3.1.7


def _der_take(data, tag):
    """Split one DER TLV with ``tag`` off the front of ``data``: (value, rest)."""
    if len(data) < 2 or data[0] != tag:
        raise VerifyError(f"malformed DER: expected tag 0x{tag:02x}")
    length, offset = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise VerifyError("malformed DER length")
        length, offset = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    if len(data) < offset + length:
        raise VerifyError("truncated DER")
    return data[offset : offset + length], data[offset + length :]


class PublicKey:
    """An Ed25519 or ECDSA P-256 public key read from a PEM SubjectPublicKeyInfo."""

    def __init__(self, algorithm, key_bytes, spki_der):
        self.algorithm = algorithm  # "ed25519" or "ecdsa-p256-sha256"
        self.key_bytes = key_bytes
        self.fingerprint = hashlib.sha256(spki_der).hexdigest()

    @classmethod
    def from_pem(cls, pem):
        lines = pem.decode("ascii", "replace").strip().splitlines()
        if (
            not lines
            or lines[0] != "-----BEGIN PUBLIC KEY-----"
            or lines[-1] != "-----END PUBLIC KEY-----"
        ):
            raise VerifyError(
                "the public key is not a PEM 'PUBLIC KEY' (SubjectPublicKeyInfo); export it with "
                "'openssl pkey -pubout' or 'bastion bundle pubkey'"
            )
        try:
            der = base64.b64decode("".join(lines[1:-1]), validate=True)
        except ValueError:
            raise VerifyError("the public key PEM has invalid base64") from None
        spki, rest = _der_take(der, 0x30)
        if rest:
            raise VerifyError("trailing bytes after the public key")
        algorithm_id, spki = _der_take(spki, 0x30)
        bits, spki = _der_take(spki, 0x03)
        oid, params = _der_take(algorithm_id, 0x06)
        if not bits or bits[0] != 0:
            raise VerifyError("the public key's BIT STRING is malformed")
        if oid == _OID_ED25519 and not params and len(bits) == 33:
            return cls("ed25519", bits[1:], der)
        if oid == _OID_EC_PUBLIC_KEY:
            curve, _ = _der_take(params, 0x06)
            if curve == _OID_P256 and _ec_point(bits[1:]) is not None:
                return cls("ecdsa-p256-sha256", bits[1:], der)
            raise VerifyError("the public key is EC but not a valid P-256 key")
        raise VerifyError("unsupported public key: use an Ed25519 or ECDSA P-256 key")

    def verify(self, signature, message):
        if self.algorithm == "ed25519":
            return ed25519_verify(self.key_bytes, signature, message)
        return ecdsa_p256_verify(self.key_bytes, signature, message)


# -- the bundle ----------------------------------------------------------------------------------


def _safe_relpath(path):
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        return False
    parts = path.split("/")
    return not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _walk(root):
    """Every entry under root as (relative path, lstat), directories excluded."""
    found = {}
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(directory, d))]:
            full = os.path.join(directory, name)
            found[os.path.relpath(full, root).replace(os.sep, "/")] = os.lstat(full)
    return found


def verify_bundle(bundle, public_key_pem, expect_fingerprint=None):
    """Verify ``bundle``; return the parsed manifest. Raise :class:`VerifyError` listing every
    problem (one per line) when the bundle must be refused."""
    key = PublicKey.from_pem(public_key_pem)
    if expect_fingerprint is not None:
        wanted = expect_fingerprint.lower().replace(":", "").removeprefix("sha256")
        if wanted != key.fingerprint:
            raise VerifyError(
                f"public key fingerprint is sha256:{key.fingerprint}, not the expected "
                f"{expect_fingerprint}: this is not the key you were given out of band"
            )
    manifest_path = os.path.join(bundle, "manifest.json")
    sig_path = os.path.join(bundle, "manifest.sig")
    for name, path in (("manifest.json", manifest_path), ("manifest.sig", sig_path)):
        if os.path.islink(path) or not os.path.isfile(path):
            raise VerifyError(f"{name}: missing (or not a regular file); the bundle is incomplete")
    with open(manifest_path, "rb") as handle:
        manifest_bytes = handle.read()
    with open(sig_path, "rb") as handle:
        signature = handle.read()
    if not key.verify(signature, manifest_bytes):
        raise VerifyError(
            f"manifest.sig: the signature does not verify under the public key "
            f"sha256:{key.fingerprint} ({key.algorithm}): the manifest was altered after "
            "signing, or it was signed by another key"
        )
    manifest = json.loads(manifest_bytes)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VerifyError(f"manifest.json: not a {FORMAT} manifest")
    signer = manifest.get("signer", {})
    if signer.get("algorithm") not in (None, key.algorithm):
        raise VerifyError(
            f"manifest.json: names algorithm {signer.get('algorithm')!r} but the key is {key.algorithm}"
        )
    problems = []
    listed = {}
    for entry in manifest.get("files", []):
        path = entry.get("path") if isinstance(entry, dict) else None
        if not _safe_relpath(path) or path in UNSIGNED_NAMES:
            problems.append(f"manifest.json: unsafe or reserved path {path!r}")
            continue
        if path in listed:
            problems.append(f"{path}: listed twice in the manifest")
        listed[path] = entry
    present = _walk(bundle)
    for path in sorted(listed):
        entry = listed[path]
        st = present.get(path)
        if st is None:
            problems.append(f"{path}: missing from the bundle (listed in the manifest)")
        elif not stat.S_ISREG(st.st_mode):
            problems.append(f"{path}: not a regular file (symlink or special file)")
        elif st.st_size != entry.get("size"):
            problems.append(f"{path}: size {st.st_size} bytes, manifest says {entry.get('size')}")
        else:
            actual = _sha256(os.path.join(bundle, path))
            if actual != entry.get("sha256"):
                problems.append(
                    f"{path}: SHA-256 mismatch (manifest {entry.get('sha256')}, file {actual})"
                )
    for path in sorted(set(present) - set(listed) - set(UNSIGNED_NAMES)):
        problems.append(f"{path}: extra file, not listed in the manifest")
    if problems:
        raise VerifyError("\n".join(problems))
    manifest["_fingerprint"] = key.fingerprint
    manifest["_algorithm"] = key.algorithm
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description="Verify a Bastion offline bundle (stdlib only).")
    parser.add_argument("bundle", help="the bundle directory")
    parser.add_argument("--pubkey", required=True, help="PEM public key received out of band")
    parser.add_argument("--fingerprint", help="expected SHA-256 fingerprint of the public key")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    args = parser.parse_args(argv)
    try:
        with open(args.pubkey, "rb") as handle:
            pem = handle.read()
    except OSError as exc:
        print(
            f"verify_bundle: error: cannot read public key {args.pubkey}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    if not os.path.isdir(args.bundle):
        print(f"verify_bundle: error: {args.bundle} is not a directory", file=sys.stderr)
        return 1
    try:
        manifest = verify_bundle(args.bundle, pem, args.fingerprint)
    except VerifyError as exc:
        for line in str(exc).splitlines():
            print(f"REFUSED: {line}", file=sys.stderr)
        print("REFUSED: the bundle failed verification; install nothing from it.", file=sys.stderr)
        return 2
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"REFUSED: manifest.json: unreadable ({type(exc).__name__})", file=sys.stderr)
        return 2
    files = manifest.get("files", [])
    total = sum(int(f.get("size", 0)) for f in files)
    if args.json:
        summary = {
            "verified": True,
            "name": manifest.get("name"),
            "version": manifest.get("version"),
            "files": len(files),
            "bytes": total,
            "algorithm": manifest["_algorithm"],
            "public_key_sha256": manifest["_fingerprint"],
        }
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"OK signature: {manifest['_algorithm']}, public key sha256:{manifest['_fingerprint']}"
        )
        print(
            f"OK files: {len(files)} files, {total / 1e6:.1f} MB, every SHA-256 matches, none extra"
        )
        print(
            f"OK bundle: {manifest.get('name')} {manifest.get('version')} (built {manifest.get('created')})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
