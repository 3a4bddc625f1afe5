/**
 * bandwidth with real traffic: a TCP transfer between the fake host and the
 * container (socat at both ends, started and ended by this test), timed by
 * the receiver from its first data to its last, without limits and then
 * through 1 Mbit/s in each direction. Through the limit the data after the
 * first read takes at least what the rate allows beyond one burst; without
 * it, far less.
 * @module
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, hostRunner } from "../../helpers/applet.ts";
import { prevResultFor, vethAttachment } from "../../helpers/chained.ts";
import { canNetns, type TestNetns, withNamespaces } from "../../helpers/netns.ts";
import { withTempDir } from "../../helpers/tempdir.ts";

const bandwidth = hostRunner("bandwidth");

const haveSocat = new Deno.Command("socat", { args: ["-V"], stdout: "null", stderr: "null" })
  .outputSync().success;

const BYTES = 200_000;
const RATE_BITS = 1_000_000;
const BURST_BITS = 64_000;
const RATE = RATE_BITS / 8;
const BURST = BURST_BITS / 8;

/** What the receiver saw: its first read, and the seconds from then until it had everything. */
interface Transfer {
  first: number;
  seconds: number;
}

/** The least time the bucket needs for what came after the first read: one burst is free. */
function minimumSeconds(t: Transfer): number {
  return (BYTES - t.first - BURST) / RATE;
}

/** Sends `file` from `from` to `ip`:5001 in `to`; timed by the receiver. */
async function transfer(
  from: TestNetns,
  to: TestNetns,
  ip: string,
  file: string,
): Promise<Transfer> {
  const receiver = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      to.name,
      "socat",
      "-u",
      `TCP-LISTEN:5001,bind=${ip},reuseaddr`,
      "STDOUT",
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let sender: Deno.ChildProcess | undefined;
  try {
    const received = (async () => {
      let n = 0;
      let first = 0;
      let start = 0;
      for await (const chunk of receiver.stdout) {
        if (n === 0) [first, start] = [chunk.length, performance.now()];
        n += chunk.length;
      }
      return { n, first, seconds: (performance.now() - start) / 1000 };
    })();
    sender = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        from.name,
        "socat",
        "-u",
        `OPEN:${file}`,
        `TCP:${ip}:5001,retry=100,interval=0.02`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const [got, status] = await Promise.all([received, receiver.status]);
    assertEquals((await sender.status).success, true, "sender failed");
    assert(status.success, "receiver failed");
    assertEquals(got.n, BYTES);
    return { first: got.first, seconds: got.seconds };
  } finally {
    // Ended by PID if anything above failed before they finished.
    for (const child of [sender, receiver]) {
      try {
        child?.kill("SIGKILL");
      } catch { /* already exited */ }
    }
    await Promise.allSettled([sender?.status, receiver.status]);
  }
}

Deno.test({
  name: "bandwidth: 1 Mbit/s each way holds a transfer to the rate; without limits it is fast",
  ignore: !canNetns || !haveSocat,
  fn: () =>
    withTempDir((dir) =>
      withNamespaces(1, async (host, ctr) => {
        const file = `${dir}/payload`;
        await Deno.writeFile(file, new Uint8Array(BYTES).map((_, i) => (i * 7919) & 0xff));
        const veth = await vethAttachment(host, ctr);
        const toContainer = () => transfer(host, ctr, veth.containerIP, file);
        const fromContainer = () => transfer(ctr, host, veth.hostIP, file);

        // The whole payload through the bucket needs this long.
        const full = (BYTES - BURST) / RATE;
        for (const [what, t] of [["to", await toContainer()], ["from", await fromContainer()]]) {
          const { seconds } = t as Transfer;
          assert(seconds < full / 4, `unlimited transfer ${what} the container took ${seconds} s`);
        }

        const conf = {
          cniVersion: "1.0.0",
          name: "bwnet",
          type: "bandwidth",
          prevResult: prevResultFor(veth.result, "1.0.0"),
          ingressRate: RATE_BITS,
          ingressBurst: BURST_BITS,
          egressRate: RATE_BITS,
          egressBurst: BURST_BITS,
        };
        assertSuccess(await bandwidth("ADD", host, { netns: ctr.path }, conf));
        for (const [what, t] of [["to", await toContainer()], ["from", await fromContainer()]]) {
          const shaped = t as Transfer;
          assert(
            shaped.seconds >= minimumSeconds(shaped),
            `shaped transfer ${what} the container took only ${shaped.seconds} s ` +
              `(first read ${shaped.first} bytes, the rate allows ${minimumSeconds(shaped)} s)`,
          );
          assert(minimumSeconds(shaped) > full / 2, `a first read of ${shaped.first} bytes`);
        }
        assertSuccess(await bandwidth("DEL", host, { netns: ctr.path }, conf));
      })
    ),
});
