// certs.acme and its users (upstreams[].clientCertificate, mqtts listeners'
// serverCertificate): relations the schema cannot express, and the files it
// names, read here so that `config validate` refuses what `run` would.
import { accessSync, constants, readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import type { AgentConfig } from './schema.js'
import type { SemanticIssue } from './semantic.js'

export function acmeIssues(config: AgentConfig): SemanticIssue[] {
  const issues: SemanticIssue[] = []
  const acme = config.certs.acme
  config.upstreams.forEach((u, i) => {
    if (u.clientCertificate !== 'acme') return
    const path = ['upstreams', i, 'clientCertificate']
    if (acme === undefined)
      issues.push({ path, message: 'acme needs certs.acme (the ACME CA that issues the gateway certificate)' })
    if (!/^(mqtts|wss):/.test(u.url))
      issues.push({
        path,
        message: 'acme needs an mqtts:// or wss:// url (the certificate authenticates this gateway)',
      })
    if (u.certFile !== '' || u.keyFile !== '')
      issues.push({ path, message: 'acme replaces certFile/keyFile: remove them' })
    if (u.renewCertificate.enabled)
      issues.push({ path, message: 'acme and renewCertificate.enabled exclude each other' })
  })
  config.broker.listeners.forEach((l, i) => {
    if (l.serverCertificate === undefined) return
    const path = ['broker', 'listeners', i, 'serverCertificate']
    if (l.protocol !== 'mqtts') issues.push({ path, message: 'only for protocol mqtts' })
    if (l.serverCertificate !== 'acme') return
    if (acme === undefined) issues.push({ path, message: 'acme needs certs.acme' })
    if (l.certFile !== undefined || l.keyFile !== undefined)
      issues.push({ path, message: 'acme replaces certFile/keyFile: remove them' })
  })
  if (acme === undefined) return issues
  const base = ['certs', 'acme']
  if (acme.challenge === 'dns-01') {
    if (acme.dns01.command === '')
      issues.push({ path: [...base, 'dns01', 'command'], message: 'is required for challenge dns-01' })
    else if (!executable(acme.dns01.command))
      issues.push({ path: [...base, 'dns01', 'command'], message: `is not an executable file (${acme.dns01.command})` })
  }
  if (acme.retryMinMs > acme.retryMaxMs)
    issues.push({
      path: [...base, 'retryMinMs'],
      message: `must not exceed certs.acme.retryMaxMs (${acme.retryMaxMs})`,
    })
  if (acme.challenge === 'http-01' && acme.http01.port === config.admin.port && config.admin.enabled) {
    issues.push({ path: [...base, 'http01', 'port'], message: `collides with admin.port ${config.admin.port}` })
  }
  for (const k of ['caFile', 'trustFile'] as const) {
    if (acme[k] === '') continue
    const problem = pemProblem(acme[k])
    if (problem !== undefined) issues.push({ path: [...base, k], message: problem })
  }
  if (acme.eab !== undefined) {
    const f = acme.eab.hmacKeyFile
    try {
      const key = readFileSync(f, 'utf8').trim()
      if (!/^[A-Za-z0-9_-]+={0,2}$/.test(key))
        issues.push({ path: [...base, 'eab', 'hmacKeyFile'], message: `does not hold a base64url HMAC key (${f})` })
    } catch (err) {
      issues.push({ path: [...base, 'eab', 'hmacKeyFile'], message: `cannot be read: ${(err as Error).message}` })
    }
  }
  return issues
}

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK)
    return true
  } catch {
    return false
  }
}

function pemProblem(file: string): string | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    return `cannot be read: ${(err as Error).message}`
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) return `holds no PEM certificate (${file})`
  try {
    for (const b of blocks) new X509Certificate(b)
  } catch (err) {
    return `holds a certificate that does not parse (${file}): ${(err as Error).message}`
  }
  return undefined
}
