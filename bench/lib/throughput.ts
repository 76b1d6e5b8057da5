// Launcher for the throughput check (throughput-main.ts), run in its own process.
import { spawnNodeProgram } from './proc.js'

export interface ThroughputResult {
  messages: number
  ms: number
  perSec: number
}

/** QoS 1 publish → subscribe round trip through the broker on `port`. Rejects on failure or timeout. */
export async function measureThroughput(
  port: number,
  messages = 20_000,
  timeoutMs = 120_000,
): Promise<ThroughputResult> {
  let out = ''
  const proc = await spawnNodeProgram(new URL('./throughput-main.ts', import.meta.url), [], {
    name: 'throughput',
    env: {
      ...process.env,
      EDGE_BENCH_TARGET_PORT: String(port),
      EDGE_BENCH_MESSAGES: String(messages),
      EDGE_BENCH_TIMEOUT_MS: String(timeoutMs),
    },
    onStdout: (s) => {
      out += s
    },
  })
  // The program has its own deadline; this one only guards against a wedged child.
  const guard = setTimeout(() => void proc.stop('SIGKILL'), timeoutMs + 15_000)
  const exit = await proc.exited
  clearTimeout(guard)
  const line = out.trim().split('\n').pop() ?? ''
  let parsed: Partial<ThroughputResult> & { error?: string } = {}
  try {
    parsed = JSON.parse(line) as typeof parsed
  } catch {
    // reported below
  }
  if (exit.code !== 0 || typeof parsed.perSec !== 'number') {
    throw new Error(`throughput check failed (exit ${exit.code ?? exit.signal}): ${parsed.error ?? proc.output()}`)
  }
  return parsed as ThroughputResult
}
