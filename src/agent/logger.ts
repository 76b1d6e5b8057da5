// The one root logger. Components get children of it ({ component }) and never
// build their own. JSON lines to stdout for journald; readable lines when
// stdout is a terminal. Writes are synchronous so the last lines before an
// exit are never lost (pino docs/asynchronous.md).
import { pino, type Logger, type DestinationStream } from 'pino'

export interface LoggerOptions {
  readonly level: string
  readonly format: 'auto' | 'json' | 'pretty'
  /** Where to write; defaults to stdout (fd 1). */
  readonly destination?: DestinationStream
  readonly isTty?: boolean
}

const REDACT = [
  'password',
  '*.password',
  '*.*.password',
  'privateKey',
  '*.privateKey',
  'config.upstreams[*].password',
]

export async function createRootLogger(opts: LoggerOptions): Promise<Logger> {
  const base = {
    level: opts.level,
    redact: { paths: REDACT, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  }
  const pretty = opts.format === 'pretty' || (opts.format === 'auto' && (opts.isTty ?? process.stdout.isTTY))
  if (opts.destination) return pino(base, opts.destination)
  if (pretty) {
    // Loaded only here: it costs memory that a headless gateway should not pay.
    const { default: build } = await import('pino-pretty')
    return pino(base, build({ colorize: true, sync: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }))
  }
  return pino(base, pino.destination({ fd: 1, sync: true }))
}
