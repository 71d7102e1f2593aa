#!/usr/bin/env bash
# Install Bastion from a signed offline bundle. Uses no network at any step.
#
#   install.sh BUNDLE_DIR --pubkey KEY.pem [--prefix /opt/bastion] [--fingerprint SHA256]
#              [--verifier TRUSTED/verify_bundle.py] [--python python3.11] [--skip-debs]
#              [--config gateway.yaml] [--no-switch]
#
# 1. Verifies the bundle FIRST with the stdlib-only verifier (signature over manifest.json under
#    the operator's public key, then every file's SHA-256 and size, no file missing or extra).
#    Any problem: each one is named and NOTHING is installed (the prefix is not even created).
# 2. Installs the Debian packages the host lacks or has older (dpkg -i; --skip-debs to skip).
# 3. Creates PREFIX/releases/VERSION-ID/venv and installs the locked wheels into it with
#    pip --no-index --require-hashes --no-deps (pip itself runs from its wheel in the bundle).
# 4. Copies the policies (and the model artifact, if the bundle has one), runs `bastion doctor`,
#    and points PREFIX/current at the new release (atomic symlink switch; --no-switch to skip).
#    Rollback: point PREFIX/current back at the previous release (see README.md).
#
# Exit status: 0 installed; 2 bundle refused by the verifier; 1 any other failure (a failed
# release directory is removed; PREFIX/current is never switched to it).
set -euo pipefail

usage() {
  sed -n '3,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 1
}
say() { printf '[install] %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

BUNDLE=""
PUBKEY=""
PREFIX="/opt/bastion"
FINGERPRINT=""
VERIFIER=""
PYTHON=""
SKIP_DEBS=0
CONFIG=""
SWITCH=1
while [ $# -gt 0 ]; do
  case "$1" in
    --pubkey) PUBKEY="${2:?--pubkey needs a file}"; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --fingerprint) FINGERPRINT="${2:?--fingerprint needs a value}"; shift 2 ;;
    --verifier) VERIFIER="${2:?--verifier needs a file}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
    --skip-debs) SKIP_DEBS=1; shift ;;
    --no-switch) SWITCH=0; shift ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$BUNDLE" ] || die "one bundle directory only (got $BUNDLE and $1)"; BUNDLE="$1"; shift ;;
  esac
done
[ -n "$BUNDLE" ] && [ -n "$PUBKEY" ] || usage
[ -d "$BUNDLE" ] || die "$BUNDLE is not a directory"
[ -f "$PUBKEY" ] || die "public key $PUBKEY not found"
BUNDLE="$(cd "$BUNDLE" && pwd -P)"
VERIFIER="${VERIFIER:-$BUNDLE/verify_bundle.py}"

if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$(command -v "$candidate")"; break; fi
  done
fi
[ -n "$PYTHON" ] || die "no python3.11 found; install Debian's python3.11 or pass --python"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); this bundle is for CPython 3.11"

# The host's pip configuration (index URLs, find-links, constraints) must not leak in.
for var in $(compgen -e); do case "$var" in PIP_*|PYTHON*) unset "$var" ;; esac; done
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

started=$(date +%s)
# -- 1. verify (isolated mode: nothing from the bundle directory can shadow the stdlib) --------
say "verifying $BUNDLE with $VERIFIER"
if ! "$PYTHON" -I "$VERIFIER" "$BUNDLE" --pubkey "$PUBKEY" ${FINGERPRINT:+--fingerprint "$FINGERPRINT"}; then
  echo "install.sh: the bundle was refused; nothing was installed" >&2
  exit 2
fi
if [ "$VERIFIER" = "$BUNDLE/verify_bundle.py" ]; then
  say "note: used the verifier shipped in the bundle; pass --verifier with the copy you audited to trust no file from the bundle"
fi

read -r NAME VERSION RELEASE_ID < <("$PYTHON" -I -c '
import hashlib, json, sys
data = open(sys.argv[1], "rb").read()
m = json.loads(data)
print(m["name"], m["version"], m["version"] + "-" + hashlib.sha256(data).hexdigest()[:12])
' "$BUNDLE/manifest.json")
RELEASE="$PREFIX/releases/$RELEASE_ID"
[ ! -e "$RELEASE" ] || die "$RELEASE already exists: this bundle is installed (switch with: ln -sfn releases/$RELEASE_ID $PREFIX/current)"

# -- 2. Debian packages ------------------------------------------------------------------------
if [ "$SKIP_DEBS" = 1 ]; then
  say "skipping Debian packages (--skip-debs)"
else
  wanted=()
  for deb in "$BUNDLE"/debs/*.deb; do
    [ -e "$deb" ] || continue
    pkg="$(dpkg-deb -f "$deb" Package)"
    ver="$(dpkg-deb -f "$deb" Version)"
    have="$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$pkg" 2>/dev/null || true)"
    if [ "${have%% *}" = "ii" ] && dpkg --compare-versions "${have#* }" ge "$ver"; then
      say "deb $pkg: ${have#* } already installed"
    else
      wanted+=("$deb")
    fi
  done
  if [ ${#wanted[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "installing ${#wanted[@]} Debian packages needs root (or --skip-debs when they are present)"
    say "dpkg -i ${wanted[*]##*/}"
    dpkg -i "${wanted[@]}"
  fi
fi

# -- 3. the release: venv + locked wheels ------------------------------------------------------
cleanup() { say "failed; removing $RELEASE"; rm -rf "$RELEASE"; }
trap cleanup ERR
mkdir -p "$PREFIX/releases"
mkdir "$RELEASE"
say "creating $RELEASE/venv"
"$PYTHON" -m venv --without-pip "$RELEASE/venv"
PIP_WHEEL="$(ls "$BUNDLE"/wheels/pip-*.whl | head -n1)"
say "pip install --no-index --require-hashes --no-deps ($(grep -c -- '--hash=' "$BUNDLE/requirements.lock") wheels)"
"$RELEASE/venv/bin/python" "$PIP_WHEEL/pip" install --quiet --no-index --no-deps --require-hashes \
  --find-links "$BUNDLE/wheels" -r "$BUNDLE/requirements.lock"

# -- 4. policies, model, records, self-check, switch -------------------------------------------
cp -R "$BUNDLE/policies" "$RELEASE/policies"
if [ -d "$BUNDLE/models" ]; then cp -R "$BUNDLE/models" "$RELEASE/models"; fi
mkdir "$RELEASE/bundle"
cp "$BUNDLE"/manifest.json "$BUNDLE"/manifest.sig "$BUNDLE"/sbom.cdx.json "$BUNDLE"/requirements.lock "$RELEASE/bundle/"
trap - ERR

say "bastion doctor"
doctor=("$RELEASE/venv/bin/bastion" doctor --policies "$RELEASE/policies")
[ -z "$CONFIG" ] || doctor+=(--config "$CONFIG")
if ! "${doctor[@]}"; then
  echo "install.sh: $NAME $VERSION is installed in $RELEASE but 'bastion doctor' found problems;" \
       "$PREFIX/current was NOT switched. Fix them, rerun the doctor, then switch by hand." >&2
  exit 1
fi
if [ "$SWITCH" = 1 ]; then
  ln -sfn "releases/$RELEASE_ID" "$PREFIX/.current.new"
  mv -Tf "$PREFIX/.current.new" "$PREFIX/current"
  say "$PREFIX/current -> releases/$RELEASE_ID"
fi
say "installed $NAME $VERSION in $(( $(date +%s) - started )) s: $RELEASE"
