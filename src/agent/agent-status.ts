// The agent's /status shape: what status() answers and the Prometheus text is made from.
import type { LocalBroker } from '../local-broker/index.js'
import type { CertificateRenewerStatus, CertsStats, GatewayCertificateStatus } from '../certs/index.js'
import type { BridgeStatus } from '../bridge/index.js'
import type { BufferStats } from '../buffer/index.js'
import type { BrokerStateStats } from '../broker-state/index.js'
import type { NodeRedStatus } from '../node-red/index.js'

export type AgentState = 'built' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed'

export interface AgentStatus {
  readonly agent: {
    readonly version: string
    readonly site: { readonly name: string; readonly level: number }
    readonly state: AgentState
    readonly startedAt: string | null
    readonly uptimeSec: number
    readonly dataDir: string
  }
  readonly process: {
    readonly pid: number
    readonly node: string
    readonly rssBytes: number
    readonly heapUsedBytes: number
  }
  readonly components: readonly { readonly name: string; readonly state: string }[]
  readonly broker: ReturnType<LocalBroker['stats']> & {
    readonly receivedPerSec: number
    readonly deliveredPerSec: number
  }
  /** The store-and-forward buffer, and the broker state kept in the same file. */
  readonly buffer: BufferStats & { readonly brokerState: BrokerStateStats | null }
  /** One entry per configured upstream (bridge). */
  readonly upstreams: readonly UpstreamStatus[]
  /** Local CA, device certificates and clock; null without an mqtts listener. */
  readonly certs: CertsStatus | null
  /** Node-RED in the agent (nodeRed.enabled), else null. */
  readonly nodeRed: NodeRedStatus | null
  /** The gateway's own certificate from certs.acme; null without certs.acme. */
  readonly gatewayCertificate: GatewayCertificateStatus | null
}

export interface UpstreamStatus extends BridgeStatus {
  /** The upstream client certificate's renewal (renewCertificate.enabled), else null. */
  readonly certificate: CertificateRenewerStatus | null
  /** files or acme (upstreams[].clientCertificate). */
  readonly clientCertificate: 'files' | 'acme'
  /** Why the connection is held (e.g. the gateway certificate expired), else null; messages keep being buffered. */
  readonly held: string | null
}

export interface CertsStatus extends CertsStats {
  /** Certificate-identified sessions connected now. */
  readonly devicesConnected: number
  /** TLS handshakes and connections refused before MQTT, by reason. */
  readonly refusedHandshakes: Readonly<Record<string, number>>
  /** Device ACL denials and sessions closed by credential, by reason. */
  readonly denied: Readonly<Record<string, number>>
}
