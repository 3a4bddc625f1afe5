/**
 * An exclusive cross-process lock on a file with flock(2), the same lock
 * Go's go-filemutex takes, so cnikit and the reference plugins exclude each
 * other when they share a lock file.
 * @module
 */

/** An open lock file; lock and unlock as often as needed, then close. */
export class FileLock {
  readonly path: string;
  #file: Deno.FsFile;

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /**
   * Opens `path`, creating it (mode 0750, as go-filemutex does) when it is
   * missing. The lock is not taken yet.
   */
  static open(path: string): FileLock {
    let file: Deno.FsFile;
    try {
      // Read-only suffices for flock and works where the file exists but is
      // not writable; only creation needs write access in Deno.
      file = Deno.openSync(path, { read: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      file = Deno.openSync(path, { read: true, write: true, create: true, mode: 0o750 });
    }
    return new FileLock(path, file);
  }

  /**
   * Waits for the exclusive lock. Asynchronous so that a caller running this
   * in-process keeps its event loop (and its deadline timers) alive.
   */
  async lock(): Promise<void> {
    await this.#file.lock(true);
  }

  /** Releases the lock. */
  unlock(): void {
    this.#file.unlockSync();
  }

  /** Runs `fn` holding the lock and releases it afterwards, even on failure. */
  async with<T>(fn: () => T | Promise<T>): Promise<T> {
    await this.lock();
    try {
      return await fn();
    } finally {
      this.unlock();
    }
  }

  /** Closes the file, which also drops a lock still held. */
  close(): void {
    this.#file.close();
  }
}
