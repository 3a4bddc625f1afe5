/**
 * CNI errors as values: one class carrying a spec error code, rendered to the
 * CNI error object in exactly one place ({@link toErrorObject}).
 * @module
 */

/** Well-known CNI error codes (SPEC.md "Error" plus libcni's own). */
export const ErrorCode = {
  unknown: 0,
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodingFailure: 6,
  invalidNetworkConfig: 7,
  invalidNetns: 8,
  tryAgainLater: 11,
  pluginNotAvailable: 50,
  pluginNotAvailableLimitedConnectivity: 51,
  internal: 999,
} as const;

/** A failure that maps onto a CNI error object `{code, msg, details}`. */
export class CniError extends Error {
  readonly code: number;
  readonly details: string;

  constructor(code: number, msg: string, details = "") {
    super(msg);
    this.name = "CniError";
    this.code = code;
    this.details = details;
  }

  /** The text libcni shows for an error: `msg` or `msg; details`. */
  override toString(): string {
    return this.details ? `${this.message}; ${this.details}` : this.message;
  }
}

/** The CNI error object as printed on stdout. */
export interface ErrorObject {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/**
 * Turns any thrown value into the CNI error object. Untyped errors become
 * code 999 (internal), as the Go skel does.
 */
export function toErrorObject(error: unknown, cniVersion: string): ErrorObject {
  const cni = error instanceof CniError
    ? error
    : new CniError(ErrorCode.internal, error instanceof Error ? error.message : String(error));
  const out: ErrorObject = { cniVersion, code: cni.code, msg: cni.message };
  if (cni.details) out.details = cni.details;
  return out;
}

/** Shorthand for an invalid-configuration error (code 7). */
export function invalidConfig(msg: string, details = ""): CniError {
  return new CniError(ErrorCode.invalidNetworkConfig, msg, details);
}

/**
 * Waits for every task, so that one failing step never stops the others
 * (DEL must clean up all it can), then throws the first failure with its
 * own code and the rest in its details.
 */
export async function settleAll(tasks: (Promise<unknown> | undefined)[]): Promise<void> {
  const settled = await Promise.allSettled(tasks);
  const [first, ...rest] = settled.flatMap((
    s,
  ) => (s.status === "rejected" ? [s.reason as unknown] : []));
  if (first === undefined) return;
  if (rest.length === 0) throw first;
  const code = first instanceof CniError ? first.code : ErrorCode.internal;
  throw new CniError(
    code,
    first instanceof Error ? first.message : String(first),
    rest.map((e) => (e instanceof CniError ? e.toString() : String(e))).join("; "),
  );
}
