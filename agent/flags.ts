/**
 * Command-line flags for the agent's commands: `--name value` or
 * `--name=value`, booleans as `--name` (or `--name=false`), every flag
 * declared with its help text so usage is generated from the declarations.
 * A small parser instead of `node:util`: a module the bundle loads lazily
 * must not make every plugin start pull in Deno's Node layer.
 * @module
 */

/** A mistake on the command line: the message goes to stderr with the usage, exit 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** One declared flag. */
export interface FlagSpec {
  name: string;
  /** Placeholder of the value in the usage (`URL,...`); absent for a boolean flag. */
  value?: string;
  help: string;
  default?: string;
}

/** Parsed flags: each given (or defaulted) value by flag name, booleans as "true"/"false". */
export type FlagValues = Map<string, string>;

/** Parses `args` against `specs`; throws {@link UsageError} on anything not declared. */
export function parseFlags(
  specs: readonly FlagSpec[],
  args: readonly string[],
): { values: FlagValues; positionals: string[] } {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const values: FlagValues = new Map();
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--")) {
      if (arg.startsWith("-") && arg !== "-") throw new UsageError(`unknown flag "${arg}"`);
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`unknown flag "--${name}"`);
    if (spec.value === undefined) {
      const given = eq < 0 ? "true" : arg.slice(eq + 1);
      if (given !== "true" && given !== "false") {
        throw new UsageError(`--${name} takes no value other than true or false`);
      }
      values.set(name, given);
      continue;
    }
    let value: string | undefined;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      value = args[i + 1];
      i++;
    }
    if (value === undefined) throw new UsageError(`--${name} needs a value (${spec.value})`);
    values.set(name, value);
  }
  for (const spec of specs) {
    if (!values.has(spec.name) && spec.default !== undefined) values.set(spec.name, spec.default);
  }
  return { values, positionals };
}

/** The flags' lines of a usage text. */
export function flagsUsage(specs: readonly FlagSpec[]): string {
  const lefts = specs.map((s) => `  --${s.name}${s.value ? ` ${s.value}` : ""}`);
  const width = Math.max(...lefts.map((l) => l.length)) + 2;
  return specs.map((s, i) =>
    `${lefts[i]!.padEnd(width)}${s.help}${s.default ? ` (default ${s.default})` : ""}`
  ).join("\n");
}

/** The value of a flag that must be given. */
export function required(values: FlagValues, name: string): string {
  const value = values.get(name);
  if (value === undefined || value === "") throw new UsageError(`--${name} is required`);
  return value;
}

/** A flag's value as an integer within [min, max]. */
export function intFlag(values: FlagValues, name: string, min: number, max: number): number {
  const text = required(values, name);
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, not "${text}"`);
  }
  return n;
}
