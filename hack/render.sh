#!/usr/bin/env bash
# hack/render.sh [XR] [REQUIRED] [OBSERVED]: run the real `crossplane render`
# on an example restore against the function, started locally, and print the
# rendered restore. Defaults to the example claim's XR and its OpenBaoCluster.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
xr=${1:-examples/xr.yaml}
required=${2:-examples/required/cluster.yaml}
observed=${3:-}
port=${RENDER_PORT:-9443}

crossplane=$(hack/tool.sh crossplane)
mkdir -p bin
go build -o bin/openbao-restore .

tmp=$(mktemp -d)
./bin/openbao-restore function --insecure --address="127.0.0.1:$port" >"$tmp/fn.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT

# Point render at this function's port.
sed "s#render.crossplane.io/runtime: Development#render.crossplane.io/runtime: Development\n    render.crossplane.io/runtime-development-target: 127.0.0.1:$port#" \
  examples/functions.yaml >"$tmp/functions.yaml"
comp=examples/composition.yaml
grep -q 'kind: XOpenBaoRestore' "$xr" || comp=examples/composition-namespaced.yaml

for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$tmp/fn.log" >&2; exit 1; }
  sleep 0.1
done

args=(render "$xr" "$comp" "$tmp/functions.yaml" -r -e "$required")
[ -n "$observed" ] && args+=(-o "$observed")
"$crossplane" "${args[@]}"
if [ -z "$observed" ]; then
  echo "# The first render of a restore: the lock is requested, no Job yet. With the lock held:" >&2
  echo "#   hack/render.sh $xr $required examples/observed/lock-held.yaml" >&2
fi
