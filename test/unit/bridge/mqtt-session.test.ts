// MqttSession against a scripted broker over an in-memory stream pair: the
// test plays the upstream packet by packet, so resend order, DUP flags and
// ack ordering are checked exactly.
//
// Glossary
//   server  the test's side of the duplexPair; reads packets, writes answers
//   session the MqttSession under test (the bridge's client side)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { duplexPair, type Duplex } from 'node:stream'
import mqttPacket, { type Packet } from 'mqtt-packet'
import pino from 'pino'
import { MqttSession, type InboundMessage, type MqttSessionOptions } from '../../../src/bridge/mqtt-session.js'
import { BridgeError } from '../../../src/bridge/errors.js'

const silent = pino({ level: 'silent' })

interface Server {
  readonly stream: Duplex
  next(cmd?: Packet['cmd'], ms?: number): Promise<Packet>
  send(p: Packet): void
  end(): void
}

function server(stream: Duplex, protocolVersion: 4 | 5 = 4): Server {
  const parser = mqttPacket.parser({ protocolVersion })
  const queue: Packet[] = []
  const waiters: ((p: Packet) => void)[] = []
  parser.on('packet', (p: Packet) => {
    const w = waiters.shift()
    if (w) w(p)
    else queue.push(p)
  })
  stream.on('data', (b: Buffer) => parser.parse(b))
  stream.on('error', () => undefined)
  return {
    stream,
    async next(cmd, ms = 2_000) {
      const p =
        queue.shift() ??
        (await new Promise<Packet>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`no packet from the session within ${ms} ms (wanted ${cmd ?? 'any'})`)),
            ms,
          )
          waiters.push((x) => {
            clearTimeout(timer)
            resolve(x)
          })
        }))
      if (cmd !== undefined) assert.equal(p.cmd, cmd)
      return p
    },
    send(p) {
      mqttPacket.writeToStream(p, stream, { protocolVersion })
    },
    end() {
      stream.end()
    },
  }
}

function makeSession(over: Partial<MqttSessionOptions> = {}, inbound: InboundMessage[] = []): MqttSession {
  return new MqttSession({
    protocolVersion: 4,
    clientId: 'bridge-1',
    keepaliveSec: 0,
    cleanStart: false,
    sessionExpirySec: 60,
    bridgeFlag: false,
    connectTimeoutMs: 2_000,
    maxInflight: 10,
    onMessage: async (m) => {
      inbound.push(m)
    },
    logger: silent,
    ...over,
  })
}

async function open(
  session: MqttSession,
  sessionPresent: boolean,
  version: 4 | 5 = 4,
  props?: Record<string, unknown>,
): Promise<Server> {
  const [client, srv] = duplexPair()
  const s = server(srv, version)
  const connected = session.connect(client)
  const connect = await s.next('connect')
  assert.equal(connect.cmd, 'connect')
  s.send({ cmd: 'connack', sessionPresent, returnCode: 0, reasonCode: 0, ...(props ? { properties: props } : {}) })
  await connected
  return s
}

function pub(topic: string, qos: 0 | 1 | 2) {
  return { topic, payload: Buffer.from(topic), qos, retain: false }
}

test('sends CONNECT with the 3.1.1 bridge bit when asked', async () => {
  const session = makeSession({ bridgeFlag: true })
  const [client, srv] = duplexPair()
  const raw: Buffer[] = []
  srv.on('data', (b: Buffer) => raw.push(b))
  void session.connect(client).catch(() => undefined)
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  const bytes = Buffer.concat(raw)
  // fixed header, remaining length, "MQTT" (2+4 bytes), then the level byte
  assert.equal(bytes[8], 0x84)
  session.destroy()
})

test('a QoS 1 message completes on PUBACK and a QoS 2 message on PUBCOMP', async () => {
  const session = makeSession()
  const s = await open(session, false)
  const done: string[] = []
  session.publish(pub('a', 1), (err) => done.push(`a:${err?.code ?? 'ok'}`))
  session.publish(pub('b', 2), (err) => done.push(`b:${err?.code ?? 'ok'}`))
  const a = await s.next('publish')
  const b = await s.next('publish')
  assert.equal(session.inflight, 2)
  s.send({ cmd: 'puback', messageId: a.messageId ?? 0 })
  s.send({ cmd: 'pubrec', messageId: b.messageId ?? 0 })
  const rel = await s.next('pubrel')
  assert.equal(rel.messageId, b.messageId)
  assert.deepEqual(done, ['a:ok'])
  s.send({ cmd: 'pubcomp', messageId: b.messageId ?? 0 })
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(done, ['a:ok', 'b:ok'])
  assert.equal(session.inflight, 0)
  session.destroy()
})

test('after a reconnect with the session resumed, in-flight messages go first, in order, same ids, DUP set', async () => {
  const session = makeSession()
  const s1 = await open(session, false)
  const done: number[] = []
  for (let i = 0; i < 3; i++) session.publish(pub(`t/${i}`, 1), () => done.push(i))
  session.publish(pub('q2', 2), () => done.push(99))
  const sent: Packet[] = []
  for (let i = 0; i < 4; i++) sent.push(await s1.next('publish'))
  s1.send({ cmd: 'pubrec', messageId: sent[3]?.messageId ?? 0 })
  await s1.next('pubrel')
  const closed = new Promise<Error | undefined>((r) => session.once('close', r))
  s1.end()
  assert.ok((await closed) instanceof BridgeError)
  assert.equal(session.inflight, 4, 'nothing given up on a lost link')
  assert.equal(session.quota, 0)

  const s2 = await open(session, true)
  const resent: Packet[] = []
  for (let i = 0; i < 4; i++) resent.push(await s2.next())
  assert.deepEqual(
    resent.map((p) => [p.cmd, p.messageId, p.cmd === 'publish' ? p.dup : undefined]),
    [
      ['publish', sent[0]?.messageId, true],
      ['publish', sent[1]?.messageId, true],
      ['publish', sent[2]?.messageId, true],
      ['pubrel', sent[3]?.messageId, undefined],
    ],
  )
  for (const p of resent.slice(0, 3)) s2.send({ cmd: 'puback', messageId: p.messageId ?? 0 })
  s2.send({ cmd: 'pubcomp', messageId: sent[3]?.messageId ?? 0 })
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(done, [0, 1, 2, 99])
  session.destroy()
})

test('when the upstream lost the session, in-flight messages are sent again as new messages', async () => {
  const session = makeSession()
  const s1 = await open(session, false)
  session.publish(pub('x', 2), () => undefined)
  const first = await s1.next('publish')
  s1.send({ cmd: 'pubrec', messageId: first.messageId ?? 0 })
  await s1.next('pubrel')
  s1.end()
  await new Promise((r) => session.once('close', r))
  const s2 = await open(session, false)
  const again = await s2.next('publish')
  assert.equal(again.cmd, 'publish')
  if (again.cmd === 'publish') {
    assert.equal(again.dup, false)
    assert.equal(again.topic, 'x')
  }
  session.destroy()
})

test('inbound QoS 1 messages are acknowledged only after local delivery, in arrival order', async () => {
  const order: string[] = []
  let release: () => void = () => undefined
  const gate = new Promise<void>((r) => (release = r))
  const session = makeSession({
    onMessage: async (m) => {
      if (m.topic === 'slow') await gate
      order.push(m.topic)
    },
  })
  const s = await open(session, false)
  s.send({ cmd: 'publish', topic: 'slow', payload: Buffer.from('1'), qos: 1, messageId: 1, retain: false, dup: false })
  s.send({ cmd: 'publish', topic: 'fast', payload: Buffer.from('2'), qos: 1, messageId: 2, retain: false, dup: false })
  await new Promise((r) => setTimeout(r, 20))
  assert.deepEqual(order, [], 'nothing delivered past the slow one')
  release()
  const a1 = await s.next('puback')
  const a2 = await s.next('puback')
  assert.deepEqual([a1.messageId, a2.messageId], [1, 2])
  assert.deepEqual(order, ['slow', 'fast'])
  session.destroy()
})

test('an inbound QoS 2 message is delivered once even if the upstream sends it again before PUBREL', async () => {
  const inbound: InboundMessage[] = []
  const session = makeSession({}, inbound)
  const s = await open(session, false)
  const p = {
    cmd: 'publish',
    topic: 'c',
    payload: Buffer.from('x'),
    qos: 2,
    messageId: 7,
    retain: false,
    dup: false,
  } as const
  s.send(p)
  await s.next('pubrec')
  s.send({ ...p, dup: true })
  await s.next('pubrec')
  s.send({ cmd: 'pubrel', messageId: 7 })
  await s.next('pubcomp')
  assert.equal(inbound.length, 1)
  session.destroy()
})

test('a refused CONNECT rejects with the return code as data', async () => {
  const session = makeSession()
  const [client, srv] = duplexPair()
  const s = server(srv)
  const connected = session.connect(client)
  await s.next('connect')
  s.send({ cmd: 'connack', sessionPresent: false, returnCode: 5 })
  await assert.rejects(connected, (err: unknown) => {
    assert.ok(err instanceof BridgeError)
    assert.equal(err.code, 'EDGE_ERR_BRIDGE_UPSTREAM_REJECTED')
    assert.equal(err.reasonCode, 5)
    return true
  })
})

test('MQTT 5: the window is the upstream Receive Maximum, and an error reason code fails the message', async () => {
  const session = makeSession({ protocolVersion: 5, maxInflight: 100 })
  const s = await open(session, false, 5, { receiveMaximum: 2 })
  assert.equal(session.info?.window, 2)
  assert.equal(session.quota, 2)
  let code = -1
  session.publish(pub('deny', 1), (_err, rc) => (code = rc))
  const p = await s.next('publish')
  s.send({ cmd: 'puback', messageId: p.messageId ?? 0, reasonCode: 0x87 })
  await new Promise((r) => setImmediate(r))
  assert.equal(code, 0x87)
  session.destroy()
})

test('a silent upstream is declared dead after 1.5 × keepalive', async (t) => {
  const session = makeSession({ keepaliveSec: 1 })
  const s = await open(session, false)
  // The session's own timers are unref'd (a socket holds the process in real use); hold it here.
  const hold = setTimeout(() => undefined, 5_000)
  t.after(() => clearTimeout(hold))
  const started = Date.now()
  const ping = await s.next('pingreq', 2_000)
  assert.equal(ping.cmd, 'pingreq')
  const err = await new Promise<Error | undefined>((r) => session.once('close', r))
  const took = Date.now() - started
  assert.ok(err instanceof BridgeError && err.code === 'EDGE_ERR_BRIDGE_CONNECTION_LOST')
  assert.ok(took >= 1_400 && took < 3_000, `closed after ${took} ms`)
})

test('abandonInflight fails every pending message with EDGE_ERR_BRIDGE_STOPPED', async () => {
  const session = makeSession()
  const s = await open(session, false)
  const codes: string[] = []
  session.publish(pub('a', 1), (err) => codes.push(err?.code ?? 'ok'))
  await s.next('publish')
  await session.disconnect({ timeoutMs: 200 })
  assert.equal(session.abandonInflight(), 1)
  assert.deepEqual(codes, ['EDGE_ERR_BRIDGE_STOPPED'])
})

test('acknowledgements cut across reads and packed into one read all complete their messages, in any mix with other packets', async () => {
  const inbound: InboundMessage[] = []
  const session = makeSession({ protocolVersion: 5 }, inbound)
  const s = await open(session, false, 5)
  const done: string[] = []
  for (const t of ['a', 'b', 'c', 'd'])
    session.publish(pub(t, 1), (err, code) => done.push(`${t}:${err?.code ?? 'ok'}:${code}`))
  const ids: number[] = []
  for (let i = 0; i < 4; i++) ids.push((await s.next('publish')).messageId ?? 0)
  const [a, b, c, d] = ids as [number, number, number, number]
  // Four packets in one byte string: a 4-byte PUBACK (fast path), an inbound
  // PUBLISH, a PUBACK with an error reason code (parser path), another 4-byte PUBACK.
  const bytes = Buffer.concat([
    mqttPacket.generate({ cmd: 'puback', messageId: a }, { protocolVersion: 5 }),
    mqttPacket.generate(
      { cmd: 'publish', topic: 'cmd/x', payload: Buffer.from('go'), qos: 0, retain: false, dup: false },
      { protocolVersion: 5 },
    ),
    mqttPacket.generate({ cmd: 'puback', messageId: b, reasonCode: 0x80 }, { protocolVersion: 5 }),
    mqttPacket.generate({ cmd: 'puback', messageId: c }, { protocolVersion: 5 }),
  ])
  // Cut inside the first PUBACK, inside the PUBLISH and inside the last PUBACK.
  for (const [from, to] of [
    [0, 3],
    [3, 9],
    [9, bytes.length - 1],
    [bytes.length - 1, bytes.length],
  ] as const) {
    s.stream.write(bytes.subarray(from, to))
    await new Promise((r) => setImmediate(r))
  }
  // Then d's PUBACK alone, in one read.
  s.stream.write(Buffer.from([0x40, 0x02, d >> 8, d & 0xff]))
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(done, ['a:ok:0', 'b:EDGE_ERR_BRIDGE_UPSTREAM_REJECTED:128', 'c:ok:0', 'd:ok:0'])
  assert.deepEqual(
    inbound.map((m) => `${m.topic}=${m.payload.toString()}`),
    ['cmd/x=go'],
  )
  assert.equal(session.inflight, 0)
  session.destroy()
})

test('a Remaining Length of five bytes from the upstream ends the connection as a protocol error', async () => {
  const session = makeSession()
  const s = await open(session, false)
  const closed = new Promise<Error | undefined>((resolve) => session.once('close', resolve))
  s.stream.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))
  const err = await closed
  assert.ok(err instanceof BridgeError)
  assert.equal(err.code, 'EDGE_ERR_BRIDGE_PROTOCOL')
  assert.match(err.message, /Remaining Length/)
  assert.equal(session.connected, false)
})

test('MQTT 5: a message larger than the upstream Maximum Packet Size is refused with 0x95 and not sent; one of exactly that size goes', async () => {
  const session = makeSession({ protocolVersion: 5 })
  const s = await open(session, false, 5, { maximumPacketSize: 64 })
  const results: string[] = []
  // 64 bytes on the wire: header 2 + topic 2+1 + id 2 + property length 1 + payload 56.
  const fits = { topic: 'a', payload: Buffer.alloc(56), qos: 1 as const, retain: false }
  const tooBig = { ...fits, payload: Buffer.alloc(57) }
  session.publish(tooBig, (err, code) => results.push(`big:${err?.code ?? 'ok'}:${code}`))
  session.publish(fits, (err, code) => results.push(`fits:${err?.code ?? 'ok'}:${code}`))
  assert.deepEqual(results, ['big:EDGE_ERR_BRIDGE_UPSTREAM_REJECTED:149'])
  const p = await s.next('publish')
  assert.equal((p as { payload: Buffer }).payload.length, 56)
  assert.equal(session.inflight, 1)
  s.send({ cmd: 'puback', messageId: p.messageId ?? 0 })
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(results, ['big:EDGE_ERR_BRIDGE_UPSTREAM_REJECTED:149', 'fits:ok:0'])
  session.destroy()
})
