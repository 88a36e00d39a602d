#!/usr/bin/env bash
# Build the product's image, `localhost/remediate:<content tag>`, on this machine's podman (or
# Docker), and print its name on the last line. No registry is reachable here, so the base image is
# made from Debian's own packages with debootstrap (bookworm, python3 3.11, python3-venv); it is
# built once per machine and tagged by its version: change what goes in, bump BASE_VERSION.
# The image's tag is a digest of everything that goes into it: an unchanged tree is not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE="${ENGINE:-podman}"
BASE_VERSION=1
BASE="localhost/remediate-base:bookworm-$BASE_VERSION"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The CA bundle the build trusts for PyPI (a build secret, never in a layer).
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

if ! $ENGINE image exists "$BASE" 2>/dev/null; then
  if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null 2>&1 \
      || { as_root apt-get update -qq >/dev/null \
           && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null; } \
      || { echo "debootstrap could not be installed (Debian's package)" >&2; exit 1; }
  fi
  root=$(mktemp -d /var/tmp/remediate-base.XXXXXX)
  trap 'as_root rm -rf "$root"' EXIT
  echo "building $BASE with debootstrap from $MIRROR (a few minutes, once per machine)" >&2
  as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >/tmp/remediate-debootstrap.log 2>&1 \
    || { echo "debootstrap failed: see /tmp/remediate-debootstrap.log" >&2; exit 1; }
  as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
  as_root tar -C "$root" -c . | $ENGINE import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
fi

# Everything the Dockerfile copies, and the Dockerfile itself.
tag=$(
  { echo "$BASE"; find Dockerfile .dockerignore pyproject.toml uv.lock README.md prefect.yaml \
      remediate flows tasks deployments drills migrations -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum; } \
    | sha256sum | cut -c1-12
)
IMAGE="localhost/remediate:$tag"
if ! $ENGINE image exists "$IMAGE" 2>/dev/null; then
  echo "building $IMAGE" >&2
  $ENGINE build --build-arg "BASE=$BASE" --secret "id=ca,src=$CA_BUNDLE" -t "$IMAGE" . >/tmp/remediate-image-build.log 2>&1 \
    || { echo "image build failed: see /tmp/remediate-image-build.log" >&2; tail -5 /tmp/remediate-image-build.log >&2; exit 1; }
  $ENGINE tag "$IMAGE" localhost/remediate:latest
fi
echo "$IMAGE"
