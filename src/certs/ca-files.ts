// The local CA's state directory on disk (the layout is drawn in local-ca.ts's
// header): where each file lives, and the few ways this component writes and
// reads them. Shared by the CA, rotation, device installs and the ACME issuer,
// so that every key and certificate is replaced whole, also across a power cut.
import { mkdir, readFile, rename, stat, chmod, open, unlink } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { CertsError } from './errors.js'

export interface CaPaths {
  readonly dir: string
  readonly caKey: string
  readonly caCert: string
  readonly chain: string
  readonly pendingKey: string
  readonly serverKey: string
  readonly serverCert: string
  readonly issuedDir: string
  readonly revokedDir: string
  readonly crlPem: string
  readonly crlDer: string
  readonly crlNumber: string
  readonly clock: string
  readonly clockTrust: string
  readonly lock: string
}

export function caPaths(dir: string): CaPaths {
  return {
    dir,
    caKey: join(dir, 'ca.key'),
    caCert: join(dir, 'ca.crt'),
    chain: join(dir, 'chain.pem'),
    pendingKey: join(dir, 'ca.pending.key'),
    serverKey: join(dir, 'server.key'),
    serverCert: join(dir, 'server.crt'),
    issuedDir: join(dir, 'issued'),
    revokedDir: join(dir, 'revoked'),
    crlPem: join(dir, 'crl.pem'),
    crlDer: join(dir, 'crl.der'),
    crlNumber: join(dir, 'crl.number'),
    clock: join(dir, 'clock.json'),
    clockTrust: join(dir, 'clock.trust'),
    lock: join(dir, '.lock'),
  }
}
/** True when `dir` holds a CA key and certificate. */
export function caExists(dir: string): boolean {
  const p = caPaths(dir)
  return existsSync(p.caKey) && existsSync(p.caCert)
}

/** Creates the state directory (0700), tightening it if it already exists. */
export async function prepareCaDir(dir: string): Promise<CaPaths> {
  const p = caPaths(dir)
  await mkdir(p.dir, { recursive: true, mode: 0o700 })
  await chmod(p.dir, 0o700)
  await mkdir(p.issuedDir, { recursive: true, mode: 0o700 })
  await mkdir(p.revokedDir, { recursive: true, mode: 0o700 })
  return p
}

/**
 * Replaces `file` whole or not at all, also across a power cut: the data is
 * fsync'd under a temporary name, renamed over the file, and the directory
 * fsync'd so that the rename itself is on disk (a key or certificate that
 * comes back empty or old after a reboot could lock the gateway out).
 */
export async function writeAtomic(file: string, data: string | Buffer, mode: number): Promise<void> {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`
  const fh = await open(tmp, 'w', mode)
  try {
    await fh.writeFile(data)
    await fh.chmod(mode) // the umask may have narrowed it; 0600 stays 0600
    await fh.sync()
  } finally {
    await fh.close()
  }
  await rename(tmp, file)
  await syncDir(dirname(file))
}

/** fsync(2) a directory: the renames and creates in it survive a power cut. */
export async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r')
  try {
    await d.sync()
  } catch (err) {
    // Some file systems refuse fsync on a directory (EINVAL); the rename stands.
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err
  } finally {
    await d.close()
  }
}

export async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/** Refuses a private key file that group or others can read (as ssh and Mosquitto do). */
export async function assertPrivate(file: string): Promise<void> {
  const st = await stat(file)
  if ((st.mode & 0o077) !== 0) {
    throw new CertsError(
      'EDGE_ERR_CERT_STATE',
      `${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`,
    )
  }
}

/** A lock file shared by the agent and the CLI; a lock older than 30 s is taken as stale. */
export async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 10_000
  for (;;) {
    try {
      const h = await open(file, 'wx', 0o600)
      await h.close()
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const st = await stat(file).catch(() => undefined)
      if (st && Date.now() - st.mtimeMs > 30_000) await unlink(file).catch(() => undefined)
      if (Date.now() > deadline)
        throw new CertsError('EDGE_ERR_CERT_STATE', `lock ${file} is held; remove it if no edge-agent is running`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  try {
    return await fn()
  } finally {
    await unlink(file).catch(() => undefined)
  }
}
