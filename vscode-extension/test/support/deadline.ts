/** Polling with a deadline: every wait in the end-to-end tests is bounded. */

import { withTimeout } from "../../src/serverProcess";

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  intervalMs = 100,
  describeLast: () => string = () => "",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) {
        return value;
      }
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const detail = [describeLast(), lastError ? `last error: ${String(lastError)}` : ""].filter(Boolean).join("; ");
      throw new Error(`no ${what} within ${timeoutMs / 1000}s${detail ? `; ${detail}` : ""}`);
    }
    await sleep(intervalMs);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `p`, or an error naming `what` after `ms`. */
export async function within<T>(what: string, p: Promise<T>, ms: number): Promise<T> {
  return withTimeout(p, ms, `${what}: no answer within ${ms / 1000}s`);
}
