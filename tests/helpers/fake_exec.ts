/**
 * An in-memory stand-in for running plugins, plugged into the runtime's
 * seam (`RuntimeOptions.exec`, libcni's `invoke.Exec`): plugins are names in
 * folders that exist only here; each call is recorded (environment, stdin)
 * and answered as the test says, failures decoded exactly as a real
 * plugin's would be.
 * @module
 */

import { findPlugin, type PluginExec, pluginFailure } from "../../lib/cni/invoke.ts";
import type { FakeCall, FakeResponse } from "./fake_plugin.ts";

/** How a fake plugin answers one command: what it prints and how it exits. */
export type FakeAnswer = Pick<FakeResponse, "stdout" | "stderr" | "exit">;

/** A set of fake plugins; pass it as `exec` with `path: [fake.bin]`. */
export class FakeExec implements PluginExec {
  /** The folder to put in the runtime's path. */
  readonly bin = "/fake/bin";
  readonly #files = new Set<string>();
  readonly #answers = new Map<string, FakeAnswer>();
  #calls: FakeCall[] = [];

  /** Fake plugins of the given names in {@link bin}. */
  constructor(...names: string[]) {
    for (const name of names) this.add(name);
  }

  /** Adds a plugin called `name` in `dir` (default: {@link bin}); returns its path. */
  add(name: string, dir = this.bin): string {
    this.#files.add(`${dir}/${name}`);
    return `${dir}/${name}`;
  }

  /** Sets how plugin `name` answers `command`; replaces earlier answers. */
  respond(name: string, command: string, answer: FakeAnswer): void {
    this.#answers.set(`${name}.${command}`, answer);
  }

  /** Every call so far, in order. */
  calls(): FakeCall[] {
    return [...this.#calls];
  }

  /** `plugin:COMMAND` of every call, e.g. `["a:ADD", "b:ADD"]`. */
  log(): string[] {
    return this.#calls.map((c) => `${c.plugin}:${c.command}`);
  }

  /** Forgets the calls so far. */
  clearCalls(): void {
    this.#calls = [];
  }

  findPlugin(name: string, paths: readonly string[]): string {
    return findPlugin(name, paths, (path) => this.#files.has(path));
  }

  execPlugin(path: string, env: Record<string, string>, stdin: Uint8Array): Promise<string> {
    const plugin = path.slice(path.lastIndexOf("/") + 1);
    const command = env.CNI_COMMAND ?? "";
    const stdinText = new TextDecoder().decode(stdin);
    let parsed: Record<string, unknown> = {};
    try {
      parsed = JSON.parse(stdinText);
    } catch { /* not JSON */ }
    this.#calls.push({ plugin, path, command, env: { ...env }, stdinText, stdin: parsed });
    const answer = this.#answers.get(`${plugin}.${command}`) ?? {};
    const stdout = answer.stdout === undefined
      ? (command === "ADD" ? "{}" : "")
      : typeof answer.stdout === "string"
      ? answer.stdout
      : JSON.stringify(answer.stdout);
    const exit = answer.exit ?? 0;
    if (exit !== 0) return Promise.reject(pluginFailure(exit, null, stdout, answer.stderr ?? ""));
    return Promise.resolve(stdout);
  }
}
