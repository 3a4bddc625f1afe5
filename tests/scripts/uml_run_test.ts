import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { KERNEL_FEATURES } from "../helpers/kernel_features.ts";
import { findUml, runInUml, sessionMembers } from "../../scripts/uml_run.ts";

const haveUml = typeof findUml() !== "string";
const root = new URL("../..", import.meta.url).pathname;

Deno.test({
  name: "runInUml(): output, exit status, environment, directory and features of the second kernel",
  ignore: !haveUml,
  fn: async () => {
    const probe =
      `import { probeKernel, KERNEL_FEATURES } from "./tests/helpers/kernel_features.ts";
      console.log(JSON.stringify(await probeKernel(KERNEL_FEATURES)));`;
    const result = await runInUml({
      cmd: [
        "sh",
        "-c",
        `echo "$CNIKIT_SECOND_KERNEL|$GREETING|$(pwd)|$(uname -r)|$(iptables -V)"; echo oops >&2; ` +
        `${Deno.execPath()} eval --no-check "$PROBE" || exit 9; printf 'no newline'; exit 3`,
      ],
      cwd: root,
      env: { GREETING: 'it\'s "quoted" $HOME', PROBE: probe },
      output: "capture",
      timeoutSeconds: 600,
    });
    assertEquals(result.failure, undefined);
    assertEquals(result.code, 3, result.stderr);
    const [first, features, last] = result.stdout!.split("\n");
    assertMatch(first!, /^uml\|it's "quoted" \$HOME\|.*\|6\.\d+\.\d+\|iptables v.* \(legacy\)$/);
    assertEquals(first!.split("|")[2], root.replace(/\/$/, ""));
    assertEquals(JSON.parse(features!), Object.fromEntries(KERNEL_FEATURES.map((f) => [f, true])));
    assertEquals(last, "no newline");
    assertEquals(result.stderr, "oops\n");
    assert(result.bootMs! > 0 && result.commandMs! > 0);
    assertEquals(sessionMembers(result.pid!), []);
  },
});

Deno.test({
  name: "runInUml(): an abort stops a running guest and leaves no process of it",
  ignore: !haveUml,
  fn: async () => {
    const controller = new AbortController();
    const seen: string[] = [];
    const result = await runInUml({
      cmd: ["sh", "-c", "echo started; sleep 600"],
      output: (stream, text) => {
        seen.push(`${stream}:${text}`);
        if (text.includes("started")) controller.abort();
      },
      signal: controller.signal,
      timeoutSeconds: 600,
    });
    assertEquals(seen, ["stdout:started\n"]);
    assertEquals(result.code, 130);
    assertEquals(sessionMembers(result.pid!), []);
  },
});

Deno.test({
  name: "runInUml(): a guest past its timeout is stopped (124) and leaves no process",
  ignore: !haveUml,
  fn: async () => {
    const result = await runInUml({ cmd: ["sleep", "600"], timeoutSeconds: 2, output: "capture" });
    assertEquals(result.code, 124);
    assertMatch(result.failure!, /ran past 2 s/);
    assertEquals(sessionMembers(result.pid!), []);
  },
});
