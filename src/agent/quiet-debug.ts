// Imported first by main.ts, before anything loads aedes or mqtt-packet.
//
// mqtt-packet (aedes's parser and encoder for every device connection) calls
// the `debug` package on every packet and on every field it encodes. Even with
// nothing enabled, each call allocates an array for its arguments, a visible
// share of what the agent allocates per bridged message (docs/benchmarks.md,
// "Figures behind choices in the code"). `debug` reads DEBUG once, when
// it loads, so with DEBUG unset nothing can turn its output on later; a
// no-op takes its place in the module cache. With DEBUG set (troubleshooting
// a library), the real package loads and prints as usual.
import { Module, createRequire } from 'node:module'

/** A stand-in with the surface that libraries use: `debug(ns)(...)`, `.enabled`, `.extend()`. */
interface SilentDebug {
  (...args: unknown[]): void
  readonly namespace: string
  readonly enabled: boolean
  extend(sub: string, delimiter?: string): SilentDebug
}

function silentDebug(namespace: string): SilentDebug {
  // No parameters: a call allocates nothing.
  return Object.assign(function debug() {}, {
    namespace,
    enabled: false,
    color: '',
    diff: 0,
    log: () => undefined,
    destroy: () => true,
    extend: (sub: string, delimiter = ':') => silentDebug(`${namespace}${delimiter}${sub}`),
  })
}

Object.assign(silentDebug, {
  silenced: true,
  enable: () => undefined,
  disable: () => '',
  enabled: () => false,
  coerce: (v: unknown) => v,
  formatters: {},
  names: [],
  skips: [],
  humanize: (ms: number) => `${ms}ms`,
})

export function silenceDebug(env: NodeJS.ProcessEnv): boolean {
  if (env['DEBUG'] !== undefined && env['DEBUG'] !== '') return false
  const require = createRequire(import.meta.url)
  let done = false
  // Resolved from the libraries that call it, so a nested copy is covered too.
  for (const lib of ['mqtt-packet', 'mqtt', 'acme-client']) {
    let id: string
    try {
      id = createRequire(require.resolve(lib)).resolve('debug')
    } catch {
      continue
    }
    if (require.cache[id] !== undefined) continue
    const m = new Module(id)
    m.filename = id
    m.loaded = true
    m.exports = silentDebug
    require.cache[id] = m
    done = true
  }
  return done
}

silenceDebug(process.env)
