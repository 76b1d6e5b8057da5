// Checks the JSON Schema cannot express: relations between keys, and values
// whose validity depends on their meaning (loopback-only admin, MQTT filters).
import { isIP } from 'node:net'
import { parseRuleSet, topicFilterProblem } from '../../bridge/index.js'
import { Acl, AclError, ClientAcl, type ClientAclOptions } from '../../local-broker/index.js'
import { nodeRedInstalled } from '../../node-red/index.js'
import type { AgentConfig } from './schema.js'
import { acmeIssues } from './acme-issues.js'

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
      issues.push({
        path: ['broker', 'listeners', i, 'port'],
        message: `same address as broker.listeners[${first}] (${key})`,
      })
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
    if (first !== undefined)
      issues.push({ path: ['upstreams', i, 'name'], message: `duplicate of upstreams[${first}].name` })
    else names.set(u.name, i)
    try {
      const url = new URL(u.url)
      if (url.hostname === '') issues.push({ path: ['upstreams', i, 'url'], message: 'has no host' })
    } catch {
      issues.push({ path: ['upstreams', i, 'url'], message: 'is not a valid URL' })
    }
    // The bridge's own parser decides what a valid rule set is (one source of truth).
    for (const p of parseRuleSet(u.rules).problems)
      issues.push({ path: ['upstreams', i, 'rules', ...p.path], message: p.message })
    if (u.reconnect.minMs > u.reconnect.maxMs) {
      issues.push({
        path: ['upstreams', i, 'reconnect', 'minMs'],
        message: `must not exceed reconnect.maxMs (${u.reconnect.maxMs})`,
      })
    }
    if ((u.certFile === '') !== (u.keyFile === '')) {
      issues.push({
        path: ['upstreams', i, u.certFile === '' ? 'certFile' : 'keyFile'],
        message: 'certFile and keyFile go together',
      })
    }
    const tlsKeys = (['caFile', 'certFile', 'keyFile', 'tlsServerName'] as const).filter((k) => u[k] !== '')
    if (tlsKeys.length > 0 && /^(mqtt|ws):/.test(u.url)) {
      issues.push({
        path: ['upstreams', i, tlsKeys[0] as string],
        message: 'TLS settings need an mqtts:// or wss:// url',
      })
    }
    issues.push(...renewCertificateIssues(u, i))
    if (u.lossReport.enabled && (/[+#\u0000]/.test(u.lossReport.topic) || u.lossReport.topic.startsWith('$'))) {
      issues.push({
        path: ['upstreams', i, 'lossReport', 'topic'],
        message: 'must be a topic name without +, #, NUL or a leading $',
      })
    }
  })
  issues.push(...certsIssues(config))
  issues.push(...nodeRedIssues(config))
  issues.push(...acmeIssues(config))
  return issues
}

function nodeRedIssues(config: AgentConfig): SemanticIssue[] {
  const nr = config.nodeRed
  if (!nr.enabled) return []
  const issues: SemanticIssue[] = []
  const taken = [
    ...config.broker.listeners.map((l, i) => ({ host: l.host, port: l.port, what: `broker.listeners[${i}]` })),
    ...(config.admin.enabled ? [{ host: config.admin.host, port: config.admin.port, what: 'admin.port' }] : []),
  ]
  const clash = nr.port === 0 ? undefined : taken.find((t) => t.port === nr.port && hostsOverlap(t.host, nr.host))
  if (clash !== undefined)
    issues.push({ path: ['nodeRed', 'port'], message: `collides with ${clash.what} (${nr.port})` })
  // Checked here so that `config validate` refuses what `run` would fail on.
  if (!nodeRedInstalled()) {
    issues.push({
      path: ['nodeRed', 'enabled'],
      message: 'the Node-RED add-on is not installed: install the edge-agent-node-red package, or set it to false',
    })
  }
  return issues
}

/** upstreams[].renewCertificate: what it renews must be configured, and the topics must be names. */
function renewCertificateIssues(u: AgentConfig['upstreams'][number], i: number): SemanticIssue[] {
  const issues: SemanticIssue[] = []
  const path = ['upstreams', i, 'renewCertificate']
  const r = u.renewCertificate
  if (!r.enabled) return issues
  for (const k of ['certFile', 'keyFile', 'caFile'] as const) {
    if (u[k] === '')
      issues.push({
        path: [...path, 'enabled'],
        message: `needs upstreams[${i}].${k}: the pair to renew and the CA it must chain to`,
      })
  }
  if (!/^(mqtts|wss):/.test(u.url))
    issues.push({
      path: [...path, 'enabled'],
      message: 'needs an mqtts:// or wss:// url (the certificate authenticates this gateway)',
    })
  if (/[+#\u0000]/.test(r.topicPrefix) || r.topicPrefix.endsWith('/')) {
    issues.push({ path: [...path, 'topicPrefix'], message: 'must be a topic name without +, #, NUL or a trailing /' })
  }
  if (r.retryMinMs > r.retryMaxMs)
    issues.push({
      path: [...path, 'retryMinMs'],
      message: `must not exceed renewCertificate.retryMaxMs (${r.retryMaxMs})`,
    })
  return issues
}

/** certs:, devices: and the mqtts listener keys. */
function certsIssues(config: AgentConfig): SemanticIssue[] {
  const issues: SemanticIssue[] = []
  const { certs, devices, broker } = config
  const lifetimes = [
    [['certs', 'device', 'lifetimeSec'], certs.device.lifetimeSec],
    [['certs', 'server', 'lifetimeSec'], certs.server.lifetimeSec],
  ] as const
  for (const [path, sec] of lifetimes) {
    if (sec < 3600 && !certs.allowShortLifetimes) {
      issues.push({
        path: [...path],
        message: `is below 1 hour (${sec} s); set certs.allowShortLifetimes: true for tests and demos only`,
      })
    }
    if (certs.backdateSec * 2 >= sec) {
      issues.push({ path: ['certs', 'backdateSec'], message: `must be less than half of ${path.join('.')} (${sec} s)` })
    }
  }
  if (certs.device.lifetimeSec > certs.device.maxLifetimeSec) {
    issues.push({
      path: ['certs', 'device', 'lifetimeSec'],
      message: `must not exceed certs.device.maxLifetimeSec (${certs.device.maxLifetimeSec})`,
    })
  }
  const prefix = certs.renewal.topicPrefix
  if (!prefix.includes('{id}'))
    issues.push({
      path: ['certs', 'renewal', 'topicPrefix'],
      message: 'must contain {id}: each device renews in its own space',
    })
  if (/[+#\u0000]/.test(prefix) || prefix.endsWith('/')) {
    issues.push({
      path: ['certs', 'renewal', 'topicPrefix'],
      message: 'must be a topic name without +, #, NUL or a trailing /',
    })
  }
  if (/[+#\u0000]/.test(certs.crl.topic))
    issues.push({ path: ['certs', 'crl', 'topic'], message: 'must be a topic name without +, # or NUL' })
  try {
    Acl.compile({
      publish: devices.publish,
      subscribe: devices.subscribe,
      groups: devices.groups,
      requests: [`${prefix}/csr`],
      replies: [`${prefix}/cert`],
      broadcast: [certs.crl.topic],
    })
  } catch (err) {
    if (!(err instanceof AclError)) throw err
    issues.push({ path: ['devices'], message: err.message })
  }
  try {
    ClientAcl.compile(clientAclOptions(broker.acl))
  } catch (err) {
    if (!(err instanceof AclError)) throw err
    issues.push({ path: ['broker', 'acl'], message: err.message })
  }
  const groups = new Map<string, number>()
  devices.groups.forEach((g, i) => {
    const first = groups.get(g.name)
    if (first !== undefined)
      issues.push({ path: ['devices', 'groups', i, 'name'], message: `duplicate of devices.groups[${first}].name` })
    else groups.set(g.name, i)
  })
  broker.listeners.forEach((l, i) => {
    const tlsKeys: string[] = (['requireClientCert', 'certFile', 'keyFile', 'caFile'] as const).filter(
      (k) => l[k] !== undefined,
    )
    if (l.useIdentityAsUsername) tlsKeys.push('useIdentityAsUsername')
    if (l.protocol !== 'mqtts' && tlsKeys.length > 0) {
      issues.push({ path: ['broker', 'listeners', i, tlsKeys[0] ?? ''], message: 'only for protocol mqtts' })
    }
    if ((l.certFile === undefined) !== (l.keyFile === undefined)) {
      issues.push({
        path: ['broker', 'listeners', i, l.certFile === undefined ? 'certFile' : 'keyFile'],
        message: 'certFile and keyFile go together',
      })
    }
  })
  return issues
}

/** Why a string is not a valid MQTT topic filter, or undefined (the bridge's check). */
export { topicFilterProblem }

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

/** broker.acl (without its file) as the broker's ACL options. */
export function clientAclOptions(acl: AgentConfig['broker']['acl']): ClientAclOptions {
  return {
    ...(acl.anonymous === undefined ? {} : { anonymous: acl.anonymous }),
    users: acl.users,
    groups: acl.groups,
    patterns: acl.patterns,
  }
}
