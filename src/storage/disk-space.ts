// Free-space floor for the data directory's file system.
//
// statfs is cheap but not free, and appends can arrive at tens of thousands
// per second, so the result is cached and re-read at most once per
// `checkIntervalMs`. Hysteresis: the floor trips when free space drops below
// `minFreeBytes` and clears only above `resumeFreeBytes`, so the store does
// not flap at the boundary (common practice: stop below 5 % /
// 200 MiB, resume at 10 %). A failing statfs is "unknown", never "low":
// refusing every message because statfs broke would be worse.
import { statfsSync } from 'node:fs'

export interface DiskUsage {
  /** Bytes available to unprivileged writers (f_bavail × f_bsize). */
  readonly freeBytes: number
  /** File system size (f_blocks × f_bsize). */
  readonly totalBytes: number
}

export type StatFs = (path: string) => DiskUsage

export const defaultStatFs: StatFs = (path) => {
  const s = statfsSync(path)
  return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize }
}

export interface DiskSpaceOptions {
  /** Any path on the file system to watch (the data directory). */
  readonly path: string
  readonly minFreeBytes: number
  readonly resumeFreeBytes: number
  readonly checkIntervalMs: number
  readonly now: () => number
  readonly statfs: StatFs
}

export class DiskSpace {
  readonly #o: DiskSpaceOptions
  #checkedAt = Number.NEGATIVE_INFINITY
  #freeBytes: number | null = null
  #low = false
  #lastError: Error | null = null

  constructor(options: DiskSpaceOptions) {
    this.#o = options
  }

  /** Below the floor (with hysteresis), re-reading statfs if the cached value is stale. */
  isLow(): boolean {
    if (this.#o.minFreeBytes <= 0) return false
    const t = this.#o.now()
    if (t - this.#checkedAt >= this.#o.checkIntervalMs) this.#refresh(t)
    return this.#low
  }

  /** Force a fresh statfs (after SQLITE_FULL, or from the maintenance tick). */
  refresh(): void {
    this.#refresh(this.#o.now())
  }

  get freeBytes(): number | null {
    return this.#freeBytes
  }

  get lastError(): Error | null {
    return this.#lastError
  }

  #refresh(t: number): void {
    this.#checkedAt = t
    try {
      const { freeBytes } = this.#o.statfs(this.#o.path)
      this.#freeBytes = freeBytes
      this.#lastError = null
      if (this.#low) this.#low = freeBytes < this.#o.resumeFreeBytes
      else this.#low = freeBytes < this.#o.minFreeBytes
    } catch (err) {
      this.#lastError = err instanceof Error ? err : new Error(String(err))
      this.#freeBytes = null
      this.#low = false
    }
  }
}
