import { assertEquals, assertThrows } from "../helpers/assert.ts";
import { assertNoCycle, chunkToScript, LOAD } from "../../scripts/chunk_scripts.ts";

const AsyncFunction = (async () => {}).constructor as new (
  ...args: string[]
) => (load: (name: string) => Promise<unknown>) => Promise<Record<string, unknown>>;

/** Evaluates converted chunks as the launcher does, each once; returns the loader. */
function loader(chunks: Record<string, string>) {
  const loaded = new Map<string, Promise<Record<string, unknown>>>();
  const order: string[] = [];
  const load = (name: string): Promise<Record<string, unknown>> => {
    let p = loaded.get(name);
    if (!p) {
      order.push(name);
      p = new AsyncFunction(LOAD, chunkToScript(name, chunks[name]!))(load);
      loaded.set(name, p);
    }
    return p;
  };
  return { load, order };
}

Deno.test("chunkToScript: named, renamed, namespace and bare imports, lazy imports and exports keep their meaning", async () => {
  const { load, order } = loader({
    "./main.js": 'import{a as x,b}from"./shared.js";import*as ns from"./shared.js";' +
      'import"./side.js";var v=x+b+ns.a;const lazy=async()=>(await import("./lazy.js")).late;' +
      "export{v as value,lazy,v as default};",
    "./shared.js": "var n=1,m=2;export{n as a,m as b};",
    "./side.js": "globalThis.cnikitSideEffect=(globalThis.cnikitSideEffect??0)+1;",
    "./lazy.js": 'import{b}from"./shared.js";export{b as late};',
  });
  try {
    const main = await load("./main.js");
    assertEquals(main.value, 4);
    assertEquals(main.default, 4);
    assertEquals(order, ["./main.js", "./shared.js", "./side.js"]);
    assertEquals(await (main.lazy as () => Promise<number>)(), 2);
    assertEquals(order, ["./main.js", "./shared.js", "./side.js", "./lazy.js"]);
    await load("./main.js");
    assertEquals((globalThis as { cnikitSideEffect?: number }).cnikitSideEffect, 1);
  } finally {
    delete (globalThis as { cnikitSideEffect?: number }).cnikitSideEffect;
  }
});

Deno.test("chunkToScript: a chunk is strict, as a module is", async () => {
  const { load } = loader({
    "./s.js": "var strict=(function(){return this===undefined})();export{strict};",
  });
  assertEquals((await load("./s.js")).strict, true);
});

Deno.test("chunkToScript refuses module syntax it does not know, naming the chunk", () => {
  for (
    const code of [
      "export default 1;",
      "export const a=1;",
      "var u=import.meta.url;",
      'var a=1;import{b}from"./late.js";',
    ]
  ) {
    assertThrows(() => chunkToScript("./odd.js", code), "./odd.js");
  }
});

Deno.test("assertNoCycle finds a static import cycle; a lazy import back is no cycle", () => {
  assertNoCycle(
    new Map([
      ["a.js", 'import{x}from"./b.js";const f=()=>import("./a.js");'],
      ["b.js", "var x=1;export{x};"],
    ]),
  );
  assertThrows(
    () =>
      assertNoCycle(
        new Map([
          ["a.js", 'import{x}from"./b.js";'],
          ["b.js", 'import{y}from"./c.js";'],
          ["c.js", 'import{z}from"./a.js";'],
        ]),
      ),
    "a.js → b.js → c.js → a.js",
  );
});
