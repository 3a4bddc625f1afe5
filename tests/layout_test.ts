/**
 * The layout's rules (docs/DEVELOPING.md), checked on the real import graph
 * as `deno info` resolves it: no module imports itself through others; the
 * protocol layer (lib/cni) imports nothing else of lib/, the kernel layer
 * (lib/net) only lib/cni, netfilter only those two; plugins never import
 * each other; the runtime never imports the plugin skeleton; the dhcp
 * plugin loads none of its daemon; a module is in lib/ only when two of its
 * users (plugins, the runtime, the agent, the entry points) import it.
 */

import { assert, assertEquals } from "./helpers/assert.ts";

const ROOT = new URL("../", import.meta.url).pathname;

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

/** Local module → the local modules it imports (statically or dynamically), repository-relative. */
async function importGraph(): Promise<Map<string, string[]>> {
  const modules: InfoModule[] = [];
  for (const entry of ["main.ts", "mod.ts"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    modules.push(
      ...(JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] }).modules,
    );
  }
  const local = (specifier: string) =>
    specifier.startsWith(`file://${ROOT}`) ? specifier.slice(`file://${ROOT}`.length) : undefined;
  const graph = new Map<string, string[]>();
  for (const module of modules) {
    const from = local(module.specifier);
    if (!from) continue;
    const to = (module.dependencies ?? []).flatMap((d) => {
      const target = local(d.code?.specifier ?? d.type?.specifier ?? "");
      return target ? [target] : [];
    });
    graph.set(from, [...new Set(to)]);
  }
  return graph;
}

const graph = await importGraph();

Deno.test("the graph covers every applet and the SDK entry", () => {
  for (const file of ["main.ts", "mod.ts", "applets.ts", "lib/cni/skel.ts", "cnitool/runtime.ts"]) {
    assert(graph.has(file), file);
  }
  assert([...graph.keys()].some((f) => f.startsWith("plugins/main/")));
});

Deno.test("no module imports itself, directly or through others", () => {
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "open") {
      cycles.push([...path.slice(path.indexOf(file)), file].join(" -> "));
      return;
    }
    state.set(file, "open");
    for (const dep of graph.get(file) ?? []) visit(dep, [...path, file]);
    state.set(file, "done");
  };
  for (const file of graph.keys()) visit(file, []);
  assertEquals(cycles, []);
});

/** Which layer a file is in, for the import rules. */
function layer(file: string): string {
  const match = file.match(/^(lib\/[a-z]+|plugins\/(?:main|meta)\/[^/]+|ipam\/[^/]+|[^/]+)\//);
  return match ? match[1]! : file;
}

Deno.test("lib/cni imports nothing else of lib/; lib/net only lib/cni; lib/netfilter only those", () => {
  const allowed: Record<string, string[]> = {
    "lib/cni": ["lib/cni"],
    "lib/net": ["lib/cni", "lib/net"],
    "lib/netfilter": ["lib/cni", "lib/net", "lib/netfilter"],
  };
  const broken: string[] = [];
  for (const [file, deps] of graph) {
    const rule = allowed[layer(file)];
    if (!rule) continue;
    for (const dep of deps) if (!rule.includes(layer(dep))) broken.push(`${file} -> ${dep}`);
  }
  assertEquals(broken, []);
});

Deno.test("plugins never import each other; lib/ never imports a plugin, the runtime or the tools", () => {
  const isPlugin = (l: string) => /^(plugins\/(main|meta)|ipam)\/[^/]+$/.test(l);
  const broken: string[] = [];
  for (const [file, deps] of graph) {
    for (const dep of deps) {
      const [from, to] = [layer(file), layer(dep)];
      if (isPlugin(from) && isPlugin(to) && from !== to) broken.push(`${file} -> ${dep}`);
      if (from.startsWith("lib/") && !to.startsWith("lib/")) broken.push(`${file} -> ${dep}`);
    }
  }
  assertEquals(broken, []);
});

/** Every module `roots` import, directly or through others, the roots included. */
function reachable(roots: Iterable<string>): Set<string> {
  const reached = new Set<string>();
  const walk = (file: string) => {
    if (reached.has(file)) return;
    reached.add(file);
    for (const dep of graph.get(file) ?? []) walk(dep);
  };
  for (const root of roots) walk(root);
  return reached;
}

Deno.test("the runtime (cnitool) never imports the plugin skeleton", () => {
  const reached = reachable([...graph.keys()].filter((f) => f.startsWith("cnitool/")));
  const skelUsers = [...reached].filter((f) => (graph.get(f) ?? []).includes("lib/cni/skel.ts"))
    .filter((f) => !f.startsWith("lib/cni/invoke"));
  assertEquals(skelUsers, []);
});

Deno.test("the dhcp plugin loads none of its daemon's code", () => {
  const daemonOnly = /^ipam\/dhcp\/(daemon|lease|client|socket|store)\.ts$/;
  assert(graph.has("ipam/dhcp/daemon.ts"));
  assertEquals([...reachable(["ipam/dhcp/mod.ts"])].filter((f) => daemonOnly.test(f)), []);
});

Deno.test("CNIKIT_VERSION is deno.json's version", async () => {
  const { CNIKIT_VERSION } = await import("../lib/cni/about.ts");
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  assertEquals(CNIKIT_VERSION, config.version);
});

/**
 * The user a file counts as for the lib/ rule: its plugin or IPAM folder,
 * the runtime (cnitool/), the node agent (agent/), or the entry points
 * (main.ts, applets.ts and mod.ts together); undefined for lib/ and for
 * modules that several users share outside lib/ (ipam/config.ts).
 */
function userOf(file: string): string | undefined {
  if (["main.ts", "applets.ts", "mod.ts"].includes(file)) return "main.ts/applets.ts/mod.ts";
  return file.match(/^(plugins\/(?:main|meta)\/[^/]+|ipam\/[^/]+|cnitool|agent)\//)?.[1];
}

// "Two plugins or the runtime" (DEVELOPING), made mechanical: two users of
// those above, whichever. No exception is needed: the SDK (mod.ts) exports
// only what plugins use too, and a module one user needs lives beside it
// (agent/node_masq.ts) until a second one comes.
Deno.test("every module in lib/ has two users: plugins, IPAM plugins, cnitool, agent, entry points", () => {
  // What a user imports directly, or through lib/ or a module users share.
  const users = new Map<string, Set<string>>();
  for (const file of graph.keys()) {
    const user = userOf(file);
    if (!user) continue;
    const seen = new Set<string>();
    const walk = (dep: string) => {
      if (seen.has(dep) || userOf(dep)) return;
      seen.add(dep);
      if (dep.startsWith("lib/")) users.set(dep, (users.get(dep) ?? new Set()).add(user));
      for (const next of graph.get(dep) ?? []) walk(next);
    };
    for (const dep of graph.get(file) ?? []) walk(dep);
  }
  const lonely = [...graph.keys()]
    .filter((f) => f.startsWith("lib/") && (users.get(f)?.size ?? 0) < 2)
    .map((f) => `${f}: ${[...users.get(f) ?? []].join(", ") || "no user"}`);
  assertEquals(lonely, []);
});

// The launcher loads chunks as functions (scripts/chunk_scripts.ts): an
// import is a copy of the exported value taken once, exact only while no
// module reassigns what it exports.
Deno.test("no module exports a binding it could reassign (export let / export var)", async () => {
  const reassignable: string[] = [];
  for (const file of graph.keys()) {
    const code = await Deno.readTextFile(`${ROOT}/${file}`);
    for (const m of code.matchAll(/^export\s+(?:let|var)\s+([\w$]+)/gm)) {
      reassignable.push(`${file}: ${m[1]}`);
    }
  }
  assertEquals(reassignable, []);
});
