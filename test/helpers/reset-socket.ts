// Resets a TCP connection (RST) where Node can, and destroys it otherwise.
//
// On Node 20, resetAndDestroy() on a socket whose shutdown (end()) is still in
// flight fails inside libuv (uv_tcp_close_reset refuses a shutting-down
// handle), and the handle is then never closed: the process runs every test to
// the end and then spins at 100 % CPU at exit until the runner's timeout. A
// socket that has begun to end gets a plain destroy() instead.
import type { Socket } from 'node:net'

export function resetSocket(s: Socket): void {
  if (s.writableEnded && !s.writableFinished) s.destroy()
  else s.resetAndDestroy()
}
