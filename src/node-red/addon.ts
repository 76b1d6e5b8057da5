// Where the optional Node-RED packages come from: the project's own
// node_modules (a development checkout, `npm ci` with optional packages), else
// the add-on tree the edge-agent-node-red package installs beside the release,
// <release>/addons/node-red/node_modules (scripts/build-release.sh). The base
// release does not hold node-red, so that a site without it pays nothing.
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { NodeRedError } from './errors.js'

/** <release>/addons/node-red/node_modules, from dist/node-red/. */
export const ADDON_MODULES = join(import.meta.dirname, '..', '..', 'addons', 'node-red', 'node_modules')

/** Loads `name` (node-red, bcryptjs) from the project or from the add-on tree. */
export async function loadAddonModule<T>(name: string): Promise<T> {
  try {
    const mod = (await import(name)) as { default?: T }
    return (mod.default ?? mod) as T
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err
  }
  const path = join(ADDON_MODULES, name)
  if (!existsSync(path)) {
    throw new NodeRedError(
      'EDGE_ERR_NODERED_NOT_INSTALLED',
      `the Node-RED add-on is not installed (no ${name}): install the edge-agent-node-red package, or set nodeRed.enabled: false`,
    )
  }
  // The add-on's packages are CommonJS; require resolves their own
  // dependencies inside the add-on tree.
  return createRequire(import.meta.url)(path) as T
}

/** Whether node-red can be loaded (resolved only, never loaded). */
export function nodeRedInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('node-red')
    return true
  } catch {
    return existsSync(join(ADDON_MODULES, 'node-red'))
  }
}
