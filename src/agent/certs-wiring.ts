// certs → broker and upstream files: device identity backed by the local CA,
// the CA's events into the broker, interrupted installs finished at start,
// and which configs need the certs code at all (buildAgent loads it lazily).
import type { Logger } from 'pino'
import type { Acl, DeviceOptions, LocalBroker } from '../local-broker/index.js'
import type { CertsModule, CertsService } from '../certs/index.js'
import type { AgentConfig } from './config/schema.js'
import { needsLocalCa } from './config/paths.js'

/** Whether the agent built from this config runs any code of the certs component. */
export function usesCerts(config: Readonly<AgentConfig>): boolean {
  return (
    needsLocalCa(config) ||
    config.certs.acme !== undefined ||
    config.upstreams.some((u) => u.renewCertificate.enabled || (u.certFile !== '' && u.keyFile !== ''))
  )
}

/** The loaded certs code; its absence where the config uses it is a bug of buildAgent, not of the site. */
export function certsLib(deps: { readonly certs?: CertsModule }): CertsModule {
  if (deps.certs === undefined)
    throw new Error('the config uses certificates but their code was not loaded (buildAgent)')
  return deps.certs
}

/**
 * Device identity and isolation for the broker, backed by the local CA; with
 * an external PKI only (no local CA) there is no renewal over MQTT, no CRL
 * and no revocation list of ours: the device space still applies.
 */
export function deviceOptions(
  config: Readonly<AgentConfig>,
  acl: Acl,
  certs?: CertsService,
  broker?: () => LocalBroker,
  logger?: Logger,
): DeviceOptions {
  const space = {
    acl,
    identity: config.devices.identity,
    maxIdBytes: config.devices.maxIdBytes,
    onDeniedPublish: config.devices.onDeniedPublish,
  }
  if (certs === undefined || broker === undefined || logger === undefined) return space
  return {
    ...space,
    isRevoked: (serial) => certs.ca.isRevoked(serial),
    reservedClientId: (id) => certs.isKnownDevice(id),
    now: () => certs.guard.trustedNow(),
    onRequest: (req) => {
      // Renewal over MQTT: the broker bound req.id to the session's certificate.
      certs
        .handleRenewal({ id: req.id, clientId: req.clientId, payload: req.payload, credential: req.credential })
        .then(async (out) => {
          if (out.issued !== undefined)
            broker().refreshCredential(req.clientId, {
              serial: out.issued.serial,
              notBefore: out.issued.notBefore,
              notAfter: out.issued.notAfter,
            })
          await broker().publish(out.topic, out.payload, { qos: 1 })
        })
        .catch((err: unknown) => {
          // A reply cut by a stop is not lost for good: the device asks again
          // with the same key and gets the same certificate.
          if ((err as { code?: unknown }).code === 'EDGE_ERR_BROKER_STOPPED') {
            logger.info({ deviceId: req.id }, 'renewal reply not sent: the broker is stopping')
          } else logger.error({ err, deviceId: req.id }, 'renewal reply failed')
        })
    },
  }
}

/** certs → broker: rotated server certificate, revocations, CRL (published once the agent runs). */
export function wireCerts(certs: CertsService, broker: LocalBroker, running: () => boolean, logger: Logger): void {
  certs.on('rotated', (material) => broker.updateTls(material))
  certs.on('revoked', (e) => {
    broker.setRevokedSerials(e.serials)
    for (const r of e.revoked) broker.disconnectClient(r.id, 'revoked')
  })
  certs.on('crl', (e) => {
    if (!running()) return
    broker
      .publish(e.topic, e.pem, { qos: 1, retain: true })
      .catch((err: unknown) => logger.warn({ err }, 'crl publish failed'))
  })
}

/** An upstream certificate install that a power cut interrupted is finished before the bridges read the files. */
export async function completeInstalls(
  upstreams: Readonly<AgentConfig>['upstreams'],
  lib: () => CertsModule,
  logger: Logger,
): Promise<void> {
  for (const u of upstreams) {
    if (u.certFile === '' || u.keyFile === '') continue
    const files = { cert: u.certFile, key: u.keyFile }
    if (await lib().completeInstall(files)) {
      logger.warn({ upstream: u.name, ...files }, 'interrupted certificate install completed')
    }
  }
}
