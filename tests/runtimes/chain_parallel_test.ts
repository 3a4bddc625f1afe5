/**
 * Fifty containers at once on the full chain bridge → portmap → firewall →
 * tuning → bandwidth, through cnitool (fifty cnitool processes started
 * together), each with its own host port: every ADD succeeds, every port
 * answers from another namespace with its own container's page, and fifty
 * DELs at once leave no rule, chain entry, IFB, lease or backup.
 * @module
 */

import { assertEquals } from "../helpers/assert.ts";
import { DIST_BIN } from "../helpers/applet.ts";
import { BUSYBOX, noImage } from "../helpers/image.ts";
import { leases } from "../helpers/ipam.ts";
import { links, vethBetween } from "../helpers/kernel.ts";
import { canNetns, sh, spawnOutput, TestNetns, waitFor, withNamespaces } from "../helpers/netns.ts";
import { withTempDir } from "../helpers/tempdir.ts";

const N = 50;
const FIRST_PORT = 20000;

/** The chain, its state under `dir`. */
function chain(dir: string): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "par50",
    plugins: [
      {
        type: "bridge",
        bridge: "ckpar0",
        isGateway: true,
        ipMasq: true,
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: "10.90.0.0/24" }]],
          routes: [{ dst: "0.0.0.0/0" }],
          dataDir: `${dir}/ipam`,
        },
      },
      { type: "portmap", capabilities: { portMappings: true } },
      { type: "firewall" },
      { type: "tuning", dataDir: `${dir}/tuning`, mtu: 1400 },
      { type: "bandwidth", capabilities: { bandwidth: true } },
    ],
  };
}

/** The iptables lines of `host` that belong to attachments (not the shared chains' skeleton). */
async function attachmentRules(host: TestNetns): Promise<string[]> {
  const out: string[] = [];
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    for (const line of (await host.exec(tool, [])).split("\n")) {
      if (/CNI-DN-|CNI-[0-9a-f]{24}|10\.90\.0\.|par50/.test(line)) out.push(line);
    }
  }
  return out;
}

Deno.test({
  name:
    "50 parallel ADDs of bridge → portmap → firewall → tuning → bandwidth: every port answers; 50 DELs leave nothing",
  ignore: !canNetns || noImage !== undefined,
  fn: () =>
    withTempDir((dir) =>
      withNamespaces(1, async (host, outside) => {
        await vethBetween(host, "ckout", outside, "ckin");
        await sh("ip", ["-n", host.name, "addr", "add", "192.0.2.1/24", "dev", "ckout"]);
        await sh("ip", ["-n", outside.name, "addr", "add", "192.0.2.2/24", "dev", "ckin"]);
        await Deno.mkdir(`${dir}/net.d`);
        await Deno.writeTextFile(`${dir}/net.d/par50.conflist`, JSON.stringify(chain(dir)));
        const containers: TestNetns[] = [];
        const servers: Deno.ChildProcess[] = [];
        const cnitool = (command: string, i: number) =>
          spawnOutput("ip", [
            "netns",
            "exec",
            host.name,
            `${DIST_BIN}/cnitool`,
            command,
            "par50",
            containers[i]!.path,
          ], {
            env: {
              NETCONFPATH: `${dir}/net.d`,
              CNI_PATH: DIST_BIN,
              CNI_CACHE_DIR: `${dir}/cache`,
              CAP_ARGS: JSON.stringify({
                portMappings: [{ hostPort: FIRST_PORT + i, containerPort: 80, protocol: "tcp" }],
                bandwidth: {
                  ingressRate: 100_000_000,
                  ingressBurst: 1_000_000,
                  egressRate: 100_000_000,
                  egressBurst: 1_000_000,
                },
              }),
            },
          });
        try {
          for (let i = 0; i < N; i++) containers.push(await TestNetns.create("ckp"));
          const adds = await Promise.all(containers.map((_, i) => cnitool("add", i)));
          for (const [i, add] of adds.entries()) {
            assertEquals(add.code, 0, `ADD ${i}: ${add.stderr}`);
          }
          const ips = adds.map((a) =>
            (JSON.parse(a.stdout).ips[0].address as string).split("/")[0]!
          );
          assertEquals(new Set(ips).size, N, "duplicate addresses");

          // A web server in each container, serving its own number.
          for (const [i, ctr] of containers.entries()) {
            await Deno.mkdir(`${dir}/www${i}`);
            await Deno.writeTextFile(`${dir}/www${i}/index.html`, `container ${i}\n`);
            servers.push(
              new Deno.Command("ip", {
                args: [
                  "netns",
                  "exec",
                  ctr.name,
                  BUSYBOX,
                  "httpd",
                  "-f",
                  "-p",
                  "80",
                  "-h",
                  `${dir}/www${i}`,
                ],
                stdout: "null",
                stderr: "null",
              }).spawn(),
            );
          }
          const get = async (port: number) =>
            (await spawnOutput("ip", [
              "netns",
              "exec",
              outside.name,
              "curl",
              "-s",
              "--max-time",
              "5",
              `http://192.0.2.1:${port}/`,
            ]))
              .stdout;
          await waitFor(
            async () => (await get(FIRST_PORT)) === "container 0\n",
            "the first server",
            20_000,
          );
          const pages = await Promise.all(containers.map((_, i) => get(FIRST_PORT + i)));
          assertEquals(pages, containers.map((_, i) => `container ${i}\n`));
          assertEquals((await links(host)).filter((l) => l.ifname.startsWith("bwp")).length, N);

          const dels = await Promise.all(containers.map((_, i) => cnitool("del", i)));
          for (const [i, del] of dels.entries()) {
            assertEquals(del.code, 0, `DEL ${i}: ${del.stderr}`);
          }
          assertEquals(await attachmentRules(host), []);
          assertEquals((await links(host)).filter((l) => /^(bwp|veth)/.test(l.ifname)), []);
          assertEquals(await leases(`${dir}/ipam`), []);
          assertEquals([...Deno.readDirSync(`${dir}/tuning`)], []);
        } finally {
          for (const server of servers) {
            try {
              server.kill("SIGKILL");
            } catch { /* already gone */ }
          }
          await Promise.all(servers.map((s) => s.status));
          await Promise.all(containers.map((c) => c.remove()));
        }
      })
    ),
});
