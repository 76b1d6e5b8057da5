// Renders /status for people: a few aligned lines a technician on an SSH
// session can read at a glance. Scripts use --json instead.
import type { AgentStatus } from './app.js'
import { STALL_SEC, type DurationHistogram } from '../storage/index.js'

export function renderStatus(s: AgentStatus): string {
  const a = s.agent
  const lines: string[] = []
  const down = a.state === 'running' ? (s.upstreams ?? []).filter((u) => !u.connected).map((u) => u.name) : []
  const state = down.length > 0 ? `${a.state}, degraded (upstream down: ${down.join(', ')})` : a.state
  lines.push(
    `edge-agent ${a.version}  site ${a.site.name} (Purdue level ${a.site.level})  ${state}${a.startedAt ? `, up ${duration(a.uptimeSec)}` : ''}`,
  )
  lines.push(
    `process    pid ${s.process.pid}  rss ${mb(s.process.rssBytes)}  heap ${mb(s.process.heapUsedBytes)}  node ${s.process.node}`,
  )
  lines.push(`data dir   ${a.dataDir}`)
  lines.push('')
  lines.push(
    table(
      ['COMPONENT', 'STATE'],
      s.components.map((c) => [c.name, c.state]),
    ),
  )
  lines.push('')
  const b = s.broker
  lines.push(
    table(
      ['LISTENER', 'ADDRESS'],
      b.listeners.map((l) => [l.protocol, `${l.host}:${l.port}`]),
    ),
  )
  lines.push('')
  const refused = Object.entries(b.refused)
  lines.push(
    table(
      ['BROKER', ''],
      [
        ['clients connected', num(b.clients)],
        ['connections since start', num(b.connectionsTotal)],
        ['messages received', `${num(b.messagesReceived)}  (${b.receivedPerSec}/s)`],
        ['messages delivered', `${num(b.messagesDelivered)}  (${b.deliveredPerSec}/s)`],
        ['refused or closed', refused.length === 0 ? 'none' : refused.map(([k, v]) => `${k} ${num(v)}`).join(', ')],
      ],
    ),
  )
  if (s.buffer) {
    const f = s.buffer
    const drops = Object.entries(f.drops.byReason).filter(([, n]) => (n ?? 0) > 0)
    lines.push('')
    lines.push(
      table(
        ['BUFFER', ''],
        [
          [
            'state',
            `${f.health.state}${f.health.reasons.length ? ` (${f.health.reasons.join(', ')})` : ''}, durability ${f.durability}`,
          ],
          [
            'queued',
            `${num(f.totals.messages)} messages, ${mb(f.totals.bytes)} of ${mb(f.limits.effectiveMaxBytes)}${f.limits.freeBytes === null ? '' : `, ${mb(f.limits.freeBytes)} free on disk`}`,
          ],
          ['rates', `${f.rates.appendPerSec.toFixed(1)}/s in, ${f.rates.ackPerSec.toFixed(1)}/s out`],
          ...(f.totals.walFsyncDurations.count > 0 ? [['fsyncs', fsyncSummary(f.totals.walFsyncDurations)]] : []),
          ['dropped', drops.length === 0 ? 'none' : drops.map(([k, v]) => `${k} ${num(v ?? 0)}`).join(', ')],
          ...(f.quarantine.count > 0 ? [['corrupt files moved aside', num(f.quarantine.count)]] : []),
          ...(f.lastRun?.loss
            ? [
                [
                  'last run',
                  `ended by a power cut: ${num(f.lastRun.loss.count)} acknowledged messages lost ` +
                    `(${f.lastRun.loss.durability})`,
                ],
              ]
            : f.lastRun?.ended === 'unclean'
              ? [['last run', 'did not stop cleanly, nothing lost detected']]
              : []),
        ],
      ),
    )
  }
  if (s.certs) {
    const c = s.certs
    const refused = Object.entries(c.refusedHandshakes).filter(([, n]) => n > 0)
    lines.push('')
    lines.push(
      table(
        ['CERTIFICATES', ''],
        [
          [
            'local CA',
            `${c.ca.subject}, expires in ${c.ca.expiresInDays} days${c.ca.intermediate ? ' (intermediate)' : ''}`,
          ],
          [
            'server certificate',
            c.server.expiresInSec === null ? 'none' : `expires in ${duration(Math.max(0, c.server.expiresInSec))}`,
          ],
          ['devices connected', num(c.devicesConnected)],
          ['renewed / issued', `${num(c.renewal.renewed)} / ${num(c.issued)}, ${num(c.revoked)} revoked`],
          ['clock', `${c.clock.state}${c.clock.reason ? ` (${c.clock.reason})` : ''}`],
          ['refused handshakes', refused.length === 0 ? 'none' : refused.map(([k, v]) => `${k} ${num(v)}`).join(', ')],
        ],
      ),
    )
  }
  const g = s.gatewayCertificate
  if (g !== null && g !== undefined) {
    lines.push('')
    const left = g.expiresInSec
    const expiry =
      left === null
        ? 'not issued yet'
        : left <= 0
          ? `EXPIRED ${g.notAfter ?? ''}`
          : `expires in ${duration(left)} (${g.notAfter ?? ''})${g.state === 'expiring' ? ' SOON' : ''}`
    const rows: string[][] = [
      ['certificate', `${g.state}, ${g.subject ?? '-'}, serial ${g.serial ?? '-'}`],
      ['issuer', g.issuer ?? '-'],
      ['expiry', expiry],
      [
        'renewal',
        `${num(g.renewals)} done${g.renewing ? ', one in progress' : ''}${g.nextRenewalAt === null ? '' : `, next ${g.nextRenewalAt}`}${g.failures > 0 ? `, ${num(g.failures)} failed in a row` : ''}`,
      ],
    ]
    if (g.lastError !== null) rows.push(['renewal error', `${g.lastError.message} (${g.lastError.code})`])
    lines.push(table(['GATEWAY CERTIFICATE (ACME)', ''], rows))
  }
  for (const u of s.upstreams ?? []) {
    lines.push('')
    const since = Math.max(0, Math.round((Date.now() - Date.parse(u.since)) / 1000))
    const state =
      u.loop !== null
        ? `LOOP with ${u.loop.peerSite || 'an agent above'}: forwarding paused`
        : u.connected
          ? `connected for ${duration(since)}`
          : `${u.state === 'waiting' ? 'disconnected, retrying' : u.state} for ${duration(since)}`
    const drops = Object.entries(u.drops).filter(([, n]) => n > 0)
    const rows: string[][] = [
      ['state', state],
      ['url', `${u.url}  (MQTT ${u.protocolVersion === 5 ? '5' : '3.1.1'}, client id ${u.clientId})`],
      ['in flight', `${num(u.inflight)} of ${num(u.window)}`],
      [
        'backlog',
        `${num(u.backlog.depth)} messages, ${mb(u.backlog.bytes)}${u.backlog.oldestAgeMs === null ? '' : `, oldest ${duration(Math.round(u.backlog.oldestAgeMs / 1000))}`}`,
      ],
      [
        'sent / acked',
        `${num(u.totals.sent)} / ${num(u.totals.acked)}  (${u.rates.sentPerSec}/s / ${u.rates.ackedPerSec}/s)`,
      ],
      ['from upstream', `${num(u.totals.received)}  (${u.rates.receivedPerSec}/s)`],
      ['connects', `${num(u.totals.connects)} of ${num(u.totals.attempts)} attempts, ${num(u.totals.resent)} resent`],
      ['dropped', drops.length === 0 ? 'none' : drops.map(([k, v]) => `${k} ${num(v)}`).join(', ')],
    ]
    if (u.held !== null && u.held !== undefined) rows.push(['held', u.held])
    if (u.lastError !== null && !u.connected) rows.push(['last error', `${u.lastError.message} (${u.lastError.code})`])
    const c = u.certificate
    if (c !== null && c !== undefined) {
      const left = c.notAfter === null ? null : Math.round((Date.parse(c.notAfter) - Date.now()) / 1000)
      const expiry =
        left === null
          ? 'unknown'
          : left <= 0
            ? `EXPIRED ${c.notAfter ?? ''}: re-provision ${c.certFile}`
            : `expires in ${duration(left)} (${c.notAfter ?? ''})`
      rows.push(['certificate', `${c.state}, serial ${c.serial ?? '?'}, ${expiry}`])
      rows.push([
        'renewal',
        `${num(c.renewals)} done${c.nextRenewalAt === null ? '' : `, next ${c.nextRenewalAt}`}${c.failures > 0 ? `, ${num(c.failures)} failed in a row` : ''}`,
      ])
      if (c.lastError !== null && c.failures > 0)
        rows.push([
          'renewal error',
          `${c.lastError.message}${c.lastError.code === null ? '' : ` (${c.lastError.code})`}`,
        ])
    }
    lines.push(table([`UPSTREAM ${u.name}`, ''], rows))
  }
  return lines.join('\n') + '\n'
}

export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  return [line(head), ...rows.map(line)].join('\n')
}

/** The WAL fsyncs in a few words: how many, the slowest, and the stalls a technician should look into. */
export function fsyncSummary(h: DurationHistogram): string {
  const stalls = h.counts.slice(h.bounds.findIndex((le) => le >= STALL_SEC) + 1).reduce((a, b) => a + b, 0)
  const slowest = h.maxSec < 1 ? `${Math.round(h.maxSec * 1000)} ms` : `${h.maxSec.toFixed(1)} s`
  return `${num(h.count)}, slowest ${slowest}${stalls > 0 ? `, ${num(stalls)} over ${STALL_SEC} s: the storage stalls` : ''}`
}

function num(n: number): string {
  return n.toLocaleString('en-US')
}

function mb(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MB`
}

function duration(sec: number): string {
  const d = Math.floor(sec / 86400)
  const h = Math.floor((sec % 86400) / 3600)
  const m = Math.floor((sec % 3600) / 60)
  if (d > 0) return `${d}d ${h}h`
  if (h > 0) return `${h}h ${m}m`
  if (m > 0) return `${m}m ${sec % 60}s`
  return `${sec}s`
}
