export {
  GatewayCertificate,
  type GatewayCertificateOptions,
  type GatewayCertificateStatus,
  type GatewayCertificateEvents,
  type GatewayMaterial,
  type GatewayCertState,
  type CertificateSource,
} from './gateway-certificate.js'
export { AcmeIssuer, type AcmeIssuerOptions, type AcmeDirectory } from './issuer.js'
export {
  Http01Responder,
  TlsAlpn01Responder,
  Dns01HookResponder,
  type ChallengeResponder,
  type ChallengeType,
  type ChallengeTask,
} from './challenges.js'
export { tryClientCertificate, type HandshakeTarget, type HandshakeResult } from './handshake.js'
export { issuedProblems, type IssuedCheck } from './check.js'
export { nextRenewal, acmeRetryDelay, JITTER_FRACTION, type RenewalPlan, type RenewalWindow } from './schedule.js'
export { ariCertId, parseRenewalInfo, type RenewalInfo } from './ari.js'
export { AcmeError, isAcmeError, type AcmeErrorCode } from './errors.js'
