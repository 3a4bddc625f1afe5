/**
 * Throwaway directories for tests (host-local data dirs, config folders),
 * removed afterwards even when the test fails.
 * @module
 */

/** Runs `fn` with a fresh temporary directory named `prefix…`, removed afterwards. */
export async function withTempDir<T>(
  fn: (dir: string) => T | Promise<T>,
  prefix = "cnikit-test-",
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
