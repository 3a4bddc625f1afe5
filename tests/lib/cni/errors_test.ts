import { assert, assertEquals } from "../../helpers/assert.ts";
import { CniError, ErrorCode, invalidConfig, toErrorObject } from "../../../lib/cni/errors.ts";

Deno.test("ErrorCode holds the spec's and libcni's well-known codes", () => {
  assertEquals(ErrorCode, {
    unknown: 0,
    incompatibleVersion: 1,
    unsupportedField: 2,
    unknownContainer: 3,
    invalidEnvironment: 4,
    ioFailure: 5,
    decodingFailure: 6,
    invalidNetworkConfig: 7,
    invalidNetns: 8,
    tryAgainLater: 11,
    pluginNotAvailable: 50,
    pluginNotAvailableLimitedConnectivity: 51,
    internal: 999,
  });
});

Deno.test("CniError carries code, message and details and is an Error", () => {
  const e = new CniError(7, "bad config", "key x");
  assert(e instanceof Error);
  assertEquals(e.name, "CniError");
  assertEquals([e.code, e.message, e.details], [7, "bad config", "key x"]);
  assertEquals(new CniError(4, "m").details, "");
});

Deno.test('CniError.toString() is "msg; details", or "msg" without details', () => {
  assertEquals(String(new CniError(7, "bad config", "key x")), "bad config; key x");
  assertEquals(String(new CniError(7, "bad config")), "bad config");
});

Deno.test("toErrorObject() renders a CniError with cniVersion, code, msg and details", () => {
  assertEquals(toErrorObject(new CniError(7, "bad", "why"), "0.4.0"), {
    cniVersion: "0.4.0",
    code: 7,
    msg: "bad",
    details: "why",
  });
});

Deno.test("toErrorObject() leaves out empty details", () => {
  const out = toErrorObject(new CniError(4, "missing"), "1.1.0");
  assertEquals(out, { cniVersion: "1.1.0", code: 4, msg: "missing" });
  assert(!("details" in out));
});

Deno.test("toErrorObject() passes plugin-specific codes through unchanged", () => {
  assertEquals(toErrorObject(new CniError(1234, "custom"), "1.1.0").code, 1234);
  assertEquals(toErrorObject(new CniError(0, "unknown"), "1.1.0").code, 0);
});

Deno.test("toErrorObject() turns an untyped Error into code 999 with its message", () => {
  assertEquals(toErrorObject(new TypeError("boom"), "1.0.0"), {
    cniVersion: "1.0.0",
    code: 999,
    msg: "boom",
  });
});

Deno.test("toErrorObject() turns a thrown non-Error into code 999 with its text", () => {
  assertEquals(toErrorObject("plain string", "1.1.0"), {
    cniVersion: "1.1.0",
    code: 999,
    msg: "plain string",
  });
  assertEquals(toErrorObject(42, "1.1.0").msg, "42");
  assertEquals(toErrorObject(undefined, "1.1.0").msg, "undefined");
});

Deno.test("toErrorObject() keeps the key order cniVersion, code, msg, details", () => {
  const out = toErrorObject(new CniError(2, "unsupported field", "ipMasq"), "1.1.0");
  assertEquals(Object.keys(out), ["cniVersion", "code", "msg", "details"]);
});

Deno.test("invalidConfig() is a code 7 CniError", () => {
  const e = invalidConfig("bad subnet", "10.0.0.0/33");
  assert(e instanceof CniError);
  assertEquals([e.code, e.message, e.details], [7, "bad subnet", "10.0.0.0/33"]);
  assertEquals(invalidConfig("x").details, "");
});
