// quiet-debug swaps the `debug` package for a no-op in the CommonJS module
// cache at import time, so each case needs a fresh process: a child node that
// imports quiet-debug first, then loads mqtt-packet, and reports on stdout.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { silenceDebug } from '../../../src/agent/quiet-debug.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const QUIET_DEBUG = pathToFileURL(fileURLToPath(new URL('../../../src/agent/quiet-debug.ts', import.meta.url))).href

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `body` as an ES module after importing quiet-debug, in a child with `env` as its whole DEBUG setting. */
function child(body: string, debugVar: string | undefined): Promise<Result> {
  const code = `
    await import(${JSON.stringify(QUIET_DEBUG)})
    const { createRequire } = await import('node:module')
    const path = await import('node:path')
    const require = createRequire(path.join(process.cwd(), 'child.js'))
    const fromMqttPacket = createRequire(require.resolve('mqtt-packet'))
    ${body}
  `
  const env: NodeJS.ProcessEnv = { ...process.env }
  delete env['DEBUG']
  delete env['NODE_OPTIONS']
  delete env['NODE_TEST_CONTEXT']
  if (debugVar !== undefined) env['DEBUG'] = debugVar
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', code],
      { cwd: ROOT, env, timeout: 30_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const exit = err === null ? 0 : typeof err.code === 'number' ? err.code : null
        resolve({ code: exit, stdout, stderr })
      },
    )
  })
}

const REPORT = `
  const mqttPacket = require('mqtt-packet')
  const debug = fromMqttPacket('debug')
  const ping = mqttPacket.generate({ cmd: 'pingreq' })
  const pub = mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('hi'), qos: 1, messageId: 3, retain: false, dup: false })
  console.log(JSON.stringify({
    silenced: debug.silenced === true,
    enabled: debug('x').enabled,
    ping: [...ping],
    pub: pub.toString('hex'),
  }))
`

const PUB_HEX = Buffer.from([0x32, 9, 0, 3, 0x61, 0x2f, 0x62, 0, 3, 0x68, 0x69]).toString('hex')

test('DEBUG unset: the debug that mqtt-packet resolves is the no-op, and mqtt-packet still works', async () => {
  const r = await child(REPORT, undefined)
  assert.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim()) as { silenced: boolean; enabled: boolean; ping: number[]; pub: string }
  assert.equal(out.silenced, true)
  assert.equal(out.enabled, false)
  assert.deepEqual(out.ping, [0xc0, 0x00])
  assert.equal(out.pub, PUB_HEX)
  assert.doesNotMatch(r.stderr, /mqtt-packet:/)
})

test('DEBUG empty: same as unset', async () => {
  const r = await child(REPORT, '')
  assert.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim()) as { silenced: boolean; enabled: boolean; ping: number[] }
  assert.equal(out.silenced, true)
  assert.equal(out.enabled, false)
  assert.deepEqual(out.ping, [0xc0, 0x00])
})

test('DEBUG unset: the no-op has the surface libraries call (namespace, extend, callable)', async () => {
  const r = await child(
    `
    const debug = fromMqttPacket('debug')
    const d = debug('mqtt-packet:parser')
    d('%o', { a: 1 })
    const sub = d.extend('sub')
    sub('x')
    console.log(JSON.stringify({ ns: d.namespace, sub: sub.namespace, subEnabled: sub.enabled, typeofD: typeof d }))
    `,
    undefined,
  )
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout.trim()), {
    ns: 'mqtt-packet:parser',
    sub: 'mqtt-packet:parser:sub',
    subEnabled: false,
    typeofD: 'function',
  })
  assert.equal(r.stderr, '')
})

test('DEBUG=mqtt-packet:*: the real debug loads and prints mqtt-packet:writeToStream on stderr', async () => {
  const r = await child(REPORT, 'mqtt-packet:*')
  assert.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim()) as { silenced: boolean; enabled: boolean; ping: number[]; pub: string }
  assert.equal(out.silenced, false)
  assert.deepEqual(out.ping, [0xc0, 0x00])
  assert.equal(out.pub, PUB_HEX)
  assert.match(r.stderr, /mqtt-packet:writeToStream/)
})

test('silenceDebug with DEBUG set returns false', () => {
  assert.equal(silenceDebug({ DEBUG: 'x' }), false)
  assert.equal(silenceDebug({ DEBUG: 'mqtt-packet:*' }), false)
})
