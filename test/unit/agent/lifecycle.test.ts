import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { startAll, stopAll, StopTimeoutError, type Component } from '../../../src/agent/lifecycle.js'

const log = pino({ level: 'silent' })

function component(
  name: string,
  events: string[],
  opts: { failStart?: boolean; hangStop?: boolean; failStop?: boolean } = {},
): Component {
  return {
    name,
    async start() {
      events.push(`start ${name}`)
      if (opts.failStart) throw new Error(`${name} cannot start`)
    },
    async stop() {
      events.push(`stop ${name}`)
      if (opts.failStop) throw new Error(`${name} cannot stop`)
      if (opts.hangStop) await new Promise(() => undefined)
    },
  }
}

test('starts in order and stops in reverse order', async () => {
  const events: string[] = []
  const cs = ['buffer', 'broker', 'bridge'].map((n) => component(n, events))
  await startAll(cs, new AbortController().signal, log, 1000)
  assert.deepEqual(await stopAll(cs, 1000, log), [])
  assert.deepEqual(events, [
    'start buffer',
    'start broker',
    'start bridge',
    'stop bridge',
    'stop broker',
    'stop buffer',
  ])
})

test('rolls back started components when a later start fails', async () => {
  const events: string[] = []
  const cs = [
    component('buffer', events),
    component('broker', events),
    component('bridge', events, { failStart: true }),
  ]
  await assert.rejects(startAll(cs, new AbortController().signal, log, 1000), /bridge cannot start/)
  assert.deepEqual(events, ['start buffer', 'start broker', 'start bridge', 'stop broker', 'stop buffer'])
})

test('does not start anything once aborted', async () => {
  const events: string[] = []
  const ac = new AbortController()
  ac.abort(new Error('SIGTERM'))
  await assert.rejects(startAll([component('buffer', events)], ac.signal, log, 1000), /SIGTERM/)
  assert.deepEqual(events, [])
})

test('a component that fails or hangs on stop does not block the others', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  const events: string[] = []
  const cs = [
    component('buffer', events),
    component('broker', events, { hangStop: true }),
    component('bridge', events, { failStop: true }),
  ]
  const stopping = stopAll(cs, 500, log)
  // Let the bridge's failing stop and the broker's hanging stop begin.
  await new Promise<void>((r) => queueMicrotask(r))
  for (let i = 0; i < 5 && !events.includes('stop broker'); i++) await Promise.resolve()
  t.mock.timers.tick(500)
  const failures = await stopping
  assert.deepEqual(events, ['stop bridge', 'stop broker', 'stop buffer'])
  assert.equal(failures.length, 2)
  assert.match(failures[0]?.message ?? '', /bridge cannot stop/)
  assert.ok(failures[1] instanceof StopTimeoutError)
  assert.equal(failures[1].code, 'EDGE_ERR_STOP_TIMEOUT')
})
