/**
 * An executable fake CNI plugin for the tests that are about processes
 * (cnitool's command line, the executor's deadlines and pipes, SDK examples
 * delegating): a small `#!/bin/sh` script, a test fixture never used by
 * cnikit itself, that records every call (plugin name, environment, stdin)
 * and answers as the test tells it to. Tests of the runtime's logic use the
 * in-memory `FakeExec` (fake_exec.ts) instead.
 * @module
 */

/** One recorded plugin call. */
export interface FakeCall {
  plugin: string;
  /** The file that ran. */
  path: string;
  command: string;
  env: Record<string, string>;
  /** stdin as text. */
  stdinText: string;
  /** stdin parsed, when it is JSON. */
  stdin: Record<string, unknown>;
}

/** How a fake plugin answers one command. */
export interface FakeResponse {
  stdout?: string | object;
  stderr?: string;
  exit?: number;
  /** `exec sleep N`: the plugin process itself sleeps. */
  sleep?: number;
  /** Leave a backgrounded `sleep 60` holding stdout/stderr, then wait for it. */
  orphan?: boolean;
}

function script(root: string): string {
  return `#!/bin/sh
PATH=/usr/bin:/bin
root='${root}'
name=\${0##*/}
n=$(ls "$root/calls" | wc -l)
call="$root/calls/$(printf %05d "$n")"
mkdir "$call"
echo "$name" > "$call/plugin"
echo "$0" > "$call/path"
env -0 > "$call/env"
cat > "$call/stdin"
ctl="$root/ctl/$name.$CNI_COMMAND"
if [ -f "$ctl.orphan" ]; then
  sleep 60 &
  echo $! > "$ctl.pid"
  wait
fi
if [ -f "$ctl.sleep" ]; then
  echo $$ > "$ctl.execpid"
  exec sleep "$(cat "$ctl.sleep")"
fi
if [ -f "$ctl.stderr" ]; then cat "$ctl.stderr" >&2; fi
if [ -f "$ctl.stdout" ]; then
  cat "$ctl.stdout"
elif [ "$CNI_COMMAND" = ADD ]; then
  echo '{}'
fi
if [ -f "$ctl.exit" ]; then exit "$(cat "$ctl.exit")"; fi
exit 0
`;
}

/** A temp folder of fake plugins, their call log and their answers. */
export class FakePlugins {
  /** The folder to put in CNI_PATH. */
  readonly bin: string;

  private constructor(readonly root: string) {
    this.bin = `${root}/bin`;
  }

  /** Creates the folder with plugins of the given names (default `noop`). */
  static create(...names: string[]): FakePlugins {
    const fake = new FakePlugins(Deno.makeTempDirSync({ prefix: "cnikit-fake-" }));
    for (const dir of ["bin", "calls", "ctl"]) Deno.mkdirSync(`${fake.root}/${dir}`);
    for (const name of names.length ? names : ["noop"]) fake.add(name);
    return fake;
  }

  /** Adds a plugin called `name`, in `dir` (default: {@link bin}). */
  add(name: string, dir = this.bin): string {
    const path = `${dir}/${name}`;
    Deno.writeTextFileSync(path, script(this.root), { mode: 0o755 });
    return path;
  }

  /** Sets how plugin `name` answers `command`; replaces earlier answers. */
  respond(name: string, command: string, response: FakeResponse): void {
    const base = `${this.root}/ctl/${name}.${command}`;
    for (const ext of ["stdout", "stderr", "exit", "sleep", "orphan"]) {
      try {
        Deno.removeSync(`${base}.${ext}`);
      } catch { /* not set */ }
    }
    const { stdout, stderr, exit, sleep, orphan } = response;
    if (stdout !== undefined) {
      Deno.writeTextFileSync(
        `${base}.stdout`,
        typeof stdout === "string" ? stdout : JSON.stringify(stdout),
      );
    }
    if (stderr !== undefined) Deno.writeTextFileSync(`${base}.stderr`, stderr);
    if (exit !== undefined) Deno.writeTextFileSync(`${base}.exit`, String(exit));
    if (sleep !== undefined) Deno.writeTextFileSync(`${base}.sleep`, String(sleep));
    if (orphan) Deno.writeTextFileSync(`${base}.orphan`, "");
  }

  /** Every call so far, in order. */
  calls(): FakeCall[] {
    const dirs = [...Deno.readDirSync(`${this.root}/calls`)].map((e) => e.name).sort();
    return dirs.map((d) => {
      const dir = `${this.root}/calls/${d}`;
      const env: Record<string, string> = {};
      for (const line of Deno.readTextFileSync(`${dir}/env`).split("\0")) {
        const eq = line.indexOf("=");
        if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
      }
      const stdinText = Deno.readTextFileSync(`${dir}/stdin`);
      let stdin: Record<string, unknown> = {};
      try {
        stdin = JSON.parse(stdinText);
      } catch { /* not JSON */ }
      return {
        plugin: Deno.readTextFileSync(`${dir}/plugin`).trim(),
        path: Deno.readTextFileSync(`${dir}/path`).trim(),
        command: env.CNI_COMMAND ?? "",
        env,
        stdinText,
        stdin,
      };
    });
  }

  /** `plugin:COMMAND` of every call, e.g. `["a:ADD", "b:ADD"]`. */
  log(): string[] {
    return this.calls().map((c) => `${c.plugin}:${c.command}`);
  }

  /** Forgets the calls so far. */
  clearCalls(): void {
    Deno.removeSync(`${this.root}/calls`, { recursive: true });
    Deno.mkdirSync(`${this.root}/calls`);
  }

  /**
   * The pid of the last `sleep` answer of `name` for `command`, or undefined
   * when the plugin was killed before it got that far.
   */
  sleepPid(name: string, command: string): number | undefined {
    try {
      return Number(Deno.readTextFileSync(`${this.root}/ctl/${name}.${command}.execpid`).trim());
    } catch {
      return undefined;
    }
  }

  /** Kills the background sleeps `orphan` answers left (by pid) and removes the folder. */
  cleanup(): void {
    for (const entry of Deno.readDirSync(`${this.root}/ctl`)) {
      if (!entry.name.endsWith(".pid")) continue;
      const pid = Number(Deno.readTextFileSync(`${this.root}/ctl/${entry.name}`).trim());
      if (!isSleep(pid)) continue;
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    Deno.removeSync(this.root, { recursive: true });
  }
}

/** True while `pid` is a running `sleep` (so a reused pid is never killed). */
export function isSleep(pid: number): boolean {
  try {
    const cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    const state = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]?.[0];
    return cmdline.startsWith("sleep\0") && state !== "Z";
  } catch {
    return false;
  }
}
