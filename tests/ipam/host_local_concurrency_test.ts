/**
 * host-local under parallel load: 50 ADDs at once on one /24 must hand out
 * 50 distinct addresses, and 50 DELs must leave no lease behind; mixed with
 * the reference binary on the same store, the flock must keep them apart.
 */
import { assertEquals } from "../helpers/assert.ts";
import {
  cniEnv,
  haveReference,
  type PluginRun,
  REFERENCE_BIN,
  runApplet,
} from "../helpers/applet.ts";
import { leases } from "../helpers/ipam.ts";
import { withTempDir } from "../helpers/tempdir.ts";

const NETNS = "/run/netns/cnikit-ipam-unused";
const N = 50;

function config(dataDir: string) {
  return {
    cniVersion: "1.0.0",
    name: "burst",
    type: "bridge",
    ipam: { type: "host-local", subnet: "10.77.0.0/24", dataDir },
  };
}

function run(
  command: string,
  dataDir: string,
  containerId: string,
  bin?: string,
): Promise<PluginRun> {
  return runApplet("host-local", {
    env: cniEnv(command, { netns: NETNS, containerId }),
    stdin: config(dataDir),
    ...(bin ? { bin } : {}),
  });
}

function addressOf(r: PluginRun): string {
  assertEquals(r.code, 0, r.stdout + r.stderr);
  return (r.json!.ips as { address: string }[])[0]!.address;
}

/** Runs `fn` for 0..n-1 all at once; returns the results and the wall time in ms. */
async function burst<T>(n: number, fn: (i: number) => Promise<T>): Promise<[T[], number]> {
  const start = performance.now();
  const results = await Promise.all(Array.from({ length: n }, (_, i) => fn(i)));
  return [results, performance.now() - start];
}

async function addDel(bin?: string): Promise<{ add: number; del: number }> {
  let times = { add: 0, del: 0 };
  await withTempDir(async (dir) => {
    const [adds, addMs] = await burst(N, (i) => run("ADD", dir, `ctr-${i}`, bin));
    const addresses = adds.map(addressOf);
    assertEquals(new Set(addresses).size, N, addresses.join(" "));
    assertEquals((await leases(dir, "burst")).length, N);
    // Lease i belongs to container i.
    for (const [i, address] of addresses.entries()) {
      const ip = address.split("/")[0]!;
      assertEquals(await Deno.readTextFile(`${dir}/burst/${ip}`), `ctr-${i}\r\neth0`);
    }
    const [dels, delMs] = await burst(N, (i) => run("DEL", dir, `ctr-${i}`, bin));
    for (const d of dels) assertEquals(d.code, 0, d.stdout);
    assertEquals(await leases(dir, "burst"), []);
    times = { add: addMs, del: delMs };
  });
  return times;
}

Deno.test(`host-local: ${N} parallel ADDs get distinct addresses, ${N} parallel DELs free them`, async () => {
  const ours = await addDel();
  console.log(
    `cnikit    ${N} parallel ADDs ${ours.add.toFixed(0)} ms, DELs ${ours.del.toFixed(0)} ms`,
  );
  if (haveReference) {
    const ref = await addDel(REFERENCE_BIN);
    console.log(
      `reference ${N} parallel ADDs ${ref.add.toFixed(0)} ms, DELs ${ref.del.toFixed(0)} ms`,
    );
  }
});

Deno.test({
  name: `host-local and the reference, ${N} parallel ADDs on one store: no address twice`,
  ignore: !haveReference,
  fn: () =>
    withTempDir(async (dir) => {
      const bin = (i: number) => (i % 2 ? REFERENCE_BIN : undefined);
      const [adds] = await burst(N, (i) => run("ADD", dir, `ctr-${i}`, bin(i)));
      const addresses = adds.map(addressOf);
      assertEquals(new Set(addresses).size, N, addresses.join(" "));
      assertEquals((await leases(dir, "burst")).length, N);
      // Each releases the other's leases.
      const [dels] = await burst(N, (i) => run("DEL", dir, `ctr-${i}`, bin(i + 1)));
      for (const d of dels) assertEquals(d.code, 0, d.stdout);
      assertEquals(await leases(dir, "burst"), []);
    }),
});
