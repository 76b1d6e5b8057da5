// A Clock for unit tests: wall and monotonic time move only when told, and a
// wall-clock jump moves the wall clock alone. Timers fire in order during
// advance(), and a timer callback's promise is awaited before the next one,
// so async work scheduled by the code under test completes within the step.
import type { Clock, TimerHandle } from '../../../src/certs/index.js'

interface Timer {
  readonly id: number
  readonly at: number
  readonly fn: () => unknown
}

export class FakeClock implements Clock {
  wall: number
  mono = 1_000_000
  #timers: Timer[] = []
  #next = 1

  constructor(wall: number) {
    this.wall = wall
  }

  now(): number {
    return this.wall
  }

  monotonic(): number {
    return this.mono
  }

  setTimeout(fn: () => unknown, ms: number): TimerHandle {
    const t = { id: this.#next++, at: this.mono + Math.max(0, ms), fn }
    this.#timers.push(t)
    return t.id as unknown as TimerHandle
  }

  clearTimeout(handle: TimerHandle): void {
    this.#timers = this.#timers.filter((t) => t.id !== (handle as unknown as number))
  }

  /** Steps the wall clock only (an NTP step, a bad RTC). */
  jump(ms: number): void {
    this.wall += ms
  }

  pending(): number {
    return this.#timers.length
  }

  /** Lets real time pass: both clocks move, due timers fire in order. */
  async advance(ms: number): Promise<void> {
    const end = this.mono + ms
    for (;;) {
      const due = this.#timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0]
      if (due === undefined) break
      this.#timers = this.#timers.filter((t) => t !== due)
      this.wall += due.at - this.mono
      this.mono = due.at
      await due.fn()
    }
    this.wall += end - this.mono
    this.mono = end
  }
}
