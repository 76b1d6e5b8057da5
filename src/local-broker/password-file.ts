// Password file of the local broker, in Mosquitto's `password_file` format so
// that a site moves from Mosquitto without resetting a device: one
// `username:hash` per line, `#` comments and blank lines ignored.
//
// Hashes read (what `mosquitto_passwd` writes):
// - `$7$<iterations>$<salt b64>$<hash b64>`: PBKDF2-HMAC-SHA512, 64-byte key
// - `$6$<salt b64>$<hash b64>`: one SHA-512 over password then salt (old, fast;
//   accepted so a migration works, replaced by `users passwd`)
// Hashes written: `$7$` with PBKDF2_ITERATIONS, which Mosquitto 2 also reads,
// so the file can move back too.
//
// Verification runs the KDF on libuv's thread pool (crypto.pbkdf2), never on
// the event loop, and compares in constant time. Unknown users cost the same
// KDF as known ones, so a login's duration does not tell which names exist.
import { createHash, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'
import { LocalBrokerError } from './errors.js'

const pbkdf2Async = promisify(pbkdf2)

/** Iterations of the hashes we write (OWASP's figure for PBKDF2-HMAC-SHA512). */
export const PBKDF2_ITERATIONS = 210_000
const KEY_BYTES = 64
const SALT_BYTES = 12
/** Above this a `$7$` line is refused: one login must not occupy a thread for minutes. */
const MAX_ITERATIONS = 10_000_000

type Hash =
  | { readonly kind: 'pbkdf2'; readonly iterations: number; readonly salt: Buffer; readonly key: Buffer }
  | { readonly kind: 'sha512'; readonly salt: Buffer; readonly key: Buffer }

export interface PasswordEntry {
  readonly username: string
  /** The hash as written in the file. */
  readonly hash: string
}

/** What went wrong where, for `EDGE_ERR_BROKER_PASSWORD_FILE`. */
export class PasswordFileError extends LocalBrokerError {
  override readonly name = 'PasswordFileError'
  constructor(message: string) {
    super('EDGE_ERR_BROKER_PASSWORD_FILE', message)
  }
}

/** Why `username` cannot be stored in a password file, or undefined. */
export function usernameProblem(username: string): string | undefined {
  if (username.length === 0) return 'must not be empty'
  if (username.includes(':')) return "must not contain ':'"

  if (/[\u0000-\u001f\u007f-\u009f]/.test(username)) return 'must not contain control characters'
  if (Buffer.byteLength(username) > 65535) return 'longer than 65535 bytes'
  return undefined
}

export class PasswordFile {
  readonly #hashes: ReadonlyMap<string, Hash>
  readonly #entries: readonly PasswordEntry[]

  private constructor(entries: readonly PasswordEntry[], hashes: Map<string, Hash>) {
    this.#entries = entries
    this.#hashes = hashes
  }

  static empty(): PasswordFile {
    return new PasswordFile([], new Map())
  }

  /** Parses the file's text; throws PasswordFileError naming the first bad line. */
  static parse(text: string, where = 'password file'): PasswordFile {
    const entries: PasswordEntry[] = []
    const hashes = new Map<string, Hash>()
    const lines = text.split(/\r?\n/)
    for (let i = 0; i < lines.length; i++) {
      const line = (lines[i] ?? '').trim()
      if (line === '' || line.startsWith('#')) continue
      const colon = line.lastIndexOf(':')
      const at = `${where} line ${i + 1}`
      if (colon <= 0) throw new PasswordFileError(`${at}: expected username:hash`)
      const username = line.slice(0, colon)
      const hash = line.slice(colon + 1)
      const parsed = parseHash(hash)
      if (typeof parsed === 'string') throw new PasswordFileError(`${at} (${username.slice(0, 64)}): ${parsed}`)
      if (hashes.has(username)) throw new PasswordFileError(`${at}: ${username.slice(0, 64)} appears twice`)
      hashes.set(username, parsed)
      entries.push({ username, hash })
    }
    return new PasswordFile(entries, hashes)
  }

  get size(): number {
    return this.#entries.length
  }

  entries(): readonly PasswordEntry[] {
    return this.#entries
  }

  has(username: string): boolean {
    return this.#hashes.has(username)
  }

  /** The hash kind of a user, for `users list` (pbkdf2 / sha512). */
  kindOf(username: string): string | undefined {
    const h = this.#hashes.get(username)
    return h === undefined ? undefined : h.kind === 'pbkdf2' ? `pbkdf2-sha512 (${h.iterations})` : 'sha512 (weak)'
  }

  /** True if `password` is the user's; false for a wrong password or an unknown user. */
  async verify(username: string, password: Buffer): Promise<boolean> {
    const h = this.#hashes.get(username)
    if (h === undefined) {
      await derive(password, DUMMY)
      return false
    }
    const key = await derive(password, h)
    return key.length === h.key.length && timingSafeEqual(key, h.key)
  }

  /** A copy with `username` set to a new hash of `password`. */
  async withPassword(username: string, password: Buffer): Promise<PasswordFile> {
    const problem = usernameProblem(username)
    if (problem !== undefined) throw new PasswordFileError(`username ${problem}`)
    const hash = await hashPassword(password)
    const entries = this.#entries.filter((e) => e.username !== username)
    entries.push({ username, hash })
    return PasswordFile.parse(entries.map((e) => `${e.username}:${e.hash}`).join('\n'))
  }

  /** A copy without `username`. */
  without(username: string): PasswordFile {
    return PasswordFile.parse(
      this.#entries
        .filter((e) => e.username !== username)
        .map((e) => `${e.username}:${e.hash}`)
        .join('\n'),
    )
  }

  /** The file's text, one line per user. */
  serialize(): string {
    return this.#entries.map((e) => `${e.username}:${e.hash}\n`).join('')
  }
}

/** A `$7$` PBKDF2-SHA512 hash of `password` with a fresh salt. */
export async function hashPassword(password: Buffer, iterations = PBKDF2_ITERATIONS): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const key = await pbkdf2Async(password, salt, iterations, KEY_BYTES, 'sha512')
  return `$7$${iterations}$${salt.toString('base64')}$${key.toString('base64')}`
}

const DUMMY: Hash = {
  kind: 'pbkdf2',
  iterations: PBKDF2_ITERATIONS,
  salt: Buffer.alloc(SALT_BYTES),
  key: Buffer.alloc(KEY_BYTES),
}

function derive(password: Buffer, h: Hash): Promise<Buffer> {
  if (h.kind === 'pbkdf2') return pbkdf2Async(password, h.salt, h.iterations, h.key.length, 'sha512')
  return Promise.resolve(createHash('sha512').update(password).update(h.salt).digest())
}

const B64 = /^[A-Za-z0-9+/]+={0,2}$/

function parseHash(s: string): Hash | string {
  const parts = s.split('$')
  if (parts[0] !== '' || parts.length < 4)
    return 'not a $6$ or $7$ hash (plain-text passwords are not accepted: hash the file with mosquitto_passwd -U or use edge-agent users)'
  if (parts[1] === '7' && parts.length === 5) {
    const iterations = Number(parts[2])
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS)
      return 'iteration count out of range'
    const salt = parts[3] ?? ''
    const key = parts[4] ?? ''
    if (!B64.test(salt) || !B64.test(key)) return 'salt or hash is not base64'
    const keyBytes = Buffer.from(key, 'base64')
    if (keyBytes.length < 32) return 'hash too short'
    return { kind: 'pbkdf2', iterations, salt: Buffer.from(salt, 'base64'), key: keyBytes }
  }
  if (parts[1] === '6' && parts.length === 4) {
    const salt = parts[2] ?? ''
    const key = parts[3] ?? ''
    if (!B64.test(salt) || !B64.test(key)) return 'salt or hash is not base64'
    const keyBytes = Buffer.from(key, 'base64')
    if (keyBytes.length !== 64) return 'hash is not 64 bytes'
    return { kind: 'sha512', salt: Buffer.from(salt, 'base64'), key: keyBytes }
  }
  return 'unknown hash type (expected $6$ or $7$)'
}
