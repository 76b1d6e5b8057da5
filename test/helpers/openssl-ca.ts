// A throwaway EC P-256 root CA made by OpenSSL (the reference implementation
// the certificate tests check against), for tests that need a CA that is not
// the agent's own: an external PKI, an ACME server's TLS, a site root.
import { execFileSync } from 'node:child_process'

/** Runs openssl, throwing with its stderr on failure. */
export function openssl(args: readonly string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' })
}

/** Writes a self-signed root: key (PEM, no passphrase) and certificate. */
export function opensslRoot(o: { keyFile: string; certFile: string; subject: string; days?: number }): void {
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    o.keyFile,
    '-out',
    o.certFile,
    '-days',
    String(o.days ?? 2),
    '-subj',
    o.subject,
  ])
}
