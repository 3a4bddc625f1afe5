/**
 * The dhcp plugin and its daemon against a real DHCP server (dnsmasq in a
 * namespace of its own, on the bridge of a namespace that plays the host),
 * with containers attached by cnikit's bridge plugin: leases at the server,
 * options, renewal, release, restart, faults, systemd socket activation.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  assertSuccess,
  cniEnv,
  currentResult,
  hostRunner,
  type PluginRun,
  runApplet,
  withPrev,
} from "../helpers/applet.ts";
import {
  DaemonProcess,
  type DhcpLan,
  dnsmasqClientId,
  FAST_FLAGS,
  haveDnsmasq,
  LAN,
} from "../helpers/dhcp.ts";
import { withDhcpLan } from "../helpers/dhcp.ts";
import { addresses, link, links, routes } from "../helpers/kernel.ts";
import { canNetns, TestNetns, waitFor } from "../helpers/netns.ts";

const bridge = hostRunner("bridge");
const ignore = !canNetns || !haveDnsmasq;

/** A bridge network `lan` on the LAN's bridge with dhcp IPAM through `daemon`. */
function lanConf(lan: DhcpLan, daemon: DaemonProcess, ipam: Record<string, unknown> = {}) {
  return {
    cniVersion: "1.0.0",
    name: "lan",
    type: "bridge",
    bridge: lan.bridge,
    ipam: { type: "dhcp", daemonSocketPath: daemon.socketPath, ...ipam },
  };
}

/** The dhcp plugin itself (no main plugin) inside the host. */
function dhcpDirect(
  command: string,
  lan: DhcpLan,
  at: { containerId: string; netns: string },
  conf: Record<string, unknown>,
): Promise<PluginRun> {
  return runApplet("dhcp", { env: cniEnv(command, at), stdin: conf, host: lan.host });
}

async function withContainer(fn: (ctr: TestNetns) => Promise<void>): Promise<void> {
  const ctr = await TestNetns.create("ckc");
  try {
    await fn(ctr);
  } finally {
    await ctr.remove();
  }
}

/** The state files of a daemon (its leases on disk). */
async function stateFiles(daemon: DaemonProcess): Promise<string[]> {
  const dir = daemon.socketPath.replace(/\/[^/]*$/, "/dhcp-leases");
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

/** The host veths on the LAN's bridge other than the server's. */
async function containerPorts(lan: DhcpLan): Promise<string[]> {
  return (await links(lan.host))
    .filter((l) => l.master === lan.bridge && !l.ifname.startsWith("cksv"))
    .map((l) => l.ifname);
}

function inRange(cidr: string): boolean {
  const m = new RegExp(`^${LAN.replaceAll(".", "\\.")}\\.(\\d+)/24$`).exec(cidr);
  return !!m && Number(m[1]) >= 10 && Number(m[1]) <= 250;
}

Deno.test({
  name: "dhcp ADD leases from dnsmasq, CHECK confirms, a repeated ADD reuses, DEL releases",
  ignore,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainer(async (ctr) => {
        const daemon = await lan.startDaemon();
        const conf = lanConf(lan, daemon);
        const at = { containerId: "ctr1", netns: ctr.path };
        const add = assertSuccess(await bridge("ADD", lan.host, at, conf));
        const result = currentResult(add, "1.0.0");
        const address = result.ips![0]!.address;
        assert(inRange(address), address);
        assertEquals(result.ips![0]!.gateway, `${LAN}.1`);
        assertEquals(result.routes, [{ dst: "0.0.0.0/0", gw: `${LAN}.1` }]);
        const eth0 = (await link(ctr, "eth0"))!;
        assertEquals(addresses(eth0), [`${address} brd ${LAN}.255`]);

        const [lease] = await lan.server.waitForLeases(1);
        assertEquals(lease!.ip, address.split("/")[0]);
        assertEquals(lease!.clientId, dnsmasqClientId("ctr1/lan/eth0"));
        assertEquals(lease!.mac, eth0.address);
        assertEquals((await stateFiles(daemon)).length, 1);

        // Without -broadcast the server unicasts its replies to the new address.
        assert(!lan.server.log.includes("broadcast response"));

        assertSuccess(await bridge("CHECK", lan.host, at, withPrev(conf, add)));
        assertMatch(daemon.log, /ctr1\/lan\/eth0: lease confirmed/);
        assertSuccess(await dhcpDirect("STATUS", lan, at, { ...conf, cniVersion: "1.1.0" }));

        const again = assertSuccess(await dhcpDirect("ADD", lan, at, conf));
        assertEquals(currentResult(again, "1.0.0").ips![0]!.address, address);
        assertMatch(daemon.log, /ctr1\/lan\/eth0: reusing lease/);
        await lan.server.waitForLeases(1);

        // bridge removes the link first: the release goes from the host.
        assertSuccess(await bridge("DEL", lan.host, at, conf));
        await lan.server.waitForNoLeases();
        assertEquals(await stateFiles(daemon), []);
        assertEquals(await containerPorts(lan), []);
        assertSuccess(await bridge("DEL", lan.host, at, conf));
      })),
});

Deno.test({
  name: "dhcp results carry router, mask, classless routes (on-link ones too), DNS, priority",
  ignore,
  fn: () =>
    withDhcpLan([
      `--dhcp-option=option:classless-static-route,192.168.50.0/24,${LAN}.1,10.200.0.0/16,0.0.0.0`,
      `--dhcp-option=option:dns-server,${LAN}.53,${LAN}.54`,
      "--dhcp-option=option:domain-name,example.test",
      "--dhcp-option=option:domain-search,a.test,b.test",
    ], (lan) =>
      withContainer(async (ctr) => {
        const daemon = await lan.startDaemon();
        const conf = lanConf(lan, daemon, {
          request: [
            { option: "121" },
            { option: "domain-name-servers" },
            { option: "domain-name" },
            { option: 119 },
          ],
          priority: 50,
        });
        const at = { containerId: "opts", netns: ctr.path };
        const add = assertSuccess(await bridge("ADD", lan.host, at, conf));
        const result = currentResult(add, "1.0.0");
        assertMatch(result.ips![0]!.address, /\/24$/);
        assertEquals(result.ips![0]!.gateway, `${LAN}.1`);
        // With option 121 the default route comes from nowhere else (RFC 3442).
        assertEquals(result.routes, [
          { dst: "192.168.50.0/24", gw: `${LAN}.1`, priority: 50 },
          { dst: "10.200.0.0/16", gw: "0.0.0.0", scope: 253, priority: 50 },
        ]);
        assertEquals(result.dns, {
          nameservers: [`${LAN}.53`, `${LAN}.54`],
          domain: "example.test",
          search: ["a.test", "b.test"],
        });
        assertEquals(await routes(ctr), [
          "10.200.0.0/16 dev eth0 scope link",
          `192.168.50.0/24 via ${LAN}.1 dev eth0`,
        ]);
        assertSuccess(await bridge("CHECK", lan.host, at, withPrev(conf, add)));
        assertSuccess(await bridge("DEL", lan.host, at, conf));
        await lan.server.waitForNoLeases();
      })),
});

Deno.test({
  name:
    "dhcp provide sends host-name and a client id from CNI_ARGS; skipDefault asks only for what is listed",
  ignore,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainer(async (ctr) => {
        const daemon = await lan.startDaemon();
        const conf = lanConf(lan, daemon, {
          provide: [
            { option: "host-name", value: "web-1" },
            { option: "dhcp-client-identifier", fromArg: "K8S_POD_UID" },
          ],
          request: [{ skipDefault: true }, { option: "subnet-mask" }],
        });
        const at = {
          containerId: "prov",
          netns: ctr.path,
          args: "IgnoreUnknown=1;K8S_POD_UID=pod-1234",
        };
        const add = assertSuccess(await bridge("ADD", lan.host, at, conf));
        const result = currentResult(add, "1.0.0");
        // Routers were not asked for: no gateway, no routes.
        assertEquals(result.ips![0]!.gateway, undefined);
        assertEquals(result.routes ?? [], []);
        const [lease] = await lan.server.waitForLeases(1);
        assertEquals(lease!.hostname, "web-1");
        assertEquals(lease!.clientId, dnsmasqClientId("pod-1234", false));
        assertMatch(lan.server.log, /requested options: 1:netmask\n/);
        assertSuccess(await bridge("DEL", lan.host, at, conf));
        await lan.server.waitForNoLeases();
      })),
});

Deno.test({
  name:
    "dhcp renews at T1 and keeps the address; a daemon killed with -9 is replaced and its leases live on",
  ignore,
  fn: () =>
    withDhcpLan(
      ["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,4"],
      (lan) =>
        withContainer(async (ctr) => {
          const first = await lan.startDaemon();
          const conf = lanConf(lan, first);
          const at = { containerId: "renew", netns: ctr.path };
          const add = assertSuccess(await bridge("ADD", lan.host, at, conf));
          const address = currentResult(add, "1.0.0").ips![0]!.address.split("/")[0];
          const [before] = await lan.server.waitForLeases(1);
          await waitFor(
            async () => ((await lan.server.leases())[0]?.expires ?? 0) > before!.expires,
            "a renewal at the server",
            10_000,
          );
          assertMatch(first.log, /renew\/lan\/eth0: lease renewed/);
          assertEquals((await lan.server.leases()).map((l) => l.ip), [address]);

          await first.stop("SIGKILL");
          const second = await lan.startDaemon({ socketPath: first.socketPath });
          assertMatch(second.log, /renew\/lan\/eth0: found lease/);
          await waitFor(
            () => /renew\/lan\/eth0: lease renewed/.test(second.log),
            "a renewal by the new daemon",
            10_000,
          );
          assertEquals((await lan.server.leases()).map((l) => l.ip), [address]);
          const eth0 = (await link(ctr, "eth0"))!;
          assert(eth0.flags.includes("UP"));

          assertSuccess(await bridge("DEL", lan.host, at, conf));
          await lan.server.waitForNoLeases();
          assertEquals(await stateFiles(second), []);
        }),
    ),
});

Deno.test({
  name: "dhcp DEL after the container's netns is gone releases the lease from the host",
  ignore,
  fn: () =>
    withDhcpLan([], async (lan) => {
      const daemon = await lan.startDaemon();
      const conf = lanConf(lan, daemon);
      const ctr = await TestNetns.create("ckc");
      const at = { containerId: "gone", netns: ctr.path };
      try {
        assertSuccess(await bridge("ADD", lan.host, at, conf));
        await lan.server.waitForLeases(1);
      } finally {
        await ctr.remove();
      }
      assertSuccess(await bridge("DEL", lan.host, { ...at, netns: "" }, conf));
      await lan.server.waitForNoLeases();
      assertEquals(await stateFiles(daemon), []);
    }),
});

Deno.test({
  name: "dhcp with the server down fails ADD within the daemon's timeout and leaves nothing",
  ignore,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainer(async (ctr) => {
        const daemon = await lan.startDaemon({ flags: ["-timeout", "2s", "-resendtimeout", "5s"] });
        await lan.server.stop();
        const start = Date.now();
        const add = await bridge(
          "ADD",
          lan.host,
          { containerId: "down", netns: ctr.path },
          lanConf(lan, daemon),
        );
        const took = Date.now() - start;
        assertEquals(add.code, 1);
        assertEquals(add.json?.code, 11);
        assertMatch(
          String(add.json?.msg),
          /down\/lan\/eth0: no DHCP lease within 5s \(\d+ attempts\): no DHCPOFFER received/,
        );
        // The daemon's own clock: from the call to the failure, -resendtimeout
        // (5 s) of tries once the link is there (bridge makes it meanwhile).
        const at = (what: string) =>
          Date.parse(
            daemon.log.split("\n").find((l) => l.includes(`down/lan/eth0: ${what}`))!.slice(0, 24),
          );
        const tried = at("no lease") - at("acquiring");
        assert(tried >= 5_000 && tried < 15_000, `the daemon tried for ${tried} ms`);
        assert(took >= tried);
        assertEquals(await containerPorts(lan), []);
        assertEquals((await links(ctr)).map((l) => l.ifname), []);
        assertEquals(await stateFiles(daemon), []);
      })),
});

Deno.test({
  name:
    "dhcp without its daemon is a clear error naming the socket (STATUS: 50), and the bridge leaves nothing",
  ignore,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainer(async (ctr) => {
        const socketPath = `${lan.dir}/nobody/dhcp.sock`;
        const conf = lanConf(lan, { socketPath } as DaemonProcess);
        const add = await bridge("ADD", lan.host, { containerId: "nod", netns: ctr.path }, conf);
        assertEquals(add.code, 1);
        assertEquals(add.json?.code, 11);
        assertEquals(
          add.json?.msg,
          `cannot reach the DHCP daemon at ${socketPath}: no such socket`,
        );
        const status = await dhcpDirect("STATUS", lan, { containerId: "nod", netns: "" }, {
          ...conf,
          cniVersion: "1.1.0",
        });
        assertEquals([status.code, status.json?.code], [1, 50]);
        assertEquals(await containerPorts(lan), []);
        assertEquals((await links(ctr)).map((l) => l.ifname), []);
      })),
});

Deno.test({
  name: "dhcp daemon SIGTERM removes its socket and pidfile; leases stay for the next daemon",
  ignore,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainer(async (ctr) => {
        const pidFile = `${lan.dir}/dhcp.pid`;
        const daemon = await lan.startDaemon({ flags: [...FAST_FLAGS, "-pidfile", pidFile] });
        assertEquals(await Deno.readTextFile(pidFile), String(daemon.child.pid));
        const conf = lanConf(lan, daemon);
        const at = { containerId: "term", netns: ctr.path };
        assertSuccess(await bridge("ADD", lan.host, at, conf));
        const status = await daemon.stop("SIGTERM");
        assertEquals(status.code, 0);
        for (const path of [daemon.socketPath, pidFile]) {
          assertEquals(await Deno.lstat(path).then(() => "there", () => "gone"), "gone", path);
        }
        assertEquals((await stateFiles(daemon)).length, 1);
        await lan.server.waitForLeases(1);
        await lan.startDaemon({ socketPath: daemon.socketPath });
        assertSuccess(await bridge("DEL", lan.host, at, conf));
        await lan.server.waitForNoLeases();
      })),
});

const haveSocketActivate = (() => {
  try {
    return Deno.statSync("/usr/bin/systemd-socket-activate").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "dhcp daemon serves on a socket passed by systemd socket activation",
  ignore: ignore || !haveSocketActivate,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainer(async (ctr) => {
        const socketPath = `${lan.dir}/activated/dhcp.sock`;
        const daemon = await lan.startDaemon({
          socketPath,
          launcher: ["/usr/bin/systemd-socket-activate", "-l", socketPath],
        });
        const conf = lanConf(lan, daemon);
        const at = { containerId: "sd", netns: ctr.path };
        assertSuccess(await bridge("ADD", lan.host, at, conf));
        assertMatch(daemon.log, /listening on the socket passed by systemd/);
        assertSuccess(await bridge("DEL", lan.host, at, conf));
        await lan.server.waitForNoLeases();
        assertEquals((await daemon.stop("SIGTERM")).code, 0);
      })),
});

Deno.test({
  name: "dhcp maintenance stops when the container's netns disappears without a DEL",
  ignore,
  fn: () =>
    withDhcpLan([], async (lan) => {
      const daemon = await lan.startDaemon();
      const ctr = await TestNetns.create("ckc");
      try {
        assertSuccess(
          await bridge(
            "ADD",
            lan.host,
            { containerId: "vanish", netns: ctr.path },
            lanConf(lan, daemon),
          ),
        );
      } finally {
        await ctr.remove();
      }
      // The daemon looks at every link at least every 10 s.
      await waitFor(
        () => /vanish\/lan\/eth0: maintenance stops: link or netns gone/.test(daemon.log),
        "maintenance to stop",
        20_000,
      );
      assertEquals(await stateFiles(daemon), []);
      // The lease is of no use to anyone: it went back to the server.
      await lan.server.waitForNoLeases();
    }),
});

Deno.test({
  name: "dhcp daemon -broadcast asks the server to broadcast its replies",
  ignore,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainer(async (ctr) => {
        const daemon = await lan.startDaemon({ flags: [...FAST_FLAGS, "-broadcast"] });
        const conf = lanConf(lan, daemon);
        const at = { containerId: "bcast", netns: ctr.path };
        assertSuccess(await bridge("ADD", lan.host, at, conf));
        const replies = lan.server.log.split("\n").filter((l) =>
          /DHCP(OFFER|ACK)|broadcast response/.test(l)
        );
        assertEquals(
          replies.map((l) => l.replace(/^.*\d+ (DHCP\w+|broadcast response).*$/, "$1")),
          [
            "DHCPOFFER",
            "broadcast response",
            "DHCPACK",
            "broadcast response",
          ],
        );
        assertSuccess(await bridge("DEL", lan.host, at, conf));
        await lan.server.waitForNoLeases();
      })),
});

Deno.test({
  name: "dhcp takes the link down when the server refuses a renewal (DHCPNAK)",
  ignore,
  fn: () =>
    withDhcpLan(
      ["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,4"],
      (lan) =>
        withContainer(async (ctr) => {
          const daemon = await lan.startDaemon();
          const conf = lanConf(lan, daemon);
          const at = { containerId: "nak", netns: ctr.path };
          assertSuccess(await bridge("ADD", lan.host, at, conf));
          // A server that has forgotten the lease and no longer leases that address.
          await lan.server.stop();
          await Deno.remove(lan.server.leaseFile);
          await lan.server.start(
            ["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,4"],
            251,
            254,
          );
          await waitFor(
            async () => !(await link(ctr, "eth0"))!.flags.includes("UP"),
            "the link to go down",
            20_000,
          );
          assertMatch(
            daemon.log,
            /nak\/lan\/eth0: (renew|rebind) refused: server rejected the request with DHCPNAK/,
          );
          assertEquals(await stateFiles(daemon), []);
          assertSuccess(await bridge("DEL", lan.host, at, conf));
        }),
    ),
});

Deno.test({
  name: "dhcp daemon restarted after its leases expired asks for the same address again",
  ignore,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainer(async (ctr) => {
        const first = await lan.startDaemon();
        const conf = lanConf(lan, first);
        const at = { containerId: "late", netns: ctr.path };
        const add = assertSuccess(await bridge("ADD", lan.host, at, conf));
        const address = currentResult(add, "1.0.0").ips![0]!.address;
        await first.stop("SIGKILL");
        // Down longer than the lease: its record says it was bound 5 minutes ago,
        // and the server has forgotten it too.
        const [file] = await stateFiles(first);
        const path = first.socketPath.replace(/[^/]*$/, `dhcp-leases/${file}`);
        const record = JSON.parse(await Deno.readTextFile(path));
        await Deno.writeTextFile(
          path,
          JSON.stringify({ ...record, boundAt: record.boundAt - 300_000 }),
        );
        await lan.server.stop();
        await Deno.remove(lan.server.leaseFile);
        await lan.server.start();

        const second = await lan.startDaemon({ socketPath: first.socketPath });
        await waitFor(
          () => /late\/lan\/eth0: lease taken up again/.test(second.log),
          "the lease again",
          20_000,
        );
        assertMatch(
          second.log,
          new RegExp(
            `late/lan/eth0: lease expired while the daemon was down, asking for ${
              address.split("/")[0]
            } again`,
          ),
        );
        const [lease] = await lan.server.waitForLeases(1);
        assertEquals(`${lease!.ip}/24`, address);
        assertEquals(lease!.clientId, dnsmasqClientId("late/lan/eth0"));
        assert((await link(ctr, "eth0"))!.flags.includes("UP"));
        assertSuccess(await bridge("DEL", lan.host, at, conf));
        await lan.server.waitForNoLeases();
      })),
});
