// Public surface of the local broker.
//
// Hot swaps for a config reload: LocalBroker.setAcl(ClientAcl) and
// LocalBroker.setPasswordFile(path). Publishing as a named identity through
// the ACL and the capture (e.g. a Node-RED flow): LocalBroker.publishAs().
export { LocalBroker } from './local-broker.js'
export { RESTART_LIMITS } from './options.js'
export type {
  LocalBrokerOptions,
  ListenerOptions,
  BrokerLimitOptions,
  BoundListener,
  LocalBrokerStats,
  PublishInterceptor,
  StateSync,
  DeviceOptions,
  DeviceRequest,
  BrokerReconfigure,
} from './options.js'
export {
  Acl,
  AclError,
  DeviceAcl,
  topicMatches,
  filterCovers,
  type AclOptions,
  type AclGroupOptions,
  type PublishDecision,
} from './acl.js'
export type { TlsMaterial, DeviceCredential, IdentityMode, TlsRefusal } from './tls.js'
export { LocalBrokerError, type LocalBrokerErrorCode } from './errors.js'
export type { AuthOptions } from './auth.js'
export {
  PasswordFile,
  PasswordFileError,
  hashPassword,
  usernameProblem,
  PBKDF2_ITERATIONS,
  type PasswordEntry,
} from './password-file.js'
export {
  ClientAcl,
  ClientRules,
  parseMosquittoAcl,
  filtersOverlap,
  type ClientAclOptions,
  type AclRuleOptions,
} from './client-acl.js'
