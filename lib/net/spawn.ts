/**
 * Starting a program with posix_spawn(3) through libc, its stdin, stdout and
 * stderr in memory files (memfd_create), and waiting for it with waitpid(2)
 * on a thread of Deno's blocking pool.
 *
 * Why not `Deno.Command`: a plugin process is short-lived, and its first
 * `Deno.Command` makes Deno load and compile its process, streams and
 * body-reading scripts (~25 ms in a CPU profile of a bridge ADD, and heap
 * to match), then forks the whole process once per child (~5 ms each on the
 * JS thread, page tables of a 40 MiB process copied). posix_spawn uses
 * vfork; memory files need no streams, cannot fill up and block the child
 * the way a pipe can, and read back as plain files.
 *
 * The spawn happens synchronously on the calling thread, so a caller that
 * has entered a network namespace (netns.ts `withNetnsSync`) starts the
 * child inside it; the waiting happens anywhere.
 * @module
 */

import { cString, environ, errno, libc } from "./libc.ts";

/** How a child ended and what it wrote. */
export interface Finished {
  /** The exit status, or 128 + the signal that ended it (as Deno reports it). */
  code: number;
  stdout: Uint8Array;
  stderr: Uint8Array;
}

/** A started child: wait for it exactly once. */
export interface Started {
  readonly pid: number;
  wait(): Promise<Finished>;
}

const MFD_CLOEXEC = 1;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const SIGPIPE = 13;
/** glibc's sizes on 64-bit Linux are 80 and 336 bytes; room to spare. */
const FILE_ACTIONS_SIZE = 256;
const SPAWNATTR_SIZE = 512;
const SIGSET_SIZE = 128;
/** waitpid on a pool thread cannot read that thread's errno; a failure is retried this often. */
const WAIT_ATTEMPTS = 100;

/** A NULL-terminated array of pointers to the strings (which the caller keeps alive). */
function pointerArray(strings: Uint8Array[]): BigUint64Array {
  const array = new BigUint64Array(strings.length + 1);
  strings.forEach((s, i) => array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s))));
  return array;
}

function memoryFile(name: string): number {
  const fd = libc.memfd_create.call(cString(`cnikit-${name}`), MFD_CLOEXEC);
  if (fd < 0) throw new Error(`memfd_create failed: errno ${errno()}`);
  return fd;
}

/** The whole content of one of our descriptors, read through /proc (a new file offset, from 0). */
function readAll(fd: number): Uint8Array {
  return Deno.readFileSync(`/proc/self/fd/${fd}`);
}

/**
 * The child runs with an empty signal mask and SIGPIPE at its default, as
 * from a shell: Deno's runtime ignores SIGPIPE, and an ignored signal would
 * otherwise stay ignored across exec.
 */
function spawnAttributes(): Uint8Array {
  const attr = new Uint8Array(SPAWNATTR_SIZE);
  const mask = new Uint8Array(SIGSET_SIZE);
  const defaults = new Uint8Array(SIGSET_SIZE);
  libc.posix_spawnattr_init.call(attr);
  libc.sigemptyset.call(mask);
  libc.sigemptyset.call(defaults);
  libc.sigaddset.call(defaults, SIGPIPE);
  libc.posix_spawnattr_setsigmask.call(attr, mask);
  libc.posix_spawnattr_setsigdefault.call(attr, defaults);
  libc.posix_spawnattr_setflags.call(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  return attr;
}

function exitCode(status: number): number {
  const signal = status & 0x7f;
  return signal === 0 ? (status >> 8) & 0xff : 128 + signal;
}

/**
 * Starts `path` (absolute) with `args` and this process's environment,
 * `stdin` as its standard input (empty when absent). Throws when the
 * program cannot be started (the message carries the errno).
 */
export function spawn(path: string, args: readonly string[], stdin = ""): Started {
  const fds = [memoryFile("stdin"), memoryFile("stdout"), memoryFile("stderr")];
  const closeAll = () => fds.forEach((fd) => libc.close.call(fd));
  let pid: number;
  try {
    if (stdin !== "") Deno.writeTextFileSync(`/proc/self/fd/${fds[0]}`, stdin);
    const strings = [path, ...args].map(cString);
    const argv = pointerArray(strings);
    const actions = new Uint8Array(FILE_ACTIONS_SIZE);
    const attr = spawnAttributes();
    libc.posix_spawn_file_actions_init.call(actions);
    fds.forEach((fd, target) => libc.posix_spawn_file_actions_adddup2.call(actions, fd, target));
    const pidOut = new Int32Array(1);
    const err = libc.posix_spawn.call(pidOut, strings[0]!, actions, attr, argv, environ());
    libc.posix_spawn_file_actions_destroy.call(actions);
    libc.posix_spawnattr_destroy.call(attr);
    if (err !== 0) throw new Error(`cannot run ${path}: errno ${err}`);
    pid = pidOut[0]!;
  } catch (e) {
    closeAll();
    throw e;
  }
  return {
    pid,
    async wait(): Promise<Finished> {
      const status = new Int32Array(1);
      try {
        for (let attempt = 1; await libc.waitpid.call(pid, status, 0) !== pid; attempt++) {
          if (attempt === WAIT_ATTEMPTS) throw new Error(`waitpid(${pid}) keeps failing`);
        }
        return { code: exitCode(status[0]!), stdout: readAll(fds[1]!), stderr: readAll(fds[2]!) };
      } finally {
        closeAll();
      }
    },
  };
}
