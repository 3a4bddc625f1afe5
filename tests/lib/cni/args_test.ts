import { assert, assertEquals, assertThrows } from "../../helpers/assert.ts";
import { CniError } from "../../../lib/cni/errors.ts";
import { parseCniArgs } from "../../../lib/cni/args.ts";

function assertArgsError(raw: string, known: string[], msg: string): void {
  const e = assertThrows(() => parseCniArgs(raw, known), msg);
  assert(e instanceof CniError, String(e));
  assertEquals(e.code, 4);
}

Deno.test("parseCniArgs() reads an empty CNI_ARGS as {}", () => {
  assertEquals(parseCniArgs("", []), {});
  assertEquals(parseCniArgs("", ["IP"]), {});
});

Deno.test("parseCniArgs() reads known K=V pairs", () => {
  assertEquals(parseCniArgs("IP=10.0.0.5", ["IP"]), { IP: "10.0.0.5" });
  assertEquals(parseCniArgs("IP=10.0.0.5/24;MAC=aa:bb:cc:dd:ee:ff", ["IP", "MAC"]), {
    IP: "10.0.0.5/24",
    MAC: "aa:bb:cc:dd:ee:ff",
  });
});

Deno.test("parseCniArgs() keeps empty values and lets a repeated key's last value win", () => {
  assertEquals(parseCniArgs("IP=", ["IP"]), { IP: "" });
  assertEquals(parseCniArgs("IP=10.0.0.5;IP=10.0.0.6", ["IP"]), { IP: "10.0.0.6" });
});

Deno.test("parseCniArgs() refuses a pair without exactly one =", () => {
  assertArgsError("a=b=c", ["a"], 'ARGS: invalid pair "a=b=c"');
  assertArgsError("IP", ["IP"], 'ARGS: invalid pair "IP"');
  assertArgsError("IP=10.0.0.5;", ["IP"], 'ARGS: invalid pair ""');
  assertArgsError(";IP=10.0.0.5", ["IP"], 'ARGS: invalid pair ""');
  assertArgsError("IP=1;;MAC=2", ["IP", "MAC"], 'ARGS: invalid pair ""');
});

Deno.test("parseCniArgs() refuses unknown keys, naming the pairs", () => {
  assertArgsError("Unk=nown", [], 'ARGS: unknown args ["Unk=nown"]');
  assertArgsError("IP=10.0.0.5;Unk=nown;K8S_POD_NAME=p", ["IP"], "unknown args");
  const e = assertThrows(() => parseCniArgs("A=1;IP=2;B=3", ["IP"]));
  assertEquals(e.message, 'ARGS: unknown args ["A=1" "B=3"]');
});

Deno.test("parseCniArgs() matches keys case-sensitively", () => {
  assertArgsError("ip=10.0.0.5", ["IP"], "unknown args");
  assertArgsError("ignoreunknown=1;X=y", [], "unknown args");
});

for (const yes of ["1", "true", "True", "TRUE", "tRuE"]) {
  Deno.test(`parseCniArgs() drops unknown keys when IgnoreUnknown=${yes}`, () => {
    assertEquals(parseCniArgs(`IgnoreUnknown=${yes};Unk=nown;IP=10.0.0.5`, ["IP"]), {
      IP: "10.0.0.5",
    });
  });
}

Deno.test("parseCniArgs() honours IgnoreUnknown wherever it stands in the list", () => {
  assertEquals(parseCniArgs("Unk=nown;IP=10.0.0.5;IgnoreUnknown=1", ["IP"]), { IP: "10.0.0.5" });
});

for (const no of ["0", "false", "False", "FALSE"]) {
  Deno.test(`parseCniArgs() still refuses unknown keys when IgnoreUnknown=${no}`, () => {
    assertArgsError(`IgnoreUnknown=${no};Unk=nown`, [], "unknown args");
    assertEquals(parseCniArgs(`IgnoreUnknown=${no};IP=1`, ["IP"]), { IP: "1" });
  });
}

Deno.test("parseCniArgs() refuses IgnoreUnknown values that are not booleans", () => {
  for (const bad of ["maybe", "", "yes", "2", "t"]) {
    assertArgsError(
      `IgnoreUnknown=${bad}`,
      [],
      `ARGS: error parsing value of pair "IgnoreUnknown=${bad}"`,
    );
  }
  assertArgsError(
    "IgnoreUnknown=maybe;IP=1",
    ["IP"],
    "boolean unmarshal error: invalid input maybe",
  );
});

Deno.test("parseCniArgs() reads every IgnoreUnknown pair and lets the last one win", () => {
  assertArgsError("IgnoreUnknown=1;IgnoreUnknown=0;Unk=nown", [], "unknown args");
  assertEquals(parseCniArgs("IgnoreUnknown=0;IgnoreUnknown=1;Unk=nown", []), {});
  assertArgsError("IgnoreUnknown=1;IgnoreUnknown=maybe", [], "invalid input maybe");
});

Deno.test("parseCniArgs() accepts the Kubernetes runtime's keys with IgnoreUnknown", () => {
  const raw =
    "IgnoreUnknown=1;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns;K8S_POD_INFRA_CONTAINER_ID=c;K8S_POD_UID=u";
  assertEquals(parseCniArgs(raw, []), {});
  assertEquals(parseCniArgs(raw, ["K8S_POD_NAME", "K8S_POD_NAMESPACE"]), {
    K8S_POD_NAME: "p",
    K8S_POD_NAMESPACE: "ns",
  });
  assertArgsError(raw.replace("IgnoreUnknown=1;", ""), [], "unknown args");
});

Deno.test("parseCniArgs() does not report IgnoreUnknown itself among the values", () => {
  assertEquals(parseCniArgs("IgnoreUnknown=1", []), {});
  assertEquals(parseCniArgs("IgnoreUnknown=1", ["IgnoreUnknown"]), {});
});
