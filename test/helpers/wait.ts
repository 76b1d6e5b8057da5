// Waiting without sleeping: every wait is for an event or a condition, with a
// deadline whose error says what was awaited.
import type { MqttClient } from 'mqtt'

export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/** Polls a condition (for state that emits no event, e.g. a file or a counter). */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  ms: number,
  what: string,
  everyMs = 20,
): Promise<NonNullable<T>> {
  const end = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v !== undefined && v !== null && v !== false) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > end) {
      throw new Error(
        `timed out after ${ms} ms waiting for ${what}${last instanceof Error ? ` (last error: ${last.message})` : ''}`,
      )
    }
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

export interface ReceivedMessage {
  topic: string
  payload: Buffer
  retain: boolean
  qos: number
}

/** The next message on `topic` (exact match) or matching `pred`. */
export function nextMessage(
  client: MqttClient,
  topic: string | ((t: string) => boolean),
  ms = 5_000,
): Promise<ReceivedMessage> {
  const match = typeof topic === 'string' ? (t: string) => t === topic : topic
  return withTimeout(
    new Promise<ReceivedMessage>((resolve) => {
      const onMessage = (t: string, payload: Buffer, packet: { retain?: boolean; qos?: number }) => {
        if (!match(t)) return
        client.off('message', onMessage)
        resolve({ topic: t, payload, retain: packet.retain === true, qos: packet.qos ?? 0 })
      }
      client.on('message', onMessage)
    }),
    ms,
    `a message on ${typeof topic === 'string' ? topic : 'a matching topic'}`,
  )
}

/** Collects `count` messages matching `pred`, in arrival order. */
export function collectMessages(
  client: MqttClient,
  count: number,
  pred: (t: string) => boolean,
  ms: number,
): Promise<ReceivedMessage[]> {
  const got: ReceivedMessage[] = []
  return withTimeout(
    new Promise<ReceivedMessage[]>((resolve) => {
      const onMessage = (t: string, payload: Buffer, packet: { retain?: boolean; qos?: number }) => {
        if (!pred(t)) return
        got.push({ topic: t, payload, retain: packet.retain === true, qos: packet.qos ?? 0 })
        if (got.length >= count) {
          client.off('message', onMessage)
          resolve(got)
        }
      }
      client.on('message', onMessage)
    }),
    ms,
    `${count} messages (got ${got.length})`,
  )
}
