/**
 * The runtime's view of one attachment and of a GC request (libcni's
 * `RuntimeConf` and `GCArgs`), shared by the runtime and its result cache.
 * @module
 */

import type { GCAttachment } from "../lib/cni/spec/schemas.ts";

/** The arguments of one attachment (libcni's `RuntimeConf`). */
export interface RuntimeConf {
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS as pairs. */
  args?: [string, string][];
  /** Capability arguments; each plugin gets those it enables as `runtimeConfig`. */
  capabilityArgs?: Record<string, unknown>;
}

/** What GC keeps. `validAttachments` unset sends `null`. */
export interface GCArgs {
  validAttachments?: GCAttachment[] | null;
}
