import { assert, assertEquals, assertThrows } from "../../../helpers/assert.ts";
import { CniError } from "../../../../lib/cni/errors.ts";
import {
  ALL_VERSIONS,
  compareVersions,
  CURRENT_VERSION,
  normalizeVersion,
  parseVersion,
  versionAtLeast,
} from "../../../../lib/cni/spec/version.ts";

Deno.test("ALL_VERSIONS lists the seven spec versions oldest first, ending at CURRENT_VERSION", () => {
  assertEquals([...ALL_VERSIONS], ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
  assertEquals(CURRENT_VERSION, "1.1.0");
  assertEquals(ALL_VERSIONS.at(-1), CURRENT_VERSION);
  for (let i = 1; i < ALL_VERSIONS.length; i++) {
    assert(compareVersions(ALL_VERSIONS[i - 1]!, ALL_VERSIONS[i]!) < 0, ALL_VERSIONS[i]);
  }
});

Deno.test('parseVersion() reads "" as 0.1.0', () => {
  assertEquals(parseVersion(""), [0, 1, 0]);
});

Deno.test('parseVersion() reads "1" as 1.0.0', () => {
  assertEquals(parseVersion("1"), [1, 0, 0]);
});

Deno.test('parseVersion() reads "1.2" as 1.2.0 and "1.2.3" as 1.2.3', () => {
  assertEquals(parseVersion("1.2"), [1, 2, 0]);
  assertEquals(parseVersion("1.2.3"), [1, 2, 3]);
  assertEquals(parseVersion("0.4.0"), [0, 4, 0]);
  assertEquals(parseVersion("10.20.300"), [10, 20, 300]);
});

for (
  const bad of ["asdfasdf", "asdf.", ".asdfas", "0.", "..", "1.2.3.4.5", "1.2.3.4", "1.x.0", "-1"]
) {
  Deno.test(`parseVersion() rejects ${JSON.stringify(bad)} as undecodable (code 6)`, () => {
    const e = assertThrows(() => parseVersion(bad), bad);
    assert(e instanceof CniError);
    assertEquals(e.code, 6);
  });
}

Deno.test("compareVersions() orders by major, then minor, then patch, numerically", () => {
  assert(compareVersions("1.2.34", "1.2.14") > 0);
  assert(compareVersions("1.2.14", "1.2.34") < 0);
  assert(compareVersions("0.10.0", "0.9.0") > 0);
  assert(compareVersions("1.0.0", "0.99.99") > 0);
  assertEquals(compareVersions("1.1.0", "1.1.0"), 0);
  assertEquals(compareVersions("1", "1.0.0"), 0);
  assertEquals(compareVersions("", "0.1.0"), 0);
});

Deno.test("versionAtLeast() holds for 1.2.34 ≥ 1.2.14, 0.4.0 ≥ 0.3.1 and equal versions", () => {
  assert(versionAtLeast("1.2.34", "1.2.14"));
  assert(versionAtLeast("0.4.0", "0.3.1"));
  assert(versionAtLeast("0.4.0", "0.4.0"));
  assert(versionAtLeast("1.1.0", "1.1.0"));
  assert(!versionAtLeast("1.2.14", "1.2.34"));
  assert(!versionAtLeast("0.3.1", "0.4.0"));
  assert(!versionAtLeast("1.0.0", "1.1.0"));
});

Deno.test("versionAtLeast() throws on a malformed version", () => {
  assertThrows(() => versionAtLeast("adsf", "0.4.0"), "adsf");
  assertThrows(() => versionAtLeast("0.4.0", "1.2.3.4"), "1.2.3.4");
});

Deno.test("normalizeVersion() reads a missing or empty version as 0.1.0 and keeps others", () => {
  assertEquals(normalizeVersion(undefined), "0.1.0");
  assertEquals(normalizeVersion(""), "0.1.0");
  assertEquals(normalizeVersion("0.4.0"), "0.4.0");
  assertEquals(normalizeVersion("9.9.9"), "9.9.9");
});
