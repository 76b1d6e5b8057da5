// The linux-arm64 release, run under user-mode emulation on this x86_64 machine:
// the bundled aarch64 node runs the bundled agent with the cross-compiled
// better-sqlite3, serves /healthz, accepts an MQTT publish from the host and (once
// the buffer is wired into the agent) keeps it in its SQLite store.
//
// It runs wherever the tools are (qemu-user-static and the aarch64 cross
// toolchain: .ci/run installs them and builds the release first, so the test
// finds it up to date), and is skipped with the reason elsewhere; set
// PACKAGING_SKIP_ARM64=1 to skip it on a machine that has them (a cross-build
// of a stale release takes minutes). PACKAGING_ARM64_TARBALL names a prebuilt
// tarball; `npm run test:arm64` runs this file alone. qemu-user-static is called
// explicitly with QEMU_LD_PREFIX, because binfmt_misc is not available here.
//
// Glossary
//   release dir | the extracted edge-agent-<v>-linux-arm64 tarball (node/, dist/, node_modules/, bin/)
//   closed port | a port that was free a moment ago and that nothing listens on: the
//               | upstream is unreachable, so outbound messages must wait in the buffer
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import mqtt from 'mqtt'
import { stringify } from 'yaml'
import { waitFor, withTimeout } from '../../helpers/wait.js'
import { UNIT_NODE_OPTIONS } from '../../helpers/agent-process.js'

const REPO = resolve(import.meta.dirname, '../../..')
const PKG_VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version
const QEMU = 'qemu-aarch64-static'
const QEMU_LD_PREFIX = '/usr/aarch64-linux-gnu'
// Generous: under emulation Node starts ~5x slower than natively.
const HEALTHZ_TIMEOUT_MS = 120_000
const BUILD_TIMEOUT_MS = 20 * 60_000

const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
const given = process.env.PACKAGING_ARM64_TARBALL
function why(): string | false {
  if (process.env.PACKAGING_SKIP_ARM64 === '1') return 'PACKAGING_SKIP_ARM64=1'
  if (!has(QEMU)) return `${QEMU} is missing (apt-get install qemu-user-static)`
  if (!existsSync(join(QEMU_LD_PREFIX, 'lib/ld-linux-aarch64.so.1')))
    return `no aarch64 libc under ${QEMU_LD_PREFIX} (apt-get install libc6-arm64-cross)`
  if (!given && !has('aarch64-linux-gnu-g++'))
    return 'the aarch64 cross compiler is missing (apt-get install g++-aarch64-linux-gnu gcc-aarch64-linux-gnu)'
  return false
}
const skip = why()

function ensureTarball(): string {
  if (given) return resolve(given)
  const r = spawnSync('bash', [join(REPO, 'scripts/build-release.sh'), 'arm64'], {
    cwd: REPO,
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: BUILD_TIMEOUT_MS,
  })
  assert.equal(r.status, 0, `scripts/build-release.sh arm64 failed (${r.error?.message ?? `exit ${r.status}`})`)
  const tarball = join(REPO, 'release', `edge-agent-${PKG_VERSION}-linux-arm64.tar.gz`)
  assert.ok(existsSync(tarball), `${tarball} was not built`)
  return tarball
}

async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  await new Promise<void>((r) => server.close(() => r()))
  return port
}

/** The environment the emulated agent gets: ours without EDGE_AGENT_* (the agent reads those as config). */
function agentEnv(): NodeJS.ProcessEnv {
  // As the unit runs it (its NODE_OPTIONS), so that `run` does not re-execute itself under emulation.
  const env: NodeJS.ProcessEnv = { QEMU_LD_PREFIX, NODE_OPTIONS: UNIT_NODE_OPTIONS }
  for (const k of ['PATH', 'HOME', 'LANG', 'TZ']) if (process.env[k] !== undefined) env[k] = process.env[k]
  return env
}

/** Every value in every table of a SQLite file, as strings: the test must not know the buffer's schema. */
function allValues(dbFile: string): string[] {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true })
  try {
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[]
    return tables.flatMap((table) =>
      (db.prepare(`SELECT * FROM "${table.replaceAll('"', '""')}"`).all() as Array<Record<string, unknown>>).flatMap(
        (row) => Object.values(row).map((v) => (Buffer.isBuffer(v) ? v.toString('latin1') : String(v))),
      ),
    )
  } finally {
    db.close()
  }
}

test(
  'the arm64 release runs under qemu: version, /healthz, MQTT publish into the SQLite buffer',
  { skip, timeout: BUILD_TIMEOUT_MS + 5 * 60_000 },
  async (t) => {
    const started = Date.now()
    const tarball = ensureTarball()
    const work = mkdtempSync(join(tmpdir(), 'arm64-smoke-'))
    t.after(() => rmSync(work, { recursive: true, force: true }))
    const x = spawnSync('tar', ['-xzf', tarball, '-C', work, '--strip-components=1'], { encoding: 'utf8' })
    assert.equal(x.status, 0, x.stderr)
    const node = join(work, 'node/bin/node')
    const main = join(work, 'dist/agent/main.js')
    const emulated = (args: string[]): string[] => [node, ...args]

    await t.test('the bundled node and addon are aarch64 ELF files', () => {
      for (const f of [node, join(work, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node')]) {
        const h = spawnSync('readelf', ['-h', f], { encoding: 'utf8' }).stdout
        assert.match(h, /Machine:\s+AArch64/, `${f} is not aarch64`)
      }
      assert.match(
        readFileSync(join(work, 'bin/edge-agent'), 'utf8'),
        /exec "\$root\/node\/bin\/node" "\$root\/dist\/agent\/main\.js"/,
      )
    })

    await t.test('edge-agent --version under emulation', () => {
      const r = spawnSync(QEMU, emulated([main, '--version']), { env: agentEnv(), encoding: 'utf8', timeout: 60_000 })
      assert.equal(r.status, 0, r.stderr)
      assert.equal(r.stdout.trim(), PKG_VERSION)
    })

    const mqttPort = await freePort()
    const adminPort = await freePort()
    const closedPort = await freePort()
    const dataDir = join(work, 'data')
    const configFile = join(work, 'config.yaml')
    writeFileSync(
      configFile,
      stringify({
        site: { name: 'arm64-smoke', level: 2 },
        dataDir,
        log: { level: 'info', format: 'json' },
        admin: { host: '127.0.0.1', port: adminPort },
        broker: { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: mqttPort }] },
        upstreams: [
          {
            name: 'up',
            url: `mqtt://127.0.0.1:${closedPort}`,
            rules: [{ topic: 'devices/+/telemetry', direction: 'out', qos: 1 }],
          },
        ],
      }),
    )

    let output = ''
    const agent: ChildProcess = spawn(QEMU, emulated([main, 'run', '--config', configFile]), {
      env: agentEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const exited = once(agent, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
    t.after(async () => {
      if (agent.exitCode === null && agent.signalCode === null) {
        agent.kill('SIGKILL')
        await exited
      }
    })
    agent.stdout!.setEncoding('utf8').on('data', (c: string) => (output += c))
    agent.stderr!.setEncoding('utf8').on('data', (c: string) => (output += c))
    const payload = `arm64-smoke-${process.pid}-${Date.now()}`

    await t.test('run: GET /healthz answers 200', async () => {
      const t0 = Date.now()
      await waitFor(
        async () => {
          if (agent.exitCode !== null) throw new Error(`agent exited ${agent.exitCode}:\n${output}`)
          const res = await fetch(`http://127.0.0.1:${adminPort}/healthz`, { signal: AbortSignal.timeout(5000) })
          return res.status === 200
        },
        HEALTHZ_TIMEOUT_MS,
        `/healthz 200 from the emulated agent\n${output}`,
        250,
      )
      t.diagnostic(`healthy after ${Date.now() - t0} ms under emulation`)
    })

    await t.test('accepts a QoS 1 publish from the host (PUBACK)', async () => {
      const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, {
        clientId: 'arm64-smoke',
        reconnectPeriod: 0,
        connectTimeout: 30_000,
      })
      try {
        const packet = await withTimeout(
          client.publishAsync('devices/d1/telemetry', payload, { qos: 1 }),
          60_000,
          'PUBACK from the emulated agent',
        )
        assert.ok(packet, 'a QoS 1 publish resolves with its packet once PUBACK arrives')
      } finally {
        await client.endAsync()
      }
    })

    await t.test('stops cleanly on SIGTERM', async () => {
      agent.kill('SIGTERM')
      const [code, signal] = await withTimeout(exited, 60_000, 'the emulated agent to exit after SIGTERM')
      assert.equal(code, 0, `exit ${code ?? signal}\n${output}`)
    })

    // The buffer is wired into the agent when dist/agent/app.js imports the buffer component.
    const wired = /from ['"]\.\.\/buffer\/index\.js['"]/.test(readFileSync(join(work, 'dist/agent/app.js'), 'utf8'))
    await t.test(
      'the message is in <dataDir>/edge-agent.db (read by the host after the agent stopped)',
      {
        todo: wired
          ? false
          : 'the buffer is not wired into the agent (dist/agent/app.js does not import ../buffer/index.js)',
      },
      () => {
        const db = join(dataDir, 'edge-agent.db')
        assert.ok(existsSync(db), `${db} does not exist\n${output}`)
        const values = allValues(db)
        assert.ok(
          values.some((v) => v.includes(payload)),
          `payload ${payload} not found in ${db}`,
        )
      },
    )
    t.diagnostic(`arm64 smoke wall time ${((Date.now() - started) / 1000).toFixed(1)} s (incl. build check)`)
  },
)
