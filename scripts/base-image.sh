#!/usr/bin/env bash
# Build (once) the local Docker base image used by the test suite.
#
# No image can be pulled from a registry in our environments, so the image is
# made from scratch: debootstrap a minimal Debian bookworm rootfs and
# `docker import` it. The result is cached by tag; if the tag already exists
# this script exits almost immediately.
#
# Environment:
#   CLAUDE_VM_TEST_IMAGE     image tag (default: claude-vm-test-base:bookworm-4)
#                            Bump the suffix when the image contents change.
#   CLAUDE_VM_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the first
#                            bookworm mirror in the host's apt sources, else
#                            http://deb.debian.org/debian)
#   CLAUDE_VM_LOCK_TIMEOUT   seconds to wait for a concurrent build (default 1800)
#
# Needs root (or sudo) only when the image actually has to be built.
set -euo pipefail

TAG="${CLAUDE_VM_TEST_IMAGE:-claude-vm-test-base:bookworm-4}"
SUITE="bookworm"
# python3 and python3-venv: the ACP agent the conversation tests drive (claude-code-acp,
# from PyPI) is pip-installed into a venv inside the workspace at test time. rsync: the
# SSH tests run rsync over `ssh <ws>.claude-vm`, which needs it on both ends; openssh-client:
# ssh-add inside the workspace lists a forwarded agent's keys.
PACKAGES="git,tmux,ca-certificates,curl,procps,python3,python3-venv,rsync,openssh-client"
LOCK_FILE="/tmp/claude-vm-base-image.lock"
LOCK_TIMEOUT="${CLAUDE_VM_LOCK_TIMEOUT:-1800}"

log() { printf 'base-image: %s\n' "$*" >&2; }
die() { printf 'base-image: error: %s\n' "$*" >&2; exit 1; }

image_present() { docker image inspect "$TAG" >/dev/null 2>&1; }

# Fast path: nothing to do.
if image_present; then
    log "base image $TAG present"
    exit 0
fi

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (is it running? are you allowed to use it?)"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "building $TAG needs root (debootstrap); run as root or install sudo"
    SUDO=(sudo)
fi

# Serialise concurrent builds. Whoever loses the race waits, then finds the
# image present and exits.
exec 9>>"$LOCK_FILE" || die "cannot open lock file $LOCK_FILE"
if ! flock -n 9; then
    log "another build of $TAG is running; waiting for $LOCK_FILE (up to ${LOCK_TIMEOUT}s)"
    flock -w "$LOCK_TIMEOUT" 9 || die "timed out waiting for $LOCK_FILE"
fi
if image_present; then
    log "base image $TAG present (built concurrently)"
    exit 0
fi

# Print the first http(s)/file URI the host's apt sources use for Debian $SUITE
# (both one-line sources.list and deb822 *.sources formats). Prints nothing if
# none is found.
detect_mirror() {
    local files=()
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    local f
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || return 0
    awk -v suite="$SUITE" '
        function ok(u) { return u ~ /^(https?|file):\/\// }
        function flush() {
            if (!found && types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" &&
                (" " suites " ") ~ ("[ \t]" suite "[ \t]")) {
                n = split(uris, a, /[ \t]+/)
                for (i = 1; i <= n; i++) if (ok(a[i])) { print a[i]; found = 1; break }
            }
            types = suites = uris = ""; enabled = "yes"
        }
        FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
        deb822 {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^[ \t]*#/) next
            line = $0; key = tolower(line); sub(/:.*/, "", key)
            sub(/^[^:]*:[ \t]*/, "", line)
            if (key == "types") types = line
            else if (key == "suites") suites = line
            else if (key == "uris") uris = line
            else if (key == "enabled") enabled = tolower(line)
            next
        }
        !found && $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if (ok($i) && $(i + 1) == suite) { print $i; found = 1 }
        }
        END { flush() }
    ' "${files[@]}" | head -n 1
}

MIRROR="${CLAUDE_VM_DEBIAN_MIRROR:-$(detect_mirror || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    log "installing debootstrap via apt"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends debootstrap >&2
fi
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"

WORK=""
IMAGE_ID=""
cleanup() {
    local rc=$?
    if [ -n "$IMAGE_ID" ]; then
        # Imported but never tagged (failure between import and tag).
        docker rmi "$IMAGE_ID" >/dev/null 2>&1 || true
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        # debootstrap can leave proc/sys mounted inside the target on failure;
        # unmount (deepest first) before deleting so we never recurse into them.
        local m
        while read -r m; do
            "${SUDO[@]}" umount -l "$m" 2>/dev/null || true
        done < <(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r)
        "${SUDO[@]}" rm -rf --one-file-system "$WORK"
    fi
    [ "$rc" -eq 0 ] || log "build of $TAG failed (exit $rc); temporary files removed"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK="$(mktemp -d "${TMPDIR:-/tmp}/claude-vm-base-image.XXXXXX")"
ROOTFS="$WORK/rootfs"
START=$SECONDS

log "building $TAG: debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
if ! "${SUDO[@]}" "$DEBOOTSTRAP" --variant=minbase --include="$PACKAGES" \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    log "debootstrap failed; last lines of its output:"
    tail -n 30 "$WORK/debootstrap.log" >&2 || true
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    exit 1
fi
log "debootstrap done after $((SECONDS - START))s; cleaning rootfs"

"${SUDO[@]}" rm -rf \
    "$ROOTFS"/var/cache/apt/archives/*.deb \
    "$ROOTFS"/var/cache/apt/archives/partial/* \
    "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/var/log/apt/* \
    "$ROOTFS"/var/log/dpkg.log \
    "$ROOTFS"/var/log/bootstrap.log \
    "$ROOTFS"/debootstrap
"${SUDO[@]}" mkdir -p "$ROOTFS/var/lib/apt/lists/partial"
# Drop docs, man pages and translations (~70 MiB) and keep later
# `apt-get install`s inside containers from bringing them back. Keeping only
# the C locale's messages also makes tool output stable for tests.
# Also blank the host-specific files debootstrap copied in (Docker provides
# its own at run time).
# shellcheck disable=SC2016  # $1 is expanded by the inner sh
"${SUDO[@]}" sh -c '
    set -e
    cd "$1"
    find usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete
    find usr/share/doc -mindepth 1 -type d -empty -delete
    rm -rf usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian/*
    cat > etc/dpkg/dpkg.cfg.d/01-claude-vm-nodoc <<CFG
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
CFG
    : > etc/resolv.conf
    echo localhost > etc/hostname
' sh "$ROOTFS"

log "importing rootfs into docker"
# Import without a tag first: if tar fails midway (pipefail) or the smoke test
# fails, the untagged image is removed by cleanup and $TAG is never created.
IMAGE_ID="$("${SUDO[@]}" tar --numeric-owner -C "$ROOTFS" -c . \
    | docker import --change 'CMD ["/bin/bash"]' \
        --message "claude-vm test base: debootstrap $SUITE minbase + $PACKAGES" - )"
[ -n "$IMAGE_ID" ] || die "docker import printed no image id"

log "smoke-testing $IMAGE_ID"
docker run --rm --network none "$IMAGE_ID" sh -c 'git --version && tmux -V && ps --version && python3 -m venv --help >/dev/null && python3 --version && rsync --version >/dev/null && command -v ssh-add >/dev/null' >&2 \
    || die "smoke test of the imported image failed"

docker tag "$IMAGE_ID" "$TAG"
IMAGE_ID=""   # tagged: keep it
SIZE="$(docker image inspect --format '{{.Size}}' "$TAG")"
log "built $TAG ($((SIZE / 1024 / 1024)) MiB) in $((SECONDS - START))s"
