// Public surface of the local broker.
export { LocalBroker } from './local-broker.js'
export type {
  LocalBrokerOptions,
  ListenerOptions,
  BrokerLimitOptions,
  BoundListener,
  LocalBrokerStats,
  PublishInterceptor,
} from './local-broker.js'
export { LocalBrokerError, type LocalBrokerErrorCode } from './errors.js'
