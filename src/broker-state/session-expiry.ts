// MQTT 5 Session Expiry Interval, kept with the session in SQLite. aedes 2
// arms a timer in memory when a client with a finite interval disconnects;
// a restart forgets it, and the session would live until taken over. Here a
// session's interval is recorded when its client connects and its deadline
// when it goes; at start and on a timer, sessions past their deadline are
// ended (subscriptions, queue, will and inbound QoS 2 state).
// A client that was connected when the agent stopped (or died) gets its
// deadline counted from the start, since its disconnect was never seen.
import type BetterSqlite3 from 'better-sqlite3'

/** 0xFFFFFFFF: the session does not expire [MQTT-3.1.2-11 §3.1.2.11.2]. */
export const SESSION_NEVER_EXPIRES = 0xffff_ffff

export const SESSION_EXPIRY_SQL = `
CREATE TABLE IF NOT EXISTS broker_session_expiry (
  client_id    TEXT PRIMARY KEY NOT NULL,
  interval_s   INTEGER NOT NULL,
  deadline     INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS broker_session_expiry_deadline ON broker_session_expiry (deadline)
  WHERE deadline IS NOT NULL;
`

/** What aedes 2 puts on a client that the expiry needs. */
export interface ExpiryClient {
  readonly id: string
  readonly version?: number
  readonly sessionExpiryInterval?: number
}

interface Statements {
  readonly upsert: BetterSqlite3.Statement<[string, number]>
  readonly remove: BetterSqlite3.Statement<[string]>
  readonly setDeadline: BetterSqlite3.Statement<[number, number, string]>
  readonly due: BetterSqlite3.Statement<[number], { client_id: string }>
  readonly restart: BetterSqlite3.Statement<[number, number]>
}

export class SessionExpiryTable {
  readonly #s: Statements

  constructor(db: BetterSqlite3.Database) {
    this.#s = {
      upsert: db.prepare(
        `INSERT INTO broker_session_expiry (client_id, interval_s, deadline) VALUES (?, ?, NULL)
         ON CONFLICT (client_id) DO UPDATE SET interval_s = excluded.interval_s, deadline = NULL`,
      ),
      remove: db.prepare('DELETE FROM broker_session_expiry WHERE client_id = ?'),
      setDeadline: db.prepare('UPDATE broker_session_expiry SET interval_s = ?, deadline = ? WHERE client_id = ?'),
      due: db.prepare<[number], { client_id: string }>(
        'SELECT client_id FROM broker_session_expiry WHERE deadline IS NOT NULL AND deadline <= ? LIMIT 256',
      ),
      restart: db.prepare(
        `UPDATE broker_session_expiry SET deadline = ? + interval_s * 1000
         WHERE deadline IS NULL AND interval_s < ?`,
      ),
    }
  }

  /**
   * A client was accepted. An MQTT 5 session with a finite interval is
   * recorded without a deadline (it runs while connected); any other session
   * (MQTT 3.1.1, or 5 with 0xFFFFFFFF or 0) has no expiry of ours.
   */
  connected(client: ExpiryClient): void {
    const interval = client.sessionExpiryInterval ?? 0
    if (client.version === 5 && interval > 0 && interval < SESSION_NEVER_EXPIRES) {
      this.#s.upsert.run(client.id, interval)
    } else {
      this.#s.remove.run(client.id)
    }
  }

  /** A client went: its session ends `interval` seconds from now (the DISCONNECT may have changed it). */
  disconnected(client: ExpiryClient, now: number): void {
    const interval = client.sessionExpiryInterval ?? 0
    if (client.version !== 5 || interval === 0 || interval >= SESSION_NEVER_EXPIRES) {
      this.#s.remove.run(client.id)
      return
    }
    this.#s.setDeadline.run(interval, now + interval * 1000, client.id)
  }

  /** At start: sessions whose client was connected when the agent went count from now. */
  restarted(now: number): number {
    return this.#s.restart.run(now, SESSION_NEVER_EXPIRES).changes
  }

  /** Client ids whose session is past its deadline (a bounded batch). */
  due(now: number): string[] {
    return this.#s.due.all(now).map((r) => r.client_id)
  }

  /** The session ended (expired, or discarded by aedes). */
  forget(clientId: string): void {
    this.#s.remove.run(clientId)
  }
}
