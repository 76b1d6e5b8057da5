// The .deb's unit under a REAL systemd: boot this machine's own Debian tree as a
// systemd-nspawn container (overlayfs, so the host is untouched), with the amd64 .deb
// installed, and check what `systemd-analyze` alone cannot: Type=notify + NotifyAccess=all
// + the systemd-notify helper bring the unit to "active", the watchdog is fed, the
// sandbox (no capabilities, seccomp, NoNewPrivileges) lets Node run, and an invalid
// config leaves the unit "failed" with status 78 and no restart loop.
//
// Glossary
//   probe | a oneshot unit inside the container that runs the checks, writes
//         | key=value lines to /root/probe.out and powers the container off
//
// Needs root, overlayfs and systemd-nspawn (apt-get install systemd-container); the
// release comes from scripts/build-release.sh amd64 or $PACKAGING_DEB. ~40 s.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { test } from 'node:test'
import { withTimeout } from '../../helpers/wait.js'

const REPO = resolve(import.meta.dirname, '../../..')
const PKG_VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version
const BOOT_TIMEOUT_MS = 180_000

function why(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (overlayfs, systemd-nspawn)'
  if (spawnSync('sh', ['-c', 'command -v systemd-nspawn'], { stdio: 'ignore' }).status !== 0) {
    return 'systemd-nspawn is missing (apt-get install systemd-container)'
  }
  if (existsSync('/run/systemd/system'))
    return 'systemd runs as PID 1 here: this test boots the host tree as a container only on machines without it'
  if (!process.env.PACKAGING_DEB) {
    const dist = join(REPO, 'dist/agent')
    if (!existsSync(dist)) return 'dist/ is missing: npm run build'
    const files = readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter(
      (f) => f.endsWith('.js') && f !== 'sd-notify.js',
    )
    if (!files.some((f) => /createNotifier\s*\(/.test(readFileSync(join(dist, f), 'utf8')))) {
      return 'the agent does not call createNotifier() yet: a Type=notify unit would never become active'
    }
  }
  return false
}
const skip = why()

function ensureDeb(): string {
  const given = process.env.PACKAGING_DEB
  if (given) return resolve(given)
  const r = spawnSync('bash', [join(REPO, 'scripts/build-release.sh'), 'amd64'], {
    cwd: REPO,
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: 15 * 60_000,
  })
  assert.equal(r.status, 0, `scripts/build-release.sh amd64 failed (${r.error?.message ?? `exit ${r.status}`})`)
  return join(REPO, 'release', `edge-agent_${PKG_VERSION.replaceAll('-', '~')}_amd64.deb`)
}

// Runs inside the container as a oneshot unit after multi-user.target.
const PROBE_SH = String.raw`#!/bin/sh
out=/root/probe.out
say() { echo "$1=$2" >> $out; }
prop() { systemctl show -p "$1" --value edge-agent; }
i=0; until systemctl is-active -q edge-agent || [ $i -ge 60 ]; do i=$((i + 1)); sleep 1; done
say active "$(prop ActiveState)/$(prop SubState)"
pid=$(prop MainPID)
say mainpid_comm "$(cat /proc/$pid/comm 2>/dev/null)"
say user "$(ps -o user= -p $pid)"
say capeff "$(sed -n 's/^CapEff:\t//p' /proc/$pid/status)"
say seccomp "$(sed -n 's/^Seccomp:\t//p' /proc/$pid/status)"
say nonewprivs "$(sed -n 's/^NoNewPrivs:\t//p' /proc/$pid/status)"
say healthz "$(/opt/edge-agent/node/bin/node -e 'fetch("http://127.0.0.1:9180/healthz").then((r) => console.log(r.status), () => console.log("down"))')"
# WatchdogSec=4 (drop-in): 10 s later the same process is still the main PID only if keep-alives arrive
sleep 10
say after_watchdog "$(prop ActiveState)/$(prop SubState) pid_same=$([ "$(prop MainPID)" = "$pid" ] && echo yes || echo no) restarts=$(prop NRestarts)"
systemctl stop edge-agent
say stopped "$(prop ActiveState) result=$(prop Result)"
printf 'bogus: 1\n' > /etc/edge-agent/config.yaml
systemctl start edge-agent
sleep 8
say broken "$(prop ActiveState)/$(prop SubState) status=$(prop ExecMainStatus) restarts=$(prop NRestarts)"
say journal_mentions_key "$(journalctl -u edge-agent -o cat --no-pager | grep -c 'bogus: unknown key')"
systemctl poweroff
`

const BOOT_SH = String.raw`#!/bin/bash
# boot DIR DEB: overlay of / in DIR, install DEB, add the probe, boot with systemd-nspawn
set -euo pipefail
D=$1 DEB=$2
M=$D/merged
mount -t overlay overlay -o "lowerdir=/,upperdir=$D/upper,workdir=$D/work" "$M"
mkdir -p "$M/mnt/pkgs"
mount --bind -o ro "$(dirname "$DEB")" "$M/mnt/pkgs"
chroot "$M" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg -i "/mnt/pkgs/$(basename "$DEB")" >"$D/dpkg.log" 2>&1
# quiet, fast boot: nothing else of the host's image, no waiting for a network that the
# private network namespace will never have
for u in systemd-networkd-wait-online NetworkManager-wait-online mosquitto postgresql console-getty; do
  ln -sf /dev/null "$M/etc/systemd/system/$u.service"
done
mkdir -p "$M/etc/systemd/system/edge-agent.service.d"
printf '[Service]\nWatchdogSec=4\n' > "$M/etc/systemd/system/edge-agent.service.d/test.conf"
install -m 0755 "$D/probe.sh" "$M/root/probe.sh"
printf '[Unit]\nAfter=multi-user.target\n[Service]\nType=oneshot\nExecStart=/root/probe.sh\n' > "$M/etc/systemd/system/probe.service"
ln -sf /etc/systemd/system/probe.service "$M/etc/systemd/system/multi-user.target.wants/probe.service"
rm -f "$M/etc/machine-id"
systemd-nspawn -D "$M" --boot --register=no --keep-unit --link-journal=no --private-network -q >"$D/console.log" 2>&1 || true
cp "$M/root/probe.out" "$D/probe.out" 2>/dev/null || true
`

test(
  'under systemd the unit becomes active via sd_notify, is watched, sandboxed, and fails for good on a bad config',
  { skip, timeout: 20 * 60_000 },
  async (t) => {
    const deb = ensureDeb()
    const dir = mkdtempSync(join(tmpdir(), 'nspawn-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    for (const d of ['upper', 'work', 'merged']) mkdirSync(join(dir, d))
    writeFileSync(join(dir, 'probe.sh'), PROBE_SH)
    writeFileSync(join(dir, 'boot.sh'), BOOT_SH)
    chmodSync(join(dir, 'boot.sh'), 0o755)

    const boot = spawn('unshare', ['--mount', '--fork', join(dir, 'boot.sh'), dir, deb], {
      stdio: 'ignore',
      detached: true,
    })
    const exited = once(boot, 'exit')
    t.after(async () => {
      if (boot.exitCode === null && boot.signalCode === null) {
        process.kill(-boot.pid!, 'SIGKILL')
        await exited
      }
    })
    await withTimeout(
      exited,
      BOOT_TIMEOUT_MS,
      `the container to boot, run the probe and power off (console: ${join(dir, 'console.log')})`,
    )
    const outFile = join(dir, 'probe.out')
    const console = (): string =>
      existsSync(join(dir, 'console.log')) ? readFileSync(join(dir, 'console.log'), 'utf8').slice(-3000) : ''
    assert.ok(
      existsSync(outFile),
      `the probe wrote nothing; dpkg: ${readFileSync(join(dir, 'dpkg.log'), 'utf8')}\nconsole:\n${console()}`,
    )
    const r = Object.fromEntries(
      readFileSync(outFile, 'utf8')
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    )
    t.diagnostic(JSON.stringify(r))

    assert.equal(r.active, 'active/running', 'READY=1 reached systemd (Type=notify)')
    assert.equal(r.mainpid_comm, 'node', 'node is the main process (launcher exec, MAINPID)')
    assert.equal(r.user, 'edge-agent')
    assert.equal(r.capeff, '0000000000000000', 'no capabilities')
    assert.equal(r.seccomp, '2', 'seccomp filter on (SystemCallFilter=)')
    assert.equal(r.nonewprivs, '1')
    assert.equal(r.healthz, '200')
    assert.equal(
      r.after_watchdog,
      'active/running pid_same=yes restarts=0',
      'watchdog keep-alives arrive (WatchdogSec=4 for 10 s)',
    )
    assert.equal(r.stopped, 'inactive result=success')
    assert.equal(r.broken, 'failed/failed status=78 restarts=0', 'exit 78: failed at once, not restarted')
    assert.ok(Number(r.journal_mentions_key) >= 1, 'the journal says what is wrong')
  },
)
