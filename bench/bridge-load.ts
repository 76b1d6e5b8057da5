// Load program for bench/bridge.ts, run in its own process (spawnNodeProgram:
// self-contained, type imports only). Talks to the harness over IPC.
//
// EDGE_BENCH_ROLE=pub: EDGE_BENCH_PUBLISHERS mqtt.js clients publish QoS 1 to
//   EDGE_BENCH_URL on topic bench/<publisher>/<seq % topics>, each with at most
//   EDGE_BENCH_WINDOW unacknowledged, either EDGE_BENCH_COUNT messages in
//   total as fast as possible, or at EDGE_BENCH_RATE msg/s for
//   EDGE_BENCH_DURATION_MS. Payload: publisher (u16), seq (u32), sent-at (f64
//   epoch ms), then padding to EDGE_BENCH_PAYLOAD bytes.
// EDGE_BENCH_ROLE=sub: one client subscribes EDGE_BENCH_FILTER at QoS 1 and
//   counts: unique, duplicates, per-publisher order violations, latency.
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'

type Cmd = { type: 'go' } | { type: 'report' } | { type: 'stop' } | { type: 'reset' }

const env = process.env
const role = env['EDGE_BENCH_ROLE'] ?? 'sub'
const url = env['EDGE_BENCH_URL'] ?? 'mqtt://127.0.0.1:1883'
const send = (m: unknown): void => {
  process.send?.(m)
}
const now = (): number => performance.timeOrigin + performance.now()

process.on('disconnect', () => process.exit(0))

if (role === 'sub') {
  const filter = env['EDGE_BENCH_FILTER'] ?? '#'
  const version = Number(env['EDGE_BENCH_PROTOCOL'] ?? '4') as 4 | 5
  const c: MqttClient = await mqtt.connectAsync(url, {
    clientId: `bench-sub-${process.pid}`,
    clean: true,
    reconnectPeriod: 0,
    protocolVersion: version,
  })
  c.on('error', () => undefined)
  // seen[publisher] = bitmap of seqs; last[publisher] = highest seq seen so far
  let seen = new Map<number, Uint8Array>()
  let last = new Map<number, number>()
  let unique = 0
  let dups = 0
  let reordered = 0
  let total = 0
  const liveBase = Number(env['EDGE_BENCH_LIVE_BASE'] ?? '1000000')
  let lat: number[] = []
  let liveLat: number[] = []
  let firstAt = 0
  let lastAt = 0
  c.on('message', (_topic, payload) => {
    total++
    const t = now()
    if (firstAt === 0) firstAt = t
    lastAt = t
    if (payload.length < 14) return
    const p = payload.readUInt16BE(0)
    const seq = payload.readUInt32BE(2)
    const sentAt = payload.readDoubleBE(6)
    let bits = seen.get(p)
    if (bits === undefined || seq >> 3 >= bits.length) {
      const grown = new Uint8Array(Math.max(1 << 16, ((seq >> 3) + 1) * 2))
      if (bits !== undefined) grown.set(bits)
      bits = grown
      seen.set(p, bits)
    }
    const mask = 1 << (seq & 7)
    if ((bits[seq >> 3] as number) & mask) {
      dups++
      return
    }
    bits[seq >> 3] = (bits[seq >> 3] as number) | mask
    unique++
    const prev = last.get(p) ?? -1
    if (seq < prev) reordered++
    else last.set(p, seq)
    if (p >= liveBase) liveLat.push(t - sentAt)
    else lat.push(t - sentAt)
  })
  await c.subscribeAsync(filter, { qos: 1 })
  send({ type: 'ready' })
  process.on('message', (m: Cmd) => {
    if (m.type === 'report') {
      const pct = (xs: number[]) => {
        const sorted = Float64Array.from(xs).sort()
        return (q: number): number =>
          sorted.length === 0 ? NaN : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number)
      }
      const all = pct(lat)
      const live = pct(liveLat)
      send({
        type: 'report',
        total,
        unique,
        dups,
        reordered,
        firstAt,
        lastAt,
        p50: all(0.5),
        p99: all(0.99),
        max: all(1),
        liveP50: live(0.5),
        liveP99: live(0.99),
        liveCount: liveLat.length,
      })
    } else if (m.type === 'reset') {
      seen = new Map()
      last = new Map()
      unique = dups = reordered = total = 0
      lat = []
      liveLat = []
      firstAt = lastAt = 0
      send({ type: 'reset' })
    } else if (m.type === 'stop') {
      void c.endAsync(true).then(() => process.exit(0))
    }
  })
} else {
  const publishers = Number(env['EDGE_BENCH_PUBLISHERS'] ?? '10')
  const count = Number(env['EDGE_BENCH_COUNT'] ?? '0')
  const rate = Number(env['EDGE_BENCH_RATE'] ?? '0')
  const durationMs = Number(env['EDGE_BENCH_DURATION_MS'] ?? '0')
  const window = Number(env['EDGE_BENCH_WINDOW'] ?? '100')
  const size = Math.max(14, Number(env['EDGE_BENCH_PAYLOAD'] ?? '64'))
  const topics = Number(env['EDGE_BENCH_TOPICS'] ?? '10')
  const base = Number(env['EDGE_BENCH_PUBLISHER_BASE'] ?? '0')
  const prefix = env['EDGE_BENCH_TOPIC_PREFIX'] ?? 'bench'
  const clients: MqttClient[] = []
  for (let i = 0; i < publishers; i++) {
    const c = await mqtt.connectAsync(url, {
      clientId: `bench-pub-${base + i}-${process.pid}`,
      clean: true,
      reconnectPeriod: 0,
      protocolVersion: Number(env['EDGE_BENCH_PUB_PROTOCOL'] ?? '4') as 4 | 5,
    })
    c.on('error', () => undefined)
    clients.push(c)
  }
  send({ type: 'ready' })
  let sent = 0
  let acked = 0
  let failed = 0
  /** publish → PUBACK, ms: what a device waits for custody. */
  const ackLat: number[] = []
  const pct = (q: number): number => {
    const sorted = ackLat.slice().sort((a, b) => a - b)
    return sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number)
  }
  process.on('message', (m: Cmd) => {
    if (m.type === 'report') send({ type: 'report', sent, acked, failed })
    if (m.type === 'stop') void Promise.all(clients.map((c) => c.endAsync(true))).then(() => process.exit(0))
    if (m.type !== 'go') return
    const t0 = now()
    const perPub = count > 0 ? Math.ceil(count / publishers) : Infinity
    const deadline = durationMs > 0 ? t0 + durationMs : Infinity
    let finished = 0
    clients.forEach((c, i) => {
      const id = base + i
      let seq = 0
      let inflight = 0
      let done = false
      let paced = false
      const payload = (): Buffer => {
        const b = Buffer.alloc(size, 0x61)
        b.writeUInt16BE(id, 0)
        b.writeUInt32BE(seq, 2)
        b.writeDoubleBE(now(), 6)
        return b
      }
      const finish = (): void => {
        if (done) return
        done = true
        if (++finished === clients.length) {
          send({ type: 'done', sent, acked, failed, ms: now() - t0, ackP50: pct(0.5), ackP99: pct(0.99) })
        }
      }
      const pump = (): void => {
        while (inflight < window && seq < perPub) {
          const t = now()
          if (t >= deadline) break
          // Paced: publisher i owns 1/publishers of the rate.
          if (rate > 0 && seq >= ((t - t0) / 1000) * (rate / publishers) + 1) {
            if (!paced) {
              paced = true
              setTimeout(() => {
                paced = false
                pump()
              }, 2)
            }
            return
          }
          inflight++
          sent++
          c.publish(`${prefix}/${id}/${seq % topics}`, payload(), { qos: 1 }, (err) => {
            inflight--
            if (err) failed++
            else {
              acked++
              ackLat.push(now() - t)
            }
            if ((seq >= perPub || now() >= deadline) && inflight === 0) finish()
            else pump()
          })
          seq++
        }
        if ((seq >= perPub || now() >= deadline) && inflight === 0) finish()
      }
      pump()
    })
  })
}
