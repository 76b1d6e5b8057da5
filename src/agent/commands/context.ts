// What a command may use of the process. Only src/agent/main.ts builds it from
// the real process object; commands stay testable and never call
// process.exit or read process.env themselves.
export interface CommandContext {
  readonly version: string
  readonly env: Readonly<Record<string, string | undefined>>
  readonly cwd: string
  readonly stdoutIsTty: boolean
  /** Progress bars go to stderr, only when it is a terminal. */
  readonly stderrIsTty: boolean
  out(text: string): void
  err(text: string): void
  /** Subscribes to a process signal (SIGTERM, SIGINT). */
  onSignal(signal: NodeJS.Signals, handler: () => void): void
  /** Subscribes to uncaught exceptions and unhandled rejections. */
  onFatal(handler: (kind: 'uncaughtException' | 'unhandledRejection', err: unknown) => void): void
  /** Exits now, without waiting: for a second signal or a stop deadline. */
  exitNow(code: number): never
  /** Asks a yes/no question on the terminal; false when not interactive. */
  confirm(question: string): Promise<boolean>
  /**
   * Reads a secret: on a terminal, a prompt without echo (asked twice when
   * `twice`; undefined if the two differ); otherwise the first line of stdin.
   */
  readSecret(prompt: string, twice: boolean): Promise<string | undefined>
}

/** A command's action: resolves with the process exit code. */
export type CommandAction<A extends unknown[]> = (...args: A) => Promise<number>
