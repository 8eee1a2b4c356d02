#!/usr/bin/env bash
# Build the gitdock agent image here, pulling nothing: a Debian base made by debootstrap,
# then `docker build` FROM it with gitdock's wheel and its dependencies' wheels.
#
#   bash examples/image/build.sh          # or: make image
#
# Two caches, so a second run costs seconds:
#   - the base (debootstrap --variant=minbase bookworm + python3) is a tarball in
#     $GITDOCK_IMAGE_CACHE and an image gitdock-base:bookworm-<key>, where <key> hashes
#     the suite, the mirror and the package list;
#   - the agent image carries the label io.gitdock.image.inputs, a hash of the base tag,
#     the git revision and every file the wheel and the image are made from; an image with
#     the same hash is kept as it is.
#
# Environment (all optional):
#   GITDOCK_IMAGE          tag to build                 (gitdock:<version from pyproject.toml>)
#   GITDOCK_IMAGE_CACHE    base tarball cache           (/var/cache/gitdock-image)
#   GITDOCK_DEBIAN_MIRROR  debootstrap's mirror         (http://deb.debian.org/debian)
#   GITDOCK_IMAGE_SOURCE   org.opencontainers.image.source label (git's remote.origin.url)
#   PYTHON                 interpreter with `build` and pip (.venv/bin/python)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
HERE=$ROOT/examples/image

SUITE=bookworm
MIRROR=${GITDOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${GITDOCK_IMAGE_CACHE:-/var/cache/gitdock-image}
# python3 brings sqlite3 and ssl (the state store, HTTPS); ca-certificates for https git and
# registries. Bump RECIPE when the trimming below changes, so cached bases are rebuilt.
BASE_PACKAGES=python3,ca-certificates
RECIPE=1
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CONTEXT=$ROOT/build/image

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: ERROR: %s\n' "$*" >&2; exit 1; }

sha256_text() { sha256sum | cut -c1-64; }

version() {
    "$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'
}

# --- the base ------------------------------------------------------------------
base_key() { printf '%s\n' "$SUITE" "$MIRROR" "$BASE_PACKAGES" "$RECIPE" | sha256_text | cut -c1-12; }

make_base_tarball() {
    local tarball=$1 rootfs
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    rootfs=$(mktemp -d /tmp/gitdock-base.XXXXXX)
    # shellcheck disable=SC2064 # expand now: the local is gone when the trap runs
    trap "rm -rf '$rootfs'; trap - RETURN" RETURN
    log "debootstrap --variant=minbase $SUITE from $MIRROR (about 80 s)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
        >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; die "debootstrap failed"; }
    rm -f "$rootfs.log"
    # Documentation, locales and apt's downloaded lists are not needed at run time.
    rm -rf "$rootfs"/usr/share/{doc,man,info,locale}/* "$rootfs"/var/cache/apt/* \
           "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
    mkdir -p "$CACHE"
    tar -C "$rootfs" --numeric-owner --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* \
        -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
}

ensure_base() {
    local tag=$1 tarball
    docker image inspect "$tag" >/dev/null 2>&1 && return 0
    tarball=$CACHE/base-$SUITE-$(base_key).tar
    [[ -s $tarball ]] || make_base_tarball "$tarball"
    log "docker import $tarball as $tag"
    docker import --change 'CMD ["/bin/bash"]' \
        --message "gitdock base: debootstrap --variant=minbase $SUITE + $BASE_PACKAGES" \
        "$tarball" "$tag" >/dev/null
}

# --- the agent image -------------------------------------------------------------
revision() { git rev-parse HEAD 2>/dev/null || echo unknown; }

# Every file the wheel or the image is made from, hashed with its path, and the revision
# (a label of the image).
inputs_key() {
    local base=$1
    {
        printf '%s\n' "$base" "$(revision)"
        find agent specs runtime examples/image -type f \( -name '*.py' -o -name py.typed \
            -o -name Dockerfile -o -name '*.sh' \) -not -path '*/__pycache__/*' | LC_ALL=C sort |
            xargs sha256sum
        sha256sum pyproject.toml README.md
    } | sha256_text
}

is_built() {
    local tag=$1 key=$2 have
    have=$(docker image inspect -f '{{ index .Config.Labels "io.gitdock.image.inputs" }}' "$tag" 2>/dev/null) ||
        return 1
    [[ $have == "$key" ]]
}

# The wheel, then every dependency as a wheel for CPython 3.11 on glibc (bookworm's Python),
# so the image installs with --no-index: nothing is fetched inside the build.
make_context() {
    rm -rf "$CONTEXT"
    mkdir -p "$CONTEXT/dist" "$CONTEXT/wheels"
    # sdist first, then the wheel from it in a temporary directory (what `build` does without
    # --wheel): the source tree's build/ is never shared with another build.
    log "python -m build"
    "$PYTHON" -m build --outdir "$CONTEXT/dist" . >"$CONTEXT/build.log" 2>&1 ||
        { tail -n 30 "$CONTEXT/build.log" >&2; die "wheel build failed"; }
    rm -f "$CONTEXT"/dist/*.tar.gz
    log "pip download the dependencies' wheels"
    local -a platforms=(--platform manylinux2014_x86_64) glibc
    for glibc in {17..36}; do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
    "$PYTHON" -m pip download --disable-pip-version-check -q --only-binary=:all: \
        "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311 \
        -d "$CONTEXT/wheels" "$CONTEXT"/dist/gitdock-*.whl pip >"$CONTEXT/download.log" 2>&1 ||
        { tail -n 20 "$CONTEXT/download.log" >&2; die "pip download failed"; }
    cp "$HERE/healthcheck.py" "$CONTEXT/"
}

build_image() {
    local tag=$1 base=$2 key=$3 revision previous
    revision=$(revision)
    previous=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    log "docker build $tag FROM $base"
    docker build --quiet -f "$HERE/Dockerfile" -t "$tag" \
        --build-arg "BASE=$base" \
        --build-arg "VERSION=$(version)" \
        --build-arg "REVISION=$revision" \
        --build-arg "SOURCE=${GITDOCK_IMAGE_SOURCE:-$(git config --get remote.origin.url || true)}" \
        --label "io.gitdock.image.inputs=$key" \
        "$CONTEXT" >"$CONTEXT/docker-build.log" 2>&1 ||
        { tail -n 30 "$CONTEXT/docker-build.log" >&2; die "docker build failed"; }
    # What this build left behind: the install stage and the image the tag pointed at before
    # (if nothing else uses it), so repeated builds do not fill the disk.
    docker image prune -f --filter dangling=true --filter label=io.gitdock.image.stage=install >/dev/null
    [[ -z $previous ]] || docker rmi "$previous" >/dev/null 2>&1 || true
}

main() {
    local base tag key
    # Two builds at once (make image beside the tests) would share build/image.
    exec 8>/tmp/gitdock-image.lock
    flock 8
    base=gitdock-base:$SUITE-$(base_key)
    tag=${GITDOCK_IMAGE:-gitdock:$(version)}
    ensure_base "$base"
    key=$(inputs_key "$base")
    if is_built "$tag" "$key"; then
        log "$tag is up to date (inputs $key)"
    else
        make_context
        build_image "$tag" "$base" "$key"
    fi
    printf '%s\n' "$tag"
}

main "$@"
