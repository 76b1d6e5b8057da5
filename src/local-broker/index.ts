// Public surface of the local broker.
export { LocalBroker, RESTART_LIMITS } from './local-broker.js'
export type {
  LocalBrokerOptions,
  ListenerOptions,
  BrokerLimitOptions,
  BoundListener,
  LocalBrokerStats,
  PublishInterceptor,
  DeviceOptions,
  DeviceRequest,
  BrokerReconfigure,
} from './local-broker.js'
export { Acl, AclError, DeviceAcl, topicMatches, filterCovers, type AclOptions, type AclGroupOptions, type PublishDecision } from './acl.js'
export type { TlsMaterial, DeviceCredential, IdentityMode, TlsRefusal } from './tls.js'
export { LocalBrokerError, type LocalBrokerErrorCode } from './errors.js'
