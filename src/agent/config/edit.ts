// Edits of the site config by commands (site, bridge, device): through the
// yaml library's document API, so that the operator's comments, key order and
// layout survive; checked against the schema and the semantic checks before
// anything is written; written atomically (temp file in the same directory,
// fsync, rename, fsync of the directory) with the old file's mode and owner.
// A refused edit leaves the file byte-identical.
import {
  closeSync,
  fchownSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { parseDocument, type Document } from 'yaml'
import { loadConfig, type LoadedConfig } from './load.js'
import { ConfigError } from './errors.js'

export class EditRefused extends Error {
  readonly code = 'EDGE_ERR_CONFIG_EDIT_REFUSED'
}

export interface EditOptions {
  /** Environment the result is validated with (STATE_DIRECTORY for the dataDir default). */
  readonly env: Readonly<Record<string, string | undefined>>
  readonly cwd: string
  /** Start from this text when the file does not exist (site init). */
  readonly initial?: string
}

export interface EditResult extends LoadedConfig {
  readonly changed: boolean
}

/**
 * Applies `mutate` to the document of `file` and writes it back if the
 * result is a valid config. `mutate` throws EditRefused to refuse (nothing is
 * written); a ConfigError means the result would be invalid (same).
 */
export function editConfigFile(file: string, mutate: (doc: Document) => void, opts: EditOptions): EditResult {
  let before: string
  try {
    before = readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || opts.initial === undefined) throw err
    before = opts.initial
  }
  const doc = parseDocument(before, { keepSourceTokens: false })
  if (doc.errors.length > 0)
    throw new EditRefused(`${file} has YAML syntax errors; fix them by hand first (edge-agent config validate)`)
  mutate(doc)
  const after = doc.toString({ lineWidth: 0 })
  // Only the file's own content decides (no EDGE_AGENT_* overrides): what is
  // written must stand on its own.
  const env = { STATE_DIRECTORY: opts.env['STATE_DIRECTORY'] }
  const loaded = loadConfig({ file, text: after, env, cwd: opts.cwd })
  if (after === before) return { ...loaded, changed: false }
  writeAtomic(file, after)
  return { ...loaded, changed: true }
}

/** Temp file beside the target, fsync, rename over it, fsync the directory. */
export function writeAtomic(file: string, text: string): void {
  const old = statOrUndefined(file)
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`)
  const fd = openSync(tmp, 'wx', old === undefined ? 0o640 : old.mode & 0o7777)
  try {
    writeSync(fd, text)
    if (old !== undefined) {
      try {
        fchownSync(fd, old.uid, old.gid)
      } catch {
        // Not root: the file stays ours, which it already was to be writable.
      }
    }
    fsyncSync(fd)
  } catch (err) {
    closeSync(fd)
    rmSync(tmp, { force: true })
    throw err
  }
  closeSync(fd)
  try {
    renameSync(tmp, file)
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  }
  const dir = openSync(dirname(file), 'r')
  try {
    fsyncSync(dir)
  } finally {
    closeSync(dir)
  }
}

function statOrUndefined(f: string): import('node:fs').Stats | undefined {
  try {
    return statSync(f)
  } catch {
    return undefined
  }
}

export { ConfigError }
