#!/usr/bin/env bash
# hack/deps.sh: install the Debian packages the build and tests need, if
# they are missing (buildah builds and runs images without a daemon).
set -euo pipefail
need=()
command -v buildah >/dev/null || need+=(buildah)
command -v npm >/dev/null || need+=(nodejs npm)  # azurite, the Azure blob server of the tests
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  echo "hack/deps.sh: installing ${need[*]} with apt-get" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
