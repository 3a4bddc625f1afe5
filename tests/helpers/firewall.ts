/**
 * Fixtures for the firewall tests: configs chained after a bridge result,
 * the plugin run inside a fake host, the firewall's state in both backends,
 * and a real firewalld on a private D-Bus inside a throwaway namespace.
 * @module
 */

import { hostRunner, type PluginRun } from "./applet.ts";
import { spawnOutput, type TestNetns } from "./netns.ts";
import { withTempDir } from "./tempdir.ts";

/** Runs `firewall` (cnikit's, or the one in `bin`) inside `host`. */
export const firewall = hostRunner("firewall");

/** A firewall config named `brnet` chained after `prev` (an ADD's output). */
export function firewallConf(
  version: string,
  prev: PluginRun | undefined,
  dataDir: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    cniVersion: version,
    name: "brnet",
    type: "firewall",
    // cnikit's records; the reference ignores the key.
    dataDir: `${dataDir}/firewall`,
    ...(prev ? { prevResult: prev.json } : {}),
    ...extra,
  };
}

/** The filter tables of both families as iptables-save prints them (no counters, comments, COMMIT). */
export async function filterTables(ns: TestNetns): Promise<{ 4: string[]; 6: string[] }> {
  const read = async (tool: string) =>
    (await ns.exec(tool, ["-t", "filter"])).split("\n").filter((l) =>
      l && !l.startsWith("#") && l !== "COMMIT" && l !== "*filter"
    ).map((l) => l.replace(/ \[\d+:\d+\]$/, ""));
  return { 4: await read("iptables-save"), 6: await read("ip6tables-save") };
}

/** The per-address rules of CNI-FORWARD (both families, `4:`/`6:` prefixed). */
export async function addressRules(ns: TestNetns): Promise<string[]> {
  const t = await filterTables(ns);
  return ([4, 6] as const).flatMap((f) =>
    t[f].filter((l) => l.startsWith("-A CNI-FORWARD ") && / -[sd] /.test(l)).map((l) =>
      `${f}: ${l}`
    )
  );
}

/** The rules of table `inet cni_firewall` as `chain: text`, or none when it is absent. */
export async function nftFirewall(ns: TestNetns): Promise<string[]> {
  const text = await ns.exec("nft", ["list", "table", "inet", "cni_firewall"]).catch(() => "");
  const out: string[] = [];
  let chain = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const m = line.match(/^chain (\S+) \{$/);
    if (m) chain = m[1]!;
    else if (chain && line && line !== "}" && !line.startsWith("type ")) {
      out.push(`${chain}: ${line}`);
    }
  }
  return out;
}

/** The per-address nftables rules (those that name an address). */
export async function nftAddressRules(ns: TestNetns): Promise<string[]> {
  return (await nftFirewall(ns)).filter((r) => /^forward: ip6? [sd]addr /.test(r));
}

/** A firewalld running in `host` on a private system bus; `env` points a process at the bus. */
export interface Firewalld {
  env: Record<string, string>;
  /** Calls a method of firewalld's zone interface with dbus-send; its answer (`boolean true`, `string "trusted"`). */
  zone(method: string, ...args: string[]): Promise<string>;
}

/** True when dbus-daemon and firewalld are installed (CI installs them). */
export const haveFirewalld = ["/usr/bin/dbus-daemon", "/usr/bin/dbus-send", "/usr/sbin/firewalld"]
  .every((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });

/**
 * Runs `fn` with a private dbus-daemon (socket in a temporary directory)
 * and a real firewalld on it, inside `host`, in a mount namespace of its
 * own with an empty /run, so neither touches the machine's bus, firewall or
 * files. Both are processes this helper starts and ends by PID.
 */
export function withFirewalld(
  host: TestNetns,
  fn: (fw: Firewalld) => Promise<void>,
): Promise<void> {
  return withTempDir(async (dir) => {
    const socket = `${dir}/system_bus_socket`;
    await Deno.mkdir(`${dir}/etc`);
    await Deno.writeTextFile(
      `${dir}/bus.conf`,
      `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`,
    );
    const env = { DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${socket}` };
    const started: Deno.ChildProcess[] = [];
    const quiet = { stdin: "null", stdout: "null", stderr: "null" } as const;
    try {
      started.push(
        new Deno.Command("dbus-daemon", {
          args: [`--config-file=${dir}/bus.conf`, "--nofork", "--nopidfile"],
          ...quiet,
        }).spawn(),
      );
      const dbusSend = (dest: string, path: string, method: string, ...args: string[]) =>
        spawnOutput("dbus-send", [
          "--system",
          "--print-reply",
          `--dest=${dest}`,
          path,
          method,
          ...args.map((a) => `string:${a}`),
        ], { env });
      const ownerOf = (name: string) =>
        dbusSend(
          "org.freedesktop.DBus",
          "/org/freedesktop/DBus",
          "org.freedesktop.DBus.GetNameOwner",
          name,
        );
      await waitUntil(
        async () => (await ownerOf("org.freedesktop.DBus")).code === 0,
        "the private bus",
      );
      started.push(
        new Deno.Command("ip", {
          args: [
            "netns",
            "exec",
            host.name,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            // An empty /run: firewalld keeps its state there.
            'mount -t tmpfs cnikit-test /run && exec firewalld --nofork --nopid --system-config "$1" --log-target console',
            "sh",
            `${dir}/etc`,
          ],
          env,
          ...quiet,
        }).spawn(),
      );
      const FIREWALLD = "org.fedoraproject.FirewallD1";
      await waitUntil(
        async () =>
          (await ownerOf(FIREWALLD)).code === 0 &&
          (await dbusSend(
              FIREWALLD,
              "/org/fedoraproject/FirewallD1",
              `${FIREWALLD}.getDefaultZone`,
            ))
              .code === 0,
        "firewalld on the private bus",
        60,
      );
      await fn({
        env,
        zone: async (method, ...args) => {
          const out = await dbusSend(
            FIREWALLD,
            "/org/fedoraproject/FirewallD1",
            `${FIREWALLD}.zone.${method}`,
            ...args,
          );
          if (out.code !== 0) throw new Error(`dbus-send ${method} failed: ${out.stderr}`);
          return out.stdout.trim().split("\n").at(-1)!.trim();
        },
      });
    } finally {
      for (const child of started.reverse()) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        await child.status;
      }
    }
  });
}

async function waitUntil(ok: () => Promise<boolean>, what: string, seconds = 20): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}
