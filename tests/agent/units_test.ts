import { assert, assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import { agentOptions, RUN_FLAGS } from "../../agent/main.ts";
import { parseFlags, UsageError } from "../../agent/flags.ts";
import { EtcdClient, EtcdUnavailable, parseWatchLine, prefixEnd } from "../../agent/etcd.ts";
import { Registry } from "../../agent/registry.ts";
import { renderList } from "../../agent/cniconf.ts";
import { vtepMacFor } from "../../agent/agent.ts";
import { formatCIDR, parseCIDR } from "../../lib/cni/ipnet.ts";
import { parseMac } from "../../lib/net/link.ts";

const REQUIRED = ["--etcd-endpoints", "http://10.0.0.254:2379", "--cluster-cidr", "10.244.0.0/16"];

function options(...extra: string[]) {
  return agentOptions(parseFlags(RUN_FLAGS, [...REQUIRED, "--node-name", "n1", ...extra]).values);
}

Deno.test("parseFlags() takes --name value, --name=value and booleans; later values win", () => {
  const specs = [
    { name: "a", value: "A", help: "" },
    { name: "b", value: "B", help: "", default: "x" },
    { name: "on", help: "" },
  ];
  const { values, positionals } = parseFlags(specs, [
    "--a",
    "1",
    "pos",
    "--a=2",
    "--on",
    "--",
    "--b",
  ]);
  assertEquals([...values.entries()], [["a", "2"], ["on", "true"], ["b", "x"]]);
  assertEquals(positionals, ["pos", "--b"]);
  assertEquals(parseFlags(specs, ["--on=false"]).values.get("on"), "false");
  for (
    const [args, message] of [
      [["--nope"], 'unknown flag "--nope"'],
      [["-x"], 'unknown flag "-x"'],
      [["--a"], "--a needs a value (A)"],
      [["--on=yes"], "--on takes no value other than true or false"],
    ] as const
  ) {
    assert(assertThrows(() => parseFlags(specs, args), message) instanceof UsageError);
  }
});

Deno.test("agentOptions() checks every flag before anything runs", () => {
  const ok = options("--backend", "host-gw", "--mtu", "1400", "--public-ip", "10.0.0.1");
  assertEquals(formatCIDR(ok.clusterCIDR), "10.244.0.0/16");
  assertEquals([ok.backend, ok.mtu, ok.publicIP, ok.subnetLen], ["host-gw", 1400, "10.0.0.1", 24]);
  assertEquals(ok.masquerade, true);
  assertEquals(options("--masquerade=false").masquerade, false);
  for (
    const [extra, message] of [
      [["--cluster-cidr", "10.244.1.0/16"], "has host bits set (did you mean 10.244.0.0/16?)"],
      [["--cluster-cidr", "fd00::/64"], "is not an IPv4 CIDR"],
      [["--subnet-len", "8"], "--subnet-len 8 is shorter than the cluster CIDR's /16"],
      [["--subnet-len", "30"], "--subnet-len must be an integer from 1 to 28"],
      [["--backend", "udp"], "--backend must be host-gw or vxlan"],
      [["--etcd-endpoints", "10.0.0.1:2379"], "is not an http(s)://host:port URL"],
      [["--public-ip", "fd00::1"], "is not an IPv4 address"],
      [["--lease-ttl", "1"], "--lease-ttl must be an integer from 2 to 86400"],
      [["--vxlan-vni", "0"], "--vxlan-vni must be an integer"],
      [["--masq-backend", "pf"], "--masq-backend must be iptables or nftables"],
      [["--node-name", "a/b"], "is not a valid node name"],
      [
        ["--cni-conf-file", "x.conf"],
        "--cni-conf-file must be a plain file name ending in .conflist",
      ],
      [["--etcd-prefix", "cnikit"], '--etcd-prefix must start with "/"'],
    ] as const
  ) {
    assert(assertThrows(() => options(...extra), message) instanceof UsageError);
  }
  const missing = assertThrows(
    () => agentOptions(parseFlags([{ name: "etcd-endpoints", value: "U", help: "" }], []).values),
    "--etcd-endpoints is required",
  );
  assert(missing instanceof UsageError);
});

Deno.test("prefixEnd() is the first key after every key with the prefix", () => {
  assertEquals(prefixEnd("/cnikit/network/subnets/"), "/cnikit/network/subnets0");
  assertEquals(prefixEnd("a"), "b");
});

Deno.test("parseWatchLine() reads the gateway's stream: created, events, compaction, errors", () => {
  const b = (s: string) => btoa(s);
  assertEquals(parseWatchLine(`{"result":{"header":{"revision":"2"},"created":true}}`), "created");
  assertEquals(parseWatchLine(`{"result":{"header":{"revision":"9"}}}`), undefined);
  const events = parseWatchLine(JSON.stringify({
    result: {
      header: { revision: "12" },
      events: [
        {
          kv: {
            key: b("/k/a"),
            value: b("v"),
            create_revision: "5",
            mod_revision: "7",
            lease: "42",
          },
        },
        { type: "DELETE", kv: { key: b("/k/b"), mod_revision: "8" } },
      ],
    },
  }));
  assertEquals(events, {
    kind: "events",
    // The last event's own revision, not the header's (a catching-up watch runs behind it).
    revision: 8,
    events: [
      {
        type: "PUT",
        kv: { key: "/k/a", value: "v", createRevision: 5, modRevision: 7, lease: "42" },
      },
      {
        type: "DELETE",
        kv: { key: "/k/b", value: "", createRevision: 0, modRevision: 8, lease: "0" },
      },
    ],
  });
  assertEquals(
    parseWatchLine(`{"result":{"header":{},"canceled":true,"compact_revision":"3"}}`),
    { kind: "compacted", compactRevision: 3 },
  );
  const error = assertThrows(
    () => parseWatchLine(`{"error":{"grpc_code":14,"message":"unavailable"}}`),
    "etcd watch failed: unavailable",
  );
  assert(error instanceof EtcdUnavailable);
});

Deno.test("Registry names subnets by key and enumerates the cluster CIDR's subnets", () => {
  const registry = new Registry(
    new EtcdClient(["http://127.0.0.1:1"]),
    "/cnikit/network/",
    parseCIDR("10.244.0.0/22")!,
    24,
  );
  assertEquals(registry.capacity, 4n);
  assertEquals(
    [0n, 1n, 3n].map((i) => formatCIDR(registry.subnetAt(i))),
    ["10.244.0.0/24", "10.244.1.0/24", "10.244.3.0/24"],
  );
  const key = registry.keyOf(parseCIDR("10.244.3.0/24")!);
  assertEquals(key, "/cnikit/network/subnets/10.244.3.0-24");
  assertEquals(formatCIDR(registry.subnetOfKey(key)!), "10.244.3.0/24");
  for (const foreign of ["10.244.4.0-24", "10.244.1.0-25", "10.244.1.1-24", "junk"]) {
    assertEquals(registry.subnetOfKey(`/cnikit/network/subnets/${foreign}`), undefined, foreign);
  }
  const kv = (value: string) => ({ key, value, createRevision: 1, modRevision: 1, lease: "1" });
  assertEquals(
    registry.holderOf(kv(`{"node":"n","publicIP":"10.0.0.1","backend":"host-gw"}`))?.record.node,
    "n",
  );
  assertEquals(
    registry.holderOf(kv(`{"node":"n","publicIP":"nope","backend":"host-gw"}`)),
    undefined,
  );
  assertEquals(registry.holderOf(kv("not json")), undefined);
});

Deno.test("the list is kind's: ptp without masquerade, host-local on the subnet, portmap", () => {
  const list = renderList({
    networkName: "cnikit",
    subnet: parseCIDR("10.244.3.0/24")!,
    mtu: 1450,
    ipamDataDir: "/var/lib/cni/networks",
  });
  assertEquals(list, {
    cniVersion: "1.0.0",
    name: "cnikit",
    plugins: [
      {
        type: "ptp",
        ipMasq: false,
        mtu: 1450,
        ipam: {
          type: "host-local",
          dataDir: "/var/lib/cni/networks",
          ranges: [[{ subnet: "10.244.3.0/24" }]],
          routes: [{ dst: "0.0.0.0/0" }],
        },
      },
      { type: "portmap", capabilities: { portMappings: true } },
    ],
  });
});

Deno.test("a node's VTEP MAC is stable, unicast and locally administered", async () => {
  const mac = await vtepMacFor("node1");
  assertEquals(await vtepMacFor("node1"), mac);
  assert(mac !== await vtepMacFor("node2"));
  assertEquals(parseMac(mac), mac);
  assertMatch(mac, /^.[26ae]:/);
});
