#!/usr/bin/env bash
# Build the container lab's images with Podman, reusing what is already built:
#   1. the base: Debian bookworm (minbase) made by mmdebstrap from Debian's own packages, because no
#      image registry has to be reachable; the tarball is cached in .cache/containers/ and the image
#      is kept in Podman's store as localhost/obslab-base:bookworm;
#   2. the project image (localhost/obslab:latest) from the Containerfile on top of it.
# BASE_IMAGE=docker.io/library/debian:bookworm-slim skips step 1 (a registry must then be reachable).
# The build reaches the package registries through the host's CA bundle, mounted for the build only;
# EXTRA_CA_CERT (a PEM file) is added to it; HTTP_PROXY, HTTPS_PROXY and NO_PROXY are passed on when set.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/containers/containers.conf}"

IMAGE="${IMAGE:-localhost/obslab:latest}"
BASE_IMAGE="${BASE_IMAGE:-localhost/obslab-base:bookworm}"
ROOTFS=.cache/containers/bookworm-rootfs.tar
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org}"

if [[ "$BASE_IMAGE" == localhost/obslab-base:* ]] && ! podman image exists "$BASE_IMAGE"; then
    if [[ ! -s "$ROOTFS" ]]; then
        mkdir -p "$(dirname "$ROOTFS")"
        echo "building the Debian base with mmdebstrap (about 2 minutes) into $ROOTFS"
        mmdebstrap --variant=minbase --format=tar --include=ca-certificates bookworm "$ROOTFS.partial" \
            "deb $MIRROR/debian bookworm main" \
            "deb $MIRROR/debian bookworm-updates main" \
            "deb $MIRROR/debian-security bookworm-security main"
        mv "$ROOTFS.partial" "$ROOTFS"
    fi
    podman import --change 'CMD ["/bin/bash"]' "$ROOTFS" "$BASE_IMAGE"
fi

# The CA bundle the build trusts: the host's (this machine re-signs TLS), plus an extra corporate CA.
ca_bundle=$(mktemp)
trap 'rm -f "$ca_bundle"' EXIT
cat "${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" > "$ca_bundle"
if [[ -n "${EXTRA_CA_CERT:-}" ]]; then
    [[ -r "$EXTRA_CA_CERT" ]] || { echo "EXTRA_CA_CERT=$EXTRA_CA_CERT is not a readable PEM file" >&2; exit 2; }
    cat "$EXTRA_CA_CERT" >> "$ca_bundle"
fi

# --http-proxy: Podman hands this shell's HTTP_PROXY, HTTPS_PROXY and NO_PROXY (any case) to every
# RUN step without recording them in the image (unlike a --build-arg, which its history would show).
before=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build --http-proxy=true --build-arg "BASE_IMAGE=$BASE_IMAGE" --secret "id=ca,src=$ca_bundle" \
    -t "$IMAGE" -f Containerfile .
# The image this build replaced keeps its own top layers: remove it unless a container still uses it.
after=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n "$before" && "$before" != "$after" ]]; then
    podman rmi "$before" >/dev/null 2>&1 || true
fi
