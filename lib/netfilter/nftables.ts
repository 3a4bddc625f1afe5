/**
 * The one way cnikit reads and writes nftables: a table is read with
 * `nft -j list table`, and changes go to the kernel as one JSON transaction
 * (`nft -j -f -`), atomic, one process.
 *
 * Why JSON and not nft's text syntax:
 * - every string arrives byte for byte. Text has no escape for `"` at all
 *   (an interface may be called `e"0`, a comment may quote a name), and every
 *   name with `#`, `;`, `{` or spaces (`rp#br`) must be quoted correctly;
 *   in JSON a name is just a JSON string.
 * - rules are data: they are built as the same objects that `nft -j list`
 *   reads back, so CHECK and teardown compare and find what setup wrote
 *   without parsing text.
 *
 * What JSON cannot say, and the one text path ({@link nftApplyText}) for
 * it: Debian 12's nft 1.0.6 ignores comments on tables and chains in JSON
 * input (the reference's descriptive comments, constant strings), and
 * portmap's `conditionsV4`/`conditionsV6` for nftables are nft text by
 * definition (the user writes them). Nothing derived from a name goes
 * through text.
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import { run } from "../net/exec.ts";

/** The nftables families cnikit writes. */
export type NftFamily = "ip" | "ip6" | "inet" | "bridge";

/** A rule as `nft -j list` prints it. */
export interface NftRule {
  family: NftFamily;
  table: string;
  chain: string;
  handle: number;
  comment?: string;
  expr: unknown[];
}

/** A chain as `nft -j list` prints it (base chains with type, hook, prio and policy). */
export interface NftChain {
  family: NftFamily;
  table: string;
  name: string;
  handle: number;
  type?: string;
  hook?: string;
  prio?: number;
  policy?: string;
}

/** One table as `nft -j list table` printed it. */
export class NftTable {
  /** The chains by name. */
  readonly chains: ReadonlyMap<string, NftChain>;
  /** Every rule, in the kernel's order per chain. */
  readonly rules: readonly NftRule[];

  constructor(items: { chain?: NftChain; rule?: NftRule }[]) {
    this.chains = new Map(items.flatMap((i) => (i.chain ? [[i.chain.name, i.chain]] : [])));
    this.rules = items.flatMap((i) => (i.rule ? [i.rule] : []));
  }

  /** The rules of `chain`, in order. */
  rulesOf(chain: string): NftRule[] {
    return this.rules.filter((r) => r.chain === chain);
  }
}

/** Reads `family table` with one `nft -j list table`; undefined when the table does not exist. */
export async function listTable(family: NftFamily, table: string): Promise<NftTable | undefined> {
  const out = await run("nft", ["-j", "list", "table", family, table], { allowFailure: true });
  if (out.code !== 0) {
    if (/No such file or directory/.test(out.stderr)) return undefined;
    throw new CniError(
      ErrorCode.ioFailure,
      `nft failed: ${out.stderr.trim() || `exit status ${out.code}`}`,
      `nft -j list table ${family} ${table}`,
    );
  }
  return new NftTable((JSON.parse(out.stdout) as { nftables: [] }).nftables);
}

/** One command of a JSON transaction, e.g. `{ add: { rule: {...} } }`. */
export type NftCommand = Record<string, unknown>;

/** Applies `commands` as one JSON transaction (`nft -j -f -`); none is a no-op. */
export async function nftApply(commands: readonly NftCommand[]): Promise<void> {
  if (commands.length === 0) return;
  await run("nft", ["-j", "-f", "-"], { stdin: JSON.stringify({ nftables: commands }) });
}

/**
 * Applies nft text `lines` as one transaction (`nft -f -`). Only for what
 * JSON cannot carry (see the module doc): constant declarations with
 * descriptive comments, and rule text a user wrote.
 */
export async function nftApplyText(lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  await run("nft", ["-f", "-"], { stdin: lines.join("\n") + "\n" });
}

/** `s` as an nft text string literal (for constants in {@link nftApplyText}). */
function nftString(s: string): string {
  if (/["\n]/.test(s)) {
    throw new CniError(ErrorCode.internal, `nft text cannot carry ${JSON.stringify(s)}`);
  }
  return `"${s}"`;
}

// ---- building commands --------------------------------------------------------------

/** Base-chain properties: type, hook, priority and (default accept) policy. */
export interface BaseChain {
  type: "filter" | "nat";
  hook: "prerouting" | "input" | "forward" | "output" | "postrouting";
  prio: number;
  policy?: "accept" | "drop";
}

/** Builds the JSON commands of a transaction on one table. */
export class NftTx {
  constructor(readonly family: NftFamily, readonly table: string) {}

  /** `add table` (a no-op when it exists). */
  addTable(): NftCommand {
    return { add: { table: { family: this.family, name: this.table } } };
  }

  /** `add chain`, a base chain when `base` is given (a no-op when it exists). */
  addChain(name: string, base?: BaseChain): NftCommand {
    const chain = { family: this.family, table: this.table, name };
    return { add: { chain: base ? { ...chain, policy: "accept", ...base } : chain } };
  }

  /** `flush chain`. */
  flushChain(name: string): NftCommand {
    return { flush: { chain: { family: this.family, table: this.table, name } } };
  }

  /** `delete chain` (it must be empty and unreferenced). */
  deleteChain(name: string): NftCommand {
    return { delete: { chain: { family: this.family, table: this.table, name } } };
  }

  /** `add rule` (at the end of `chain`) with statements `expr` and an optional comment. */
  addRule(chain: string, expr: unknown[], comment?: string): NftCommand {
    return { add: { rule: this.#rule(chain, expr, comment) } };
  }

  /** `insert rule`: like {@link addRule}, at the top of `chain`. */
  insertRule(chain: string, expr: unknown[], comment?: string): NftCommand {
    return { insert: { rule: this.#rule(chain, expr, comment) } };
  }

  #rule(chain: string, expr: unknown[], comment?: string): Record<string, unknown> {
    const rule = { family: this.family, table: this.table, chain, expr };
    return comment === undefined ? rule : { ...rule, comment };
  }

  /**
   * The nft text that makes the table with a descriptive `comment` and,
   * for each `[chain, comment]`, a plain chain with its comment: what JSON
   * cannot carry on nft 1.0.6 (see the module doc), for {@link nftApplyText}
   * when a read showed the table missing.
   */
  declare(comment: string, chains: [string, string][] = []): string[] {
    const t = `${this.family} ${this.table}`;
    return [
      `add table ${t} { comment ${nftString(comment)} ; }`,
      ...chains.map(([name, c]) => `add chain ${t} ${name} { comment ${nftString(c)} ; }`),
    ];
  }

  /** `delete rule … handle N` for a rule read with {@link listTable}. */
  deleteRule(rule: NftRule): NftCommand {
    return {
      delete: {
        rule: { family: rule.family, table: rule.table, chain: rule.chain, handle: rule.handle },
      },
    };
  }
}

/** Expressions and statements in nft's JSON form. */
export const expr = {
  /** `<left> <op> <right>` (`in`: any flag of a list, as `ct state established,related`). */
  match(left: unknown, right: unknown, op: "==" | "!=" | "in" = "=="): unknown {
    return { match: { op, left, right } };
  },
  /** A packet header field: `ip saddr`, `tcp dport`, `ether saddr`. */
  payload(protocol: string, field: string): unknown {
    return { payload: { protocol, field } };
  },
  /** A meta key: `iifname`, `oifname`, `l4proto`. */
  meta(key: string): unknown {
    return { meta: { key } };
  },
  /** `fib daddr type`: the routing type of the destination (`local`). */
  fibDaddrType(): unknown {
    return { fib: { result: "type", flags: ["daddr"] } };
  },
  /** `ct state`. */
  ctState(): unknown {
    return { ct: { key: "state" } };
  },
  /** An address prefix `addr/len`. */
  prefix(addr: string, len: number): unknown {
    return { prefix: { addr, len } };
  },
  /** A set literal `{ a, b }`. */
  set(items: unknown[]): unknown {
    return { set: items };
  },
  jump(target: string): unknown {
    return { jump: { target } };
  },
  goto(target: string): unknown {
    return { goto: { target } };
  },
  accept(): unknown {
    return { accept: null };
  },
  drop(): unknown {
    return { drop: null };
  },
  return(): unknown {
    return { return: null };
  },
  masquerade(): unknown {
    return { masquerade: null };
  },
  /** `dnat to addr:port`; an `inet` table also needs the address `family`. */
  dnat(addr: string, port: number, family?: "ip" | "ip6"): unknown {
    return { dnat: family ? { family, addr, port } : { addr, port } };
  },
} as const;
