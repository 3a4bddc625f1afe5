/**
 * Entering network namespaces with setns(2) through libc FFI.
 *
 * A netns belongs to a thread. Only synchronous work on the JS thread sees the
 * namespace entered here: spawning a child (the fork happens at `spawn()`),
 * `*Sync` file operations and sync FFI. Async fs ops run on other threads and
 * would see (or, worse, pin) the wrong namespace, so {@link withNetnsSync}
 * refuses callbacks that return a promise.
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import { validateNetnsPath } from "../cni/validate.ts";
import { cString, errno, libc } from "./libc.ts";

const CLONE_NEWNET = 0x40000000;
const O_RDONLY_CLOEXEC = 0o2000000;
/** ioctl(2) on a namespace file: which kind of namespace it is (Linux 4.11+). */
const NS_GET_NSTYPE = 0xb703n;
const EINVAL = 22;

function openNs(path: string): number {
  const fd = libc.open.call(cString(path), O_RDONLY_CLOEXEC);
  if (fd < 0) {
    const err = errno();
    const missing = err === 2;
    throw new CniError(
      missing ? ErrorCode.unknownContainer : ErrorCode.ioFailure,
      `failed to open netns "${path}": ${missing ? "no such file or directory" : `errno ${err}`}`,
    );
  }
  return fd;
}

function notANetns(path: string): CniError {
  return new CniError(ErrorCode.invalidNetns, `"${path}" is not a network namespace`);
}

/**
 * Throws code 3 when nothing is at `path`, code 8 when it is not a network
 * namespace: a plain file or directory, or a namespace of another kind.
 * Cheap (a stat, an open and an ioctl), so plugins call it before reserving
 * anything, instead of learning it from the first command run inside.
 */
export function requireNetns(path: string): void {
  validateNetnsPath(path);
  const fd = openNs(path);
  try {
    const type = libc.ioctl.call(fd, NS_GET_NSTYPE, null);
    // Kernels before 4.11 cannot tell; entering it will.
    if (type >= 0 && type !== CLONE_NEWNET) throw notANetns(path);
  } finally {
    libc.close.call(fd);
  }
}

/**
 * True when `path` is a network namespace. DEL treats anything else (gone,
 * or an empty mount point left after the namespace was unmounted) as a
 * container that is no longer there.
 */
export function netnsExists(path: string): boolean {
  try {
    requireNetns(path);
    return true;
  } catch (e) {
    if (e instanceof CniError) return false;
    throw e;
  }
}

/**
 * Runs `fn` with the JS thread inside the netns at `path`, then returns to
 * the namespace it came from. `fn` must be synchronous.
 * Requires CAP_SYS_ADMIN.
 */
export function withNetnsSync<T>(path: string, fn: () => T): T {
  const target = openNs(path);
  let home = -1;
  try {
    home = openNs("/proc/thread-self/ns/net");
    if (libc.setns.call(target, CLONE_NEWNET) !== 0) {
      const err = errno();
      // EINVAL: the file is not a namespace, or one of another kind.
      if (err === EINVAL) throw notANetns(path);
      throw new CniError(ErrorCode.ioFailure, `failed to enter netns "${path}": errno ${err}`);
    }
    try {
      const value = fn();
      if (value instanceof Promise) {
        throw new TypeError("withNetnsSync() callback must not be async");
      }
      return value;
    } finally {
      returnTo(home);
    }
  } finally {
    libc.close.call(target);
    if (home >= 0) libc.close.call(home);
  }
}

/** Puts the JS thread back into the namespace `home` names, or ends the process. */
function returnTo(home: number): void {
  if (libc.setns.call(home, CLONE_NEWNET) !== 0) {
    // A thread left in another namespace would configure the wrong host from
    // here on; a plugin is short-lived, so stop now.
    console.error(`cnikit: cannot return to the host netns (errno ${errno()})`);
    Deno.exit(1);
  }
}

/**
 * A fresh, empty network namespace that only this process holds, by a
 * descriptor (no bind mount under /run/netns, so nothing outlives the
 * process): a place to rename a link where no other link can clash with
 * it, as the reference's host-device does. `path` names it for `ip`
 * (`ip link set X netns <path>`, or `run(..., { netns: path })`), and
 * `homePath` names the namespace it was made from the same way.
 *
 * Closing it destroys the namespace: a virtual link still inside dies, a
 * physical one goes to the initial namespace. Move links out first.
 * Requires CAP_SYS_ADMIN.
 */
export class TempNetns {
  /** `/proc/<pid>/fd/<fd>` of the new namespace. */
  readonly path: string;
  /** `/proc/<pid>/fd/<fd>` of the namespace this process works in. */
  readonly homePath: string;
  #fds: number[];

  private constructor(fd: number, home: number) {
    this.#fds = [fd, home];
    this.path = `/proc/${Deno.pid}/fd/${fd}`;
    this.homePath = `/proc/${Deno.pid}/fd/${home}`;
  }

  /** Makes the namespace (unshare on the JS thread, which then returns home). */
  static create(): TempNetns {
    const home = openNs("/proc/thread-self/ns/net");
    let fd = -1;
    try {
      if (libc.unshare.call(CLONE_NEWNET) !== 0) {
        throw new CniError(
          ErrorCode.ioFailure,
          `failed to create a temporary netns: errno ${errno()}`,
        );
      }
      try {
        fd = openNs("/proc/thread-self/ns/net");
      } finally {
        returnTo(home);
      }
      return new TempNetns(fd, home);
    } catch (e) {
      libc.close.call(home);
      throw e;
    }
  }

  /** Destroys the namespace (see above) and forgets the home one. */
  close(): void {
    for (const fd of this.#fds) libc.close.call(fd);
    this.#fds = [];
  }
}

/**
 * Runs `fn` holding an exclusive flock(2) on the netns file at `path`, so
 * that the plugins working on one namespace's rules and routes (sbr, vrf)
 * take turns; the reference's sbr locks the same file the same way. The
 * file is never created: a missing namespace is code 3.
 */
export async function withNetnsLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (e) {
    const missing = e instanceof Deno.errors.NotFound;
    throw new CniError(
      missing ? ErrorCode.unknownContainer : ErrorCode.ioFailure,
      `failed to open netns "${path}" to lock it: ${
        missing ? "no such file or directory" : (e as Error).message
      }`,
    );
  }
  try {
    file.lockSync(true);
    return await fn();
  } finally {
    // Closing the only descriptor releases the lock.
    file.close();
  }
}
