/**
 * The result cache (cnitool/cache.ts): libcni's file layout, modes and JSON,
 * reading current and legacy entries, and listing attachments for GC.
 */

import { assert, assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import { FakeExec } from "../helpers/fake_exec.ts";
import { resultToJSON } from "../../lib/cni/spec/convert.ts";
import { CACHE_KIND, ResultCache } from "../../cnitool/cache.ts";
import { networkConfFromBytes } from "../../cnitool/config.ts";
import { CniRuntime } from "../../cnitool/runtime.ts";
import type { RuntimeConf } from "../../cnitool/types.ts";

function withCache(fn: (cache: ResultCache, dir: string) => void | Promise<void>) {
  return async () => {
    const dir = Deno.makeTempDirSync({ prefix: "cnikit-cache-" });
    try {
      await fn(new ResultCache(dir), dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  };
}

const RT: RuntimeConf = { containerId: "some-container-id", netns: "/run/netns/x", ifname: "eth0" };
const encode = (s: string) => new TextEncoder().encode(s);

Deno.test("cache file after ADD: libcni's path, modes and cniCacheV1 entry", async () => {
  const fake = new FakeExec("noop");
  const dir = Deno.makeTempDirSync({ prefix: "cnikit-cache-" });
  try {
    const bytes = encode(
      '{"cniVersion":"1.0.0","name":"cachetest","plugins":[{"type":"noop","capabilities":{"portMappings":true}}]}\n',
    );
    const list = networkConfFromBytes(bytes);
    fake.respond("noop", "ADD", {
      stdout: { cniVersion: "1.0.0", ips: [{ address: "10.1.2.3/24" }] },
    });
    const runtime = new CniRuntime({ path: [fake.bin], cacheDir: dir, exec: fake });
    const rt: RuntimeConf = {
      ...RT,
      args: [["DEBUG", "/x"]],
      capabilityArgs: { portMappings: [{ hostPort: 80, containerPort: 8080, protocol: "tcp" }] },
    };
    await runtime.addNetworkList(list, rt);
    await runtime.addNetworkList(list, { ...rt, ifname: "eth1" });

    const path = `${dir}/results/cachetest-some-container-id-eth0`;
    assertEquals(Deno.statSync(path).mode! & 0o777, 0o600);
    assertEquals(Deno.statSync(`${dir}/results`).mode! & 0o777, 0o700);
    assertEquals([...Deno.readDirSync(`${dir}/results`)].map((e) => e.name).sort(), [
      "cachetest-some-container-id-eth0",
      "cachetest-some-container-id-eth1",
    ]);
    const entry = JSON.parse(Deno.readTextFileSync(path));
    assertEquals(Object.keys(entry), [
      "kind",
      "containerId",
      "config",
      "ifName",
      "networkName",
      "netns",
      "cniArgs",
      "capabilityArgs",
      "result",
    ]);
    assertEquals(entry.kind, "cniCacheV1");
    assertEquals(entry.containerId, "some-container-id");
    assertEquals(entry.ifName, "eth0");
    assertEquals(entry.networkName, "cachetest");
    assertEquals(entry.netns, "/run/netns/x");
    assertEquals(Uint8Array.fromBase64(entry.config), bytes);
    assertEquals(entry.cniArgs, [["DEBUG", "/x"]]);
    assertEquals(entry.capabilityArgs, rt.capabilityArgs);
    assertEquals(entry.result, { cniVersion: "1.0.0", ips: [{ address: "10.1.2.3/24" }] });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test(
  "cache entry bytes are what Go writes: struct order, sorted maps, HTML escapes, omitempty",
  withCache((cache, dir) => {
    cache.write(
      { cniVersion: "1.1.0", ips: [{ address: "10.0.0.2/24", gateway: "10.0.0.1" }] },
      encode("{}"),
      "net",
      { ...RT, capabilityArgs: { z: 1, a: "<&>" } },
    );
    assertEquals(
      Deno.readTextFileSync(`${dir}/results/net-some-container-id-eth0`),
      '{"kind":"cniCacheV1","containerId":"some-container-id","config":"e30=","ifName":"eth0",' +
        '"networkName":"net","netns":"/run/netns/x",' +
        '"capabilityArgs":{"a":"\\u003c\\u0026\\u003e","z":1},' +
        '"result":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1"}]}}',
    );
    cache.write(undefined, encode(""), "bare", { ...RT, netns: "" });
    assertEquals(
      Deno.readTextFileSync(`${dir}/results/bare-some-container-id-eth0`),
      '{"kind":"cniCacheV1","containerId":"some-container-id","config":"","ifName":"eth0",' +
        '"networkName":"bare"}',
    );
  }),
);

Deno.test("cache path needs network, container ID and ifname", () => {
  const cache = new ResultCache("/nonexistent");
  assertThrows(
    () => cache.filePath("", RT),
    'cache file path requires network name (""), container ID ("some-container-id"), and interface name ("eth0")',
  );
  assertThrows(() => cache.filePath("foobar", { ...RT, containerId: "" }), 'container ID ("")');
  assertThrows(() => cache.filePath("foobar", { ...RT, ifname: "" }), 'interface name ("")');
});

Deno.test(
  "reading results: missing, current, legacy, converted, garbage, unknown version",
  withCache((cache, dir) => {
    assertEquals(cache.readResult("net", "1.0.0", RT), undefined);
    const path = `${dir}/results/net-some-container-id-eth0`;
    cache.write(
      { cniVersion: "0.3.1", ips: [{ version: "4", address: "10.1.2.3/24" }], dns: {} },
      encode("{}"),
      "net",
      RT,
    );
    assertEquals(resultToJSON(cache.readResult("net", "1.1.0", RT)!), {
      cniVersion: "1.1.0",
      ips: [{ address: "10.1.2.3/24" }],
    });
    Deno.writeTextFileSync(path, '{"cniVersion":"1.0.0","ips":[{"address":"10.9.9.9/24"}]}');
    assertEquals(resultToJSON(cache.readResult("net", "1.0.0", RT)!), {
      cniVersion: "1.0.0",
      ips: [{ address: "10.9.9.9/24" }],
    });
    Deno.writeTextFileSync(path, "adfadsfasdfasfdsafaf");
    assertThrows(
      () => cache.readResult("net", "1.0.0", RT),
      "decoding version from network config",
    );
    Deno.writeTextFileSync(path, '{"cniVersion":"0.4567.0"}');
    assertThrows(
      () => cache.readResult("net", "1.0.0", RT),
      'unsupported CNI result version "0.4567.0"',
    );
    Deno.writeTextFileSync(path, '{"cniVersion":"1.0.0"}');
    assertThrows(
      () => cache.readResult("net", "0.2.0", RT),
      'failed to convert cached result to config version "0.2.0"',
    );
  }),
);

Deno.test(
  "reading the cached config: bytes and the cached CNI and capability args",
  withCache((cache, dir) => {
    assertEquals(cache.readConfig("net", RT), undefined);
    cache.write(undefined, encode('{"name":"net"}'), "net", {
      ...RT,
      args: [["K", "V"]],
      capabilityArgs: { mac: "aa" },
    });
    const cached = cache.readConfig("net", { ...RT, args: [["OTHER", "1"]] })!;
    assertEquals(new TextDecoder().decode(cached.config), '{"name":"net"}');
    assertEquals(cached.rt.args, [["K", "V"]]);
    assertEquals(cached.rt.capabilityArgs, { mac: "aa" });
    const path = `${dir}/results/net-some-container-id-eth0`;
    Deno.writeTextFileSync(path, "adfadsfasdfasfdsafaf");
    assertThrows(
      () => cache.readConfig("net", RT),
      'failed to unmarshal cached network "net" config',
    );
    Deno.writeTextFileSync(path, '{"kind":"other"}');
    assertThrows(() => cache.readConfig("net", RT), "has wrong kind: other");
  }),
);

Deno.test(
  "attachments: sorted, filtered by container, foreign and broken files skipped",
  withCache((cache, dir) => {
    assertEquals(cache.attachments(), []);
    const at = (containerId: string, ifname: string, net: string) =>
      cache.write(undefined, encode(`{"name":"${net}"}`), net, { ...RT, containerId, ifname });
    at("c2", "eth0", "netb");
    at("c1", "eth0", "neta");
    at("c1", "eth1", "neta");
    at("c10", "eth0", "neta");
    Deno.writeTextFileSync(`${dir}/results/garbage-c1-eth9`, "{");
    Deno.writeTextFileSync(`${dir}/results/legacy-c1-eth8`, '{"cniVersion":"1.0.0"}');
    Deno.writeTextFileSync(
      `${dir}/results/noif-c1-eth7`,
      JSON.stringify({ kind: CACHE_KIND, containerId: "c1", networkName: "noif" }),
    );
    Deno.mkdirSync(`${dir}/results/adir-c1-eth6`);
    const all = cache.attachments();
    assertEquals(all.map((a) => `${a.network}/${a.containerId}/${a.ifName}`), [
      "neta/c1/eth0",
      "neta/c1/eth1",
      "neta/c10/eth0",
      "netb/c2/eth0",
    ]);
    assertEquals(new TextDecoder().decode(all[0]!.config), '{"name":"neta"}');
    assertEquals(all[0]!.netns, "/run/netns/x");
    assertEquals(cache.attachments("c1").map((a) => a.ifName), ["eth0", "eth1"]);
    assertEquals(cache.attachments("c2").map((a) => a.network), ["netb"]);
  }),
);

Deno.test(
  "entries written by Go's libcni are read: base64 config, cniArgs, capabilityArgs",
  withCache((cache, dir) => {
    Deno.mkdirSync(`${dir}/results`, { recursive: true });
    // As containerd's libcni leaves it (config is base64 of the conflist bytes).
    const config = '{"cniVersion":"1.0.0","name":"gonet","plugins":[{"type":"bridge"}]}';
    Deno.writeTextFileSync(
      `${dir}/results/gonet-abc123-eth0`,
      JSON.stringify({
        kind: "cniCacheV1",
        containerId: "abc123",
        config: encode(config).toBase64(),
        ifName: "eth0",
        networkName: "gonet",
        netns: "/var/run/netns/cni-1",
        cniArgs: [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]],
        capabilityArgs: { io_kubernetes_cri_pod: 1 },
        result: { cniVersion: "1.0.0", ips: [{ address: "10.88.0.5/16" }] },
      }),
    );
    const [a] = cache.attachments();
    assertEquals(new TextDecoder().decode(a!.config), config);
    assertEquals(a!.cniArgs, [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]]);
    assertEquals(a!.netns, "/var/run/netns/cni-1");
    const rt = { containerId: "abc123", netns: "", ifname: "eth0" };
    assertMatch(JSON.stringify(resultToJSON(cache.readResult("gonet", "1.0.0", rt)!)), /10\.88/);
    cache.remove("gonet", rt);
    assertEquals(cache.attachments(), []);
    cache.remove("gonet", rt);
    cache.remove("", rt);
    assert(true, "removing what is not there is fine");
  }),
);
