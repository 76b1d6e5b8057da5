// The month, compressed: what happens on which simulated day. Day 0 is online;
// days 1-30 the upstream is unreachable (a few hours of them a link that
// accepts TCP and never answers); the agent is killed with -9 twice (the second
// time after the buffer has started dropping) and stopped cleanly once; day 31
// the upstream returns; publishing stops at the end of day 31 and the backlog drains.

export type CalendarAction =
  'link-down' | 'link-blackhole' | 'kill-9' | 'clean-restart' | 'upstream-cert' | 'link-up' | 'end'

export interface CalendarEvent {
  readonly day: number
  readonly action: CalendarAction
  readonly note: string
}

export const MONTH: readonly CalendarEvent[] = [
  { day: 1, action: 'link-down', note: 'upstream unreachable: the relay refuses connections' },
  { day: 8.5, action: 'kill-9', note: 'agent killed with -9 and restarted' },
  {
    day: 10,
    action: 'upstream-cert',
    note: "the gateway's upstream certificate (ACME) has run out offline: kept, upstream held, renewals backing off",
  },
  { day: 12.25, action: 'link-blackhole', note: 'the link accepts TCP and never answers (6 h)' },
  { day: 12.5, action: 'link-down', note: 'the relay refuses connections again' },
  { day: 15.5, action: 'clean-restart', note: 'agent stopped cleanly (SIGTERM) and restarted' },
  { day: 24.5, action: 'kill-9', note: 'agent killed with -9 and restarted, the buffer dropping' },
  { day: 31, action: 'link-up', note: 'the upstream returns' },
  { day: 32, action: 'end', note: 'devices stop publishing; the backlog drains' },
]

/** The simulated day the buffer should fill on: its budget is sized for the messages kept from day 1 to this. */
export const FILL_DAY = 20

/** Simulated day of epoch-ms `t` for a run that began at `t0`. */
export function dayAt(t: number, t0: number, daySec: number): number {
  return (t - t0) / (daySec * 1000)
}
