/**
 * Finding and parsing network configurations (cnitool/config.ts) as libcni
 * does (cni-spec.md §2.1, §3D), and the Go conventions in cnitool/go.ts.
 */

import { assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import {
  loadNetworkConf,
  networkConfFromBytes,
  networkConfFromFile,
  NoConfigsFoundError,
  NotFoundError,
} from "../../cnitool/config.ts";
import { cleanPath, dirName, extName, goTypeName, joinPath, marshalMap } from "../../cnitool/go.ts";

function withDir(fn: (dir: string) => void) {
  return () => {
    const dir = Deno.makeTempDirSync({ prefix: "cnikit-netconf-" });
    try {
      fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  };
}

const write = (path: string, value: unknown) =>
  Deno.writeTextFileSync(path, typeof value === "string" ? value : JSON.stringify(value));

const parse = (value: unknown) =>
  networkConfFromBytes(
    new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value)),
  );

const THREE = [{ type: "a" }, { type: "b" }, { type: "c" }];

Deno.test(
  "a .conflist wins over a .conf of the same name; without it the .conf becomes a list",
  withDir((dir) => {
    write(`${dir}/50-whatever.conflist`, {
      cniVersion: "1.0.0",
      name: "some-network",
      plugins: THREE,
    });
    write(`${dir}/49-whatever.conf`, {
      cniVersion: "0.4.0",
      name: "some-network",
      type: "bridge",
      bridge: "cni0",
    });
    const list = loadNetworkConf(dir, "some-network");
    assertEquals(list.plugins.map((p) => p.type), ["a", "b", "c"]);
    assertEquals(list.cniVersion, "1.0.0");

    Deno.removeSync(`${dir}/50-whatever.conflist`);
    const single = loadNetworkConf(dir, "some-network");
    assertEquals(single.name, "some-network");
    assertEquals(single.cniVersion, "0.4.0");
    assertEquals(single.plugins.length, 1);
    assertEquals(single.plugins[0]!.raw, {
      bridge: "cni0",
      cniVersion: "0.4.0",
      name: "some-network",
      type: "bridge",
    });
    assertEquals(single.plugins[0]!.name, "some-network");
    // The list libcni builds (and caches) from a .conf: sorted, compact.
    assertEquals(
      new TextDecoder().decode(single.bytes),
      '{"cniVersion":"0.4.0","name":"some-network","plugins":[{"bridge":"cni0","cniVersion":"0.4.0","name":"some-network","type":"bridge"}]}',
    );
  }),
);

Deno.test(
  ".json works like .conf; other extensions and nested folders are ignored",
  withDir((dir) => {
    write(`${dir}/10-net.json`, { cniVersion: "1.0.0", name: "jsonnet", type: "a" });
    Deno.mkdirSync(`${dir}/subdir1/subdir2`, { recursive: true });
    write(`${dir}/subdir1/subdir2/deep.conflist`, { name: "deep", plugins: THREE });
    write(`${dir}/net.CONFLIST`, { name: "upper", plugins: THREE });
    write(`${dir}/net.conflist.bak`, { name: "backup", plugins: THREE });
    assertEquals(loadNetworkConf(dir, "jsonnet").plugins[0]!.type, "a");
    for (const name of ["deep", "upper", "backup"]) {
      const err = assertThrows(() => loadNetworkConf(dir, name));
      assertEquals(err.message, `no net configuration with name "${name}" in ${dir}`);
      assertEquals(err instanceof NotFoundError, true);
    }
  }),
);

Deno.test(
  "no configs at all, and no config of that name",
  withDir((dir) => {
    const missing = assertThrows(() => loadNetworkConf(`${dir}/nope`, "x"));
    assertEquals(missing.message, `no net configurations found in ${dir}/nope`);
    assertEquals(missing instanceof NoConfigsFoundError, true);
    assertThrows(() => loadNetworkConf(dir, "x"), `no net configurations found in ${dir}`);
    write(`${dir}/a.conflist`, { name: "a", plugins: THREE });
    // Lists exist but no .conf files: NotFound, not NoConfigsFound.
    assertThrows(() => loadNetworkConf(dir, "x"), `no net configuration with name "x" in ${dir}`);
    write(`${dir}/b.conf`, { name: "b", type: "t" });
    assertThrows(() => loadNetworkConf(dir, "x"), `no net configuration with name "x" in ${dir}`);
  }),
);

Deno.test(
  "a malformed file stops every search that reaches it, in path order",
  withDir((dir) => {
    write(`${dir}/10-good.conflist`, { name: "good", plugins: THREE });
    write(`${dir}/20-bad.conflist`, "{");
    write(`${dir}/30-late.conflist`, { name: "late", plugins: THREE });
    assertEquals(loadNetworkConf(dir, "good").name, "good");
    assertMatch(
      assertThrows(() => loadNetworkConf(dir, "late")).message,
      /^error parsing configuration list: /,
    );
    write(`${dir}/00-bad.conf`, "{");
    Deno.removeSync(`${dir}/20-bad.conflist`);
    assertMatch(
      assertThrows(() => loadNetworkConf(dir, "nothing")).message,
      /^error parsing configuration: /,
    );
  }),
);

Deno.test("version selection from cniVersions", () => {
  const pick = (extra: Record<string, unknown>) =>
    parse({ name: "n", plugins: THREE, ...extra }).cniVersion;
  assertEquals(pick({ cniVersions: ["1.1.0", "0.4.0", "1.0.0"] }), "1.1.0");
  assertEquals(pick({ cniVersions: ["99.0.0", "1.1.0", "0.4.0", "1.0.0"] }), "1.1.0");
  assertEquals(pick({ cniVersion: "1.2.3" }), "1.2.3");
  assertEquals(pick({ cniVersion: "1.0.0", cniVersions: ["0.1.0", "0.4.0"] }), "1.0.0");
  assertEquals(pick({ cniVersion: "9.0.0", cniVersions: ["0.4.0"] }), "0.4.0");
  assertEquals(pick({ cniVersions: [] }), "");
  assertEquals(pick({}), "");
  assertMatch(
    assertThrows(() => pick({ cniVersions: ["1.1.0", "0.4.0", "1.0.f"] })).message,
    /invalid cniVersions entry 1\.0\.f at index 2/,
  );
  assertThrows(() => pick({ cniVersions: "1.0.0" }), "invalid type for cniVersions: string");
  assertThrows(() => pick({ cniVersions: [1] }), "invalid type for cniVersions index 0: float64");
  assertThrows(() => pick({ cniVersion: 1 }), "invalid cniVersion type float64");
});

Deno.test("disableCheck, disableGC, loadOnlyInlinedPlugins: bools or true/false strings", () => {
  for (const key of ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"] as const) {
    const flag = (value: unknown) => parse({ name: "n", plugins: THREE, [key]: value })[key];
    assertEquals(flag(true), true);
    assertEquals(flag("true"), true);
    assertEquals(flag("TRUE"), true);
    assertEquals(flag("FALSE"), false);
    assertEquals(flag(false), false);
    assertThrows(() => flag("sometimes"), `invalid value "sometimes" for ${key}`);
    assertThrows(() => flag(1), `invalid type float64 for ${key}`);
    assertEquals(parse({ name: "n", plugins: THREE })[key], false);
  }
});

Deno.test(
  "plugins from the sibling folder named after the network",
  withDir((dir) => {
    const file = `${dir}/10-net.conflist`;
    write(file, { name: "some-network", loadOnlyInlinedPlugins: true });
    assertMatch(
      assertThrows(() => networkConfFromFile(file)).message,
      /`loadOnlyInlinedPlugins` is true, and no 'plugins' key/,
    );
    write(file, { name: "some-network" });
    assertThrows(() => networkConfFromFile(file), "no plugin configs found");
    Deno.mkdirSync(`${dir}/some-network`);
    write(`${dir}/some-network/funky.conf`, { type: "funky" });
    write(`${dir}/some-network/ignored.conflist`, { type: "ignored" });
    assertEquals(networkConfFromFile(file).plugins.map((p) => p.type), ["funky"]);
    write(file, { name: "some-network", plugins: [{ type: "inline" }] });
    assertEquals(networkConfFromFile(file).plugins.map((p) => p.type), ["inline", "funky"]);
    assertEquals(loadNetworkConf(dir, "some-network").plugins.length, 2);
    write(file, {
      name: "some-network",
      plugins: [{ type: "inline" }],
      loadOnlyInlinedPlugins: "true",
    });
    assertEquals(networkConfFromFile(file).plugins.map((p) => p.type), ["inline"]);
    write(`${dir}/some-network/a-first.conf`, { type: "first" });
    write(file, { name: "some-network", plugins: [{ type: "inline" }] });
    assertEquals(networkConfFromFile(file).plugins.map((p) => p.type), [
      "inline",
      "first",
      "funky",
    ]);
    write(`${dir}/some-network/broken.conf`, { notype: true });
    assertThrows(() => networkConfFromFile(file), "missing 'type'");
    Deno.removeSync(`${dir}/some-network`, { recursive: true });
    Deno.mkdirSync(`${dir}/some-network`);
    assertEquals(networkConfFromFile(file).plugins.length, 1);
  }),
);

Deno.test("list validation: plugins, type, name", () => {
  assertThrows(() => parse({ name: "n", plugins: [] }), "no plugins in list");
  assertThrows(
    () => parse({ name: "n", plugins: {} }),
    "invalid 'plugins' type map[string]interface {}",
  );
  assertThrows(
    () => parse({ name: "n", plugins: [{ type: "a" }, { notype: 1 }] }),
    "failed to parse plugin config 1: error parsing configuration: missing 'type'",
  );
  assertThrows(() => parse({ name: "n", plugins: [{ type: "" }] }), "missing 'type'");
  assertThrows(() => parse({ plugins: THREE }), "error parsing configuration list: no name");
  assertThrows(() => parse({ name: 5, plugins: THREE }), "invalid name type float64");
  assertThrows(() => parse("[1]"), "error parsing configuration list");
  assertThrows(
    () => parse({ name: "n", plugins: [{ type: "a", capabilities: { mac: "yes" } }] }),
    "failed to parse plugin config 0: error parsing configuration: capabilities.mac",
  );
});

Deno.test("plugin objects keep every key; capabilities read as booleans", () => {
  const list = parse({
    name: "n",
    cniVersion: "1.0.0",
    disableCheck: true,
    plugins: [{
      type: "a",
      name: "p",
      custom: { x: [1] },
      capabilities: { mac: true, ips: false },
    }],
  });
  const [p] = list.plugins;
  assertEquals(p!.raw, {
    capabilities: { ips: false, mac: true },
    custom: { x: [1] },
    name: "p",
    type: "a",
  });
  assertEquals(p!.capabilities, { ips: false, mac: true });
  assertEquals(p!.name, "p");
  assertEquals(list.disableCheck, true);
});

Deno.test("Go conventions: Clean, Join, Dir, Ext, %T, map marshalling", () => {
  assertEquals(cleanPath("/a/b/../c/./d/"), "/a/c/d");
  assertEquals(cleanPath("//a//b"), "/a/b");
  assertEquals(cleanPath("/.."), "/");
  assertEquals(cleanPath("a/../.."), "..");
  assertEquals(cleanPath(""), ".");
  assertEquals(joinPath("/etc/cni", "net.d", "../x"), "/etc/cni/x");
  assertEquals(dirName("/x.conflist"), "/");
  assertEquals(dirName("x.conflist"), ".");
  assertEquals(dirName("/etc/cni/net.d/10.conflist"), "/etc/cni/net.d");
  assertEquals(extName("10-net.conflist"), ".conflist");
  assertEquals(extName("a.b/c"), "");
  assertEquals(extName(".conf"), ".conf");
  assertEquals([null, [], "", 1, true, {}].map(goTypeName), [
    "<nil>",
    "[]interface {}",
    "string",
    "float64",
    "bool",
    "map[string]interface {}",
  ]);
  assertEquals(
    marshalMap({ b: 1, a: { d: [{ z: 1, y: "<" }], c: null } }),
    '{"a":{"c":null,"d":[{"y":"\\u003c","z":1}]},"b":1}',
  );
});
