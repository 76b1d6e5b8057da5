// The packaging shell scripts: shellcheck-clean, and the build says which package
// to install when a tool is missing (instead of failing somewhere in node-gyp).
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { test } from 'node:test'

const REPO = resolve(import.meta.dirname, '../../..')
const which = (cmd: string): string | undefined => {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : undefined
}

test(
  'build scripts and maintainer scripts pass shellcheck',
  { skip: which('shellcheck') ? false : 'shellcheck is missing (apt-get install shellcheck)' },
  () => {
    const bash = spawnSync('shellcheck', ['scripts/build-release.sh', 'scripts/build-arm64.sh'], {
      cwd: REPO,
      encoding: 'utf8',
    })
    assert.equal(bash.status, 0, bash.stdout)
    const sh = spawnSync(
      'shellcheck',
      ['-s', 'sh', ...['preinst', 'postinst', 'prerm', 'postrm'].map((s) => `packaging/deb/${s}`)],
      { cwd: REPO, encoding: 'utf8' },
    )
    assert.equal(sh.status, 0, sh.stdout)
  },
)

test('build-release.sh names the Debian package of a missing cross compiler', (t) => {
  // a PATH with everything the preflight checks before the cross tools, and no aarch64 gcc
  const bin = mkdtempSync(join(tmpdir(), 'build-path-'))
  t.after(() => rmSync(bin, { recursive: true, force: true }))
  for (const tool of [
    'node',
    'npm',
    'python3',
    'make',
    'tar',
    'gzip',
    'dpkg-deb',
    'sha256sum',
    'uname',
    'dirname',
    'date',
    'cut',
    'find',
    'sort',
    'xargs',
    'sed',
    'grep',
    'cat',
    'git',
  ]) {
    const p = which(tool)
    if (p) symlinkSync(p, join(bin, tool))
  }
  const r = spawnSync('/bin/bash', [join(REPO, 'scripts/build-release.sh'), 'arm64'], {
    cwd: REPO,
    env: { PATH: bin, HOME: tmpdir() },
    encoding: 'utf8',
    timeout: 30_000,
  })
  assert.equal(r.status, 1, r.stderr)
  assert.match(r.stderr, /missing tool 'aarch64-linux-gnu-gcc' \(apt-get install gcc-aarch64-linux-gnu\)/)
})

test('build-release.sh rejects an unknown architecture with its usage', () => {
  const r = spawnSync('/bin/bash', [join(REPO, 'scripts/build-release.sh'), 'riscv64'], { cwd: REPO, encoding: 'utf8' })
  assert.equal(r.status, 64)
  assert.match(r.stderr, /usage: .*arm64\|amd64/)
})
