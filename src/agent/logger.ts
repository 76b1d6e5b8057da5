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

const REDACT = ['password', '*.password', '*.*.password', 'privateKey', '*.privateKey', 'config.upstreams[*].password']

/** The children of each root logger, so that a reload can change their level too. */
const families = new WeakMap<Logger, Set<WeakRef<Logger>>>()

/**
 * Sets the level of a root logger and of every child made from it (pino
 * copies the level into a child when it is made; live reload of log.level).
 */
export function setLogLevel(root: Logger, level: string): void {
  root.level = level
  for (const ref of families.get(root) ?? []) {
    const child = ref.deref()
    if (child === undefined) families.get(root)?.delete(ref)
    else child.level = level
  }
}

export async function createRootLogger(opts: LoggerOptions): Promise<Logger> {
  const children = new Set<WeakRef<Logger>>()
  const root = await buildRoot(opts, (child) => void children.add(new WeakRef(child)))
  families.set(root, children)
  return root
}

async function buildRoot(opts: LoggerOptions, onChild: (child: Logger) => void): Promise<Logger> {
  const base = {
    onChild,
    level: opts.level,
    // The cause as a nested object, not appended to the message: our errors
    // already quote their cause, which the default serializer then repeated.
    serializers: { err: pino.stdSerializers.errWithCause },
    redact: { paths: REDACT, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  }
  const pretty = opts.format === 'pretty' || (opts.format === 'auto' && (opts.isTty ?? process.stdout.isTTY))
  if (opts.destination) return pino(base, opts.destination)
  if (pretty) {
    // Loaded only here: it costs memory that a headless gateway should not pay.
    const { default: build } = await import('pino-pretty')
    return pino(
      base,
      build({ colorize: true, sync: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }),
    )
  }
  return pino(base, pino.destination({ fd: 1, sync: true }))
}
