// Secrets never leave the process in clear: `config show`, logs and /status
// see this redacted copy.
import { isSecretPath } from './load.js'

export function redactConfig(value: unknown, path: string[] = []): unknown {
  if (Array.isArray(value)) return value.map((v, i) => redactConfig(v, [...path, String(i)]))
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [
        k,
        isSecretPath([...path, k]) && v !== '' ? '[redacted]' : redactConfig(v, [...path, k]),
      ]),
    )
  }
  if (typeof value === 'string' && /^[a-z]+:\/\/[^/@]*:[^/@]*@/i.test(value)) {
    // credentials in a URL: mqtt://user:pass@host
    return value.replace(/^([a-z]+:\/\/[^/:@]*):[^/@]*@/i, '$1:[redacted]@')
  }
  return value
}
