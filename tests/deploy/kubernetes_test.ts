/**
 * The Kubernetes manifests against the code they start: every flag of the
 * agent and of install is one the commands take, with the ConfigMap's
 * values; every variable the arguments use is defined; install and the
 * agent agree on where the list and the state go.
 */

import { assertEquals } from "../helpers/assert.ts";
import { agentOptions, RUN_FLAGS } from "../../agent/main.ts";
import { INSTALL_FLAGS } from "../../agent/install.ts";
import { parseFlags } from "../../agent/flags.ts";

const DIR = new URL("../../deploy/kubernetes/", import.meta.url).pathname;
const daemonset = await Deno.readTextFile(`${DIR}daemonset.yaml`);
const configmap = await Deno.readTextFile(`${DIR}configmap.yaml`);

/** The items of the block list `key:` that follows `after` (comments skipped). */
function listAfter(text: string, after: string, key: string): string[] {
  const lines = text.slice(text.indexOf(after)).split("\n");
  const start = lines.findIndex((l) => l.trim() === `${key}:`);
  const items: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (/^\s*#/.test(line)) continue;
    const item = line.match(/^\s*- (.*)$/);
    if (!item) break;
    items.push(item[1]!);
  }
  return items;
}

/** The ConfigMap's data. */
function configData(): Map<string, string> {
  const data = new Map<string, string>();
  for (
    const m of configmap.slice(configmap.indexOf("\ndata:")).matchAll(/^ {2}([\w-]+): "(.*)"$/gm)
  ) {
    data.set(m[1]!, m[2]!);
  }
  return data;
}

/** The agent container's environment as it would be on a node. */
function environment(): Map<string, string> {
  const data = configData();
  const env = new Map<string, string>();
  const section = daemonset.slice(daemonset.indexOf("- name: agent"));
  for (
    const m of section.matchAll(/- name: (\w+)\n\s+valueFrom:\n\s+(\w+):\n((?:\s+\w+: .*\n)+)/g)
  ) {
    const fields = Object.fromEntries([...m[3]!.matchAll(/(\w+): (.*)/g)].map((f) => [f[1], f[2]]));
    if (m[2] === "configMapKeyRef") {
      assertEquals(fields.name, "cnikit");
      const value = data.get(fields.key!);
      if (value === undefined) throw new Error(`the ConfigMap has no ${fields.key}`);
      env.set(m[1]!, value);
    } else {
      env.set(m[1]!, fields.fieldPath === "status.hostIP" ? "10.0.0.1" : "node-a");
    }
  }
  return env;
}

Deno.test("deploy/kubernetes: the agent's arguments are valid flags once the kubelet fills them in", () => {
  const env = environment();
  assertEquals([...env.keys()].sort(), [
    "BACKEND",
    "CLUSTER_CIDR",
    "ETCD_ENDPOINTS",
    "NODE_IP",
    "NODE_NAME",
    "SUBNET_LEN",
  ]);
  const args = listAfter(daemonset, "- name: agent", "args").map((a) =>
    a.replace(/\$\((\w+)\)/g, (_, name) => {
      const value = env.get(name);
      if (value === undefined) throw new Error(`$(${name}) is not in the environment`);
      return value;
    })
  );
  assertEquals(listAfter(daemonset, "- name: agent", "command").slice(1), ["agent"]);
  const options = agentOptions(parseFlags(RUN_FLAGS, args).values);
  assertEquals(options.etcdEndpoints, [configData().get("etcd-endpoints")]);
  assertEquals([options.nodeName, options.publicIP], ["node-a", "10.0.0.1"]);
});

Deno.test("deploy/kubernetes: install takes its flags and puts the list and state where the agent does", () => {
  const command = listAfter(daemonset, "- name: install", "command");
  assertEquals(command.slice(0, 2), ["/opt/cnikit/bin/cnikit", "install"]);
  const install = parseFlags(INSTALL_FLAGS, command.slice(2)).values;
  const agent = parseFlags(RUN_FLAGS, listAfter(daemonset, "- name: agent", "args")).values;
  for (
    const flag of ["cni-conf-dir", "cni-conf-file", "network-name", "ipam-data-dir", "state-dir"]
  ) {
    assertEquals(install.get(flag), agent.get(flag), flag);
  }
  assertEquals(install.get("bin-dir"), "/host/opt/cni/bin");
});
