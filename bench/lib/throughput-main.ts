// Throughput check program: one mqtt.js publisher, one subscriber, QoS 1 through the broker.
//
// Used by the memory-levers scenario to make sure a memory lever does not cost too much
// speed. Publishes EDGE_BENCH_MESSAGES messages of EDGE_BENCH_PAYLOAD bytes with at most
// EDGE_BENCH_WINDOW unacknowledged, and reports (one JSON line on stdout) how long it took
// until the subscriber had all of them. Exits 1 if not done within EDGE_BENCH_TIMEOUT_MS.
import mqtt from 'mqtt'

const url = `mqtt://127.0.0.1:${process.env.EDGE_BENCH_TARGET_PORT ?? '1883'}`
const total = Number(process.env.EDGE_BENCH_MESSAGES ?? '20000')
const window = Number(process.env.EDGE_BENCH_WINDOW ?? '100')
const payload = Buffer.alloc(Number(process.env.EDGE_BENCH_PAYLOAD ?? '64'), 0x61)
const timeoutMs = Number(process.env.EDGE_BENCH_TIMEOUT_MS ?? '120000')
const topic = 'bench/throughput'

const deadline = setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ error: `not done within ${timeoutMs} ms`, received })}\n`)
  process.exit(1)
}, timeoutMs)

let received = 0
const sub = await mqtt.connectAsync(url, { clientId: `tp-sub-${process.pid}`, clean: true, reconnectPeriod: 0 })
await sub.subscribeAsync(topic, { qos: 1 })
const pub = await mqtt.connectAsync(url, { clientId: `tp-pub-${process.pid}`, clean: true, reconnectPeriod: 0 })

const t0 = performance.now()
const allReceived = new Promise<void>((resolve) => {
  sub.on('message', () => {
    if (++received === total) resolve()
  })
})
let sent = 0
let acked = 0
await new Promise<void>((resolve, reject) => {
  const pump = (): void => {
    while (sent < total && sent - acked < window) {
      sent++
      pub.publish(topic, payload, { qos: 1 }, (err) => {
        if (err) return reject(err)
        acked++
        if (acked === total) resolve()
        else pump()
      })
    }
  }
  pump()
})
await allReceived
const ms = performance.now() - t0
clearTimeout(deadline)
process.stdout.write(`${JSON.stringify({ messages: total, ms, perSec: (total / ms) * 1000 })}\n`)
await Promise.all([pub.endAsync(), sub.endAsync()])
