// Network namespaces and veth links for partition tests (Purdue levels).
//
// Every namespace and device gets a unique name (pid + counter), so parallel
// runs and other users' namespaces never collide; everything created is
// removed in the test's cleanup, pass or fail (a namespace's veth ends go
// with it). Register the lab BEFORE starting processes inside it: cleanups
// run in reverse order, so the processes are killed first and the namespaces
// can then really go away.
//
// Addresses are 10.200.<link>.1/30 and .2/30 on each link; they exist only
// inside namespaces this helper created.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { Scope } from './scope.js'

const run = promisify(execFile)

let counter = 0
function uniq(): string {
  counter++
  return `${(process.pid % 46656).toString(36)}${counter.toString(36)}`
}

async function ip(args: readonly string[]): Promise<void> {
  try {
    await run('ip', args, { timeout: 10_000 })
  } catch (err) {
    const e = err as { stderr?: string; message: string }
    throw new Error(`ip ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}`)
  }
}

/** Why namespaces cannot be used here (not root, no `ip`, no permission), or undefined. */
export async function netnsUnavailable(): Promise<string | undefined> {
  const probe = `eaprobe${uniq()}`
  try {
    await run('ip', ['netns', 'add', probe], { timeout: 10_000 })
  } catch (err) {
    const e = err as { stderr?: string; code?: string; message: string }
    return `cannot create network namespaces here (ip netns add: ${(e.stderr ?? e.code ?? e.message).trim()}); run as root with CAP_SYS_ADMIN`
  }
  await run('ip', ['netns', 'del', probe]).catch(() => undefined)
  return undefined
}

export interface Namespace {
  readonly name: string
  /** Prefix for a command to run inside: ['ip', 'netns', 'exec', name]. */
  readonly exec: string[]
}

export interface LinkEnd {
  readonly ns: Namespace
  readonly dev: string
  readonly address: string
}

export interface Link {
  readonly a: LinkEnd
  readonly b: LinkEnd
  /** Both ends down: nothing passes, established TCP connections stall. */
  down(): Promise<void>
  up(): Promise<void>
}

export class NetnsLab {
  readonly #namespaces: Namespace[] = []
  #links = 0
  readonly #id = uniq()

  constructor(t: Scope) {
    t.after(() => this.destroy())
  }

  async namespace(label: string): Promise<Namespace> {
    const name = `ea-${label}-${this.#id}`
    await ip(['netns', 'add', name])
    const ns: Namespace = { name, exec: ['ip', 'netns', 'exec', name] }
    this.#namespaces.push(ns)
    await ip(['-n', name, 'link', 'set', 'lo', 'up'])
    return ns
  }

  /** A veth pair between two namespaces, addressed 10.200.<n>.1 (a) and .2 (b). */
  async link(a: Namespace, b: Namespace): Promise<Link> {
    const n = ++this.#links
    if (n > 250) throw new Error('too many links in one lab')
    const devA = `ea${this.#id}l${n}a`.slice(0, 15)
    const devB = `ea${this.#id}l${n}b`.slice(0, 15)
    await ip(['link', 'add', devA, 'netns', a.name, 'type', 'veth', 'peer', 'name', devB, 'netns', b.name])
    const addrA = `10.200.${n}.1`
    const addrB = `10.200.${n}.2`
    await ip(['-n', a.name, 'addr', 'add', `${addrA}/30`, 'dev', devA])
    await ip(['-n', b.name, 'addr', 'add', `${addrB}/30`, 'dev', devB])
    await ip(['-n', a.name, 'link', 'set', devA, 'up'])
    await ip(['-n', b.name, 'link', 'set', devB, 'up'])
    const set = async (state: 'up' | 'down'): Promise<void> => {
      await ip(['-n', a.name, 'link', 'set', devA, state])
      await ip(['-n', b.name, 'link', 'set', devB, state])
    }
    return {
      a: { ns: a, dev: devA, address: addrA },
      b: { ns: b, dev: devB, address: addrB },
      down: () => set('down'),
      up: () => set('up'),
    }
  }

  async destroy(): Promise<void> {
    for (const ns of this.#namespaces.splice(0).reverse()) {
      await run('ip', ['netns', 'del', ns.name]).catch(() => undefined)
    }
  }
}
