// guardConnection on MQTT 5 connections: a violation is answered with the
// reason code (CONNACK for the CONNECT, DISCONNECT once CONNACK 0 went out)
// before the connection closes. Real TCP on a loopback port, in-memory duplex
// pairs, and a real mqtt.js MQTT 5 client.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import net from 'node:net'
import { duplexPair, type Duplex } from 'node:stream'
import { describe, test } from 'node:test'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { PacketGuard, type GuardViolation } from '../../../src/local-broker/packet-guard.js'
import { connectionGuard, guardConnection } from '../../../src/local-broker/guard-connection.js'
import { bytes, connect5, CONNECT5, P, props, publish5, V5_LIMITS } from './mqtt5-bytes.js'

/** Reads like aedes does, parsing what passes the guard as MQTT 5. */
function brokerLike(conn: Duplex, onPacket: (p: mqttPacket.Packet) => void = () => {}): Buffer[] {
  const got: Buffer[] = []
  const parser = mqttPacket.parser({ protocolVersion: 5 })
  parser.on('packet', onPacket)
  conn.on('readable', () => {
    const b: unknown = conn.read()
    if (Buffer.isBuffer(b)) {
      got.push(b)
      parser.parse(b)
    }
  })
  return got
}

/** Everything the peer receives until its socket closes. */
async function receiveUntilClose(socket: net.Socket): Promise<Buffer> {
  const got: Buffer[] = []
  socket.on('data', (d: Buffer) => got.push(d))
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('close', resolve))
  return Buffer.concat(got)
}

interface Server {
  port: number
  violations: GuardViolation[]
  close(): Promise<void>
}

/**
 * A TCP server with the guard in front of a broker stand-in that answers a
 * CONNECT with an MQTT 5 CONNACK 0 (Topic Alias Maximum 10) and then calls
 * authenticated(), as the broker does from aedes's connackSent.
 */
async function server(): Promise<Server> {
  const violations: GuardViolation[] = []
  const srv = net.createServer((conn) => {
    conn.on('error', () => {})
    guardConnection(conn, new PacketGuard(V5_LIMITS), (v) => violations.push(v), { closeTimeoutMs: 2000 })
    brokerLike(conn, (p) => {
      if (p.cmd !== 'connect') return
      const connack = { cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: { topicAliasMaximum: 10 } }
      conn.write(mqttPacket.generate(connack as mqttPacket.IConnackPacket, { protocolVersion: 5 }))
      connectionGuard(conn)?.authenticated()
    })
  })
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  return {
    port: (srv.address() as net.AddressInfo).port,
    violations,
    close: () => new Promise((r) => srv.close(() => r())),
  }
}

describe('guardConnection: MQTT 5', () => {
  test('answers a CONNECT with a malformed property CONNACK 0x81 over TCP, then closes', async () => {
    const srv = await server()
    try {
      const client = net.connect(srv.port, '127.0.0.1')
      const received = receiveUntilClose(client)
      client.write(connect5({ props: props([0x7f, 0]) }))
      assert.deepEqual(await received, Buffer.from([0x20, 0x03, 0x00, 0x81, 0x00]))
      assert.equal(srv.violations[0]?.reasonCode, 0x81)
    } finally {
      await srv.close()
    }
  })

  test('answers an Authentication Method CONNACK 0x8C [MQTT-4.12.0-1]', async () => {
    const srv = await server()
    try {
      const client = net.connect(srv.port, '127.0.0.1')
      const received = receiveUntilClose(client)
      client.write(connect5({ props: props(P.authMethod('SCRAM-SHA-256')) }))
      assert.deepEqual(await received, Buffer.from([0x20, 0x03, 0x00, 0x8c, 0x00]))
      assert.equal(srv.violations[0]?.reason, 'bad-authentication-method')
    } finally {
      await srv.close()
    }
  })

  test('sends DISCONNECT 0x94 after CONNACK 0 to a client that uses Topic Alias 0 [MQTT-3.3.2-8]', async () => {
    const [broker, client] = duplexPair()
    const violations: GuardViolation[] = []
    guardConnection(broker, new PacketGuard(V5_LIMITS), (v) => violations.push(v))
    const got = brokerLike(broker)
    const answer: Buffer[] = []
    client.on('data', (d: Buffer) => answer.push(d))
    client.write(CONNECT5)
    await once(broker, 'readable')
    await new Promise((r) => setImmediate(r))
    connectionGuard(broker)?.authenticated()
    const good = publish5({ qos: 1, id: 1, props: props(P.topicAlias(3)) })
    client.write(bytes(good, publish5({ props: props(P.topicAlias(0)) })))
    await once(client, 'end')
    assert.deepEqual(Buffer.concat(answer), Buffer.from([0xe0, 0x02, 0x94, 0x00]))
    assert.deepEqual(Buffer.concat(got), bytes(CONNECT5, good))
    assert.equal(violations[0]?.reason, 'topic-alias-invalid')
    client.destroy()
  })

  test('closes without DISCONNECT when the violation comes before CONNACK 0 [MQTT-3.14.0-1]', async () => {
    const [broker, client] = duplexPair()
    guardConnection(broker, new PacketGuard(V5_LIMITS), () => {})
    brokerLike(broker)
    const answer: Buffer[] = []
    client.on('data', (d: Buffer) => answer.push(d))
    client.write(bytes(CONNECT5, publish5({ topic: 'a/#' })))
    await once(broker, 'close')
    assert.deepEqual(answer, [])
    assert.equal(connectionGuard(broker)?.violation?.reasonCode, 0x82)
  })

  test('a real mqtt.js MQTT 5 client is told DISCONNECT 0x82 when it publishes to a wildcard topic [MQTT-3.3.2-2]', async () => {
    const srv = await server()
    const client = mqtt.connect({
      host: '127.0.0.1',
      port: srv.port,
      protocolVersion: 5,
      clientId: 'mqttjs-5',
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    })
    try {
      client.on('error', () => {})
      await new Promise((resolve) => client.once('connect', resolve))
      const disconnected = new Promise<mqttPacket.IDisconnectPacket>((resolve) => client.once('disconnect', resolve))
      client.publish('site/+/temp', 'x', { qos: 0 })
      const packet = await disconnected
      assert.equal(packet.reasonCode, 0x82)
      assert.equal(srv.violations[0]?.rule, '[MQTT-3.3.2-2]')
      assert.equal(srv.violations[0]?.clientId, 'mqttjs-5')
    } finally {
      client.end(true)
      await srv.close()
    }
  })
})
