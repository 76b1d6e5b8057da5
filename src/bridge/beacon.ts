// The agent beacon: what loop detection between agents exchanges (pure).
// ("Beacon", not "identity": certs/ and the broker's TLS use that word for a
// device's certificate name. The wire topic keeps its old name: it is a
// protocol between deployed agents.)
//
// Every agent publishes, retained on its own local broker, a beacon on
// BEACON_TOPIC: its random per-process id and the ids of every agent above it
// (its upstreams, and theirs, transitively). Each bridge subscribes to that
// topic on its upstream (loop-detector.ts). If what comes back names this
// agent itself, the upstream is (transitively) one of our own downstreams:
// forwarding would loop — A → B → A, or any longer cycle — so the bridge
// stops forwarding to it and says so. Works over MQTT 3.1.1 (aedes), needs no
// per-message metadata, and costs one small retained message per hop.
//
// '$' topics cannot be published by devices (the local broker refuses them),
// so a device cannot forge a beacon; a wildcard subscription does not see
// them [MQTT-4.7.2-1].

export const BEACON_TOPIC = '$edge-agent/identity'

export interface AgentBeacon {
  /** Random per process (a restart is a new id; the retained message is replaced). */
  readonly id: string
  readonly site: string
  readonly level: number
  /** Ids of every agent above this one, nearest first, without duplicates. */
  readonly above: readonly string[]
}

const MAX_ABOVE = 64

export function encodeBeacon(beacon: AgentBeacon): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, ...beacon }))
}

/** The beacon in a payload, or undefined if it is not one (never throws). */
export function decodeBeacon(payload: Buffer): AgentBeacon | undefined {
  if (payload.length === 0 || payload.length > 16_384) return undefined
  try {
    const raw = JSON.parse(payload.toString('utf8')) as Record<string, unknown>
    if (typeof raw['id'] !== 'string' || raw['id'] === '') return undefined
    const above = Array.isArray(raw['above'])
      ? raw['above'].filter((x): x is string => typeof x === 'string').slice(0, MAX_ABOVE)
      : []
    return {
      id: raw['id'],
      site: typeof raw['site'] === 'string' ? raw['site'] : '',
      level: typeof raw['level'] === 'number' ? raw['level'] : -1,
      above,
    }
  } catch {
    return undefined
  }
}

/** Our beacon, given the beacons seen on each upstream. */
export function composeBeacon(
  self: { id: string; site: string; level: number },
  upstreams: Iterable<AgentBeacon | undefined>,
): AgentBeacon {
  const above: string[] = []
  const seen = new Set<string>([self.id])
  for (const u of upstreams) {
    if (u === undefined) continue
    for (const id of [u.id, ...u.above]) {
      if (seen.has(id) || above.length >= MAX_ABOVE) continue
      seen.add(id)
      above.push(id)
    }
  }
  return { id: self.id, site: self.site, level: self.level, above }
}

/** Whether forwarding to an upstream with this beacon would come back to us. */
export function formsLoop(selfId: string, upstream: AgentBeacon): boolean {
  return upstream.id === selfId || upstream.above.includes(selfId)
}

export function sameBeacon(a: AgentBeacon | undefined, b: AgentBeacon | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return (
    a.id === b.id &&
    a.site === b.site &&
    a.level === b.level &&
    a.above.length === b.above.length &&
    a.above.every((x, i) => b.above[i] === x)
  )
}
