#!/usr/bin/env bash
# hack/tool.sh NAME: print the path of a pinned tool, building it on first use.
# Tools are built from the tools modules under hack/tools/ into a cache outside
# the clone, keyed by name and version, so a fresh clone reuses earlier builds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/openbao-restore
name=${1:?usage: hack/tool.sh NAME}

# Kubernetes components report v0.0.0-master unless their version is stamped.
# All k8s binaries and etcd share one directory, so it can be KUBEBUILDER_ASSETS.
kver=v1.36.3
k8sld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8sld="$k8sld -X $p.gitVersion=$kver -X $p.gitMajor=1 -X $p.gitMinor=36 -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
dir= ldflags=
case $name in
  crossplane)    mod=crank-v2; pkg=github.com/crossplane/crossplane/v2/cmd/crank; ver=v2.2.1 ;;
  crossplane-v1) mod=crank-v1; pkg=github.com/crossplane/crossplane/cmd/crank;    ver=v1.20.0 ;;
  cue)           mod=dev;      pkg=cuelang.org/go/cmd/cue;                          ver=v0.17.1 ;;
  fake-gcs-server) mod=fake-gcs-server; pkg=github.com/fsouza/fake-gcs-server; ver=v1.56.1 ;; # GCS protocol server (the executor's GCS tests)
  seaweedfs)     mod=seaweedfs; pkg=github.com/seaweedfs/seaweedfs/weed;           ver=v0.0.0-20261109003541-7506e5f91cd6 ;; # S3 server that checks signatures
  benchstat)     mod=perf;     pkg=golang.org/x/perf/cmd/benchstat;                ver=v0.0.0-20260908200009-22c9c6c9d4da ;;
  golangci-lint) mod=lint;     pkg=github.com/golangci/golangci-lint/v2/cmd/golangci-lint; ver=v2.15.0 ;;
  controller-gen) mod=dev;     pkg=sigs.k8s.io/controller-tools/cmd/controller-gen; ver=v0.23.0 ;;
  openbao)       mod=openbao;  pkg=github.com/openbao/openbao;                      ver=2.4.0
                 ldflags="-X github.com/openbao/openbao/version.fullVersion=2.4.0" ;;
  kube-apiserver) mod=k8s;     pkg=k8s.io/kubernetes/cmd/kube-apiserver;          ver=$kver; dir=k8s-$kver; ldflags=$k8sld ;;
  kube-controller-manager) mod=k8s; pkg=k8s.io/kubernetes/cmd/kube-controller-manager; ver=$kver; dir=k8s-$kver; ldflags=$k8sld ;;
  kube-scheduler) mod=k8s;     pkg=k8s.io/kubernetes/cmd/kube-scheduler;          ver=$kver; dir=k8s-$kver; ldflags=$k8sld ;;
  kubectl)       mod=k8s;      pkg=k8s.io/kubernetes/cmd/kubectl;                 ver=$kver; dir=k8s-$kver; ldflags=$k8sld ;;
  etcd)          mod=k8s;      pkg=go.etcd.io/etcd/server/v3;                     ver=v3.6.8; dir=k8s-$kver; ldflags="-s -w" ;;
  crossplane-core) mod=crossplane-core; pkg=github.com/crossplane/crossplane/v2/cmd/crossplane; ver=v2.4.0
                 ldflags="-s -w -X github.com/crossplane/crossplane-runtime/v2/pkg/version.version=v2.4.0" ;; # the engine; the stamp lets it accept packages that declare spec.crossplane.version
  registry)      mod=registry; pkg=github.com/openbao-restore/openbao-restore/hack/tools/registry/cmd/registry; ver=v0.20.7 ;; # loopback OCI registry (go-containerregistry)
  kwok)          mod=kwok;     pkg=sigs.k8s.io/kwok/cmd/kwok;                     ver=v0.8.0; ldflags="-s -w" ;;
  azurite)       d=$cache/azurite-3.37.0; m=$d/node_modules/azurite/dist/src/blob/main.js; [ -f "$m" ] || { rm -rf "$d.tmp.$$" && mkdir -p "$d.tmp.$$" && cp "$root/hack/npm/package.json" "$root/hack/npm/package-lock.json" "$d.tmp.$$/" && (cd "$d.tmp.$$" && npm ci --no-audit --no-fund --loglevel=error >&2) && rm -rf "$d" && mv "$d.tmp.$$" "$d"; }; echo "$m"; exit 0 ;; # npm, from hack/npm's lockfile; prints the blob server's main.js
  *) echo "hack/tool.sh: unknown tool $name" >&2; exit 2 ;;
esac

bin=$cache/${dir:-$name-$ver}/$name
if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  echo "hack/tool.sh: building $name $ver into $(dirname "$bin") (first use only)" >&2
  # Build into a temporary file and rename, so an interrupted build never
  # leaves a half-written binary that later runs would trust.
  (cd "$root/hack/tools/$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin.tmp.$$" "$pkg")
  mv "$bin.tmp.$$" "$bin"
fi
echo "$bin"
