/**
 * The second kernel: runs one command inside Debian's user-mode-linux, a complete Linux 6.1
 * that runs as an ordinary process, for the kernel features this machine's kernel may lack
 * (dummy, vlan, ipvlan, vrf, bonding, bridge VLAN filtering).
 *
 * ```sh
 * deno run -A scripts/uml_run.ts [--timeout S] [--mem SIZE] [--modules "m1 m2"] \
 *   [--env NAME[=VALUE]]... -- COMMAND [ARG...]
 * ```
 *
 * The guest's root file system is this machine's (hostfs, read-write), so the checkout, deno
 * and every tool are at the same paths, and so is the working directory. The guest has its own
 * network stack, namespaces and netfilter, its own `/dev`, and tmpfs on `/run` and (when it
 * exists) `/var/lib/cni`; Deno's cache directory is an overlay there, so the guest reads the
 * host's cache and never writes it (two kernels must not share SQLite files). Kernel modules
 * load on demand.
 *
 * The guest's kernel has no nftables for ip, ip6 or inet (Debian builds it without), only for
 * bridge: there `iptables`, `ip6tables` and their -save/-restore are the legacy tools (first in
 * PATH), and nft-based masquerade cannot run.
 *
 * The command's stdout and stderr stream back as it runs; its stdin is empty. Environment:
 * PATH, HOME, NO_COLOR, CI, DENO_DIR, TERM and every CNIKIT_* variable pass in, plus `--env`,
 * plus `CNIKIT_SECOND_KERNEL=uml`. Exit status: the command's; 124 when it ran past the
 * timeout; 125 when the guest could not start or stopped without a result; 130/143 when this
 * runner was interrupted. No process of the guest outlives the runner: it stops the guest and
 * then kills, by PID, every process left in the guest's session; and should the runner itself
 * be killed, the guest powers off at its end of input, or a minute after the timeout.
 *
 * The guest is slow at system calls (a Deno start costs seconds there): run in it only what
 * needs its kernel.
 * @module
 */

/** Where Debian's user-mode-linux package puts the kernel and its modules. */
const KERNEL_CANDIDATES = ["/usr/bin/linux.uml"];
const MODULES_DIR = "/usr/lib/uml/modules";
const MODPROBE_CANDIDATES = ["/usr/sbin/modprobe", "/sbin/modprobe"];
/**
 * Loaded at boot, since nothing asks for them: a tun device node exists only once its module is
 * in; IPv6's sysctls under /proc/sys/net/ipv6 only once ipv6 is (a plugin writes them before it
 * opens any IPv6 socket, which would load it).
 */
const DEFAULT_MODULES = ["tun", "ipv6"];
const PASSED_ENV = ["PATH", "HOME", "NO_COLOR", "CI", "DENO_DIR", "TERM"];
/**
 * Debian's UML kernel has xtables but no nftables for ip, ip6 or inet (only bridge), so the
 * nft-based `iptables` cannot work there; in the guest these names are the legacy tools.
 */
const LEGACY_XTABLES = ["iptables", "ip6tables"].flatMap((t) => [t, `${t}-save`, `${t}-restore`]);
/** Lines the guest's init writes around the command; the runner strips them from the output. */
const MARK = "\u0001cnikit-uml:";

/** Exit statuses of the runner itself. */
export const EXIT_TIMEOUT = 124;
export const EXIT_NO_RESULT = 125;

/** Options of {@link runInUml}. */
export interface UmlRunOptions {
  /** The command and its arguments, run without a shell. */
  cmd: string[];
  /** The command's working directory (the same path in the guest); the current one by default. */
  cwd?: string;
  /** Variables set in the guest besides the ones passed through. */
  env?: Record<string, string>;
  /** Seconds from the guest's start before it is stopped (exit 124); 1200 by default. */
  timeoutSeconds?: number;
  /** Guest memory, `1500M` by default. */
  mem?: string;
  /** Modules loaded before the command (others load on demand). */
  modules?: string[];
  /**
   * Where the command's output goes as it arrives: this process's stdout and stderr (default),
   * the result (`capture`), or a function.
   */
  output?: "inherit" | "capture" | ((stream: "stdout" | "stderr", text: string) => void);
  /** Stops the guest when aborted (exit 130). */
  signal?: AbortSignal;
}

/** What {@link runInUml} brings back. */
export interface UmlRunResult {
  /** The command's exit status, or 124, 125, 130. */
  code: number;
  /** Milliseconds from starting the kernel to starting the command (boot and modules). */
  bootMs?: number;
  /** Milliseconds the command ran. */
  commandMs?: number;
  /** Why there is no exit status of the command, with the guest's console when it helps. */
  failure?: string;
  /** The kernel's process id: every process of the guest is in its session. */
  pid?: number;
  /** The command's output, with `output: "capture"`. */
  stdout?: string;
  stderr?: string;
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function firstExisting(paths: string[]): string | undefined {
  return paths.find(exists);
}

/** The kernel, the module tree of its version and modprobe, or why they cannot be had. */
export function findUml(): { kernel: string; modules: string; modprobe: string } | string {
  const kernel = firstExisting(KERNEL_CANDIDATES);
  const modprobe = firstExisting(MODPROBE_CANDIDATES);
  let modules: string | undefined;
  try {
    modules = [...Deno.readDirSync(MODULES_DIR)].find((e) => e.isDirectory)?.name;
  } catch {
    modules = undefined;
  }
  if (!kernel || !modules || !modprobe) {
    return "the second kernel needs Debian's user-mode-linux and kmod " +
      "(apt-get install -y user-mode-linux kmod)";
  }
  return { kernel, modules: `${MODULES_DIR}/${modules}`, modprobe };
}

/** A word for a POSIX shell, quoted. */
function q(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

function denoDir(env: Record<string, string>): string | undefined {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const dir = env.DENO_DIR || (xdg ? `${xdg}/deno` : env.HOME && `${env.HOME}/.cache/deno`);
  try {
    return dir && Deno.statSync(dir).isDirectory ? dir : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The guest's init: mounts its own /proc, /sys, /dev, /run, /var/lib/cni and an overlay on
 * Deno's cache, points the kernel's module loader at the UML modules, runs the command with its
 * stdout on the second console (the host's stdout) and its stderr on the first (the host's
 * stderr), then waits for the runner to confirm it has read everything before powering off, so
 * output still queued in the console driver is never lost.
 */
function initScript(
  work: string,
  modules: string[],
  cmd: string[],
  cwd: string,
  env: Record<string, string>,
  timeoutSeconds: number,
): string {
  const deno = denoDir(env);
  return `#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
stty -opost -echo
stty -F /dev/tty1 -opost -echo
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /run/lock /run/cnikit-uml/fifo /dev/shm
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /var/lib/cni 2>/dev/null
${
    deno
      ? `mkdir -p /run/cnikit-uml/deno /run/cnikit-uml/deno-work
mount -t overlay overlay -o lowerdir=${
        q(deno)
      },upperdir=/run/cnikit-uml/deno,workdir=/run/cnikit-uml/deno-work ${
        q(deno)
      } || echo "uml_run: no overlay on ${deno}: the guest writes the host's Deno cache"`
      : ""
  }
echo ${q(`${work}/modprobe`)} >/proc/sys/kernel/modprobe
${modules.length ? `${q(`${work}/modprobe`)} -a ${modules.map(q).join(" ")}` : ""}
ip link set lo up
(sleep ${timeoutSeconds + 60}; poweroff -f) &
set -- env -i ${Object.entries(env).map(([k, v]) => q(`${k}=${v}`)).join(" ")} ${
    cmd.map(q).join(" ")
  }
cd ${q(cwd)} || set -- sh -c 'echo "uml_run: no directory $0 in the guest" >&2; exit 125' ${q(cwd)}
mkfifo /run/cnikit-uml/fifo/out /run/cnikit-uml/fifo/err
cat /run/cnikit-uml/fifo/out >/dev/tty1 & out=$!
cat /run/cnikit-uml/fifo/err & err=$!
printf '${MARK}start\\n'
printf '${MARK}start\\n' >/dev/tty1
"$@" </dev/null >/run/cnikit-uml/fifo/out 2>/run/cnikit-uml/fifo/err
rc=$?
wait $out $err
printf '${MARK}end\\n' >/dev/tty1
printf '${MARK}end %s\\n' "$rc"
read -r ack
poweroff -f
`;
}

/** The processes (not zombies) whose session is `sid`: a guest's processes outlive its kernel. */
export function sessionMembers(sid: number): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
    } catch {
      continue;
    }
    // Fields after the command name: state ppid pgrp session ...
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(fields[3]) === sid && fields[0] !== "Z") pids.push(Number(e.name));
  }
  return pids;
}

function kill(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Stops the guest whose kernel process is `pid`: SIGTERM lets the kernel take its processes
 * down, SIGKILL follows when it does not within 5 s ({@link sweep} finds what is left).
 */
async function stopGuest(pid: number, exited: Promise<unknown>): Promise<void> {
  kill(pid, "SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([exited, new Promise((r) => timer = setTimeout(r, 5000))]);
  clearTimeout(timer);
  kill(pid, "SIGKILL");
  await exited;
}

/** Kills, by PID, the processes left in session `sid` until there are none. */
async function sweep(sid: number): Promise<void> {
  for (let round = 0; round < 100; round++) {
    const left = sessionMembers(sid);
    if (!left.length) return;
    for (const p of left) kill(p, "SIGKILL");
    await sleep(50);
  }
  throw new Error(`uml_run: processes of session ${sid} would not die: ${sessionMembers(sid)}`);
}

/**
 * Splits one of the guest's console streams at the init's marks: what comes before `start` is
 * the boot log (kept for errors), what comes between `start` and `end` is the command's and goes
 * to `sink` as it arrives, and each mark is reported with its words.
 */
class Demux {
  boot = "";
  private phase: "boot" | "run" | "done" = "boot";
  private pending = "";
  private decoder = new TextDecoder();

  constructor(
    private sink: (text: string) => void,
    private onMark: (words: string) => void,
  ) {}

  /** Takes the next chunk of the stream; `undefined` at its end. */
  push(chunk: Uint8Array | undefined): void {
    this.pending += this.decoder.decode(chunk, { stream: chunk !== undefined });
    for (;;) {
      const at = this.pending.indexOf(MARK);
      const eol = at < 0 ? -1 : this.pending.indexOf("\n", at);
      if (eol < 0) break;
      this.take(this.pending.slice(0, at));
      const words = this.pending.slice(at + MARK.length, eol);
      this.pending = this.pending.slice(eol + 1);
      if (words === "start" && this.phase === "boot") this.phase = "run";
      else if (words.startsWith("end") && this.phase === "run") this.phase = "done";
      else continue;
      this.onMark(words);
    }
    // Text that cannot be the beginning of a mark goes out now: a test's name shows before its
    // verdict completes the line.
    let hold = -1;
    for (let from = 0; chunk !== undefined; from = hold + 1) {
      hold = this.pending.indexOf("\u0001", from);
      if (hold < 0) break;
      const rest = this.pending.slice(hold, hold + MARK.length);
      if (MARK.startsWith(rest)) break;
    }
    this.take(hold < 0 ? this.pending : this.pending.slice(0, hold));
    this.pending = hold < 0 ? "" : this.pending.slice(hold);
  }

  private take(text: string): void {
    if (!text) return;
    if (this.phase === "boot") this.boot += text;
    else if (this.phase === "run") this.sink(text);
  }
}

async function pump(stream: ReadableStream<Uint8Array>, demux: Demux): Promise<void> {
  for await (const chunk of stream) demux.push(chunk);
  demux.push(undefined);
}

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length) bytes = bytes.subarray(file.writeSync(bytes));
}

/** Runs one command in a freshly booted second kernel; see the module documentation. */
export async function runInUml(options: UmlRunOptions): Promise<UmlRunResult> {
  const found = findUml();
  if (typeof found === "string") return { code: EXIT_NO_RESULT, failure: found };
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (v && (PASSED_ENV.includes(k) || k.startsWith("CNIKIT_"))) env[k] = v;
  }
  Object.assign(env, options.env, { CNIKIT_SECOND_KERNEL: "uml" });

  const out: string[] = [];
  const err: string[] = [];
  const capture = options.output === "capture";
  const output = typeof options.output === "function" ? options.output : undefined;
  const sink = (stream: "stdout" | "stderr", text: string) => {
    if (output) output(stream, text);
    else if (capture) (stream === "stdout" ? out : err).push(text);
    else writeAll(stream === "stdout" ? Deno.stdout : Deno.stderr, text);
  };
  const work = await Deno.makeTempDir({ prefix: "cnikit-uml-" });
  try {
    await Deno.mkdir(`${work}/mods/lib/modules`, { recursive: true });
    const version = found.modules.slice(found.modules.lastIndexOf("/") + 1);
    await Deno.symlink(found.modules, `${work}/mods/lib/modules/${version}`);
    // The kernel runs this for every module it wants: modprobe, pointed at the UML modules.
    await Deno.writeTextFile(
      `${work}/modprobe`,
      `#!/bin/sh\nexec ${found.modprobe} -d ${q(`${work}/mods`)} "$@"\n`,
      { mode: 0o755 },
    );
    await Deno.mkdir(`${work}/bin`);
    for (const tool of LEGACY_XTABLES) {
      const legacy = tool.replace(/^(ip6?tables)/, "$1-legacy");
      const target = ["/usr/sbin", "/sbin"].map((d) => `${d}/${legacy}`).find(exists);
      if (target) await Deno.symlink(target, `${work}/bin/${tool}`);
    }
    env.PATH = `${work}/bin:${env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`;
    const modules = [...DEFAULT_MODULES, ...options.modules ?? []];
    const cwd = options.cwd ?? Deno.cwd();
    const timeoutMs = (options.timeoutSeconds ?? 1200) * 1000;
    await Deno.writeTextFile(
      `${work}/init`,
      initScript(work, modules, options.cmd, cwd, env, timeoutMs / 1000),
      { mode: 0o755 },
    );

    const started = performance.now();
    let commandStart: number | undefined;
    let commandEnd: number | undefined;
    let status: string | undefined;
    const guest = new Deno.Command(found.kernel, {
      args: [
        `mem=${options.mem ?? "1500M"}`,
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        `init=${work}/init`,
        "con=null",
        "con0=fd:0,fd:2",
        "con1=null,fd:1",
        "ssl=null",
        `uml_dir=${work}`,
        "umid=guest",
        "quiet",
      ],
      // Its own session: the kernel's helper processes can then be found by session, and a
      // terminal's Ctrl-C reaches only the runner, which stops the guest in order.
      detached: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const exited = guest.status;
    const stdin = guest.stdin.getWriter();
    let ends = 0;
    const onMark = (words: string) => {
      if (words === "start") commandStart ??= performance.now();
      else if (words.startsWith("end")) {
        if (words.length > 3) status = words.slice(4);
        // Both streams are read to their end marks: the guest may power off.
        if (++ends === 2) {
          commandEnd = performance.now();
          stdin.write(new TextEncoder().encode("done\n")).catch(() => {});
        }
      }
    };
    const stdout = new Demux((t) => sink("stdout", t), onMark);
    const console = new Demux((t) => sink("stderr", t), onMark);
    const pumps = Promise.all([pump(guest.stdout, stdout), pump(guest.stderr, console)]);

    let stopReason: "timeout" | "interrupt" | undefined;
    const timer = setTimeout(() => stopReason ??= "timeout", timeoutMs);
    const abort = () => stopReason ??= "interrupt";
    options.signal?.addEventListener("abort", abort);
    if (options.signal?.aborted) abort();
    let done = false;
    exited.then(() => done = true);
    try {
      // Polled rather than raced: a stop request must act however the guest behaves.
      while (!done && !stopReason) await sleep(100);
      if (!done) await stopGuest(guest.pid, exited);
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", abort);
      // Helper processes of the kernel can outlive it, holding the output pipes open.
      await sweep(guest.pid);
    }
    await pumps;
    await stdin.close().catch(() => {});

    const result: UmlRunResult = { code: EXIT_NO_RESULT, pid: guest.pid };
    if (commandStart !== undefined) result.bootMs = commandStart - started;
    if (commandStart !== undefined && commandEnd !== undefined) {
      result.commandMs = commandEnd - commandStart;
    }
    if (capture) Object.assign(result, { stdout: out.join(""), stderr: err.join("") });
    if (stopReason === "timeout") {
      result.code = EXIT_TIMEOUT;
      result.failure = `the guest ran past ${timeoutMs / 1000} s and was stopped`;
    } else if (stopReason === "interrupt") {
      result.code = 130;
      result.failure = "interrupted: the guest was stopped";
    } else if (status !== undefined) {
      result.code = Number(status);
    } else {
      const log = console.boot.trim().split("\n").slice(-20).join("\n");
      result.failure = `the guest stopped without a result (kernel exit ${
        (await exited).code
      }); its console:\n${log}`;
    }
    return result;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** An abort signal raised by SIGINT, SIGTERM or SIGHUP, which then no longer end the process. */
export interface SignalAbort {
  signal: AbortSignal;
  /** The first signal caught, if any. */
  caught(): Deno.Signal | undefined;
  /** The exit status a shell gives for the caught signal (130, 143, 129), or undefined. */
  exitCode(): number | undefined;
  /** Gives the signals back to their default handling. */
  dispose(): void;
}

/**
 * Catches the signals that end a run from a terminal or a CI runner, so that a guest is
 * stopped in order instead of being left behind by a runner that died.
 */
export function abortOnSignals(): SignalAbort {
  const controller = new AbortController();
  const codes: Partial<Record<Deno.Signal, number>> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };
  let caught: Deno.Signal | undefined;
  const handlers = (Object.keys(codes) as Deno.Signal[]).map((s) => {
    const h = () => {
      caught ??= s;
      controller.abort();
    };
    Deno.addSignalListener(s, h);
    return [s, h] as const;
  });
  return {
    signal: controller.signal,
    caught: () => caught,
    exitCode: () => caught && codes[caught],
    dispose: () => {
      for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    },
  };
}

/** Milliseconds as seconds for a report line; `-` when unknown. */
export function secs(ms: number | undefined): string {
  return ms === undefined ? "-" : `${(ms / 1000).toFixed(1)} s`;
}

function usage(): never {
  console.error(
    'usage: uml_run.ts [--timeout S] [--mem SIZE] [--modules "m1 m2"] [--env NAME[=VALUE]]... ' +
      "-- COMMAND [ARG...]",
  );
  Deno.exit(2);
}

if (import.meta.main) {
  const args = [...Deno.args];
  const options: UmlRunOptions = { cmd: [], env: {} };
  while (args.length && args[0] !== "--") {
    const flag = args.shift()!;
    const value = args.shift() ?? usage();
    if (flag === "--timeout") options.timeoutSeconds = Number(value);
    else if (flag === "--mem") options.mem = value;
    else if (flag === "--modules") options.modules = value.split(/\s+/).filter(Boolean);
    else if (flag === "--env") {
      const eq = value.indexOf("=");
      const name = eq < 0 ? value : value.slice(0, eq);
      const v = eq < 0 ? Deno.env.get(value) : value.slice(eq + 1);
      if (v !== undefined) options.env![name] = v;
    } else usage();
  }
  options.cmd = args.slice(1);
  const timeout = options.timeoutSeconds;
  if (!options.cmd.length || (timeout !== undefined && !(timeout > 0))) usage();

  const signals = abortOnSignals();
  const result = await runInUml({ ...options, signal: signals.signal });
  signals.dispose();
  if (result.failure) console.error(`uml_run: ${result.failure}`);
  console.error(
    `uml_run: boot ${secs(result.bootMs)}, command ${secs(result.commandMs)}, exit ${result.code}`,
  );
  Deno.exit(signals.exitCode() ?? result.code);
}
