#!/usr/bin/env bash
# Builds the peers of `cargo xtask bench lazy` from the Go module testenv/peers (go.mod, go.sum): our
# client-go pod informer (./informer) and the VPA recommender and admission controller
# (k8s.io/autoscaler/vertical-pod-autoscaler, a `tool` line each), and copies the VPA's CRDs from that
# module's own deploy folder. Its own module and cache key (testenv/support/src/peers.rs), so neither the
# control plane nor helm is rebuilt when a peer changes; Go's module and build caches are shared.
#
# usage: OUT=DIR build.sh
#   OUT   where the result goes: bin/{informer,vpa-recommender,vpa-admission-controller},
#         vpa-crds.yaml, versions.txt (written atomically)
#   GO    the go command (default: go on PATH, else /usr/local/go/bin/go); Go >= 1.26 is needed
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd -P)
: "${OUT:?set OUT}"

step() { echo "[peers $(date +%T)] $*"; }
fail() {
  echo "peers build failed: $1" >&2
  echo "  retry with: cargo xtask testenv build" >&2
  exit 1
}

GO=${GO:-}
if [ -z "$GO" ]; then
  if command -v go > /dev/null 2>&1; then GO=$(command -v go); elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
fi
[ -n "$GO" ] || fail "no go command found (install Go >= 1.26, or set GO=/path/to/go)"
export GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0

VPA=k8s.io/autoscaler/vertical-pod-autoscaler
# name  package
PEERS=(
  "informer ./informer"
  "vpa-recommender $VPA/pkg/recommender"
  "vpa-admission-controller $VPA/pkg/admission-controller"
)

TMP=$OUT.tmp
rm -rf "$TMP" && mkdir -p "$TMP/bin" "$TMP/logs"

step "download the modules pinned in testenv/peers/go.mod ($("$GO" env GOVERSION))"
if ! (cd "$HERE" && "$GO" mod download) > "$TMP/logs/download.log" 2>&1; then
  tail -n 20 "$TMP/logs/download.log" >&2
  fail "could not fetch the modules of testenv/peers/go.mod (log: $TMP/logs/download.log)"
fi
VPAVER=$(cd "$HERE" && "$GO" list -m -f '{{.Version}}' "$VPA") || fail "$VPA is not in testenv/peers/go.mod"
VPADIR=$(cd "$HERE" && "$GO" list -m -f '{{.Dir}}' "$VPA")

for p in "${PEERS[@]}"; do
  set -- $p
  name=$1 pkg=$2
  step "build $name ($pkg; minutes on a cold Go cache)"
  if ! (cd "$HERE" && "$GO" build -trimpath -ldflags="-s -w" -o "$TMP/bin/$name" "$pkg") > "$TMP/logs/$name.log" 2>&1; then
    tail -n 30 "$TMP/logs/$name.log" >&2
    fail "building $name (package $pkg; log: $TMP/logs/$name.log)"
  fi
done

# The VPA's CRDs (verticalpodautoscalers, verticalpodautoscalercheckpoints) as the release ships them.
cp "$VPADIR/deploy/vpa-v1-crd-gen.yaml" "$TMP/vpa-crds.yaml"
{
  echo "go $("$GO" env GOVERSION)"
  echo "informer k8s.io/client-go@$(cd "$HERE" && "$GO" list -m -f '{{.Version}}' k8s.io/client-go)"
  echo "vpa-recommender $VPA@$VPAVER"
  echo "vpa-admission-controller $VPA@$VPAVER"
} > "$TMP/versions.txt"
rm -rf "$OUT" && mv "$TMP" "$OUT"
step "done: $(tr '\n' ';' < "$OUT/versions.txt")"
