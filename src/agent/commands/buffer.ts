// `edge-agent buffer stats|peek|purge|export|drops`: look into the store-and-forward
// buffer. stats asks the running agent first (live counters, drops, health)
// and falls back to reading the file; the others read the file, which is safe
// while the agent runs.
import { createWriteStream, type WriteStream } from 'node:fs'
import { once } from 'node:events'
import { isUtf8 } from 'node:buffer'
import { Command, InvalidArgumentError } from 'commander'
import {
  BufferInspector,
  isBufferError,
  type BufferStats,
  type LedgerRange,
  type PeekedMessage,
} from '../../buffer/index.js'
import type { AgentStatus } from '../app.js'
import { table } from '../status-view.js'
import { ExitCode } from '../exit-codes.js'
import { withConfigOptions, loadOrReport, type ConfigFlags } from './config-source.js'
import { adminUrl } from './status.js'
import type { CommandContext } from './context.js'

type Flags = ConfigFlags & { queue?: string; json: boolean }

function positiveInt(v: string): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer')
  return n
}

export function bufferCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const buffer = new Command('buffer').description('inspect the store-and-forward buffer: what waits to go upstream')
  withConfigOptions(
    buffer
      .command('stats')
      .description('depth, bytes and oldest age per queue (upstream), drops by reason, health')
      .option('--url <url>', 'admin endpoint of the running agent (default: from the config)')
      .option('--json', 'print JSON', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent buffer stats\n  $ edge-agent buffer stats --json | jq .queues',
      ),
  ).action((o: Flags & { url?: string }) => done(stats(ctx, o)))
  withConfigOptions(
    buffer
      .command('peek')
      .description('show the next messages to leave, in drain order')
      .option('-q, --queue <name>', 'only this queue (upstream name)')
      .option('-n, --limit <n>', 'how many', positiveInt, 10)
      .option('--json', 'print JSON lines', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent buffer peek -n 5\n  $ edge-agent buffer peek --queue site-broker --json',
      ),
  ).action((o: Flags & { limit: number }) => done(peek(ctx, o)))
  withConfigOptions(
    buffer
      .command('purge')
      .description('delete buffered messages (all, or one queue), after confirmation; they are lost')
      .option('-q, --queue <name>', 'only this queue (upstream name)')
      .option('-y, --yes', 'do not ask (for scripts)', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent buffer purge --queue old-upstream\n  $ edge-agent buffer purge --yes   # everything, no question',
      ),
  ).action((o: ConfigFlags & { queue?: string; yes: boolean }) => done(purge(ctx, o)))
  withConfigOptions(
    buffer
      .command('export')
      .description(
        'write buffered messages as JSON lines (payload and MQTT 5 correlation data in base64; the payload also as text when it is UTF-8)',
      )
      .option('-q, --queue <name>', 'only this queue (upstream name)')
      .option('-o, --out <file>', 'write to this file instead of stdout')
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent buffer export --out backlog.jsonl\n  $ edge-agent buffer export --queue site-broker | gzip > site.jsonl.gz',
      ),
  ).action((o: ConfigFlags & { queue?: string; out?: string }) => done(exportRows(ctx, o)))
  withConfigOptions(
    buffer
      .command('drops')
      .description(
        'what was dropped, as ranges: reason, rule, topic, message times, count and ids (kept across restarts)',
      )
      .option(
        '--since <time>',
        'only ranges whose last drop is at or after this time (ISO 8601, or a duration like 2h / 30m / 7d)',
        sinceTime,
      )
      .option('--rule <id>', 'only this bridge rule')
      .option('--json', 'print JSON', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent buffer drops --since 24h\n  $ edge-agent buffer drops --rule telemetry --json | jq .total',
      ),
  ).action((o: ConfigFlags & { since?: number; rule?: string; json: boolean }) => done(drops(ctx, o)))
  return buffer
}

/** Opens the buffer file of the configured dataDir, or reports why not. */
function openInspector(ctx: CommandContext, flags: ConfigFlags, write = false): BufferInspector | number {
  const loaded = loadOrReport(ctx, flags)
  if (typeof loaded === 'number') return loaded
  try {
    return BufferInspector.open(loaded.config.dataDir, { write })
  } catch (e) {
    if (!isBufferError(e)) throw e
    ctx.err(`edge-agent: ${e.message}\n`)
    return ExitCode.FAILURE
  }
}

async function stats(ctx: CommandContext, o: Flags & { url?: string }): Promise<number> {
  const base = adminUrl(ctx, o)
  if (typeof base === 'number') return base
  let live: BufferStats | undefined
  try {
    const res = await fetch(new URL('/status', base), { signal: AbortSignal.timeout(3_000) })
    if (res.ok) live = ((await res.json()) as AgentStatus).buffer
  } catch {
    // not running: read the file below
  }
  if (live !== undefined) {
    ctx.out(o.json ? JSON.stringify({ source: 'agent', ...live }, null, 2) + '\n' : renderLive(live))
    return ExitCode.OK
  }
  const inspector = openInspector(ctx, o)
  if (typeof inspector === 'number') return inspector
  try {
    const queues = inspector.queues()
    const now = Date.now()
    const rows = queues.map((q) => ({
      queue: q.queue,
      depth: q.depth,
      bytes: q.bytes,
      oldestAgeMs: q.oldestCreatedAt === null ? null : now - q.oldestCreatedAt,
    }))
    if (o.json) ctx.out(JSON.stringify({ source: 'file', queues: rows }, null, 2) + '\n')
    else {
      ctx.out(queueTable(rows.map((r) => ({ ...r, inFlight: undefined }))) + '\n')
      ctx.out('\n(agent not running: read from the file; drop counters and health come from a running agent)\n')
    }
    return ExitCode.OK
  } finally {
    inspector.close()
  }
}

function renderLive(s: BufferStats): string {
  const lines = [
    `buffer     ${s.health.state}${s.health.reasons.length ? ` (${s.health.reasons.join(', ')})` : ''}  durability ${s.durability}`,
    `capacity   ${bytes(s.totals.bytes)} of ${bytes(s.limits.effectiveMaxBytes)} used${s.limits.freeBytes === null ? '' : `, ${bytes(s.limits.freeBytes)} free on disk`}`,
    `rates      ${s.rates.appendPerSec.toFixed(1)}/s in, ${s.rates.ackPerSec.toFixed(1)}/s out`,
    '',
    queueTable(s.queues),
    '',
  ]
  const drops = Object.entries(s.drops.byReason).filter(([, n]) => (n ?? 0) > 0)
  const durable = s.drops.sinceCreated
  const created = Object.entries(durable?.byReason ?? {}).filter(([, n]) => (n ?? 0) > 0)
  if (drops.length === 0 && created.length === 0) lines.push('drops      none')
  else {
    const reasons = [...new Set([...drops.map(([r]) => r), ...created.map(([r]) => r)])].sort()
    const since = durable ? ` (since ${new Date(durable.since).toISOString()})` : ''
    lines.push(
      table(
        ['DROPPED', 'THIS RUN', `SINCE CREATED${since}`],
        reasons.map((r) => [
          r,
          String(s.drops.byReason[r as keyof typeof s.drops.byReason] ?? 0),
          durable ? String(durable.byReason[r as keyof typeof durable.byReason] ?? 0) : '-',
        ]),
      ),
    )
  }
  return lines.join('\n') + '\n'
}

function queueTable(
  queues: readonly {
    queue: string
    depth: number
    bytes: number
    oldestAgeMs: number | null
    inFlight?: number | undefined
  }[],
): string {
  if (queues.length === 0) return 'QUEUE  (empty: nothing waits to go upstream)'
  return table(
    ['QUEUE', 'MESSAGES', 'BYTES', 'OLDEST', 'IN FLIGHT'],
    queues.map((q) => [
      q.queue,
      String(q.depth),
      bytes(q.bytes),
      q.oldestAgeMs === null ? '-' : age(q.oldestAgeMs),
      q.inFlight === undefined ? '-' : String(q.inFlight),
    ]),
  )
}

async function peek(ctx: CommandContext, o: Flags & { limit: number }): Promise<number> {
  const inspector = openInspector(ctx, o)
  if (typeof inspector === 'number') return inspector
  try {
    const rows = inspector.peek(o.queue, o.limit)
    if (o.json) {
      for (const r of rows) ctx.out(JSON.stringify(exportLine(r)) + '\n')
      return ExitCode.OK
    }
    if (rows.length === 0) {
      ctx.out('nothing buffered\n')
      return ExitCode.OK
    }
    const now = Date.now()
    ctx.out(
      table(
        ['ID', 'QUEUE', 'TOPIC', 'QOS', 'PRIO', 'AGE', 'SIZE', 'PAYLOAD'],
        rows.map((r) => [
          String(r.id),
          r.queue,
          r.topic,
          String(r.qos),
          String(r.priority),
          age(now - r.createdAt),
          String(r.payload.length),
          preview(r.payload),
        ]),
      ) + '\n',
    )
    return ExitCode.OK
  } finally {
    inspector.close()
  }
}

async function purge(ctx: CommandContext, o: ConfigFlags & { queue?: string; yes: boolean }): Promise<number> {
  const inspector = openInspector(ctx, o, true)
  if (typeof inspector === 'number') return inspector
  try {
    const n = inspector.count(o.queue)
    const what = `${n} buffered message${n === 1 ? '' : 's'}${o.queue === undefined ? '' : ` of queue ${o.queue}`}`
    if (n === 0) {
      ctx.out(`nothing to purge\n`)
      return ExitCode.OK
    }
    if (!o.yes) {
      if (!(await ctx.confirm(`Delete ${what}? They will never reach the upstream.`))) {
        ctx.err('not purged (confirm on a terminal, or pass --yes)\n')
        return ExitCode.FAILURE
      }
    }
    const deleted = inspector.purge(o.queue)
    ctx.out(`purged ${deleted} message${deleted === 1 ? '' : 's'}\n`)
    return ExitCode.OK
  } finally {
    inspector.close()
  }
}

async function exportRows(ctx: CommandContext, o: ConfigFlags & { queue?: string; out?: string }): Promise<number> {
  const inspector = openInspector(ctx, o)
  if (typeof inspector === 'number') return inspector
  let file: WriteStream | undefined
  try {
    const total = inspector.count(o.queue)
    file = o.out === undefined ? undefined : createWriteStream(o.out, { mode: 0o600 })
    const write = async (line: string): Promise<void> => {
      if (file === undefined) ctx.out(line)
      else if (!file.write(line)) await once(file, 'drain')
    }
    const progress = ctx.stderrIsTty ? new Progress(ctx, total) : undefined
    let n = 0
    for (const row of inspector.rows(o.queue)) {
      await write(JSON.stringify(exportLine(row)) + '\n')
      // Counted here, not inside the progress bar: without a terminal there is none.
      n++
      progress?.update(n)
    }
    progress?.finish(n)
    if (file !== undefined) {
      file.end()
      await once(file, 'finish')
      ctx.err(`exported ${n} message${n === 1 ? '' : 's'} to ${o.out ?? ''}\n`)
    }
    return ExitCode.OK
  } finally {
    inspector.close()
  }
}

/** ISO 8601 time or a duration back from now ('90s', '30m', '2h', '7d') → epoch ms. */
function sinceTime(v: string): number {
  const d = /^(\d+)(s|m|h|d)$/.exec(v)
  if (d !== null)
    return Date.now() - Number(d[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[d[2] as 's' | 'm' | 'h' | 'd']
  const t = Date.parse(v)
  if (Number.isNaN(t))
    throw new InvalidArgumentError('expected an ISO 8601 time (2026-01-31T08:00:00Z) or a duration (30m, 2h, 7d)')
  return t
}

async function drops(
  ctx: CommandContext,
  o: ConfigFlags & { since?: number; rule?: string; json: boolean },
): Promise<number> {
  const inspector = openInspector(ctx, o)
  if (typeof inspector === 'number') return inspector
  try {
    const ranges = inspector.drops({
      ...(o.since === undefined ? {} : { since: o.since }),
      ...(o.rule === undefined ? {} : { rule: o.rule }),
    })
    const totals = inspector.dropTotals()
    const total = ranges.reduce((n, r) => n + r.count, 0)
    if (o.json) {
      const out = {
        total,
        ranges: ranges.map(rangeJson),
        sinceCreated: totals,
      }
      ctx.out(JSON.stringify(out, null, 2) + '\n')
      return ExitCode.OK
    }
    if (ranges.length === 0)
      ctx.out(
        'no drops recorded' + (o.since !== undefined || o.rule !== undefined ? ' matching the filter' : '') + '\n',
      )
    else {
      ctx.out(
        table(
          ['REASON', 'RULE', 'QUEUE', 'TOPIC', 'FIRST', 'LAST', 'COUNT', 'IDS'],
          ranges.map((r) => [
            r.reason,
            r.rule || '-',
            r.queue,
            r.topic,
            iso(r.firstAt),
            iso(r.lastAt),
            String(r.count),
            ids(r),
          ]),
        ) + '\n',
      )
      ctx.out(
        `\n${total} message${total === 1 ? '' : 's'} dropped in ${ranges.length} range${ranges.length === 1 ? '' : 's'}\n`,
      )
    }
    if (totals !== null && totals.ledger.trimmedRows > 0) {
      ctx.out(
        `(${totals.ledger.trimmedRows} older ranges, ${totals.ledger.trimmedDrops} drops, were trimmed from the ledger; totals still count them)\n`,
      )
    }
    return ExitCode.OK
  } finally {
    inspector.close()
  }
}

function rangeJson(r: LedgerRange): Record<string, unknown> {
  return { ...r, firstAt: iso(r.firstAt), lastAt: iso(r.lastAt) }
}

function ids(r: LedgerRange): string {
  if (r.firstId === null || r.lastId === null) return '-'
  return r.firstId === r.lastId ? String(r.firstId) : `${r.firstId}-${r.lastId}`
}

function iso(t: number): string {
  return new Date(t).toISOString()
}

function exportLine(r: PeekedMessage): Record<string, unknown> {
  return {
    id: r.id,
    queue: r.queue,
    topic: r.topic,
    qos: r.qos,
    retain: r.retain,
    priority: r.priority,
    rule: r.rule,
    createdAt: new Date(r.createdAt).toISOString(),
    expiresAt: r.expiresAt === null ? null : new Date(r.expiresAt).toISOString(),
    payload: r.payload.toString('base64'),
    ...(isUtf8(r.payload) ? { payloadText: r.payload.toString('utf8') } : {}),
    ...(r.properties === undefined ? {} : { properties: exportProperties(r.properties) }),
  }
}

/** MQTT 5 properties as JSON: binary Correlation Data in base64, like the payload. */
function exportProperties(p: object): object {
  const data = (p as { correlationData?: unknown }).correlationData
  return Buffer.isBuffer(data) ? { ...p, correlationData: data.toString('base64') } : p
}

/** A one-line progress bar on stderr, redrawn at most every 100 ms. */
class Progress {
  #last = 0
  readonly #started = Date.now()
  constructor(
    private readonly ctx: CommandContext,
    private readonly total: number,
  ) {}

  update(n: number): void {
    const now = Date.now()
    if (now - this.#last < 100 && n < this.total) return
    this.#last = now
    const pct = this.total === 0 ? 1 : n / this.total
    const width = 30
    const filled = Math.round(pct * width)
    const rate = n / Math.max(0.001, (now - this.#started) / 1000)
    this.ctx.err(
      `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${n}/${this.total} ${(pct * 100).toFixed(0)}%  ${rate.toFixed(0)} msg/s `,
    )
  }

  finish(n: number): void {
    this.update(n)
    this.ctx.err('\n')
  }
}

function preview(b: Buffer): string {
  const text = isUtf8(b) ? b.toString('utf8').replace(/[\r\n\t]/g, ' ') : `0x${b.subarray(0, 24).toString('hex')}`
  return text.length > 40 ? `${text.slice(0, 37)}...` : text
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`
  return `${(n / 1073741824).toFixed(2)} GiB`
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`
}
