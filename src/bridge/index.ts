// Public surface of the bridge component.
export { Bridge } from './bridge.js'
export type { AgentInfo, BridgeEvents, BridgeOptions, UpstreamOptions } from './bridge.js'
export type { BridgeDropReason, BridgeStatus } from './bridge-status.js'
export type { CapturedPublish } from './capture.js'
export type { LocalMessage } from './inbound.js'
export type { ControlChannel } from './control-channel.js'
export { BridgeGroup, type BridgeGroupOptions } from './bridge-group.js'
export {
  BridgeRule,
  parseRuleSet,
  DEFAULT_TTL_SEC,
  type BridgeRuleInput,
  type Direction,
  type Qos,
  type WhenFull,
} from './rule.js'
export { Backoff, jittered, type BackoffOptions } from './backoff.js'
export { BridgeError, isBridgeError, type BridgeErrorCode } from './errors.js'
export { BEACON_TOPIC, composeBeacon, decodeBeacon, encodeBeacon, formsLoop, type AgentBeacon } from './beacon.js'
export { topicFilterProblem, topicMatches, filtersOverlap } from './topic.js'
export type { UpstreamState } from './upstream-connection.js'
export type { TlsMaterial } from './transport.js'
