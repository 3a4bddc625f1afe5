/**
 * An etcd v3 client over etcd's JSON gateway (HTTP/JSON on the client port,
 * `/v3/...`), through `fetch`: no gRPC, no Node layer, no dependency. Keys
 * and values travel base64-encoded and 64-bit numbers as decimal strings, as
 * the gateway's protobuf-JSON mapping wants; fields at their default value
 * (0, false, PUT) are left out of its answers.
 * @module
 */

/** One key as etcd reports it. */
export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  /** The lease the key is attached to, "0" when none (a decimal int64). */
  lease: string;
}

/** One change seen by a watch. */
export interface WatchEvent {
  type: "PUT" | "DELETE";
  kv: KeyValue;
}

/**
 * What a watch stream delivers: events, with the revision of the last one,
 * or the news that the revision asked for was compacted away.
 */
export type WatchMessage =
  | { kind: "events"; revision: number; events: WatchEvent[] }
  | { kind: "compacted"; compactRevision: number };

/** A compare of a transaction, on a key's create or mod revision. */
export interface Compare {
  key: string;
  target: "CREATE" | "MOD";
  revision: number;
}

/** A request inside a transaction. */
export type TxnOp =
  | { put: { key: string; value: string; lease?: string } }
  | { delete: { key: string } }
  | { range: { key: string } };

/** etcd could not be reached (connection refused, reset, timeout) or answered 5xx. */
export class EtcdUnavailable extends Error {
  override name = "EtcdUnavailable";
}

/** etcd answered with an error for the request itself (gRPC status in `code`). */
export class EtcdRequestError extends Error {
  override name = "EtcdRequestError";
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function b64(text: string): string {
  let binary = "";
  for (const byte of encoder.encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function unb64(text: string | undefined): string {
  if (!text) return "";
  return decoder.decode(Uint8Array.from(atob(text), (c) => c.charCodeAt(0)));
}

/** The key just after every key that starts with `prefix` (etcd's `range_end` for a prefix). */
export function prefixEnd(prefix: string): string {
  const bytes = encoder.encode(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      const end = bytes.slice(0, i + 1);
      end[i]!++;
      return decoder.decode(end);
    }
  }
  return "\0";
}

interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  lease?: string;
}

function toKv(raw: RawKv): KeyValue {
  return {
    key: unb64(raw.key),
    value: unb64(raw.value),
    createRevision: Number(raw.create_revision ?? 0),
    modRevision: Number(raw.mod_revision ?? 0),
    lease: raw.lease ?? "0",
  };
}

interface Header {
  header?: { revision?: string };
}

function revisionOf(answer: Header): number {
  return Number(answer.header?.revision ?? 0);
}

/** Options for {@link EtcdClient}. */
export interface EtcdClientOptions {
  /** Milliseconds one unary request may take before etcd counts as unreachable. */
  timeoutMs?: number;
}

/**
 * A client of one etcd cluster. Requests go to the endpoint that answered
 * last and fail over to the next one when it cannot be reached.
 */
export class EtcdClient {
  readonly endpoints: readonly string[];
  #current = 0;
  #timeoutMs: number;

  constructor(endpoints: readonly string[], options: EtcdClientOptions = {}) {
    if (endpoints.length === 0) throw new TypeError("at least one etcd endpoint is needed");
    this.endpoints = endpoints.map((e) => e.replace(/\/+$/, ""));
    this.#timeoutMs = options.timeoutMs ?? 3000;
  }

  /** Sends `body` to `path` on one endpoint after another until one answers. */
  async #post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    let lastError: unknown;
    for (let tried = 0; tried < this.endpoints.length; tried++) {
      const index = (this.#current + tried) % this.endpoints.length;
      const endpoint = this.endpoints[index]!;
      try {
        const response = await fetch(`${endpoint}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
          ...(signal ? { signal } : {}),
        });
        if (response.status >= 500 && response.status !== 501) {
          // The gateway answers 503 while the member has no leader, etc.
          lastError = new Error(`${response.status} ${await response.text()}`);
          continue;
        }
        this.#current = index;
        return response;
      } catch (e) {
        if (signal?.aborted && !isTimeout(signal)) throw e;
        lastError = e;
      }
    }
    throw new EtcdUnavailable(
      `etcd unreachable at ${this.endpoints.join(", ")}: ${errorText(lastError)}`,
    );
  }

  /** A unary call: one JSON answer, an error object turned into {@link EtcdRequestError}. */
  async #call<T>(path: string, body: unknown): Promise<T> {
    const response = await this.#post(path, body, AbortSignal.timeout(this.#timeoutMs));
    let answer: T & { error?: string; message?: string; code?: number };
    try {
      answer = await response.json();
    } catch (e) {
      throw new EtcdUnavailable(`etcd answered ${path} with no JSON: ${errorText(e)}`);
    }
    if (!response.ok || answer.error !== undefined) {
      throw new EtcdRequestError(
        answer.code ?? response.status,
        `etcd ${path}: ${answer.message ?? answer.error ?? response.statusText}`,
      );
    }
    return answer;
  }

  /** Every key starting with `prefix`, and the revision they were read at. */
  async rangePrefix(prefix: string): Promise<{ revision: number; kvs: KeyValue[] }> {
    const answer = await this.#call<Header & { kvs?: RawKv[] }>("/v3/kv/range", {
      key: b64(prefix),
      range_end: b64(prefixEnd(prefix)),
    });
    return { revision: revisionOf(answer), kvs: (answer.kvs ?? []).map(toKv) };
  }

  /** One key, or undefined when absent. */
  async get(key: string): Promise<KeyValue | undefined> {
    const answer = await this.#call<{ kvs?: RawKv[] }>("/v3/kv/range", { key: b64(key) });
    const first = answer.kvs?.[0];
    return first ? toKv(first) : undefined;
  }

  /**
   * A transaction: `success` when every compare holds, else `failure`. Returns
   * whether it succeeded and the keys read by `range` requests.
   */
  async txn(
    compare: Compare[],
    success: TxnOp[],
    failure: TxnOp[] = [],
  ): Promise<{ succeeded: boolean; revision: number; kvs: KeyValue[] }> {
    const op = (o: TxnOp) =>
      "put" in o
        ? {
          request_put: {
            key: b64(o.put.key),
            value: b64(o.put.value),
            ...(o.put.lease ? { lease: o.put.lease } : {}),
          },
        }
        : "delete" in o
        ? { request_delete_range: { key: b64(o.delete.key) } }
        : { request_range: { key: b64(o.range.key) } };
    const answer = await this.#call<
      Header & { succeeded?: boolean; responses?: { response_range?: { kvs?: RawKv[] } }[] }
    >("/v3/kv/txn", {
      compare: compare.map((c) => ({
        key: b64(c.key),
        target: c.target,
        result: "EQUAL",
        [c.target === "CREATE" ? "create_revision" : "mod_revision"]: String(c.revision),
      })),
      success: success.map(op),
      failure: failure.map(op),
    });
    return {
      succeeded: answer.succeeded === true,
      revision: revisionOf(answer),
      kvs: (answer.responses ?? []).flatMap((r) => (r.response_range?.kvs ?? []).map(toKv)),
    };
  }

  /** Puts a key unconditionally. */
  async put(key: string, value: string): Promise<void> {
    await this.#call("/v3/kv/put", { key: b64(key), value: b64(value) });
  }

  /** Grants a lease of `ttl` seconds; returns its ID (a decimal int64). */
  async grantLease(ttl: number): Promise<string> {
    const answer = await this.#call<{ ID?: string }>("/v3/lease/grant", { TTL: String(ttl) });
    if (!answer.ID) throw new EtcdRequestError(0, "etcd granted a lease without an ID");
    return answer.ID;
  }

  /**
   * Refreshes a lease once; returns its TTL, or 0 when etcd no longer knows
   * it (expired or revoked).
   */
  async keepAlive(id: string): Promise<number> {
    // The gateway maps the bidirectional stream onto one request: it
    // answers one refresh per JSON object sent, here exactly one.
    const answer = await this.#call<{ result?: { TTL?: string } }>("/v3/lease/keepalive", {
      ID: id,
    });
    return Number(answer.result?.TTL ?? 0);
  }

  /** Revokes a lease, deleting its keys; a lease already gone is fine. */
  async revokeLease(id: string): Promise<void> {
    try {
      await this.#call("/v3/lease/revoke", { ID: id });
    } catch (e) {
      if (e instanceof EtcdRequestError && /lease not found/.test(e.message)) return;
      throw e;
    }
  }

  /**
   * Watches the keys under `prefix` from `startRevision` on, calling
   * `onCreated` once etcd confirms the watch and `onMessage` for each message,
   * until the stream ends (etcd went away:
   * throws {@link EtcdUnavailable}), the watch is compacted away (delivered,
   * then returns) or `signal` aborts (returns).
   */
  async watchPrefix(
    prefix: string,
    startRevision: number,
    onMessage: (message: WatchMessage) => Promise<void> | void,
    signal: AbortSignal,
    onCreated?: () => void,
  ): Promise<void> {
    const response = await this.#post("/v3/watch", {
      create_request: {
        key: b64(prefix),
        range_end: b64(prefixEnd(prefix)),
        start_revision: String(startRevision),
      },
    }, signal);
    if (!response.ok || !response.body) {
      throw new EtcdRequestError(response.status, `etcd /v3/watch: ${await response.text()}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    try {
      while (true) {
        let chunk: ReadableStreamReadResult<string>;
        try {
          chunk = await reader.read();
        } catch (e) {
          if (signal.aborted) return;
          throw new EtcdUnavailable(`etcd watch stream broke: ${errorText(e)}`);
        }
        if (chunk.done) {
          if (signal.aborted) return;
          throw new EtcdUnavailable("etcd closed the watch stream");
        }
        buffered += chunk.value;
        let newline: number;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (!line) continue;
          const message = parseWatchLine(line);
          if (message === "created") onCreated?.();
          if (message === undefined || message === "created") continue;
          await onMessage(message);
          if (message.kind === "compacted") return;
        }
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
  }
}

interface RawWatch {
  result?: Header & {
    created?: boolean;
    canceled?: boolean;
    compact_revision?: string;
    cancel_reason?: string;
    events?: { type?: "PUT" | "DELETE"; kv?: RawKv }[];
  };
  error?: { message?: string; grpc_code?: number };
}

/**
 * One line of the watch stream as a message, "created" for the line that
 * confirms the watch, undefined for progress lines.
 */
export function parseWatchLine(line: string): WatchMessage | "created" | undefined {
  const raw = JSON.parse(line) as RawWatch;
  if (raw.error) {
    throw new EtcdUnavailable(`etcd watch failed: ${raw.error.message ?? JSON.stringify(raw)}`);
  }
  const result = raw.result;
  if (!result) return undefined;
  const compactRevision = Number(result.compact_revision ?? 0);
  if (compactRevision > 0) return { kind: "compacted", compactRevision };
  if (result.canceled) {
    throw new EtcdUnavailable(`etcd canceled the watch: ${result.cancel_reason ?? "no reason"}`);
  }
  if (result.created) return "created";
  if (!result.events?.length) return undefined;
  const events: WatchEvent[] = result.events.map((e) => ({
    type: e.type === "DELETE" ? "DELETE" : "PUT",
    kv: toKv(e.kv ?? {}),
  }));
  // The header's revision can run ahead of a catching-up watch's events;
  // resuming after the last event's own revision skips none.
  return { kind: "events", revision: Math.max(...events.map((e) => e.kv.modRevision)), events };
}

function isTimeout(signal: AbortSignal): boolean {
  return signal.reason instanceof DOMException && signal.reason.name === "TimeoutError";
}

/** The message of any thrown value, with its cause when fetch hides the reason there. */
export function errorText(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
  return `${e.message}${cause}`;
}
