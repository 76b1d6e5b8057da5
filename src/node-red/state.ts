// Node-RED's files in the agent's state directory (<dataDir>/node-red, 0700):
// its userDir (flows.json, flows_cred.json, context), the admin users, the
// credential secret and the CLI's bearer token. Secrets are 0600 and written
// atomically; the credential secret is made once and never replaced, since
// flows_cred.json cannot be read without it.
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NodeRedError } from './errors.js'

export interface NodeRedUser {
  readonly username: string
  /** bcrypt hash. */
  readonly password: string
  readonly permissions: '*' | 'read'
}

export class NodeRedState {
  readonly dir: string

  constructor(dataDir: string) {
    this.dir = join(dataDir, 'node-red')
  }

  get usersFile(): string {
    return join(this.dir, 'users.json')
  }

  get secretFile(): string {
    return join(this.dir, '.credential-secret')
  }

  /** The running Node-RED's URL and the CLI's bearer token (0600), while the agent runs. */
  get endpointFile(): string {
    return join(this.dir, 'cli.json')
  }

  get flowsFile(): string {
    return join(this.dir, 'flows.json')
  }

  async ensureDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
    await chmod(this.dir, 0o700)
  }

  /** The users; none when the file does not exist yet. */
  async users(): Promise<NodeRedUser[]> {
    let text: string
    try {
      text = await readFile(this.usersFile, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw new NodeRedError('EDGE_ERR_NODERED_STATE', `${this.usersFile}: ${(err as Error).message}`, { cause: err })
    }
    let doc: unknown
    try {
      doc = JSON.parse(text)
    } catch (err) {
      throw new NodeRedError(
        'EDGE_ERR_NODERED_STATE',
        `${this.usersFile}: not JSON; fix it or remove it and run edge-agent nodered passwd again`,
        { cause: err },
      )
    }
    if (!Array.isArray(doc) || !doc.every(isUser)) {
      throw new NodeRedError(
        'EDGE_ERR_NODERED_STATE',
        `${this.usersFile}: expected an array of {username, password, permissions}`,
      )
    }
    return doc
  }

  /** Adds or replaces one user (bcrypt hash given). */
  async setUser(user: NodeRedUser): Promise<'added' | 'replaced'> {
    await this.ensureDir()
    const users = await this.users()
    const i = users.findIndex((u) => u.username === user.username)
    if (i >= 0) users[i] = user
    else users.push(user)
    await writeSecret(this.usersFile, JSON.stringify(users, null, 2) + '\n')
    return i >= 0 ? 'replaced' : 'added'
  }

  async removeUser(username: string): Promise<boolean> {
    const users = await this.users()
    const kept = users.filter((u) => u.username !== username)
    if (kept.length === users.length) return false
    await writeSecret(this.usersFile, JSON.stringify(kept, null, 2) + '\n')
    return true
  }

  /** The secret flows_cred.json is encrypted with; made at first use, then kept. */
  async credentialSecret(): Promise<string> {
    try {
      const s = (await readFile(this.secretFile, 'utf8')).trim()
      if (s.length < 32)
        throw new NodeRedError(
          'EDGE_ERR_NODERED_STATE',
          `${this.secretFile}: too short; restore it from a backup (flows_cred.json needs it)`,
        )
      return s
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    const secret = randomBytes(32).toString('hex')
    await writeSecret(this.secretFile, secret + '\n', true)
    return secret
  }

  /** A new bearer token for the CLI, valid until the agent stops (written with the URL to cli.json). */
  newCliToken(): string {
    return randomBytes(32).toString('base64url')
  }
}

function isUser(u: unknown): u is NodeRedUser {
  if (u === null || typeof u !== 'object') return false
  const o = u as Record<string, unknown>
  return (
    typeof o['username'] === 'string' &&
    typeof o['password'] === 'string' &&
    (o['permissions'] === '*' || o['permissions'] === 'read')
  )
}

/** 0600, via a temporary file and rename; `exclusive` never overwrites. */
async function writeSecret(path: string, text: string, exclusive = false): Promise<void> {
  if (exclusive) {
    await writeFile(path, text, { mode: 0o600, flag: 'wx' })
    return
  }
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  await writeFile(tmp, text, { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, path)
}

/** User names as Node-RED's login form and our file accept them. */
export function checkUsername(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/.test(name)) {
    throw new NodeRedError(
      'EDGE_ERR_NODERED_USER_INVALID',
      `user name ${JSON.stringify(name.slice(0, 80))}: 1-64 of A-Z a-z 0-9 _ . @ -, starting with a letter or digit`,
    )
  }
}

export function checkPassword(password: string): void {
  // bcrypt reads at most 72 bytes; a longer password would be cut silently.
  const bytes = Buffer.byteLength(password)
  if (bytes < 8 || bytes > 72)
    throw new NodeRedError('EDGE_ERR_NODERED_USER_INVALID', `password: 8 to 72 bytes (got ${bytes})`)
}
