#!/usr/bin/env bash
# Build (once) the image the devpod provider tests start as stand-in cloud machines: the
# test base image plus OpenSSH's server, so a test provider's `exec.command` reaches its
# "machine" with ssh, as published DevPod providers reach their VMs. Cached by tag.
#
# Environment:
#   CLAUDE_VM_TEST_IMAGE          the base image (default: claude-vm-test-base:bookworm-4)
#   CLAUDE_VM_TEST_MACHINE_IMAGE  this image's tag (default: claude-vm-test-machine:bookworm-4)
#                                 Bump the suffix when the image contents change.
set -euo pipefail

BASE="${CLAUDE_VM_TEST_IMAGE:-claude-vm-test-base:bookworm-4}"
TAG="${CLAUDE_VM_TEST_MACHINE_IMAGE:-claude-vm-test-machine:bookworm-4}"
LOCK_FILE="/tmp/claude-vm-machine-image.lock"

log() { printf 'machine-image: %s\n' "$*" >&2; }
die() { printf 'machine-image: error: %s\n' "$*" >&2; exit 1; }

image_present() { docker image inspect "$TAG" >/dev/null 2>&1; }

if image_present; then
    log "machine image $TAG present"
    exit 0
fi
docker image inspect "$BASE" >/dev/null 2>&1 || die "the base image $BASE is missing: run scripts/base-image.sh first"

exec 9>>"$LOCK_FILE" || die "cannot open lock file $LOCK_FILE"
flock -w 1800 9 || die "timed out waiting for $LOCK_FILE"
if image_present; then
    log "machine image $TAG present (built concurrently)"
    exit 0
fi

log "building $TAG from $BASE (+ openssh-server)"
# The package's postinst makes the host keys; /run/sshd is sshd's privilege-separation
# folder, which nothing else creates in a container.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" --label "dev.claude-vm.test-image=machine" - >&2 <<DOCKERFILE \
    || die "docker build of $TAG failed (does the engine's network reach the Debian mirror?)"
FROM $BASE
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sshd \
 && test -s /etc/ssh/ssh_host_ed25519_key
DOCKERFILE

docker run --rm --network none "$TAG" /usr/sbin/sshd -t >&2 || die "sshd -t in $TAG failed"
log "built $TAG"
