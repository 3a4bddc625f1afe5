/**
 * The assertion names of Deno's std (`@std/assert`, unreachable here) over
 * `node:assert/strict`, so tests read like std's.
 * @module
 */

import assertStrict from "node:assert/strict";

/** Deep equality. */
export function assertEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  assertStrict.deepStrictEqual(actual, expected, msg);
}

/** Deep inequality. */
export function assertNotEquals(actual: unknown, expected: unknown, msg?: string): void {
  assertStrict.notDeepStrictEqual(actual, expected, msg);
}

/** Truthiness. */
export function assert(condition: unknown, msg?: string): asserts condition {
  assertStrict.ok(condition, msg);
}

/** A string matching a pattern. */
export function assertMatch(actual: string, pattern: RegExp, msg?: string): void {
  assertStrict.match(actual, pattern, msg);
}

/** The error `e`, once its message is known to include `msgIncludes` (when given). */
function thrown(e: unknown, msgIncludes: string | undefined): Error {
  if (msgIncludes !== undefined) {
    assertStrict.ok(
      String((e as Error).message).includes(msgIncludes),
      `"${(e as Error).message}" lacks "${msgIncludes}"`,
    );
  }
  return e as Error;
}

/** `fn` throws; returns the error. */
export function assertThrows(fn: () => unknown, msgIncludes?: string): Error {
  try {
    fn();
  } catch (e) {
    return thrown(e, msgIncludes);
  }
  throw new assertStrict.AssertionError({ message: "expected the function to throw" });
}

/** `fn` rejects; returns the error. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  msgIncludes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    return thrown(e, msgIncludes);
  }
  throw new assertStrict.AssertionError({ message: "expected the promise to reject" });
}
