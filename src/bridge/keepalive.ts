// MQTT keepalive of one connection: a PINGREQ when nothing was heard for ¾
// keepalive, and the connection declared dead when nothing was heard for 1½
// keepalive. Anything received counts as heard.
export interface KeepaliveActions {
  readonly ping: () => void
  readonly dead: (silentMs: number) => void
}

export class Keepalive {
  readonly #now: () => number
  #timer: NodeJS.Timeout | undefined
  #lastReceived = 0
  #pingOutstanding = false

  constructor(now: () => number) {
    this.#now = now
  }

  /** Something arrived from the upstream. */
  heard(): void {
    this.#lastReceived = this.#now()
    this.#pingOutstanding = false
  }

  /** Starts watching (again); keepaliveSec 0 = off. */
  start(keepaliveSec: number, actions: KeepaliveActions): void {
    this.stop()
    if (keepaliveSec <= 0) return
    const ms = keepaliveSec * 1000
    this.heard()
    this.#timer = setInterval(
      () => {
        const silent = this.#now() - this.#lastReceived
        if (silent >= ms * 1.5) actions.dead(silent)
        else if (silent >= ms * 0.75 && !this.#pingOutstanding) {
          this.#pingOutstanding = true
          actions.ping()
        }
      },
      Math.max(100, Math.floor(ms / 4)),
    )
    this.#timer.unref()
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }
}
