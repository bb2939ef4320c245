#!/usr/bin/env bash
# Builds localhost/debian-base:bookworm with debootstrap when it is missing: on machines that reach no
# container registry, this is what BASE_IMAGE points at (a host that reaches Docker Hub uses the default
# python:3.11-slim-bookworm and never runs this). Needs root, debootstrap and podman.
set -euo pipefail
IMAGE="${BASE_IMAGE:-localhost/debian-base:bookworm}"
if podman image exists "$IMAGE"; then
  echo "base image $IMAGE present"; exit 0
fi
# The Debian mirror apt already uses here (deb822 or one-line sources), else deb.debian.org.
MIRROR="$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -v security | head -n1 | tr -d ' ' || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
ROOTFS="$(mktemp -d /var/tmp/debian-base.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR into $ROOTFS"
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/dev/null
# No apt lists or caches in the base: every image that installs packages runs apt-get update itself.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb
tar -C "$ROOTFS" -c . | podman import --change 'CMD ["/bin/bash"]' - "$IMAGE"
echo "imported $IMAGE"
