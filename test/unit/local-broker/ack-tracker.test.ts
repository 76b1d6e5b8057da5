// AckTracker: the outbound framing that records which packet ids a client may
// acknowledge, fed the way mqtt-packet's writeToStream writes (one field per write).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqttPacket from 'mqtt-packet'
import { PassThrough } from 'node:stream'
import { AckTracker, restoreAcks, trackAcks } from '../../../src/local-broker/ack-tracker.js'

const PUBACK = 4
const PUBREC = 5
const PUBREL = 6
const PUBCOMP = 7

/** A connection whose writes the tracker sees, as aedes writes them. */
function tracked(): { tracker: AckTracker; write(p: object): void } {
  const conn = new PassThrough()
  conn.resume()
  const tracker = new AckTracker()
  trackAcks(conn, tracker)
  tracker.sessionStarted(false)
  return { tracker, write: (p) => mqttPacket.writeToStream(p as mqttPacket.Packet, conn) }
}

test('records the ids of QoS 1/2 PUBLISH, PUBREL and PUBREC written field by field, strings included', () => {
  const { tracker, write } = tracked()
  write({ cmd: 'publish', topic: 'a/ü/b', payload: 'text payload', qos: 1, messageId: 7, retain: false, dup: false })
  write({
    cmd: 'publish',
    topic: 't',
    payload: Buffer.alloc(300_000),
    qos: 2,
    messageId: 300,
    retain: false,
    dup: false,
  })
  write({ cmd: 'publish', topic: 'q0', payload: Buffer.from([0, 9]), qos: 0, retain: false, dup: false })
  write({ cmd: 'pubrel', messageId: 301 })
  write({ cmd: 'pubrec', messageId: 12 })
  assert.equal(tracker.accepts(PUBACK, 7), true)
  assert.equal(tracker.accepts(PUBREC, 300), true)
  assert.equal(tracker.accepts(PUBCOMP, 301), true)
  assert.equal(tracker.accepts(PUBREL, 12), true)
  // never used, or used in the other direction only
  assert.equal(tracker.accepts(PUBACK, 8), false)
  assert.equal(tracker.accepts(PUBACK, 12), false)
  assert.equal(tracker.accepts(PUBREL, 7), false)
})

test('a duplicate acknowledgement of an id the broker used is accepted; a persistent session accepts any PUBREL', () => {
  const { tracker, write } = tracked()
  write({ cmd: 'publish', topic: 'x', payload: 'p', qos: 1, messageId: 1, retain: false, dup: false })
  assert.equal(tracker.accepts(PUBACK, 1), true)
  assert.equal(tracker.accepts(PUBACK, 1), true)
  const persistent = new AckTracker()
  persistent.sessionStarted(true)
  assert.equal(persistent.accepts(PUBACK, 5), true, 'accepted while the stored ids are read')
  persistent.used(9)
  persistent.restored()
  assert.equal(persistent.accepts(PUBACK, 9), true)
  assert.equal(persistent.accepts(PUBACK, 5), false)
  assert.equal(persistent.accepts(PUBREL, 5), true)
})

test('records the ids of MQTT 5 PUBLISH with properties, aliased empty topics, and PUBREC/PUBREL with reason codes', () => {
  const conn = new PassThrough()
  conn.resume()
  const tracker = new AckTracker()
  trackAcks(conn, tracker)
  tracker.sessionStarted(false)
  const write = (p: object): void => {
    mqttPacket.writeToStream(p as mqttPacket.Packet, conn, { protocolVersion: 5 })
  }
  write({
    cmd: 'publish',
    topic: 'a/ü',
    payload: 'text',
    qos: 1,
    messageId: 21,
    retain: false,
    dup: false,
    properties: {
      topicAlias: 2,
      responseTopic: 'r/1',
      correlationData: Buffer.from([0, 1]),
      userProperties: { k: ['v', 'w'] },
      subscriptionIdentifier: [3, 300],
      contentType: 'text/plain',
    },
  })
  // the broker may send an empty topic once the alias is set (topic length 0, then the id)
  write({
    cmd: 'publish',
    topic: '',
    payload: Buffer.alloc(70_000),
    qos: 2,
    messageId: 22,
    retain: false,
    dup: false,
    properties: { topicAlias: 2 },
  })
  write({ cmd: 'pubrel', messageId: 23, reasonCode: 0x92, properties: { reasonString: 'gone' } })
  write({ cmd: 'pubrec', messageId: 24, reasonCode: 0x10, properties: { userProperties: { a: 'b' } } })
  write({ cmd: 'puback', messageId: 25, reasonCode: 0x80 })
  assert.equal(tracker.accepts(PUBACK, 21), true)
  assert.equal(tracker.accepts(PUBREC, 22), true)
  assert.equal(tracker.accepts(PUBCOMP, 23), true)
  assert.equal(tracker.accepts(PUBREL, 24), true)
  // bytes of properties and payloads were not taken for ids
  for (const id of [2, 3, 300, 0x92, 0x10, 25]) assert.equal(tracker.accepts(PUBACK, id), false, `id ${id}`)
  assert.equal(tracker.accepts(PUBREL, 25), false)
})

test('restoreAcks treats an MQTT 5 Clean Start 0 as a possibly resumed session, whatever its expiry', () => {
  const resumed = new AckTracker()
  restoreAcks(undefined, { clean: true, _cleanStart: false }, resumed)
  assert.equal(resumed.accepts(PUBREL, 5), true, 'the client resends PUBREL after a reconnect [MQTT-4.4.0-1]')
  const fresh = new AckTracker()
  restoreAcks(undefined, { clean: true, _cleanStart: true }, fresh)
  assert.equal(fresh.accepts(PUBREL, 5), false)
  const v311 = new AckTracker()
  restoreAcks(undefined, { clean: true }, v311)
  assert.equal(v311.accepts(PUBREL, 5), false)
})
