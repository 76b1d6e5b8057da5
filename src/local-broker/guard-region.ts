// A region of a packet that the packet guard (packet-guard.ts) must inspect
// whole but that arrives over several chunks: its bytes are copied together
// here. It exists only while such a region is incomplete, so an idle guard
// holds none.

export class PartialRegion {
  readonly need: number
  buf: Buffer
  length = 0
  /**
   * Where a CONNECT's bytes lie in the chunks already passed on (mqtt-packet
   * keeps those very Buffers until the packet completes), so an MQTT 3.1
   * CONNECT's flags can be normalized in place: [chunk, chunk offset, region
   * offset, length].
   */
  #pieces: [Buffer, number, number, number][] | null = null

  constructor(need: number) {
    this.need = need
    // Grow with what has arrived, not with what the header declares: a client
    // that announces 64 KiB and trickles 5 bytes must not cost 64 KiB.
    // allocUnsafeSlow, because a partial region can live as long as a slow
    // client and would otherwise pin an 8 KiB pool slab.
    this.buf = Buffer.allocUnsafeSlow(Math.min(need, 256))
  }

  /** Copies what chunk[i, n) holds of the region; returns how many bytes it took. */
  add(chunk: Buffer, i: number, n: number, keepPieces: boolean): number {
    const have = this.length
    const take = Math.min(this.need - have, n - i)
    if (have + take > this.buf.length) {
      const grown = Buffer.allocUnsafeSlow(Math.min(this.need, Math.max(2 * (have + take), 256)))
      this.buf.copy(grown, 0, 0, have)
      this.buf = grown
    }
    chunk.copy(this.buf, have, i, i + take)
    if (keepPieces) (this.#pieces ??= []).push([chunk, i, have, take])
    this.length = have + take
    return take
  }

  /** Writes one byte at region offset `at` in the chunks passed on (the copy is patched by the caller). */
  patchChunks(at: number, value: number): void {
    for (const [chunk, start, regionOffset, length] of this.#pieces ?? []) {
      if (at >= regionOffset && at < regionOffset + length) chunk[start + at - regionOffset] = value
    }
  }
}
