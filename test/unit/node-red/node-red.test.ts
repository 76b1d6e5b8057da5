// The Node-RED component's pure parts: the flow file check, the edge nodes'
// rate limit and size limit, the users/secret files.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { NodeRedError, NodeRedState, checkPassword, checkUsername, parseFlows } from '../../../src/node-red/index.js'
import { createEdgeApi, type EdgeMessage } from '../../../src/node-red/edge-api.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const silent = pino({ level: 'silent' })

function code(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return err instanceof NodeRedError ? err.code : 'not a NodeRedError'
  }
  return undefined
}

test('accepts a flow array and refuses what is not one, naming the problem', () => {
  assert.equal(parseFlows('[{"id":"a","type":"tab"},{"id":"b","type":"inject","z":"a"}]').length, 2)
  assert.equal(parseFlows('[]').length, 0)
  for (const [text, why] of [
    ['{"id":"a","type":"tab"}', /expected a JSON array.*got an object/],
    ['not json', /not JSON/],
    ['[1]', /\[0\]: expected a node object/],
    ['[{"type":"tab"}]', /"id" must be a non-empty string/],
    ['[{"id":"a"}]', /"type" must be a non-empty string/],
    ['[{"id":"a","type":"tab"},{"id":"a","type":"tab"}]', /id a appears twice/],
  ] as const) {
    assert.throws(
      () => parseFlows(text, 'f.json'),
      (err: unknown) =>
        err instanceof NodeRedError &&
        err.code === 'EDGE_ERR_NODERED_FLOWS_INVALID' &&
        why.test(err.message) &&
        err.message.startsWith('f.json'),
    )
  }
})

test('edge out publishes up to the rate per node, drops and counts the rest, and refills with time', async () => {
  let now = 1_000_000
  const sent: EdgeMessage[] = []
  const { api, counters } = createEdgeApi({
    link: { publish: async (m) => void sent.push(m), subscribe: async () => async () => undefined },
    maxRatePerSec: 5,
    maxPayloadBytes: 10,
    logger: silent,
    now: () => now,
  })
  const msg = { topic: 'a', payload: Buffer.from('x'), qos: 1 as const, retain: false }
  const outcomes = []
  for (let i = 0; i < 8; i++) outcomes.push(await api.publish('n1', msg))
  assert.deepEqual(outcomes, [
    'published',
    'published',
    'published',
    'published',
    'published',
    'throttled',
    'throttled',
    'throttled',
  ])
  assert.equal(await api.publish('n2', msg), 'published', 'another node has its own budget')
  now += 400 // 2 tokens
  assert.equal(await api.publish('n1', msg), 'published')
  assert.equal(await api.publish('n1', msg), 'published')
  assert.equal(await api.publish('n1', msg), 'throttled')
  assert.equal(counters.published, 8)
  assert.equal(counters.throttled, 4)
  assert.equal(sent.length, 8)
  await assert.rejects(
    api.publish('n3', { ...msg, payload: Buffer.alloc(11) }),
    (e: unknown) => e instanceof NodeRedError && e.code === 'EDGE_ERR_NODERED_PAYLOAD_TOO_LARGE',
  )
  assert.equal(counters.failed, 1)
})

test('a refused publish (ACL, buffer full) reaches the node as an error and is counted', async () => {
  const { api, counters } = createEdgeApi({
    link: {
      publish: async () => Promise.reject(new NodeRedError('EDGE_ERR_NODERED_PUBLISH_DENIED', 'no')),
      subscribe: async () => async () => undefined,
    },
    maxRatePerSec: 5,
    maxPayloadBytes: 10,
    logger: silent,
  })
  await assert.rejects(api.publish('n', { topic: 'a', payload: Buffer.from('x'), qos: 1, retain: false }), /no/)
  assert.equal(counters.failed, 1)
  assert.equal(counters.published, 0)
})

test('users are stored as given (hash), 0600, replaced by name; the credential secret is made once', async (t) => {
  const dir = tmpDir(t)
  const state = new NodeRedState(dir)
  assert.deepEqual(await state.users(), [])
  assert.equal(await state.setUser({ username: 'ops', password: '$2a$10$x', permissions: '*' }), 'added')
  assert.equal(await state.setUser({ username: 'ops', password: '$2a$10$y', permissions: 'read' }), 'replaced')
  assert.deepEqual(await state.users(), [{ username: 'ops', password: '$2a$10$y', permissions: 'read' }])
  assert.equal(statSync(state.usersFile).mode & 0o777, 0o600)
  assert.equal(statSync(state.dir).mode & 0o777, 0o700)
  const s1 = await state.credentialSecret()
  assert.equal(await state.credentialSecret(), s1)
  assert.equal(readFileSync(join(dir, 'node-red', '.credential-secret'), 'utf8').trim(), s1)
  assert.equal(statSync(state.secretFile).mode & 0o777, 0o600)
  assert.equal(await state.removeUser('ops'), true)
  assert.equal(await state.removeUser('ops'), false)
})

test('user names and passwords are checked before anything is written', () => {
  assert.equal(
    code(() => checkUsername('ops.admin@site-1')),
    undefined,
  )
  for (const bad of ['', '-x', 'a b', 'a/b', 'x'.repeat(65)])
    assert.equal(
      code(() => checkUsername(bad)),
      'EDGE_ERR_NODERED_USER_INVALID',
      bad,
    )
  assert.equal(
    code(() => checkPassword('12345678')),
    undefined,
  )
  assert.equal(
    code(() => checkPassword('short')),
    'EDGE_ERR_NODERED_USER_INVALID',
  )
  assert.equal(
    code(() => checkPassword('x'.repeat(73))),
    'EDGE_ERR_NODERED_USER_INVALID',
    'bcrypt would cut it silently',
  )
})
