// certs.acme → bridges: the gateway's own certificate as the client
// certificate of every upstream with clientCertificate: acme. A candidate is
// tried against those upstreams before promotion; a promoted one makes them
// reconnect; an expired one (or none yet) holds them, while capture and
// buffering go on.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { AcmeModule, ChallengeResponder, GatewayCertificate } from '../certs/index.js'
import type { Bridge, TlsMaterial } from '../bridge/index.js'
import type { AcmeConfig, AgentConfig, UpstreamConfig } from './config/schema.js'

export const NO_CERT_YET = 'waiting for the gateway certificate (certs.acme)'
export const CERT_EXPIRED = 'the gateway certificate expired (EDGE_ERR_ACME_EXPIRED); waiting for a renewal'

export class AcmeWiring {
  readonly name = 'acme'
  readonly gateway: GatewayCertificate
  readonly #bridges: Bridge[] = []
  readonly #log: Logger

  /** `lib` is the ACME code, loaded by the caller (loadAcme()) only for sites that configure certs.acme. */
  constructor(config: Readonly<AgentConfig>, acme: Readonly<AcmeConfig>, lib: AcmeModule, logger: Logger) {
    this.#log = logger.child({ component: 'acme' })
    const dir = join(config.dataDir, 'acme')
    const issuer = new lib.AcmeIssuer({
      directoryUrl: acme.directoryUrl,
      email: acme.email,
      caFile: acme.caFile === '' ? undefined : acme.caFile,
      eab: acme.eab,
      dir,
      responder: responderFor(lib, acme),
      logger: this.#log,
      requestTimeoutMs: acme.requestTimeoutMs,
    })
    const users = config.upstreams.filter((u) => u.clientCertificate === 'acme')
    this.gateway = new lib.GatewayCertificate({
      dir,
      source: issuer,
      identifiers: acme.identifiers,
      renewAt: acme.renewAt,
      maxIntervalMs: acme.maxIntervalSec * 1000,
      retryMinMs: acme.retryMinMs,
      retryMaxMs: acme.retryMaxMs,
      rotateKey: acme.rotateKey,
      warnBeforeMs: acme.warnBeforeSec * 1000,
      trustFile: acme.trustFile === '' ? undefined : acme.trustFile,
      ...(acme.testUpstreams && users.length > 0
        ? { tryCandidate: (m: { cert: string; key: string }) => tryUpstreams(lib, users, m, acme.requestTimeoutMs) }
        : {}),
      logger,
    })
    this.gateway.on('promoted', () => {
      for (const b of this.#bridges) {
        if (b.held !== null)
          void b.hold(null) // hold() with null only releases; it cannot fail
        else
          b.reconnect().catch((err: unknown) =>
            this.#log.warn({ err, upstream: b.upstream }, 'reconnect with the new certificate failed'),
          )
      }
    })
    this.gateway.on('expired', (expired) => {
      if (!expired) return
      for (const b of this.#bridges) {
        b.hold(CERT_EXPIRED).catch((err: unknown) =>
          this.#log.warn({ err, upstream: b.upstream }, 'upstream hold failed'),
        )
      }
    })
  }

  /** The TLS material provider for a bridge of an upstream with clientCertificate: acme. */
  material(): () => TlsMaterial | undefined {
    return () => {
      const m = this.gateway.material()
      return m === undefined ? undefined : { cert: m.cert, key: m.key }
    }
  }

  /** Registers a bridge that uses the gateway certificate (before start). */
  use(bridge: Bridge): void {
    this.#bridges.push(bridge)
  }

  async start(signal: AbortSignal): Promise<void> {
    await this.gateway.start(signal)
    // Before the bridges start: without a usable certificate they wait instead of failing handshakes in a loop.
    const why = this.gateway.material() === undefined ? NO_CERT_YET : this.gateway.expired ? CERT_EXPIRED : null
    if (why !== null) for (const b of this.#bridges) await b.hold(why)
  }

  stop(): Promise<void> {
    return this.gateway.stop()
  }
}

function responderFor(lib: AcmeModule, acme: Readonly<AcmeConfig>): ChallengeResponder {
  switch (acme.challenge) {
    case 'http-01':
      return new lib.Http01Responder(acme.http01)
    case 'tls-alpn-01':
      return new lib.TlsAlpn01Responder(acme.tlsAlpn01)
    case 'dns-01':
      return new lib.Dns01HookResponder({ command: acme.dns01.command, timeoutMs: acme.dns01.timeoutSec * 1000 })
  }
}

async function tryUpstreams(
  lib: AcmeModule,
  users: readonly UpstreamConfig[],
  m: { cert: string; key: string },
  timeoutMs: number,
) {
  return Promise.all(
    users.map(async (u) => {
      const url = new URL(u.url)
      const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
      const port = url.port === '' ? (url.protocol === 'wss:' ? 443 : 8883) : Number(url.port)
      let ca: string | undefined
      try {
        ca = u.caFile === '' ? undefined : await readFile(u.caFile, 'utf8')
      } catch (err) {
        return { upstream: u.name, ok: false, error: `cannot read caFile: ${(err as Error).message}` }
      }
      const r = await lib.tryClientCertificate(
        { host, port, ca, serverName: u.tlsServerName === '' ? undefined : u.tlsServerName },
        m,
        timeoutMs,
      )
      return { upstream: u.name, ...r }
    }),
  )
}
