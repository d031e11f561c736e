#!/usr/bin/env bash
# Builds lazyscale's test API server and fetches etcd from Debian packages, without installing anything
# system-wide. Called by `cargo xtask testenv build` (which decides whether a build is needed).
#
# usage: CACHE=DIR OUT=DIR build.sh
#   CACHE  the cache folder: apt lists, the extracted toolchain (keyed by packages.txt), the Go build cache
#   OUT    where the result goes: bin/lazyscale-testenv-apiserver, bin/etcd, versions.txt (written atomically)
#   DEBIAN_MIRROR  Debian archive URL (default: the first .../debian archive of the machine's apt sources)
#
# Packages come from Debian sid (Go 1.26, etcd 3.5, the k8s.io/* 0.36 Go sources), pinned in packages.txt.
# A pinned version that sid no longer has falls back to the current candidate; versions.txt says which were used.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd -P)
: "${CACHE:?set CACHE}" "${OUT:?set OUT}"
mkdir -p "$CACHE" && CACHE=$(cd "$CACHE" && pwd -P)
GO_VERSION=1.26
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
LOGS=$CACHE/logs
mkdir -p "$LOGS"

step() { echo "[testenv $(date +%T)] $*"; }
fail() { echo "testenv build failed at step '$1': $2" >&2; exit 1; }
need() { local c; for c in "$@"; do command -v "$c" >/dev/null 2>&1 || fail prerequisites "missing command '$c' (apt-get install $c)"; done; }

need apt-get apt-config dpkg-deb sha256sum
[ -r "$KEYRING" ] || fail prerequisites "$KEYRING is missing: apt-get install debian-archive-keyring"

# ---- private apt configuration: the system's apt state is only read, never written

system_apt_uris() {
  local SL='' SP='' f
  eval "$(apt-config shell SL Dir::Etc::sourcelist/f SP Dir::Etc::sourceparts/d)"
  {
    for f in "$SL" "$SP"/*.list; do
      [ -r "$f" ] && awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }' "$f"
    done
    for f in "$SP"/*.sources; do
      [ -r "$f" ] && awk 'BEGIN { RS = "" } !/(^|\n)[Ee]nabled:[ \t]*[Nn]o/ {
          n = split($0, L, "\n")
          for (i = 1; i <= n; i++) if (L[i] ~ /^[Uu][Rr][Ii][Ss]:/) { m = split(L[i], F, /[ \t]+/); for (j = 2; j <= m; j++) print F[j] }
        }' "$f"
    done
  } 2>/dev/null || true
}

APT_OPTS=()
apt_setup() {
  local A=$CACHE/apt mirror=${DEBIAN_MIRROR:-} suite
  [ -n "$mirror" ] || mirror=$(system_apt_uris | grep -E '^[a-z0-9+]+://[^/]+(/.*)?/debian/?$' | head -n 1 || true)
  [ -n "$mirror" ] || fail apt-setup "no Debian archive in the system apt sources; set DEBIAN_MIRROR=<scheme>://<host>/debian"
  mirror=${mirror%/}
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/sources.list.d" "$A/preferences.d"
  for suite in sid trixie; do echo "deb [signed-by=$KEYRING] $mirror $suite main"; done > "$A/sources.list"
  printf '%s\n' '#clear APT::Update::Pre-Invoke;' '#clear APT::Update::Post-Invoke;' '#clear APT::Update::Post-Invoke-Success;' \
    '#clear DPkg::Pre-Invoke;' '#clear DPkg::Post-Invoke;' '#clear APT::Default-Release;' > "$A/apt.conf"
  APT_OPTS=(-c "$A/apt.conf"
    -o "Dir::Etc::sourcelist=$A/sources.list" -o "Dir::Etc::sourceparts=$A/sources.list.d"
    -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache"
    -o "Dir::Etc::preferences=$A/preferences" -o "Dir::Etc::preferencesparts=$A/preferences.d"
    -o "APT::Sandbox::User=$(id -un)")
  step "apt-get update (private lists: sid, trixie)"
  apt-get "${APT_OPTS[@]}" -q update > "$LOGS/apt-update.log" 2>&1 \
    || { tail -n 20 "$LOGS/apt-update.log" >&2; fail apt-update "see $LOGS/apt-update.log; check the network or set DEBIAN_MIRROR"; }
}

# ---- toolchain: the pinned .debs, extracted; keyed by packages.txt

TKEY=$(sha256sum "$HERE/packages.txt" | cut -c1-16)
TC=$CACHE/toolchain-$TKEY
if [ ! -f "$TC/done" ]; then
  apt_setup
  rm -rf "$TC" && mkdir -p "$TC/debs" "$TC/prefix"
  step "download $(wc -l < "$HERE/packages.txt") pinned packages"
  if ! (cd "$TC/debs" && awk '{print $1 "=" $2}' "$HERE/packages.txt" | xargs apt-get "${APT_OPTS[@]}" -q download) > "$LOGS/apt-download.log" 2>&1; then
    step "some pinned versions are gone from sid: falling back per package to the current candidate"
    while read -r pkg ver; do
      ls "$TC/debs/${pkg}_"*.deb >/dev/null 2>&1 && continue
      if ! (cd "$TC/debs" && apt-get "${APT_OPTS[@]}" -q download "$pkg=$ver") >> "$LOGS/apt-download.log" 2>&1; then
        (cd "$TC/debs" && apt-get "${APT_OPTS[@]}" -q download "$pkg") >> "$LOGS/apt-download.log" 2>&1 \
          || fail "download $pkg" "neither $pkg=$ver nor a current candidate could be downloaded (log: $LOGS/apt-download.log); update testenv/packages.txt"
        echo "  $pkg: pinned $ver unavailable, using $(ls "$TC/debs/${pkg}_"*.deb | sed 's/.*_\(.*\)_.*/\1/')" >&2
      fi
    done < "$HERE/packages.txt"
  fi
  step "extract"
  for f in "$TC"/debs/*.deb; do dpkg-deb -x "$f" "$TC/prefix" || fail "extract $(basename "$f")" "dpkg-deb -x failed"; done
  for f in "$TC"/debs/*.deb; do dpkg-deb -W --showformat='${Package} ${Version}\n' "$f"; done | sort > "$TC/versions.txt"
  rm -rf "$TC/debs"
  touch "$TC/done"
fi

# ---- build

GOROOT=$TC/prefix/usr/lib/go-$GO_VERSION
[ -x "$GOROOT/bin/go" ] || fail go-toolchain "no go binary under $GOROOT (is golang-$GO_VERSION-go in packages.txt?)"
export GOROOT PATH=$GOROOT/bin:$PATH GOPATH=$CACHE/gopath:$TC/prefix/usr/share/gocode GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local \
  GOPROXY=off GOCACHE=$CACHE/gocache
SRC=$CACHE/gopath/src/lazyscale-testenv/apiserver
rm -rf "$SRC" && mkdir -p "$SRC" && cp "$HERE"/apiserver/*.go "$SRC/"
TMP=$OUT.tmp
rm -rf "$TMP" && mkdir -p "$TMP/bin"

step "build openapi-gen"
(cd "$TC/prefix/usr/share/gocode/src/k8s.io/kube-openapi/cmd/openapi-gen" && go build -o "$CACHE/openapi-gen" .) > "$LOGS/openapi-gen.log" 2>&1 \
  || { tail -n 30 "$LOGS/openapi-gen.log" >&2; fail build-openapi-gen "see $LOGS/openapi-gen.log"; }
step "generate OpenAPI definitions"
: > "$CACHE/boilerplate.txt"
"$CACHE/openapi-gen" --go-header-file "$CACHE/boilerplate.txt" --output-dir "$SRC/openapi" \
  --output-pkg lazyscale-testenv/apiserver/openapi --output-file zz_generated.openapi.go --report-filename "$LOGS/openapi-violations.txt" \
  k8s.io/api/core/v1 k8s.io/api/apps/v1 k8s.io/api/autoscaling/v1 k8s.io/api/admissionregistration/v1 \
  k8s.io/api/coordination/v1 k8s.io/api/events/v1 k8s.io/api/policy/v1 \
  k8s.io/apimachinery/pkg/apis/meta/v1 k8s.io/apimachinery/pkg/runtime k8s.io/apimachinery/pkg/version \
  k8s.io/apimachinery/pkg/util/intstr k8s.io/apimachinery/pkg/api/resource > "$LOGS/openapi-generate.log" 2>&1 \
  || { tail -n 30 "$LOGS/openapi-generate.log" >&2; fail generate-openapi "see $LOGS/openapi-generate.log"; }
step "build lazyscale-testenv-apiserver (a few minutes on a cold Go cache)"
(cd "$SRC" && go build -ldflags='-s -w' -o "$TMP/bin/lazyscale-testenv-apiserver" .) > "$LOGS/apiserver-build.log" 2>&1 \
  || { tail -n 40 "$LOGS/apiserver-build.log" >&2; fail build-apiserver "see $LOGS/apiserver-build.log"; }
cp "$TC/prefix/usr/bin/etcd" "$TMP/bin/etcd"
cp "$TC/versions.txt" "$TMP/versions.txt"
"$GOROOT/bin/go" version >> "$TMP/versions.txt"
rm -rf "$OUT" && mv "$TMP" "$OUT"
step "done: $OUT"
