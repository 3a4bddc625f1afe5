/**
 * The one way cnikit reads and writes iptables: a table is read once per
 * family with `iptables-save -t <table>`, the changes are planned against
 * that snapshot, and the whole plan goes to the kernel as one
 * `iptables-restore --noflush -w` per family: one transaction, two
 * processes, where the reference spends one process per rule and ~15 ms
 * per delete.
 *
 * Rules are argument lists ({@link RuleSpec}); {@link savedLine} prints one
 * the way iptables-save does, so "is this rule there" is a string compare
 * against the snapshot. Chains are created with `-N` only when the
 * snapshot lacks them: a `:CHAIN` line in `--noflush` mode flushes a chain
 * that exists, which would wipe the shared chains other attachments fill.
 * A plan that races with another writer (a chain created, a rule deleted
 * in between) fails as a whole, and {@link updateTable} reads again and
 * re-plans.
 * @module
 */

import { run } from "../net/exec.ts";

/** An IP family, as iptables (4) and ip6tables (6). */
export type Family = 4 | 6;

/** The iptables tables cnikit writes. */
export type TableName = "nat" | "filter";

/** The arguments of one rule after `-A <chain>`, e.g. `["-s", "10.0.0.2/32", "-j", "ACCEPT"]`. */
export type RuleSpec = readonly string[];

function tools(family: Family): { save: string; restore: string } {
  return family === 4
    ? { save: "iptables-save", restore: "iptables-restore" }
    : { save: "ip6tables-save", restore: "ip6tables-restore" };
}

/** `s` in double quotes with `"` and `\` escaped, as iptables-save prints comments. */
function quoted(s: string): string {
  return `"${s.replace(/["\\]/g, "\\$&")}"`;
}

/**
 * One argument as iptables-restore must read it: quoted when its tokenizer
 * would split or unescape it (whitespace, quotes, backslashes, empty).
 */
function restoreArg(arg: string): string {
  return arg === "" || /[\s"'\\]/.test(arg) ? quoted(arg) : arg;
}

/** `-A <chain> <spec>` exactly as iptables-save prints it (comments quoted, the rest raw). */
export function savedLine(chain: string, spec: RuleSpec): string {
  const args = spec.map((arg, i) => (spec[i - 1] === "--comment" ? quoted(arg) : arg));
  return ["-A", chain, ...args].join(" ");
}

function restoreLine(op: string, chain: string, spec: RuleSpec): string {
  return [op, restoreArg(chain), ...spec.map(restoreArg)].join(" ");
}

/** The restore line that appends `spec` to `chain`. */
export function appendRule(chain: string, spec: RuleSpec): string {
  return restoreLine("-A", chain, spec);
}

/** The restore line that inserts `spec` at the top of `chain`. */
export function insertRule(chain: string, spec: RuleSpec): string {
  return restoreLine("-I", chain, spec);
}

/** The restore line that deletes `spec` from `chain`. */
export function deleteRule(chain: string, spec: RuleSpec): string {
  return restoreLine("-D", chain, spec);
}

/** The restore line that deletes a rule read from iptables-save (an `-A …` line). */
export function deleteSavedLine(line: string): string {
  return line.replace(/^-A /, "-D ");
}

/** `["-m", "comment", "--comment", text]`, the comment match every rule of the reference carries. */
export function comment(text: string): string[] {
  return ["-m", "comment", "--comment", text];
}

/** One table of one family as iptables-save printed it. */
export class SavedTable {
  /** Every chain of the table, built-in and user-defined. */
  readonly chains: ReadonlySet<string>;
  /** The rules as `-A <chain> …` lines, in the kernel's order. */
  readonly rules: readonly string[];

  constructor(readonly family: Family, readonly table: TableName, text: string) {
    const lines = text.split("\n");
    this.chains = new Set(
      lines.flatMap((l) => (l.startsWith(":") ? [l.slice(1).split(" ")[0]!] : [])),
    );
    this.rules = lines.filter((l) => l.startsWith("-A "));
  }

  /** True when `chain` exists. */
  hasChain(chain: string): boolean {
    return this.chains.has(chain);
  }

  /** The rules of `chain`, in order. */
  rulesOf(chain: string): string[] {
    const prefix = `-A ${chain} `;
    return this.rules.filter((l) => l.startsWith(prefix));
  }

  /** True when `chain` holds `spec` (compared in iptables-save's form). */
  has(chain: string, spec: RuleSpec): boolean {
    return this.rules.includes(savedLine(chain, spec));
  }

  /** The rules of any chain that jump (or go) to `target`. */
  jumpsTo(target: string): string[] {
    return this.rules.filter((l) => l.endsWith(` -j ${target}`) || l.endsWith(` -g ${target}`));
  }
}

/**
 * The `-N` lines for those of `chains` that `saved` lacks (never a `:CHAIN`
 * line: in `--noflush` mode that flushes a chain that exists).
 */
export function createChains(saved: SavedTable, chains: Iterable<string>): string[] {
  return [...new Set(chains)].filter((c) => !saved.hasChain(c)).map((c) => `-N ${c}`);
}

/**
 * The restore line that adds `spec` to `chain` (at the top with `first`,
 * else at the end), or none when `saved` already has it there.
 */
export function ensureRule(
  saved: SavedTable,
  chain: string,
  spec: RuleSpec,
  first = false,
): string[] {
  if (saved.has(chain, spec)) return [];
  return [first ? insertRule(chain, spec) : appendRule(chain, spec)];
}

/**
 * The restore lines that remove `chains` from `saved`: every rule of
 * another chain that jumps to one of them, then the chains themselves
 * (flushed, deleted). Chains that do not exist are skipped.
 */
export function removeChains(saved: SavedTable, chains: Iterable<string>): string[] {
  const gone = new Set([...chains].filter((c) => saved.hasChain(c)));
  const lines: string[] = [];
  for (const chain of gone) {
    for (const jump of saved.jumpsTo(chain)) {
      if (!gone.has(jump.split(" ")[1]!)) lines.push(deleteSavedLine(jump));
    }
  }
  for (const chain of gone) lines.push(`-F ${chain}`, `-X ${chain}`);
  return lines;
}

/**
 * Snapshots read by a probe ({@link saveTable} with `keep`), handed to the
 * next {@link updateTable} of the same table instead of a second read. A
 * restore from this process drops them, and they expire after
 * {@link KEEP_MS}, so a long-lived process never plans from an old one.
 */
const kept = new Map<string, { saved: SavedTable; at: number }>();
const KEEP_MS = 1000;

function takeKept(family: Family, table: TableName): SavedTable | undefined {
  const key = `${family}/${table}`;
  const entry = kept.get(key);
  kept.delete(key);
  return entry && performance.now() - entry.at < KEEP_MS ? entry.saved : undefined;
}

/**
 * Reads `table` of `family` with one iptables-save. With `keep`, the
 * snapshot also serves the next {@link updateTable} of that table.
 */
export async function saveTable(
  family: Family,
  table: TableName,
  options: { keep?: boolean } = {},
): Promise<SavedTable> {
  const { stdout } = await run(tools(family).save, ["-t", table]);
  const saved = new SavedTable(family, table, stdout);
  if (options.keep) kept.set(`${family}/${table}`, { saved, at: performance.now() });
  return saved;
}

/** Applies restore `lines` to `table` of `family` in one `iptables-restore --noflush -w`. */
export async function restoreTable(
  family: Family,
  table: TableName,
  lines: readonly string[],
): Promise<void> {
  if (lines.length === 0) return;
  kept.delete(`${family}/${table}`);
  await run(tools(family).restore, ["--noflush", "-w"], {
    stdin: [`*${table}`, ...lines, "COMMIT", ""].join("\n"),
  });
}

/** How often {@link updateTable} re-reads and re-plans after a failed restore. */
const RETRIES = 3;

/**
 * Reads `table`, asks `plan` for the restore lines that bring it where it
 * should be, and applies them. A restore that fails (another writer changed
 * the table in between) is planned again from a fresh read, up to
 * {@link RETRIES} times; an empty plan writes nothing.
 */
export async function updateTable(
  family: Family,
  table: TableName,
  plan: (saved: SavedTable) => string[],
): Promise<void> {
  let saved = takeKept(family, table) ?? await saveTable(family, table);
  for (let attempt = 0;; attempt++) {
    const lines = plan(saved);
    try {
      await restoreTable(family, table, lines);
      return;
    } catch (e) {
      if (attempt >= RETRIES) throw e;
    }
    saved = await saveTable(family, table);
  }
}
