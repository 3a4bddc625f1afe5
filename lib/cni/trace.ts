/**
 * CNIKIT_TRACE=1 logs each command and in-process plugin run, with its start
 * offset from process start and its duration, to stderr: where a plugin
 * call spends its time.
 * @module
 */

const enabled = Deno.env.get("CNIKIT_TRACE") !== undefined;

/** Runs `fn`, logging `what` with its timing when tracing is on. */
export async function traced<T>(what: string, fn: () => Promise<T>): Promise<T> {
  if (!enabled) return await fn();
  const started = performance.now();
  try {
    return await fn();
  } finally {
    console.error(
      `cnikit trace: +${started.toFixed(1)} ms ${
        (performance.now() - started).toFixed(1)
      } ms ${what}`,
    );
  }
}
