// Bytes for the current connection, gathered during one tick and written at
// its end: one syscall and one TCP segment for a window's worth of publishes
// or acknowledgements.
import type { Duplex } from 'node:stream'

export class OutputBatch {
  readonly #stream: () => Duplex | null
  #out: Buffer[] = []
  #bytes = 0

  /** `stream`: the connection to write to when the batch is flushed (null: none, the bytes are dropped). */
  constructor(stream: () => Duplex | null) {
    this.#stream = stream
  }

  /** Bytes gathered and not yet handed to the stream. */
  get bytes(): number {
    return this.#bytes
  }

  push(buf: Buffer): void {
    if (this.#out.length === 0) process.nextTick(() => this.flush())
    this.#out.push(buf)
    this.#bytes += buf.length
  }

  /** Writes what was gathered to the current connection (a torn-down one has had it dropped). */
  flush(): void {
    const out = this.#out
    const stream = this.#stream()
    if (out.length === 0 || stream === null) return
    const bytes = this.#bytes
    this.#out = []
    this.#bytes = 0
    if (stream.destroyed) return
    if (out.length === 1) stream.write(out[0])
    else if (bytes <= 65_536) stream.write(Buffer.concat(out, bytes))
    else {
      // Large messages are not copied together: one writev instead.
      stream.cork()
      for (const b of out) stream.write(b)
      stream.uncork()
    }
  }

  /** Drops what was gathered (the connection is gone). */
  clear(): void {
    this.#out = []
    this.#bytes = 0
  }
}
