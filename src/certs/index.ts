// Public surface of the certs component: the local CA, its services, the
// renewal protocol and the reference device client.
export {
  CertsService,
  type CertsServiceOptions,
  type CertsEvents,
  type CertsStats,
  type RevokedEvent,
  type CrlEvent,
} from './service.js'
export { caPaths, writeAtomic, readOptional, type CaPaths } from './ca-files.js'
export { LocalCa, type IssuedRecord, type IssuedCert, type RevokedRecord, type CrlFiles } from './local-ca.js'
export {
  ClockGuard,
  systemClock,
  MAX_TIMER_MS,
  type Clock,
  type ClockStatus,
  type ClockState,
  type ClockReason,
  type TimerHandle,
} from './clock.js'
export { RenewalService, type RenewalInput, type RenewalOutcome, type RenewalStats } from './renewal-service.js'
export { ServerCertRotation, type ServerTlsMaterial, type ServerCertStats } from './rotation.js'
export {
  renewOverMqtt,
  checkIssued,
  type RenewOverMqttOptions,
  type RenewResult,
  type RenewalTransport,
} from './renewal-client.js'
export {
  CertificateRenewer,
  renewalTime,
  retryDelay,
  type CertificateRenewerOptions,
  type CertificateRenewerStatus,
  type CurrentCertificate,
  type RenewedCertificate,
  type RenewerClock,
  type RenewerLink,
  type RenewerState,
} from './certificate-renewer.js'
export { completeInstall, installCertificate, type CertificateFiles, type InstallOptions } from './install.js'
export { PendingKey, type PendingKeyTake } from './pending-key.js'
export {
  PROTOCOL_VERSION,
  parseRequest,
  parseReply,
  renewalTopics,
  type RenewalErrorCode,
  type RenewalReply,
  type IssuedReply,
  type ErrorReply,
  type RenewalRequest,
} from './protocol.js'
export { deviceIdProblem, MAX_DEVICE_ID_BYTES } from './identity.js'
export {
  generateKeyPair,
  importPrivateKey,
  createCsr,
  parseCsr,
  summarize,
  splitPem,
  normalizeSerial,
  REVOCATION_REASONS,
  type CertSummary,
  type RevocationReason,
  type SigningKey,
} from './x509.js'
export { CertsError, RenewalRefusedError, type CertsErrorCode } from './errors.js'
// ACME: the code behind these types (acme-client and its crypto) is the
// costliest import of the agent and serves only sites with certs.acme, so it
// loads on demand through loadAcme(); see docs/benchmarks.md (restart).
export type * from './acme/index.js'
export { AcmeError, isAcmeError } from './acme/errors.js'
export type AcmeModule = typeof import('./acme/index.js')
/** This component's code, for callers that load it only when a config needs it. */
export type CertsModule = typeof import('./index.js')
export const loadAcme = (): Promise<AcmeModule> => import('./acme/index.js')
