// Loads the site config once, at the edge of the process:
//   schema defaults < YAML file < EDGE_AGENT_* environment < --set flags
// then validates it against the schema (every problem at once), runs the
// semantic checks the schema cannot express, and deep-freezes the result.
// Nothing here touches state: an invalid config is refused before the data
// directory is created or a port is opened (exit 78, EX_CONFIG).
import { readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import type { ErrorObject } from 'ajv'
import {
  LineCounter,
  isMap,
  isNode,
  isPair,
  isScalar,
  parse as parseYamlValue,
  parseDocument,
  type Document,
} from 'yaml'
import type { AgentConfig } from './schema.js'
import { ConfigError, type ConfigIssue } from './errors.js'
import { semanticIssues } from './semantic.js'
import { fileIssues } from './files.js'
import { loadValidator, type JsonSchemaNode } from './validator.js'

const { validate: validateSchema, schema: configSchema } = await loadValidator()

export const ENV_PREFIX = 'EDGE_AGENT_'
/** Environment variable naming the config file (not a config key). */
export const ENV_CONFIG_FILE = 'EDGE_AGENT_CONFIG'
/** EDGE_AGENT_* variables that are not config keys (locate.ts, tests, packagers). */
export const NON_CONFIG_ENV: ReadonlySet<string> = new Set([ENV_CONFIG_FILE, 'EDGE_AGENT_SYSCONFDIR'])

export interface LoadConfigOptions {
  /** Path of the YAML file; undefined runs on defaults. */
  readonly file?: string | undefined
  /** Usually process.env. */
  readonly env: Readonly<Record<string, string | undefined>>
  /** `key.path=value` strings from --set flags, in order. */
  readonly sets?: readonly string[]
  /** Directory that relative paths given outside a file resolve against. */
  readonly cwd: string
  /** The file's text, already in hand (an edit checked before it is written); file still names it. */
  readonly text?: string
}

export interface LoadedConfig {
  readonly config: Readonly<AgentConfig>
  /** Absolute path of the file read, if any. */
  readonly file: string | undefined
}

type Path = (string | number)[]

export function loadConfig(opts: LoadConfigOptions): LoadedConfig {
  const file = opts.file === undefined ? undefined : resolve(opts.cwd, opts.file)
  let raw: Record<string, unknown> = {}
  let doc: Document | undefined
  let lines: LineCounter | undefined
  if (file !== undefined) {
    ;({ raw, doc, lines } = readYaml(file, opts.text))
  }

  // Remember which layer set which path, so that an error names its source.
  const origins = new Map<string, string>()
  const issues: ConfigIssue[] = []
  for (const [name, value] of Object.entries(opts.env)) {
    if (!name.startsWith(ENV_PREFIX) || NON_CONFIG_ENV.has(name) || value === undefined) continue
    const source = `env ${name}`
    const path = envNameToPath(name.slice(ENV_PREFIX.length))
    if (typeof path === 'string') {
      issues.push({ source, path: '', message: path })
      continue
    }
    setPath(raw, path, coerce(value, schemaAt(path)))
    origins.set(formatPath(path), source)
  }
  for (const assignment of opts.sets ?? []) {
    const source = `--set ${assignment.split('=')[0] ?? ''}`
    const parsed = parseSet(assignment)
    if (typeof parsed === 'string') {
      issues.push({ source, path: '', message: parsed })
      continue
    }
    setPath(raw, parsed.path, coerce(parsed.value, schemaAt(parsed.path)))
    origins.set(formatPath(parsed.path), source)
  }

  if (raw['dataDir'] === undefined) raw['dataDir'] = defaultDataDir(opts.env, opts.cwd)
  else if (typeof raw['dataDir'] === 'string' && !isAbsolute(raw['dataDir'])) {
    // A relative dataDir in a file means "next to the file", not "wherever the
    // service happened to start"; from env or flags it means the cwd.
    const base = file !== undefined && !origins.has('dataDir') ? dirname(file) : opts.cwd
    raw['dataDir'] = resolve(base, raw['dataDir'])
  }

  const locate = (path: Path, key?: string): string => {
    // An unknown key set by a flag or env names that flag, not its parent's source.
    if (key !== undefined) {
      const p = formatPath([...path, key])
      for (const [k, origin] of origins) if (k === p || k.startsWith(`${p}.`) || k.startsWith(`${p}[`)) return origin
    }
    for (let n = path.length; n >= 0; n--) {
      const origin = origins.get(formatPath(path.slice(0, n)))
      if (origin !== undefined) return origin
    }
    if (file === undefined || doc === undefined || lines === undefined) return 'defaults'
    return `${file}${positionOf(doc, lines, path, key)}`
  }

  if (issues.length === 0 && !validateSchema(raw)) {
    for (const e of condenseErrors(validateSchema.errors ?? [])) issues.push(describeAjvError(e, raw, locate))
  }
  if (issues.length === 0) {
    for (const s of [...semanticIssues(raw as AgentConfig), ...fileIssues(raw as AgentConfig)]) {
      issues.push({ source: locate(s.path), path: formatPath(s.path), message: s.message })
    }
  }
  if (issues.length > 0) throw new ConfigError('EDGE_ERR_CONFIG_INVALID', issues, file)
  return { config: deepFreeze(raw as AgentConfig), file }
}

/** `$STATE_DIRECTORY` (systemd; may list several, the first is ours), else ./data. */
export function defaultDataDir(env: Readonly<Record<string, string | undefined>>, cwd: string): string {
  const state = env['STATE_DIRECTORY']?.split(':')[0]
  return state ? resolve(cwd, state) : resolve(cwd, 'data')
}

function readYaml(file: string, given?: string): { raw: Record<string, unknown>; doc: Document; lines: LineCounter } {
  let text: string
  try {
    text = given ?? readFileSync(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new ConfigError(
      code === 'ENOENT' ? 'EDGE_ERR_CONFIG_NOT_FOUND' : 'EDGE_ERR_CONFIG_UNREADABLE',
      [
        {
          source: file,
          path: '',
          message: code === 'ENOENT' ? 'file not found' : `cannot read (${code ?? String(err)})`,
        },
      ],
      file,
      { cause: err },
    )
  }
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false })
  if (doc.errors.length > 0) {
    throw new ConfigError(
      'EDGE_ERR_CONFIG_SYNTAX',
      doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0])
        return {
          source: `${file}:${pos.line}:${pos.col}`,
          path: '',
          message: `YAML syntax: ${e.message.split('\n')[0] ?? ''}`,
        }
      }),
      file,
    )
  }
  const value: unknown = doc.toJS()
  if (value === null || value === undefined) return { raw: {}, doc, lines }
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(
      'EDGE_ERR_CONFIG_INVALID',
      [{ source: file, path: '', message: 'must be a mapping of keys (site:, broker:, …)' }],
      file,
    )
  }
  return { raw: value as Record<string, unknown>, doc, lines }
}

function positionOf(doc: Document, lines: LineCounter, path: Path, key?: string): string {
  // Walk down as far as the document goes: a missing key points at its parent.
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true)
    if (!isNode(node)) continue
    let offset = node.range?.[0]
    if (key !== undefined && n === path.length && isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key)
      if (pair && isScalar(pair.key)) offset = pair.key.range?.[0]
    }
    if (offset === undefined) continue
    const pos = lines.linePos(offset)
    return `:${pos.line}:${pos.col}`
  }
  return ''
}

/** anyOf/enum failures arrive as several errors for one value; keep the useful one. */
function condenseErrors(errors: ErrorObject[]): ErrorObject[] {
  const anyOfPaths = new Set(errors.filter((e) => e.keyword === 'anyOf').map((e) => e.instancePath))
  return errors.filter((e) => !(anyOfPaths.has(e.instancePath) && e.keyword !== 'anyOf'))
}

function describeAjvError(e: ErrorObject, root: unknown, locate: (p: Path, key?: string) => string): ConfigIssue {
  const path = e.instancePath
    .split('/')
    .slice(1)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, '/').replace(/~0/g, '~')))
  const value = getPath(root, path)
  const schema = schemaAt(path)
  const got = isSecretPath(path) ? '' : ` (got ${preview(value)})`
  const params = e.params as Record<string, unknown>
  switch (e.keyword) {
    case 'additionalProperty':
    case 'additionalProperties': {
      const key = String(params['additionalProperty'])
      const allowed = Object.keys(schema?.properties ?? {})
      const guess = closest(key, allowed)
      return {
        source: locate(path, key),
        path: formatPath([...path, key]),
        message: `unknown key${guess ? ` (did you mean '${guess}'?)` : ''}; expected one of: ${allowed.join(', ')}`,
      }
    }
    case 'required':
      return {
        source: locate(path),
        path: formatPath([...path, String(params['missingProperty'])]),
        message: 'is required',
      }
    case 'enum':
      return {
        source: locate(path),
        path: formatPath(path),
        message: `must be one of ${(params['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}${got}`,
      }
    case 'type':
      return {
        source: locate(path),
        path: formatPath(path),
        message: `must be ${articled(String(params['type']))}${got}`,
      }
    case 'pattern':
      return {
        source: locate(path),
        path: formatPath(path),
        message: `must match ${String(params['pattern'])}${schema?.description ? ` (${schema.description})` : ''}${got}`,
      }
    default:
      return { source: locate(path), path: formatPath(path), message: `${e.message ?? 'is invalid'}${got}` }
  }
}

function articled(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`
}

/** 'broker.listeners[0].port' */
export function formatPath(path: readonly (string | number)[]): string {
  let out = ''
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : out === '' ? seg : `.${seg}`
  return out
}

function preview(value: unknown): string {
  if (value === undefined) return 'nothing'
  const s = JSON.stringify(value) ?? String(value)
  return s.length > 60 ? `${s.slice(0, 57)}...` : s
}

const SECRET_KEY = /pass(word)?|secret|token|privatekey|key$/i
export function isSecretPath(path: readonly (string | number)[]): boolean {
  return path.some((s) => typeof s === 'string' && SECRET_KEY.test(s))
}

function closest(key: string, options: string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  for (const o of options) {
    const d = levenshtein(key.toLowerCase(), o.toLowerCase())
    if (d < bestDistance) {
      best = o
      bestDistance = d
    }
  }
  return bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined
}

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = cur
  }
  return prev[b.length] ?? 0
}

/** The schema node at a path, following object properties and array items. */
export function schemaAt(path: readonly (string | number)[]): JsonSchemaNode | undefined {
  let node: JsonSchemaNode | undefined = configSchema
  for (const seg of path) {
    if (node === undefined) return undefined
    node = typeof seg === 'number' ? node.items : node.properties?.[seg]
  }
  return node
}

/** EDGE_AGENT_BROKER__LIMITS__MAX_CONNECTIONS → ['broker','limits','maxConnections'] */
function envNameToPath(rest: string): Path | string {
  const path: Path = []
  for (const seg of rest.split('__')) {
    const node = schemaAt(path)
    if (node?.type === 'array') {
      if (!/^\d+$/.test(seg)) return `'${seg}' must be an array index`
      path.push(Number(seg))
      continue
    }
    const wanted = seg.replace(/_/g, '').toLowerCase()
    const key = Object.keys(node?.properties ?? {}).find((k) => k.toLowerCase() === wanted)
    if (key === undefined) {
      return `no config key matches '${seg}' under '${formatPath(path) || '(top level)'}' (separate levels with __, e.g. EDGE_AGENT_BROKER__LIMITS__MAX_CONNECTIONS)`
    }
    path.push(key)
  }
  return path
}

/** 'broker.listeners[0].port=1884' or 'broker.listeners.0.port=1884' */
function parseSet(assignment: string): { path: Path; value: string } | string {
  const eq = assignment.indexOf('=')
  if (eq <= 0) return `expected key.path=value, got '${assignment}'`
  const keyPart = assignment.slice(0, eq).trim()
  const path: Path = []
  for (const seg of keyPart.replace(/\[(\d+)\]/g, '.$1').split('.')) {
    if (seg === '') return `empty segment in key path '${keyPart}'`
    path.push(/^\d+$/.test(seg) ? Number(seg) : seg)
  }
  return { path, value: assignment.slice(eq + 1) }
}

/** Text from env or flags, typed by what the schema expects at that path. */
function coerce(text: string, schema: JsonSchemaNode | undefined): unknown {
  switch (schema?.type) {
    case 'string':
      return text
    case 'integer':
    case 'number':
      return text.trim() !== '' && Number.isFinite(Number(text)) ? Number(text) : text
    case 'boolean':
      if (/^(true|yes|on|1)$/i.test(text)) return true
      if (/^(false|no|off|0)$/i.test(text)) return false
      return text
    default:
      try {
        return parseYamlValue(text) as unknown
      } catch {
        return text
      }
  }
}

function getPath(root: unknown, path: Path): unknown {
  let node = root
  for (const seg of path) {
    if (node === null || typeof node !== 'object') return undefined
    node = (node as Record<string | number, unknown>)[seg]
  }
  return node
}

function setPath(root: Record<string, unknown>, path: Path, value: unknown): void {
  let node: Record<string | number, unknown> = root
  path.forEach((seg, i) => {
    if (i === path.length - 1) {
      node[seg] = value
      return
    }
    const next = node[seg]
    if (next === null || typeof next !== 'object') {
      // Seed with the schema default, so that `--set broker.listeners[0].port=1884`
      // edits the default listener instead of creating a partial one.
      const fallback = schemaAt(path.slice(0, i + 1))?.default
      node[seg] =
        fallback !== undefined && typeof fallback === 'object'
          ? structuredClone(fallback)
          : typeof path[i + 1] === 'number'
            ? []
            : {}
    }
    node = node[seg] as Record<string | number, unknown>
  })
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}
