/**
 * The libc functions cnikit calls through FFI, in one place: setns and
 * friends for entering namespaces (netns.ts), posix_spawn and waitpid for
 * running programs (spawn.ts), sockets and ioctls for the DHCP client
 * (ipam/dhcp/socket.ts).
 *
 * Functions are called through their addresses rather than declared as
 * dlopen symbols: for each symbol Deno builds a fast-call binding (a
 * Cranelift trampoline, V8 templates) whose code costs a plugin process
 * ~2.7 MiB of peak RSS (tests/bench/memory.ts); a call through a function
 * pointer goes to libffi, synchronously on the calling thread, as setns and
 * posix_spawn need. Each pointer is made on first use.
 * @module
 */

/** Where libc's functions are: dlopen statics, i.e. their addresses. */
const ADDRESSES = {
  open: { type: "pointer" },
  close: { type: "pointer" },
  setns: { type: "pointer" },
  ioctl: { type: "pointer" },
  unshare: { type: "pointer" },
  __errno_location: { type: "pointer" },
  environ: { type: "pointer" },
  memfd_create: { type: "pointer" },
  posix_spawn: { type: "pointer" },
  posix_spawn_file_actions_init: { type: "pointer" },
  posix_spawn_file_actions_adddup2: { type: "pointer" },
  posix_spawn_file_actions_destroy: { type: "pointer" },
  posix_spawnattr_init: { type: "pointer" },
  posix_spawnattr_setflags: { type: "pointer" },
  posix_spawnattr_setsigdefault: { type: "pointer" },
  posix_spawnattr_setsigmask: { type: "pointer" },
  posix_spawnattr_destroy: { type: "pointer" },
  sigemptyset: { type: "pointer" },
  sigaddset: { type: "pointer" },
  waitpid: { type: "pointer" },
  socket: { type: "pointer" },
  bind: { type: "pointer" },
  setsockopt: { type: "pointer" },
  sendto: { type: "pointer" },
  recvfrom: { type: "pointer" },
  poll: { type: "pointer" },
  strerror: { type: "pointer" },
} as const;

/** The signatures of the functions (everything in ADDRESSES but `environ`). */
const SIGNATURES = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  unshare: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  posix_spawn: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "pointer"],
    result: "i32",
  },
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  sigemptyset: { parameters: ["buffer"], result: "i32" },
  sigaddset: { parameters: ["buffer", "i32"], result: "i32" },
  // On a thread of Deno's blocking pool: waiting for a child must not stop the JS thread.
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32", nonblocking: true },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  recvfrom: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "isize" },
  // Waits up to its timeout: on the blocking pool, so the daemon's JS thread keeps serving.
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

type Signatures = typeof SIGNATURES;
type Libc = { [K in keyof Signatures]: Deno.UnsafeFnPointer<Signatures[K]> };

let library: Deno.DynamicLibrary<typeof ADDRESSES> | undefined;
const made = new Map<string, unknown>();

function address(name: keyof typeof ADDRESSES): Deno.PointerObject {
  library ??= Deno.dlopen("libc.so.6", ADDRESSES);
  const pointer = library.symbols[name];
  if (pointer === null) throw new Error(`libc has no ${name}`);
  return pointer;
}

/** libc's functions, each bound on first use. */
export const libc: Libc = new Proxy({} as Libc, {
  get(_, name: keyof Signatures) {
    let bound = made.get(name);
    if (bound === undefined) {
      bound = new Deno.UnsafeFnPointer(
        address(name) as Deno.PointerObject<never>,
        SIGNATURES[name],
      );
      made.set(name, bound);
    }
    return bound;
  },
});

/** `text` as a NUL-terminated C string. */
export function cString(text: string): Uint8Array {
  return new TextEncoder().encode(text + "\0");
}

/** The process's environment block (`char **environ`) as libc has it now. */
export function environ(): Deno.PointerValue {
  return new Deno.UnsafePointerView(address("environ")).getPointer();
}

/**
 * errno of the last failed libc call on this thread (errno is per thread, not
 * per handle): read it right after the call, on the thread that made it.
 */
export function errno(): number {
  const p = libc.__errno_location.call();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

/** Unloads libc; tests call this so the resource sanitizer stays quiet. */
export function closeLibc(): void {
  library?.close();
  library = undefined;
  made.clear();
}
