// Checks the JSON Schema cannot express: relations between keys, and values
// whose validity depends on their meaning (loopback-only admin, MQTT filters).
import { isIP } from 'node:net'
import type { AgentConfig } from './schema.js'

export interface SemanticIssue {
  readonly path: (string | number)[]
  readonly message: string
}

export function semanticIssues(config: AgentConfig): SemanticIssue[] {
  const issues: SemanticIssue[] = []
  const { admin, broker, upstreams } = config

  const seen = new Map<string, number>()
  broker.listeners.forEach((l, i) => {
    if (l.port === 0) return
    const key = `${l.host}:${l.port}`
    const first = seen.get(key)
    if (first !== undefined) {
      issues.push({ path: ['broker', 'listeners', i, 'port'], message: `same address as broker.listeners[${first}] (${key})` })
    } else seen.set(key, i)
    if (admin.enabled && admin.port !== 0 && l.port === admin.port && hostsOverlap(l.host, admin.host)) {
      issues.push({ path: ['broker', 'listeners', i, 'port'], message: `collides with admin.port ${admin.port}` })
    }
  })

  if (!isLoopback(admin.host)) {
    issues.push({
      path: ['admin', 'host'],
      message: `must be a loopback address (127.0.0.1, ::1 or localhost): the admin endpoint has no authentication (got ${JSON.stringify(admin.host)})`,
    })
  }

  const limits = broker.limits
  if (limits.keepaliveMinSec > 0 && limits.keepaliveMaxSec > 0 && limits.keepaliveMinSec > limits.keepaliveMaxSec) {
    issues.push({
      path: ['broker', 'limits', 'keepaliveMinSec'],
      message: `must not exceed broker.limits.keepaliveMaxSec (${limits.keepaliveMaxSec})`,
    })
  }

  const names = new Map<string, number>()
  upstreams.forEach((u, i) => {
    const first = names.get(u.name)
    if (first !== undefined) issues.push({ path: ['upstreams', i, 'name'], message: `duplicate of upstreams[${first}].name` })
    else names.set(u.name, i)
    try {
      const url = new URL(u.url)
      if (url.hostname === '') issues.push({ path: ['upstreams', i, 'url'], message: 'has no host' })
    } catch {
      issues.push({ path: ['upstreams', i, 'url'], message: 'is not a valid URL' })
    }
    u.rules.forEach((r, j) => {
      const filterProblem = topicFilterProblem(r.topic)
      if (filterProblem) issues.push({ path: ['upstreams', i, 'rules', j, 'topic'], message: filterProblem })
      for (const key of ['localPrefix', 'remotePrefix'] as const) {
        if (/[+#\u0000]/.test(r[key])) {
          issues.push({ path: ['upstreams', i, 'rules', j, key], message: 'must not contain +, # or NUL' })
        }
      }
    })
  })
  return issues
}

/** Why a string is not a valid MQTT topic filter [MQTT-4.7.1-2], [MQTT-4.7.1-3], or undefined. */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'must not be empty [MQTT-4.7.3-1]'
  if (filter.includes('\u0000')) return 'must not contain NUL [MQTT-4.7.3-2]'
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i] ?? ''
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return "'#' must be a whole level and the last one [MQTT-4.7.1-2]"
    }
    if (level.includes('+') && level !== '+') return "'+' must be a whole level [MQTT-4.7.1-3]"
  }
  return undefined
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true
  if (isIP(host) === 4) return host.startsWith('127.')
  if (isIP(host) === 6) return host === '::1'
  return false
}

function hostsOverlap(a: string, b: string): boolean {
  const wildcard = (h: string) => h === '0.0.0.0' || h === '::'
  return a === b || wildcard(a) || wildcard(b)
}
