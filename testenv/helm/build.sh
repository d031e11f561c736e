#!/usr/bin/env bash
# Builds helm from the Go module pinned in testenv/helm/go.mod (with go.sum), for the chart checks of
# `cargo xtask test` (helm lint, helm template). Its own module and its own cache key, so the control
# plane's build (testenv/k8s) is not affected by a helm bump. Called by `cargo xtask testenv build`.
#
# usage: OUT=DIR build.sh
#   OUT   where the result goes: bin/helm, version.txt (written atomically)
#   GO    the go command (default: go on PATH, else /usr/local/go/bin/go); Go >= 1.26 is needed
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd -P)
: "${OUT:?set OUT}"

fail() {
  echo "helm build failed: $1" >&2
  echo "  retry with: cargo xtask testenv build" >&2
  exit 1
}

GO=${GO:-}
if [ -z "$GO" ]; then
  if command -v go > /dev/null 2>&1; then GO=$(command -v go); elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
fi
[ -n "$GO" ] || fail "no go command found (install Go >= 1.26, or set GO=/path/to/go)"
export GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0

PKG=helm.sh/helm/v4/cmd/helm
VER=$(cd "$HERE" && "$GO" list -m -f '{{.Version}}' helm.sh/helm/v4) || fail "helm.sh/helm/v4 is not in testenv/helm/go.mod"
TMP=$OUT.tmp
rm -rf "$TMP" && mkdir -p "$TMP/bin"
echo "[helm $(date +%T)] build helm $VER ($("$GO" env GOVERSION); a few minutes on a cold Go cache)"
# helm reports its own version from these variables (a plain build says v4.x-dev).
LDFLAGS="-s -w -X helm.sh/helm/v4/internal/version.version=$VER -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
if ! (cd "$HERE" && "$GO" build -trimpath -ldflags="$LDFLAGS" -o "$TMP/bin/helm" "$PKG") > "$TMP/build.log" 2>&1; then
  tail -n 30 "$TMP/build.log" >&2
  fail "building $PKG@$VER (log: $TMP/build.log)"
fi
echo "helm.sh/helm/v4@$VER $("$GO" env GOVERSION)" > "$TMP/version.txt"
rm -rf "$OUT" && mv "$TMP" "$OUT"
echo "[helm $(date +%T)] done: $(cat "$OUT/version.txt")"
