/**
 * Undo steps for a failed ADD: each step that creates something registers
 * how to remove it; on failure they run in reverse order, and their own
 * errors are logged rather than masking the original failure.
 * @module
 */

/** A stack of undo actions. */
export class Rollback {
  #undo: { what: string; fn: () => unknown }[] = [];

  /** Registers how to undo a step that just succeeded. */
  defer(what: string, fn: () => unknown): void {
    this.#undo.push({ what, fn });
  }

  /** Runs every undo action, newest first. */
  async unwind(): Promise<void> {
    for (const { what, fn } of this.#undo.reverse()) {
      try {
        await fn();
      } catch (e) {
        console.error(`cnikit: rollback of ${what} failed: ${(e as Error).message}`);
      }
    }
    this.#undo = [];
  }
}

/** Runs `fn`; when it throws, unwinds what it registered and rethrows. */
export async function withRollback<T>(fn: (rollback: Rollback) => Promise<T>): Promise<T> {
  const rollback = new Rollback();
  try {
    return await fn(rollback);
  } catch (e) {
    await rollback.unwind();
    throw e;
  }
}
