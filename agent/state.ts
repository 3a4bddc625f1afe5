/**
 * What the agent keeps on the node, in `--state-dir`:
 * - `subnet.json`: the subnet this node holds (and what the list was made
 *   of), so a restarted agent asks etcd for the same one and `cnikit
 *   install` can write the list before the agent runs again;
 * - `status.json`: what `cnikit agent status` shows, rewritten on every
 *   change: the subnet, the peers, the last sync, etcd's reachability.
 * @module
 */

import * as z from "zod/mini";
import { writeFileAtomically } from "./cniconf.ts";

const SavedSubnetSchema = z.object({
  node: z.string(),
  clusterCIDR: z.string(),
  subnet: z.string(),
  mtu: z.number(),
});

/** The subnet a node held, as saved. */
export type SavedSubnet = z.infer<typeof SavedSubnetSchema>;

/** A peer as the status shows it. */
export interface PeerStatus {
  node: string;
  subnet: string;
  publicIP: string;
  vtepMAC?: string;
}

/** The agent's status file. */
export interface AgentStatus {
  pid: number;
  running: boolean;
  node: string;
  backend: string;
  publicIP: string;
  subnet: string;
  startedAt: string;
  etcd: { endpoints: string[]; reachable: boolean; since: string; revision: number };
  lastSync?: string;
  peers: PeerStatus[];
}

/** Reads the saved subnet; undefined when there is none or it cannot be read. */
export async function readSavedSubnet(stateDir: string): Promise<SavedSubnet | undefined> {
  try {
    const parsed = SavedSubnetSchema.safeParse(
      JSON.parse(await Deno.readTextFile(`${stateDir}/subnet.json`)),
    );
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Saves the subnet this node holds. */
export async function saveSubnet(stateDir: string, saved: SavedSubnet): Promise<void> {
  await writeFileAtomically(`${stateDir}/subnet.json`, JSON.stringify(saved, null, 2) + "\n");
}

/** Writes the status file. */
export async function writeStatus(stateDir: string, status: AgentStatus): Promise<void> {
  await writeFileAtomically(`${stateDir}/status.json`, JSON.stringify(status, null, 2) + "\n");
}

/** Reads the status file; undefined when absent. */
export async function readStatus(stateDir: string): Promise<AgentStatus | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(`${stateDir}/status.json`)) as AgentStatus;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** True when process `pid` exists (the status file may outlive its agent). */
export function processAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** The status as text for a person. */
export function formatStatus(status: AgentStatus, alive: boolean): string {
  const state = status.running && alive
    ? `running (pid ${status.pid})`
    : `not running (last pid ${status.pid})`;
  const etcd = status.etcd.reachable
    ? `reachable since ${status.etcd.since}, revision ${status.etcd.revision}`
    : `UNREACHABLE since ${status.etcd.since} (data plane kept as it was)`;
  const lines = [
    `agent:     ${state}`,
    `node:      ${status.node} (${status.publicIP}, ${status.backend})`,
    `subnet:    ${status.subnet}`,
    `etcd:      ${status.etcd.endpoints.join(",")}: ${etcd}`,
    `last sync: ${status.lastSync ?? "never"}`,
    `peers:     ${status.peers.length}`,
    ...status.peers.map((p) =>
      `  ${p.subnet.padEnd(18)} ${p.node} via ${p.publicIP}${p.vtepMAC ? ` (${p.vtepMAC})` : ""}`
    ),
  ];
  return lines.join("\n");
}
