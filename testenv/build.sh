#!/usr/bin/env bash
# Builds lazyscale's test control plane from Go modules: kube-apiserver, kube-controller-manager and
# kube-scheduler from k8s.io/kubernetes, kwok from sigs.k8s.io/kwok and etcd from go.etcd.io/etcd. Every
# version is pinned in one place, testenv/k8s/go.mod (with go.sum). Called by `cargo xtask testenv build`,
# which decides whether a build is needed (the cache key covers this script, go.mod, go.sum and the Go
# version; kwok's stages are configuration, written by each server into its own folder).
#
# usage: OUT=DIR build.sh
#   OUT      where the result goes: bin/<component>, versions.txt (written atomically)
#   GO       the go command (default: go on PATH, else /usr/local/go/bin/go); Go >= 1.26 is needed
#   GOCACHE, GOMODCACHE  as usual for go (defaults: go's own)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd -P)
: "${OUT:?set OUT}"
MOD=$HERE/k8s

step() { echo "[testenv $(date +%T)] $*"; }
fail() {
  echo "testenv build failed: $1" >&2
  echo "  retry with: cargo xtask testenv build" >&2
  exit 1
}

GO=${GO:-}
if [ -z "$GO" ]; then
  if command -v go > /dev/null 2>&1; then GO=$(command -v go); elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
fi
[ -n "$GO" ] || fail "no go command found (install Go >= 1.26, or set GO=/path/to/go)"
GOVER=$("$GO" env GOVERSION)
case "$GOVER" in
  go1.2[6-9]* | go1.[3-9][0-9]*) ;;
  *) fail "Go $GOVER is too old: testenv/k8s/go.mod needs go 1.26 or newer" ;;
esac
export GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0

# component  package (each a `tool` line of testenv/k8s/go.mod)
COMPONENTS=(
  "kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler"
  "kwok sigs.k8s.io/kwok/cmd/kwok"
  "etcd go.etcd.io/etcd/server/v3"
)

module_of() { # the module@version that provides a package, from go.mod
  (cd "$MOD" && "$GO" list -f '{{with .Module}}{{.Path}}@{{.Version}}{{end}}' "$1" 2> /dev/null) || echo "$1"
}

TMP=$OUT.tmp
rm -rf "$TMP" && mkdir -p "$TMP/bin" "$TMP/logs"

step "download the modules pinned in testenv/k8s/go.mod ($GOVER)"
if ! (cd "$MOD" && "$GO" mod download -x) > "$TMP/logs/download.log" 2>&1; then
  tail -n 20 "$TMP/logs/download.log" >&2
  bad=$(grep -oE '[a-z0-9.-]+\.[a-z]+/[^ @:]+@v[^ :]+' "$TMP/logs/download.log" | tail -n 1 || true)
  fail "could not fetch ${bad:-a module} (full log: $TMP/logs/download.log)"
fi

# Kubernetes binaries report the module's release (a plain `go build` says v0.0.0-master).
KVER=$(cd "$MOD" && "$GO" list -m -f '{{.Version}}' k8s.io/kubernetes)
KMAJ=${KVER#v}; KMAJ=${KMAJ%%.*}
KMIN=${KVER#v*.}; KMIN=${KMIN%%.*}
CB=k8s.io/component-base/version
KLDFLAGS="-X $CB.gitVersion=$KVER -X $CB.gitMajor=$KMAJ -X $CB.gitMinor=$KMIN -X $CB.gitTreeState=clean -X $CB.buildDate=1970-01-01T00:00:00Z"

for c in "${COMPONENTS[@]}"; do
  set -- $c
  name=$1 pkg=$2
  step "build $name ($(module_of "$pkg"); minutes on a cold Go cache)"
  if ! (cd "$MOD" && "$GO" build -trimpath -ldflags="-s -w $KLDFLAGS" -o "$TMP/bin/$name" "$pkg") > "$TMP/logs/$name.log" 2>&1; then
    tail -n 30 "$TMP/logs/$name.log" >&2
    fail "building $name from $(module_of "$pkg") (package $pkg; log: $TMP/logs/$name.log)"
  fi
done

{
  echo "go $GOVER"
  for c in "${COMPONENTS[@]}"; do
    set -- $c
    echo "$1 $(module_of "$2")"
  done
} > "$TMP/versions.txt"
rm -rf "$OUT" && mv "$TMP" "$OUT"
step "done: $(tr '\n' ';' < "$OUT/versions.txt")"
