// The private key of a renewal request not answered yet, kept on disk next
// to the key file (`<key>.pending`, 0600) until a certificate for it is
// installed. Shared by the bridge's upstream certificate renewer and
// `edge-agent device renew`.
//
// Why on disk: the issuing side answers a retry for the same key by sending
// the certificate it already issued (renewal-service.ts), while a request for
// a fresh key inside the renewal window is refused as too early. If the reply
// is lost with the link and the process restarts before the retry (power
// cut, update, crash), a key kept only in memory is gone: every retry is too
// early until the current certificate expires, and then the gateway cannot
// connect at all.
import { createPublicKey } from 'node:crypto'
import { unlink } from 'node:fs/promises'
import { readOptional, writeAtomic } from './ca-files.js'
import { generateKeyPair, importPrivateKey } from './x509.js'

export interface PendingKeyTake {
  readonly keyPem: string
  /** 'resumed': the key of an earlier unanswered request; 'new': generated (and saved) now. */
  readonly source: 'resumed' | 'new'
  /** Set when a file was there but not usable (unreadable PEM, or the key already in use), and was replaced. */
  readonly replaced?: string
}

export class PendingKey {
  constructor(readonly path: string) {}

  /**
   * The key to put in the next request: the saved one if there is one, else
   * a new key, saved before it is used. A saved key equal to `currentKeyPem`
   * (installed, but the file was not removed) is not pending any more.
   */
  async take(currentKeyPem?: string): Promise<PendingKeyTake> {
    const saved = await readOptional(this.path)
    let replaced: string | undefined
    if (saved !== undefined) {
      const problem = await usableProblem(saved, currentKeyPem)
      if (problem === undefined) return { keyPem: saved, source: 'resumed' }
      replaced = problem
    }
    const keyPem = (await generateKeyPair()).privateKeyPem
    await writeAtomic(this.path, keyPem, 0o600)
    return { keyPem, source: 'new', ...(replaced === undefined ? {} : { replaced }) }
  }

  /** A certificate for the key is installed: nothing is pending. */
  async clear(): Promise<void> {
    try {
      await unlink(this.path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
  }
}

async function usableProblem(pem: string, currentKeyPem: string | undefined): Promise<string | undefined> {
  try {
    await importPrivateKey(pem)
  } catch {
    return 'not a usable private key'
  }
  if (currentKeyPem !== undefined && samePublicKey(pem, currentKeyPem)) return 'already the installed key'
  return undefined
}

function samePublicKey(a: string, b: string): boolean {
  try {
    const spki = (pem: string) => createPublicKey(pem).export({ format: 'der', type: 'spki' })
    return spki(a).equals(spki(b))
  } catch {
    return false
  }
}
