// The Node-RED add-on as released: the base amd64 tarball holds no node-red;
// the add-on tarball, unpacked into it, lets the bundled agent run Node-RED,
// take a user from its own CLI and normalise a device's message with the edge
// nodes. The add-on .deb is Architecture: all, depends on the same edge-agent
// version and installs under /opt/edge-agent/addons/node-red only.
//
// The release is built by scripts/build-release.sh amd64 (a no-op when up to
// date), or taken from $PACKAGING_RELEASE_DIR (the directory holding the
// artifacts).
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { test } from 'node:test'
import mqtt from 'mqtt'
import { withTimeout } from '../../helpers/wait.js'
import { edgeFlow } from '../node-red/flows.js'

const REPO = resolve(import.meta.dirname, '../../..')
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version
const DEB_VERSION = VERSION.replaceAll('-', '~')

function releaseDir(): string {
  const given = process.env['PACKAGING_RELEASE_DIR']
  if (given !== undefined && given !== '') return resolve(given)
  const r = spawnSync('bash', [join(REPO, 'scripts/build-release.sh'), 'amd64'], {
    cwd: REPO,
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: 15 * 60_000,
  })
  assert.equal(r.status, 0, `scripts/build-release.sh amd64 failed (exit ${r.status})`)
  return join(REPO, 'release')
}

function sh(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...opts })
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

test(
  'the add-on .deb is Architecture: all, tied to the same version, and installs only addons/node-red',
  { skip: spawnSync('sh', ['-c', 'command -v dpkg-deb']).status !== 0 && 'dpkg-deb missing' },
  () => {
    const dir = releaseDir()
    const deb = join(dir, `edge-agent-node-red_${DEB_VERSION}_all.deb`)
    assert.ok(existsSync(deb), deb)
    const info = sh('dpkg-deb', ['-f', deb, 'Package', 'Architecture', 'Depends'])
    assert.match(info, /^Package: edge-agent-node-red$/m)
    assert.match(info, /^Architecture: all$/m)
    assert.match(info, new RegExp(`^Depends: edge-agent \\(= ${DEB_VERSION.replaceAll('.', '\\.')}\\)$`, 'm'))
    const files = sh('dpkg-deb', ['-c', deb])
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => l.slice(l.indexOf('./')))
    const outside = files.filter(
      (f) =>
        !/^\.\/(opt\/(edge-agent\/(addons\/(node-red\/.*)?)?)?|usr\/(share\/(doc\/(edge-agent-node-red\/.*)?)?)?)?$/.test(
          f,
        ),
    )
    assert.deepEqual(outside, [])
    assert.ok(files.includes('./opt/edge-agent/addons/node-red/node_modules/node-red/package.json'))
    assert.ok(!files.some((f) => f.endsWith('.node')), 'no native addon')
  },
)

test('the bundled agent with the add-on unpacked runs a CLI-deployed edge flow', async (t) => {
  const dir = releaseDir()
  const work = mkdtempSync(join(tmpdir(), 'edge-nr-addon-'))
  let agent: ReturnType<typeof spawn> | undefined
  t.after(() => {
    if (agent !== undefined && agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL')
    rmSync(work, { recursive: true, force: true })
  })
  sh('tar', ['-xzf', join(dir, `edge-agent-${VERSION}-linux-amd64.tar.gz`), '-C', work])
  const root = join(work, `edge-agent-${VERSION}-linux-amd64`)
  assert.equal(existsSync(join(root, 'node_modules', 'node-red')), false, 'the base release has no node-red')
  const bin = join(root, 'bin', 'edge-agent')
  const config = join(work, 'config.yaml')
  writeFileSync(
    config,
    [
      `dataDir: ${JSON.stringify(join(work, 'data'))}`,
      'log: { format: json, level: debug }',
      'admin: { host: 127.0.0.1, port: 0 }',
      'broker: { listeners: [{ protocol: mqtt, host: 127.0.0.1, port: 0 }] }',
      'nodeRed: { enabled: true, host: 127.0.0.1, port: 0 }',
      '',
    ].join('\n'),
  )
  // Without the add-on: refused as a config problem, before anything starts.
  const before = spawnSync(bin, ['config', 'validate', '--config', config], { encoding: 'utf8' })
  assert.equal(before.status, 78)
  assert.match(before.stderr, /nodeRed\.enabled: the Node-RED add-on is not installed/)

  sh('tar', ['-xzf', join(dir, `edge-agent-node-red-${VERSION}.tar.gz`), '-C', root])
  sh(bin, ['config', 'validate', '--config', config])
  writeFileSync(join(work, 'pw'), 'correct horse battery')
  sh(bin, ['nodered', 'passwd', 'ops', '--password-file', join(work, 'pw'), '--config', config])
  assert.match(readFileSync(join(work, 'data', 'node-red', 'users.json'), 'utf8'), /"\$2[aby]\$10\$/)

  const proc = spawn(bin, ['run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] })
  agent = proc
  const lines: Record<string, unknown>[] = []
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = []
  let buf = ''
  proc.stdout.setEncoding('utf8').on('data', (c: string) => {
    buf += c
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      try {
        const l = JSON.parse(line) as Record<string, unknown>
        lines.push(l)
        for (const w of waiters.splice(0)) {
          if (w.pred(l)) w.resolve(l)
          else waiters.push(w)
        }
      } catch {
        // not a log line
      }
    }
  })
  const logLine = (pred: (l: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>> =>
    withTimeout(
      new Promise((r) =>
        lines.find(pred) ? r(lines.find(pred) as Record<string, unknown>) : waiters.push({ pred, resolve: r }),
      ),
      90_000,
      what,
    )
  const started = await logLine((l) => l['msg'] === 'agent started', "'agent started'")
  const port = (started['listeners'] as { port: number }[])[0]?.port as number
  const nr = await logLine((l) => l['msg'] === 'node-red started', "'node-red started'")
  assert.equal(nr['users'], 1)

  const subscribed = logLine((l) => l['msg'] === 'edge in subscribed', "'edge in subscribed'")
  const flows = join(work, 'flows.json')
  writeFileSync(flows, JSON.stringify(edgeFlow()))
  sh(bin, ['nodered', 'deploy', flows, '--config', config])
  await subscribed
  const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: 'addon-sub' })
  t.after(() => sub.endAsync(true))
  await sub.subscribeAsync('site/+/temperature', { qos: 1 })
  const got = withTimeout(
    new Promise<Buffer>((r) => sub.once('message', (_t, p) => r(p))),
    15_000,
    'the normalised message',
  )
  const dev = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: 'raw1' })
  t.after(() => dev.endAsync(true))
  await dev.publishAsync('devices/raw1/raw', '215', { qos: 1 })
  assert.deepEqual(JSON.parse((await got).toString()), { celsius: 21.5 })
  proc.kill('SIGTERM')
  const code = await withTimeout(
    new Promise<number | null>((r) => proc.once('exit', (c) => r(c))),
    30_000,
    'agent exit',
  )
  assert.equal(code, 0)
})
