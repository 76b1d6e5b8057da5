// Shared fixtures of the buffer tests.
//
// Glossary
//   capture logger | a pino logger writing parsed JSON lines into an array, so
//                    tests can assert on a log line by its constant message
//   clock          | a settable epoch-ms clock injected as `now`
//   nextEvent      | the next emission of an event, with a deadline (no sleeps)
import { once, type EventEmitter } from 'node:events'
import { Writable } from 'node:stream'
import pino, { type Logger } from 'pino'
import { estimateMessageBytes, type AppendInput } from '../../src/buffer/index.js'
import { withTimeout } from './wait.js'

export interface LogLine {
  level: number
  msg: string
  [key: string]: unknown
}

export function captureLogger(level: pino.Level = 'debug'): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.length > 0) lines.push(JSON.parse(l) as LogLine)
      cb()
    },
  })
  // sync: true-like behaviour: a plain Writable destination is written synchronously by pino
  return { logger: pino({ level }, stream), lines }
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}

export interface Clock {
  (): number
  set(ms: number): void
  advance(ms: number): void
}

export function fakeClock(start = 1_800_000_000_000): Clock {
  let t = start
  const now = (() => t) as Clock
  now.set = (ms) => {
    t = ms
  }
  now.advance = (ms) => {
    t += ms
  }
  return now
}

/** The arguments of the next `event` on `emitter`, or a descriptive timeout. */
export function nextEvent<T extends unknown[]>(
  emitter: EventEmitter,
  event: string,
  ms: number,
  what = event,
): Promise<T> {
  const ac = new AbortController()
  return withTimeout(once(emitter, event, { signal: ac.signal }) as Promise<T>, ms, what).finally(() => ac.abort())
}

/** Resolve when `pred(args)` holds for an emission of `event` (checked on every emission). */
export function eventMatching<T extends unknown[]>(
  emitter: EventEmitter,
  event: string,
  pred: (...args: T) => boolean,
  ms: number,
  what: string,
): Promise<T> {
  let listener: ((...args: T) => void) | undefined
  const p = new Promise<T>((resolve) => {
    listener = (...args: T) => {
      if (pred(...args)) resolve(args)
    }
    emitter.on(event, listener as (...a: unknown[]) => void)
  })
  return withTimeout(p, ms, what).finally(() => {
    if (listener !== undefined) emitter.off(event, listener as (...a: unknown[]) => void)
  })
}

/** Deterministic PRNG (mulberry32) so a failing randomized test can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The 100-byte payload of the store tests' messages. */
export const TEST_PAYLOAD = Buffer.alloc(100, 0x62)

/** Bytes one test message is charged in the store (its size estimate). */
export const TEST_ROW_BYTES = estimateMessageBytes({
  queue: 'up',
  topic: 't/0000',
  payload: TEST_PAYLOAD,
  rule: 'r',
  propertiesJson: null,
})

/** Message i of queue 'up', rule 'r', on topic t/NNNN (10,000 topics), QoS 1. */
export function testMessage(i: number, extra: Partial<AppendInput> = {}): AppendInput {
  return {
    queue: 'up',
    topic: `t/${String(i % 10_000).padStart(4, '0')}`,
    payload: TEST_PAYLOAD,
    qos: 1,
    rule: 'r',
    ...extra,
  }
}
