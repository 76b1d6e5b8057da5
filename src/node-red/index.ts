// Public surface of the Node-RED component.
export { loadAddonModule, nodeRedInstalled, ADDON_MODULES } from './addon.js'
export { NodeRed, type Bcrypt, type NodeRedOptions, type NodeRedStatus, type CliEndpoint } from './node-red.js'
export type { EdgeLink, EdgeMessage, EdgeCounters } from './edge-api.js'
export { NodeRedError, type NodeRedErrorCode } from './errors.js'
export { NodeRedState, checkUsername, checkPassword, type NodeRedUser } from './state.js'
export { parseFlows, checkFlows, type FlowNode } from './flows.js'
export { deployFlows, exportFlows, readCliEndpoint } from './admin-client.js'
