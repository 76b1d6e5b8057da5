// The Prometheus text of /metrics: a pure function of the agent's status.
import type { CertificateRenewerStatus, GatewayCertificateStatus } from '../certs/index.js'
import type { BridgeStatus } from '../bridge/index.js'
import type { BufferStats } from '../buffer/index.js'
import { MetricsText, byLabel } from './metrics.js'
import type { AgentStatus, CertsStatus } from './agent-status.js'

/** `now` (ms) dates the per-upstream ages and certificate expiries. */
export function agentMetrics(s: AgentStatus, now: number): string {
  const b = s.broker
  const m = new MetricsText()
    .gauge('edge_agent_info', 'Agent build and site; value is always 1', [
      { labels: { version: s.agent.version, site: s.agent.site.name, level: s.agent.site.level }, value: 1 },
    ])
    .gauge('edge_agent_up', '1 when every component is running', s.agent.state === 'running' ? 1 : 0)
    .gauge('edge_agent_uptime_seconds', 'Seconds since the agent finished starting', s.agent.uptimeSec)
    .gauge('edge_agent_process_resident_memory_bytes', 'Resident set size of the agent process', s.process.rssBytes)
    .gauge('edge_agent_process_heap_used_bytes', 'V8 heap in use', s.process.heapUsedBytes)
    .gauge('edge_agent_broker_clients', 'Devices connected to the local broker now', b.clients)
    .counter(
      'edge_agent_broker_connections_total',
      'Connections accepted by the local broker listeners',
      b.connectionsTotal,
    )
    .counter('edge_agent_broker_messages_received_total', 'PUBLISH packets received from devices', b.messagesReceived)
    .counter(
      'edge_agent_broker_messages_delivered_total',
      'Messages delivered to local subscribers',
      b.messagesDelivered,
    )
    .counter(
      'edge_agent_broker_refused_total',
      'Connections refused or closed, by limit or protocol rule',
      byLabel('reason', b.refused),
    )
  bufferMetrics(m, s.buffer)
  upstreamMetrics(m, s.upstreams, now)
  const renewed = s.upstreams.filter((u) => u.certificate !== null)
  if (renewed.length > 0) {
    const per = (f: (c: CertificateRenewerStatus) => number) =>
      renewed.map((u) => ({ labels: { upstream: u.name }, value: f(u.certificate as CertificateRenewerStatus) }))
    m.gauge(
      'edge_agent_upstream_certificate_expiry_seconds',
      "Seconds until this upstream's client certificate expires (renewCertificate)",
      per((c) => (c.notAfter === null ? 0 : Math.round((Date.parse(c.notAfter) - now) / 1000))),
    )
      .counter(
        'edge_agent_upstream_certificate_renewals_total',
        "Renewals of this upstream's client certificate",
        per((c) => c.renewals),
      )
      .gauge(
        'edge_agent_upstream_certificate_renewal_failures',
        'Consecutive failed renewal attempts (0 after a success)',
        per((c) => c.failures),
      )
  }
  if (s.certs !== null) certsMetrics(m, s.certs)
  if (s.nodeRed !== null) {
    const e = s.nodeRed.edge
    m.counter('edge_agent_nodered_published_total', 'Messages published by edge out nodes', e.published)
      .counter(
        'edge_agent_nodered_throttled_total',
        'edge out messages dropped above nodeRed.maxPublishRatePerSec',
        e.throttled,
      )
      .counter('edge_agent_nodered_failed_total', 'edge out publishes refused (ACL, size, buffer full)', e.failed)
      .counter('edge_agent_nodered_received_total', 'Messages delivered to edge in nodes', e.received)
  }
  if (s.gatewayCertificate !== null) {
    gatewayCertMetrics(m, s.gatewayCertificate)
    m.gauge(
      'edge_agent_upstream_held',
      '1 while the upstream connection is held (gateway certificate expired or not yet issued); buffering continues',
      s.upstreams.map((u) => ({ labels: { upstream: u.name }, value: u.held === null ? 0 : 1 })),
    )
  }
  return m.toString()
}

function certsMetrics(m: MetricsText, c: CertsStatus): void {
  m.counter('edge_agent_certs_issued_total', 'Certificates issued by the running agent (CLI issuance not included)', [
    { labels: { kind: 'device' }, value: c.issued },
    { labels: { kind: 'server' }, value: c.server.rotations },
  ])
    .counter('edge_agent_certs_renewed_total', 'Device certificates renewed over MQTT', c.renewal.renewed)
    .counter(
      'edge_agent_certs_renewal_resent_total',
      'Certificates sent again to a device that retried with the same key (its first reply was lost)',
      c.renewal.resent,
    )
    .counter(
      'edge_agent_certs_renewal_refused_total',
      'Renewal requests refused, by protocol error code',
      byLabel('reason', c.renewal.refused),
    )
    .counter(
      'edge_agent_certs_server_rotations_total',
      "Rotations of the broker's server certificate",
      c.server.rotations,
    )
    .counter(
      'edge_agent_certs_server_rotations_postponed_total',
      'Server certificate rotations postponed (clock suspicious, issuance failed)',
      c.server.postponed,
    )
    .gauge('edge_agent_certs_revoked', 'Revoked certificates not yet expired', c.revoked)
    .gauge('edge_agent_certs_ca_expiry_days', 'Days until the local CA expires', c.ca.expiresInDays)
    .gauge(
      'edge_agent_certs_server_expiry_seconds',
      "Seconds until the broker's server certificate expires",
      c.server.expiresInSec ?? 0,
    )
    .gauge(
      'edge_agent_certs_clock_suspicious',
      '1 while the clock is not trusted and issuance is paused',
      c.clock.state === 'ok' ? 0 : 1,
    )
    .gauge('edge_agent_broker_devices', 'Certificate-identified device sessions connected now', c.devicesConnected)
    .counter(
      'edge_agent_broker_tls_refused_total',
      'TLS connections refused before MQTT, by reason',
      byLabel('reason', c.refusedHandshakes),
    )
    .counter(
      'edge_agent_broker_device_denied_total',
      'Device ACL denials and sessions closed by credential, by reason',
      byLabel('reason', c.denied),
    )
}

function gatewayCertMetrics(m: MetricsText, g: GatewayCertificateStatus): void {
  m.gauge(
    'edge_agent_gateway_certificate_expiry_seconds',
    "Seconds until the gateway's ACME certificate expires (negative: expired; absent before the first issuance)",
    g.expiresInSec === null ? [] : g.expiresInSec,
  )
    .gauge(
      'edge_agent_gateway_certificate_expiry_days',
      "Days until the gateway's ACME certificate expires",
      g.expiresInSec === null ? [] : Math.floor(g.expiresInSec / 86400),
    )
    .gauge(
      'edge_agent_gateway_certificate_valid',
      '1 while the gateway certificate is valid (expiring included), 0 when expired or not yet issued',
      g.state === 'valid' || g.state === 'expiring' ? 1 : 0,
    )
    .counter(
      'edge_agent_gateway_certificate_renewals_total',
      'Gateway certificates promoted by the running agent',
      g.renewals,
    )
    .gauge(
      'edge_agent_gateway_certificate_renewal_failures',
      'Consecutive failed renewal attempts (0 after a success)',
      g.failures,
    )
}

/** The buffer's families: depth, bytes and oldest age per queue; rates; drops by reason and rule. */
function bufferMetrics(m: MetricsText, b: AgentStatus['buffer']): void {
  const perQueue = (f: (q: BufferStats['queues'][number]) => number) =>
    b.queues.map((q) => ({ labels: { queue: q.queue }, value: f(q) }))
  m.gauge(
    'edge_agent_buffer_messages',
    'Messages in the buffer, per queue (upstream), in flight included',
    perQueue((q) => q.depth),
  )
    .gauge(
      'edge_agent_buffer_bytes',
      'Bytes of messages in the buffer, per queue',
      perQueue((q) => q.bytes),
    )
    .gauge(
      'edge_agent_buffer_inflight',
      'Buffered messages sent upstream and not yet acknowledged, per queue',
      perQueue((q) => q.inFlight),
    )
    .gauge(
      'edge_agent_buffer_oldest_age_seconds',
      'Age of the oldest buffered message, per queue',
      perQueue((q) => (q.oldestAgeMs ?? 0) / 1000),
    )
    .gauge(
      'edge_agent_buffer_capacity_bytes',
      'Bytes the buffer may hold now (maxBytes, lowered near the free-space floor)',
      b.limits.effectiveMaxBytes,
    )
    .gauge('edge_agent_buffer_disk_free_bytes', 'Free bytes on the file system of the buffer', b.limits.freeBytes ?? 0)
    .gauge(
      'edge_agent_buffer_healthy',
      '1 when the buffer accepts writes normally, 0 when degraded (disk full or low, I/O error)',
      b.health.state === 'ok' ? 1 : 0,
    )
    .counter('edge_agent_buffer_appended_total', 'Messages committed to the buffer', b.totals.appended)
    .counter('edge_agent_buffer_acked_total', 'Messages removed after the upstream acknowledged them', b.totals.acked)
    .counter('edge_agent_buffer_wal_fsyncs_total', 'WAL fsyncs that acknowledgements waited for', b.totals.walFsyncs)
    .histogram(
      'edge_agent_buffer_wal_fsync_duration_seconds',
      'How long the WAL fsyncs took (every acknowledgement waits for one); stalls of the storage show here first',
      b.totals.walFsyncDurations,
    )
    .counter('edge_agent_buffer_commits_total', 'Group commits', b.totals.commits)
    .counter(
      'edge_agent_buffer_failed_commits_total',
      'Group commits that failed (their messages were not acknowledged)',
      b.totals.failedCommits,
    )
    .gauge('edge_agent_buffer_append_rate', 'Messages appended per second, recent', b.rates.appendPerSec)
    .gauge('edge_agent_buffer_drain_rate', 'Messages acknowledged upstream per second, recent', b.rates.ackPerSec)
    .counter(
      'edge_agent_buffer_dropped_total',
      'Messages the buffer dropped, by reason',
      byLabel('reason', b.drops.byReason),
    )
    .counter(
      'edge_agent_buffer_dropped_by_rule_total',
      'Messages the buffer dropped, by bridge rule and reason',
      Object.entries(b.drops.byRule).flatMap(([rule, byReason]) =>
        Object.entries(byReason).map(([reason, value]) => ({ labels: { rule, reason }, value: value ?? 0 })),
      ),
    )
    .counter('edge_agent_buffer_quarantined_total', 'Corrupt database files moved aside at start', b.quarantine.count)
  const durable = b.drops.sinceCreated
  if (durable) {
    m.counter(
      'edge_agent_buffer_dropped_durable_total',
      'Messages the buffer dropped since the store was created (kept in SQLite across restarts), by rule and reason',
      Object.entries(durable.byRule).flatMap(([rule, byReason]) =>
        Object.entries(byReason).map(([reason, value]) => ({ labels: { rule, reason }, value: value ?? 0 })),
      ),
    ).gauge(
      'edge_agent_buffer_drop_ledger_ranges',
      'Ranges kept in the drop ledger (edge-agent buffer drops)',
      durable.ledger.rows,
    )
  }
  if (b.brokerState) {
    m.gauge(
      'edge_agent_broker_retained_messages',
      'Retained messages kept by the local broker',
      b.brokerState.retainedMessages,
    )
      .gauge(
        'edge_agent_broker_persistent_sessions',
        'Persistent sessions kept by the local broker',
        b.brokerState.persistentSessions,
      )
      .gauge(
        'edge_agent_broker_offline_queued_messages',
        'QoS 1/2 messages queued for offline persistent sessions',
        b.brokerState.queuedMessages,
      )
      .counter(
        'edge_agent_broker_offline_dropped_total',
        'Offline-queue messages dropped past the per-client bounds',
        b.brokerState.droppedMessages,
      )
  }
}

/** Per-upstream families, one sample per upstream (label `upstream`). */
function upstreamMetrics(m: MetricsText, ups: readonly BridgeStatus[], now: number): void {
  const per = (f: (u: BridgeStatus) => number) => ups.map((u) => ({ labels: { upstream: u.name }, value: f(u) }))
  m.gauge(
    'edge_agent_upstream_connected',
    '1 while the upstream connection is up',
    per((u) => (u.connected ? 1 : 0)),
  )
    .gauge(
      'edge_agent_upstream_state_seconds',
      'Seconds since the upstream connection last changed state',
      per((u) => Math.max(0, Math.round((now - Date.parse(u.since)) / 1000))),
    )
    .gauge(
      'edge_agent_upstream_inflight',
      'Messages sent upstream and not yet acknowledged',
      per((u) => u.inflight),
    )
    .gauge(
      'edge_agent_upstream_window',
      "In-flight window (config inflight, lowered by the upstream's Receive Maximum)",
      per((u) => u.window),
    )
    .gauge(
      'edge_agent_upstream_backlog_messages',
      'Messages in the buffer for this upstream, in flight included',
      per((u) => u.backlog.depth),
    )
    .gauge(
      'edge_agent_upstream_backlog_bytes',
      'Bytes in the buffer for this upstream',
      per((u) => u.backlog.bytes),
    )
    .gauge(
      'edge_agent_upstream_backlog_oldest_age_seconds',
      'Age of the oldest buffered message for this upstream',
      per((u) => (u.backlog.oldestAgeMs ?? 0) / 1000),
    )
    .counter(
      'edge_agent_upstream_messages_sent_total',
      'PUBLISH packets sent upstream (first sends)',
      per((u) => u.totals.sent),
    )
    .counter(
      'edge_agent_upstream_messages_acked_total',
      'Messages acknowledged by the upstream and removed from the buffer',
      per((u) => u.totals.acked),
    )
    .counter(
      'edge_agent_upstream_messages_resent_total',
      'In-flight messages sent again after a reconnect',
      per((u) => u.totals.resent),
    )
    .counter(
      'edge_agent_upstream_messages_received_total',
      'Messages from the upstream delivered to the local broker (in rules)',
      per((u) => u.totals.received),
    )
    .counter(
      'edge_agent_upstream_connect_attempts_total',
      'Connection attempts to the upstream',
      per((u) => u.totals.attempts),
    )
    .counter(
      'edge_agent_upstream_connects_total',
      'Connections established to the upstream',
      per((u) => u.totals.connects),
    )
    .counter(
      'edge_agent_upstream_disconnects_total',
      'Established connections that ended',
      per((u) => u.totals.disconnects),
    )
    .counter(
      'edge_agent_upstream_dropped_total',
      'Messages not forwarded, by reason (bridge and buffer drops of this upstream)',
      ups.flatMap((u) =>
        Object.entries(u.drops).map(([reason, value]) => ({ labels: { upstream: u.name, reason }, value })),
      ),
    )
    .counter(
      'edge_agent_upstream_dropped_by_rule_total',
      'Messages not forwarded, by upstream, rule and reason (bridge and buffer drops)',
      ups.flatMap((u) =>
        Object.entries(u.dropsByRule ?? {}).flatMap(([rule, byReason]) =>
          Object.entries(byReason).map(([reason, value]) => ({ labels: { upstream: u.name, rule, reason }, value })),
        ),
      ),
    )
    .gauge(
      'edge_agent_upstream_loop',
      '1 while forwarding is paused because it would loop back to this agent',
      per((u) => (u.loop === null ? 0 : 1)),
    )
}

export function round(n: number): number {
  return Math.round(n * 10) / 10
}
