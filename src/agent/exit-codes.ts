// Documented exit codes (README "Exit codes"); sysexits.h where one fits.
export const ExitCode = {
  /** Success; for `run`, a clean stop. */
  OK: 0,
  /** Runtime failure (systemd restarts the service); for `status`, the agent reports a problem. */
  FAILURE: 1,
  /** Bad command line (EX_USAGE). */
  USAGE: 64,
  /** The agent could not be reached, e.g. `status` with no agent running (EX_UNAVAILABLE). */
  UNAVAILABLE: 69,
  /** Temporary: the data directory is in use by another agent (EX_TEMPFAIL). */
  TEMPFAIL: 75,
  /** Invalid config: fix the file; systemd does not restart (EX_CONFIG, RestartPreventExitStatus=78). */
  CONFIG: 78,
} as const
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

export const EXIT_CODES_HELP = `
Exit codes:
  0   success (for run: stopped cleanly)
  1   runtime failure; for status: the agent reports a problem
  64  bad command line
  69  agent not reachable (status)
  75  data directory in use by another agent (run)
  78  invalid config (systemd does not restart on this code)`
