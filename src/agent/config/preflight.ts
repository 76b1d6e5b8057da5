// What `run` would refuse at start that depends on the machine rather than
// on the config's text: the local CA an mqtts listener needs (unless it
// brings its own certificate, key and CA), the files a
// listener names, a data directory that can be written. `config validate`
// and `run` both call it, so that validate refuses everything run refuses
// and run exits 78 (fix the config, no restart loop) instead of 1.
import { accessSync, constants, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { AgentConfig } from './schema.js'
import { ConfigError, type ConfigIssue } from './errors.js'
import { formatPath } from './load.js'
import { needsLocalCa } from './paths.js'

/** Where the local CA keeps its key and certificate (src/certs caPaths: <dataDir>/certs/ca.{key,crt}). */
function caFiles(dataDir: string): string[] {
  return [join(dataDir, 'certs', 'ca.key'), join(dataDir, 'certs', 'ca.crt')]
}

export function preflightIssues(config: Readonly<AgentConfig>, source: string): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  const add = (path: (string | number)[], message: string): void =>
    void issues.push({ source, path: formatPath(path), message })

  issues.push(...dataDirIssues(config.dataDir, source))

  if (needsLocalCa(config) && !config.certs.autoInit && !caFiles(config.dataDir).every(exists)) {
    add(
      ['certs', 'autoInit'],
      `an mqtts listener needs the local CA and there is none in ${join(config.dataDir, 'certs')}: ` +
        'run `edge-agent certs init` (or `certs import-ca`), or set certs.autoInit: true',
    )
  }
  config.broker.listeners.forEach((l, i) => {
    for (const k of ['certFile', 'keyFile', 'caFile'] as const) {
      const f = l[k]
      if (f === undefined) continue
      const problem = unreadable(f)
      if (problem !== undefined) add(['broker', 'listeners', i, k], `cannot read ${f} (${problem})`)
    }
  })
  return issues
}

/** Throws a ConfigError (exit 78) listing what run would refuse. */
export function preflight(config: Readonly<AgentConfig>, file: string | undefined): void {
  const issues = preflightIssues(config, file ?? 'defaults')
  if (issues.length > 0) throw new ConfigError('EDGE_ERR_CONFIG_INVALID', issues, file)
}

function dataDirIssues(dataDir: string, source: string): ConfigIssue[] {
  const st = statOrUndefined(dataDir)
  if (st !== undefined && !st.isDirectory())
    return [{ source, path: 'dataDir', message: `${dataDir} exists and is not a directory` }]
  // The directory, or the nearest parent that exists, must let us write.
  let dir = dataDir
  while (statOrUndefined(dir) === undefined && dirname(dir) !== dir) dir = dirname(dir)
  if (statOrUndefined(dir)?.isDirectory() === false)
    return [{ source, path: 'dataDir', message: `cannot create ${dataDir}: ${dir} is not a directory` }]
  try {
    accessSync(dir, constants.W_OK | constants.X_OK)
  } catch {
    return [
      {
        source,
        path: 'dataDir',
        message: `${dir} is not writable by this user${dir === dataDir ? '' : ` (cannot create ${dataDir})`}`,
      },
    ]
  }
  return []
}

function exists(f: string): boolean {
  return statOrUndefined(f) !== undefined
}

function statOrUndefined(f: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(f)
  } catch {
    return undefined
  }
}

function unreadable(f: string): string | undefined {
  try {
    accessSync(f, constants.R_OK)
    return undefined
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err)
  }
}
