// The broker's counters, shared by its hooks, its device sessions and its
// listeners; read through LocalBroker.stats().

export class BrokerCounters {
  connectionsTotal = 0
  received = 0
  delivered = 0
  /** Refused or closed connections by reason (limit name or protocol rule). */
  readonly refused = new Map<string, number>()
  /** TLS connections refused before MQTT, by reason. */
  readonly tlsRefused = new Map<string, number>()
  /** ACL denials and sessions closed by credential, by reason. */
  readonly denied = new Map<string, number>()

  refuse(reason: string): void {
    bump(this.refused, reason)
  }

  refuseTls(reason: string): void {
    bump(this.tlsRefused, reason)
  }

  deny(reason: string): void {
    bump(this.denied, reason)
  }
}

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1)
}
