#!/usr/bin/env bash
# hack/xpkg.sh [VERSION]: build the runtime image (from the Dockerfile, with
# buildah, no daemon) and the three packages with the real
# `crossplane xpkg build`, into _output/. Render fixtures are kept out of the
# packages (--examples-root points at an empty folder).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=${1:-v0.1.0}
hack/deps.sh
crossplane=$(hack/tool.sh crossplane)

mkdir -p bin _output
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/openbao-restore .
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/openbao-restore-executor ./cmd/openbao-restore-executor
cp /etc/ssl/certs/ca-certificates.crt bin/ca-certificates.crt

img=localhost/openbao-restore:$version
b=(buildah --storage-driver vfs)
"${b[@]}" bud --quiet --isolation chroot -t "$img" -f Dockerfile . >/dev/null
rm -f _output/image.tar
"${b[@]}" push --quiet "$img" "docker-archive:_output/image.tar:$img" >/dev/null
# The tarball is the product; drop the local copy so repeated builds do not
# pile up layers in buildah's storage.
"${b[@]}" rmi -f "$img" >/dev/null 2>&1 || true

empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
"$crossplane" xpkg build --package-root=package/function --examples-root="$empty" \
  --embed-runtime-image-tarball=_output/image.tar -o "_output/function-openbao-restore-$version.xpkg"
"$crossplane" xpkg build --package-root=package/reconciler --examples-root="$empty" \
  --embed-runtime-image-tarball=_output/image.tar -o "_output/reconciler-openbao-restore-$version.xpkg"
"$crossplane" xpkg build --package-root=package/configuration --examples-root="$empty" \
  -o "_output/configuration-openbao-restore-$version.xpkg"
ls -l _output/*.xpkg
