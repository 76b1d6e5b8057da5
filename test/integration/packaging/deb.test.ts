// The amd64 .deb through its whole life: install, run as the service user, upgrade
// (edited conffile kept), reinstall over a broken config, remove (data kept), purge
// (data, config and user gone), and the glibc gate in preinst.
//
// Glossary
//   throwaway root | an overlayfs whose lower layer is this machine's own / and whose
//                  | upper layer is a temp dir, entered with unshare --mount --net and
//                  | chroot. dpkg, useradd and deb-systemd-helper inside it are the real
//                  | Debian ones and see a real Debian system (deps satisfied for real),
//                  | but every write lands in the temp dir; the host is untouched.
//                  | (`dpkg --root` would chroot into an empty dir without /bin/sh, and
//                  | debootstrap needs a mirror.) Needs root; skipped otherwise.
//   v2, v3         | the same .deb re-packed with a bumped Version (v3 also ships a
//                  | changed default config), to exercise upgrades and conffile handling.
//
// The release is built by scripts/build-release.sh amd64 (a no-op when up to date),
// or taken from $PACKAGING_DEB.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import {
  appendFileSync,
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { test, type TestContext } from 'node:test'

const REPO = resolve(import.meta.dirname, '../../..')
const PKG_VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version
const BUILD_TIMEOUT_MS = 15 * 60_000

const ENTER_SH = String.raw`#!/bin/bash
# enter DIR MNT -- COMMAND...: overlay of / with DIR/upper, fresh /tmp and /run, MNT
# (the .deb files) read-only at /mnt/pkgs, a private network namespace with lo up.
set -euo pipefail
D=$1 P=$2; shift 2
M=$D/merged
mount -t overlay overlay -o "lowerdir=/,upperdir=$D/upper,workdir=$D/work" "$M"
mount -t proc proc "$M/proc"
mount --rbind /dev "$M/dev"
mount -t tmpfs tmpfs "$M/tmp"
mount -t tmpfs tmpfs "$M/run"
mkdir -p "$M/mnt/pkgs"
mount --bind -o ro "$P" "$M/mnt/pkgs"
ip link set lo up
exec chroot "$M" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
`

function why(): string | false {
  if (process.getuid?.() !== 0) return 'needs root: the throwaway root is an overlayfs mount'
  for (const tool of ['dpkg-deb', 'unshare', 'chroot', 'ip']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status !== 0) return `${tool} is missing`
  }
  const probe = mkdtempSync(join(tmpdir(), 'overlay-probe-'))
  try {
    for (const d of ['u', 'w', 'm']) mkdirSync(join(probe, d))
    const r = spawnSync(
      'unshare',
      [
        '--mount',
        '--fork',
        'sh',
        '-c',
        `mount -t overlay overlay -o lowerdir=/,upperdir=${probe}/u,workdir=${probe}/w ${probe}/m && test -x ${probe}/m/bin/sh`,
      ],
      { encoding: 'utf8' },
    )
    if (r.status !== 0) return `cannot mount an overlay of / here: ${r.stderr.trim()}`
  } finally {
    rmSync(probe, { recursive: true, force: true })
  }
  return false
}
const skip = why()

/** The amd64 .deb: $PACKAGING_DEB, or built (idempotently) by scripts/build-release.sh. */
let builtDeb: string | undefined
function ensureDeb(): string {
  builtDeb ??= buildDeb()
  return builtDeb
}
function buildDeb(): string {
  const given = process.env.PACKAGING_DEB
  if (given !== undefined && given !== '') return resolve(given)
  const r = spawnSync('bash', [join(REPO, 'scripts/build-release.sh'), 'amd64'], {
    cwd: REPO,
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: BUILD_TIMEOUT_MS,
  })
  assert.equal(r.status, 0, `scripts/build-release.sh amd64 failed (${r.error?.message ?? `exit ${r.status}`})`)
  const deb = join(REPO, 'release', `edge-agent_${PKG_VERSION.replaceAll('-', '~')}_amd64.deb`)
  assert.ok(existsSync(deb), `${deb} was not built`)
  return deb
}

interface Result {
  status: number | null
  out: string
}

class ThrowawayRoot {
  private constructor(
    readonly dir: string,
    readonly pkgs: string,
  ) {}

  static create(t: TestContext, pkgs: string): ThrowawayRoot {
    const dir = mkdtempSync(join(tmpdir(), 'deb-root-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    for (const d of ['upper', 'work', 'merged']) mkdirSync(join(dir, d))
    writeFileSync(join(dir, 'enter.sh'), ENTER_SH)
    chmodSync(join(dir, 'enter.sh'), 0o755)
    return new ThrowawayRoot(dir, pkgs)
  }

  /** Run a sh script inside the root; bounded. */
  sh(script: string, timeoutMs = 120_000): Result {
    const r = spawnSync(
      'unshare',
      ['--mount', '--net', '--fork', join(this.dir, 'enter.sh'), this.dir, this.pkgs, 'sh', '-c', script],
      {
        encoding: 'utf8',
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
      },
    )
    return { status: r.status, out: `${r.stdout}${r.stderr}` }
  }

  ok(script: string, timeoutMs?: number): string {
    const r = this.sh(script, timeoutMs)
    assert.equal(r.status, 0, `inside the throwaway root, '${script}' failed:\n${r.out}`)
    return r.out
  }

  exists(path: string): boolean {
    return this.sh(`test -e '${path}' || test -L '${path}'`).status === 0
  }
}

/** dpkg-deb -R, bump Version, optionally change files, re-pack uncompressed (fast). */
function repack(t: TestContext, src: string, outDir: string, version: string, mutate?: (tree: string) => void): string {
  const tree = mkdtempSync(join(tmpdir(), 'deb-repack-'))
  t.after(() => rmSync(tree, { recursive: true, force: true }))
  const x = spawnSync('dpkg-deb', ['-R', src, tree], { encoding: 'utf8' })
  assert.equal(x.status, 0, x.stderr)
  const control = join(tree, 'DEBIAN/control')
  writeFileSync(control, readFileSync(control, 'utf8').replace(/^Version: .*$/m, `Version: ${version}`))
  mutate?.(tree)
  const out = join(outDir, `edge-agent_${version}_amd64.deb`)
  const b = spawnSync('dpkg-deb', ['--root-owner-group', '-Znone', '-b', tree, out], { encoding: 'utf8' })
  assert.equal(b.status, 0, b.stderr)
  return out
}

/** The installed agent, as the edge-agent user with the packaged config, until /healthz answers; then SIGTERM. */
const RUN_AS_SERVICE_USER = String.raw`
setpriv --reuid=edge-agent --regid=edge-agent --init-groups \
  env STATE_DIRECTORY=/var/lib/edge-agent /usr/bin/edge-agent run --config /etc/edge-agent/config.yaml >/tmp/agent.log 2>&1 &
pid=$!
i=0
until /opt/edge-agent/node/bin/node -e 'fetch("http://127.0.0.1:9180/healthz").then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))'; do
  i=$((i + 1))
  if [ $i -ge 150 ] || ! kill -0 $pid 2>/dev/null; then echo "no /healthz 200"; cat /tmp/agent.log; kill -9 $pid; exit 1; fi
  sleep 0.2
done
kill -TERM $pid
wait $pid || { echo "agent exited $?"; cat /tmp/agent.log; exit 1; }
# data the service user can write, to follow through remove and purge
setpriv --reuid=edge-agent --regid=edge-agent --init-groups sh -c 'echo kept > /var/lib/edge-agent/sentinel'
`

test('the amd64 .deb installs, upgrades, keeps edits and data, and purges cleanly', { skip }, async (t) => {
  const deb = ensureDeb()
  const pkgs = mkdtempSync(join(tmpdir(), 'deb-pkgs-'))
  t.after(() => rmSync(pkgs, { recursive: true, force: true }))
  const v1 = join(pkgs, basename(deb))
  writeFileSync(v1, readFileSync(deb))
  const v1Version = PKG_VERSION.replaceAll('-', '~')
  const v2Version = `${v1Version}+test2`
  const v3Version = `${v1Version}+test3`
  const v2 = repack(t, v1, pkgs, v2Version)
  const v3 = repack(t, v1, pkgs, v3Version, (tree) =>
    appendFileSync(join(tree, 'etc/edge-agent/config.yaml'), '\n# a new default in v3\n'),
  )
  const root = ThrowawayRoot.create(t, pkgs)
  const inRoot = (p: string): string => `/mnt/pkgs/${basename(p)}`

  await t.test('metadata: Depends on glibc >= 2.34, conffile, files under /opt, no Node-RED', () => {
    const info = spawnSync('dpkg-deb', ['-f', v1, 'Package', 'Version', 'Architecture', 'Depends'], {
      encoding: 'utf8',
    }).stdout
    assert.match(info, /^Package: edge-agent$/m)
    assert.match(info, new RegExp(`^Version: ${v1Version.replace(/[.+~]/g, '\\$&')}$`, 'm'))
    assert.match(info, /^Architecture: amd64$/m)
    assert.match(info, /^Depends: libc6 \(>= 2\.34\), libgcc-s1, libstdc\+\+6 \(>= \d+\)$/m)
    const conffiles = spawnSync('dpkg-deb', ['--ctrl-tarfile', v1], { encoding: 'buffer' })
    assert.match(
      spawnSync('tar', ['-xOf', '-', './conffiles'], { input: conffiles.stdout, encoding: 'utf8' }).stdout,
      /^\/etc\/edge-agent\/config\.yaml$/m,
    )
    const files = spawnSync('dpkg-deb', ['-c', v1], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout
    for (const f of [
      './opt/edge-agent/bin/edge-agent',
      './opt/edge-agent/node/bin/node',
      './opt/edge-agent/dist/agent/main.js',
      './opt/edge-agent/node_modules/better-sqlite3/build/Release/better_sqlite3.node',
      './lib/systemd/system/edge-agent.service',
      './etc/edge-agent/config.yaml',
    ]) {
      assert.ok(files.includes(` ${f}\n`) || files.includes(` ${f} `), `${f} missing from the package`)
    }
    assert.match(files, /\.\/usr\/bin\/edge-agent -> \/opt\/edge-agent\/bin\/edge-agent/)
    assert.doesNotMatch(files, /node_modules\/node-red\//, 'Node-RED is not part of the base release')
    assert.doesNotMatch(files, /better-sqlite3\/deps\//, 'SQLite sources are stripped')
  })

  await t.test('install creates the user, a 0700 state dir, a 0640 config and enables the unit', () => {
    const out = root.ok(`dpkg -i ${inRoot(v1)}`)
    assert.doesNotMatch(out, /is invalid/)
    assert.match(root.ok('id -u edge-agent'), /^\d+$/m)
    assert.ok(Number(root.ok('id -u edge-agent').trim()) < 1000, 'a system user')
    assert.equal(root.ok('stat -c "%a %U:%G" /var/lib/edge-agent').trim(), '700 edge-agent:edge-agent')
    assert.equal(root.ok('stat -c "%a %U:%G" /etc/edge-agent/config.yaml').trim(), '640 root:edge-agent')
    assert.equal(root.ok('getent passwd edge-agent | cut -d: -f6,7').trim(), '/var/lib/edge-agent:/usr/sbin/nologin')
    assert.ok(root.exists('/etc/systemd/system/multi-user.target.wants/edge-agent.service'), 'unit enabled')
    assert.equal(root.ok('edge-agent --version').trim(), PKG_VERSION)
    root.ok('edge-agent config validate --config /etc/edge-agent/config.yaml')
  })

  await t.test(
    'the installed unit passes systemd-analyze verify',
    { skip: root.sh('command -v systemd-analyze').status !== 0 },
    () => {
      const out = root.ok('systemd-analyze verify /lib/systemd/system/edge-agent.service')
      assert.equal(out.trim(), '')
    },
  )

  await t.test('the installed agent runs as edge-agent with the packaged config', () => {
    root.ok(RUN_AS_SERVICE_USER, 90_000)
  })

  await t.test('upgrade with an unchanged default config keeps the edited config silently', () => {
    root.ok(
      `sed -i 's/^  name: edge-agent /  name: plant-7 /' /etc/edge-agent/config.yaml && grep -q 'name: plant-7' /etc/edge-agent/config.yaml`,
    )
    root.ok(`dpkg -i ${inRoot(v2)} </dev/null`)
    assert.equal(root.ok("dpkg-query -W -f '${Version}' edge-agent"), v2Version)
    assert.match(root.ok('cat /etc/edge-agent/config.yaml'), /name: plant-7/)
    assert.equal(root.ok('cat /var/lib/edge-agent/sentinel').trim(), 'kept')
    assert.equal(root.ok('stat -c "%a %U:%G" /etc/edge-agent/config.yaml').trim(), '640 root:edge-agent')
  })

  await t.test('upgrade with a changed default config keeps the edit and leaves the new default as .dpkg-dist', () => {
    root.ok(`dpkg -i --force-confdef --force-confold ${inRoot(v3)} </dev/null`)
    assert.equal(root.ok("dpkg-query -W -f '${Version}' edge-agent"), v3Version)
    assert.match(root.ok('cat /etc/edge-agent/config.yaml'), /name: plant-7/)
    assert.match(root.ok('cat /etc/edge-agent/config.yaml.dpkg-dist'), /a new default in v3/)
    assert.equal(root.ok('cat /var/lib/edge-agent/sentinel').trim(), 'kept')
  })

  await t.test('a broken config is reported by postinst and does not fail the install', () => {
    root.ok(
      "cp /etc/edge-agent/config.yaml /root/config.good && printf 'site: {level: 9}\\nbogus: 1\\n' > /etc/edge-agent/config.yaml",
    )
    const out = root.ok(`dpkg -i ${inRoot(v3)} </dev/null`)
    assert.match(out, /\/etc\/edge-agent\/config\.yaml is invalid, so the service is not \(re\)started/)
    assert.match(out, /bogus: unknown key/)
    root.ok('cp /root/config.good /etc/edge-agent/config.yaml')
  })

  await t.test('remove keeps the data, the config and the user', () => {
    root.ok('dpkg -r edge-agent')
    assert.match(root.ok("dpkg-query -W -f '${Status}' edge-agent"), /deinstall ok config-files/)
    for (const gone of ['/opt/edge-agent', '/usr/bin/edge-agent', '/lib/systemd/system/edge-agent.service']) {
      assert.equal(root.exists(gone), false, `${gone} should be gone`)
    }
    assert.equal(root.ok('cat /var/lib/edge-agent/sentinel').trim(), 'kept')
    assert.match(root.ok('cat /etc/edge-agent/config.yaml'), /name: plant-7/)
    root.ok('id edge-agent')
  })

  await t.test('purge deletes the data, /etc/edge-agent and the user', () => {
    root.ok('dpkg -P edge-agent')
    for (const gone of [
      '/var/lib/edge-agent',
      '/etc/edge-agent',
      '/etc/systemd/system/multi-user.target.wants/edge-agent.service',
    ]) {
      assert.equal(root.exists(gone), false, `${gone} should be gone`)
    }
    assert.notEqual(root.sh('getent passwd edge-agent').status, 0, 'user removed')
    assert.notEqual(root.sh('getent group edge-agent').status, 0, 'group removed')
    assert.notEqual(root.sh('dpkg-query -W edge-agent').status, 0)
  })
})

test('preinst refuses a system whose glibc is older than 2.34, and says why', { skip }, (t) => {
  const deb = ensureDeb()
  const root = ThrowawayRoot.create(t, dirname(deb))
  // getconf in /usr/local/bin comes first on PATH: it plays a bullseye-era C library
  root.ok("printf '#!/bin/sh\\necho glibc 2.31\\n' > /usr/local/bin/getconf && chmod 755 /usr/local/bin/getconf")
  const r = root.sh(`dpkg -i /mnt/pkgs/${basename(deb)}`)
  assert.notEqual(r.status, 0)
  assert.match(r.out, /this system has glibc 2\.31, but edge-agent needs glibc >= 2\.34/)
  assert.equal(root.exists('/opt/edge-agent/bin/edge-agent'), false, 'nothing unpacked')
})
