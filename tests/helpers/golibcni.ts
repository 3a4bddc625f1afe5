/**
 * Go's libcni as a runtime drives plugins: tests/go/cnidriver, built at test
 * time from Debian's libcni source (golang-github-appc-cni-dev, GOPATH mode,
 * no network) into a temporary folder, run inside a namespace that plays
 * the host.
 * @module
 */

import { spawnOutput, type TestNetns } from "./netns.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const GOPATH = "/usr/share/gocode";
const LIBCNI = `${GOPATH}/src/github.com/containernetworking/cni/libcni`;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

const goFound = (() => {
  try {
    return new Deno.Command("go", { args: ["version"], stdout: "null" }).outputSync().success;
  } catch {
    return false;
  }
})();

/** Why the driver cannot be built here, or undefined when it can. */
export const noGoLibcni: string | undefined = !goFound
  ? "no Go toolchain (Debian: golang-go)"
  : !exists(LIBCNI)
  ? `no libcni source in ${LIBCNI} (Debian: golang-github-appc-cni-dev)`
  : undefined;

let built: Promise<string> | undefined;

/** Builds the driver once per test process; the folder goes when the process ends. */
export function driverPath(): Promise<string> {
  built ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "cnikit-cnidriver-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const out = await spawnOutput(
      "go",
      ["build", "-o", `${dir}/cnidriver`, "./tests/go/cnidriver"],
      {
        env: { GO111MODULE: "off", GOPATH, GOFLAGS: "", CGO_ENABLED: "0" },
        cwd: ROOT,
      },
    );
    if (out.code !== 0) throw new Error(`building cnidriver failed: ${out.stderr}`);
    return `${dir}/cnidriver`;
  })();
  return built;
}

/** One libcni call. */
export interface DriverCall {
  /** The .conflist file. */
  conflist: string;
  /** libcni's cache folder. */
  cache: string;
  /** Plugin folders. */
  path: string[];
  netns?: string;
  containerId?: string;
  ifname?: string;
  /** Capability arguments (become runtimeConfig for plugins that declare them). */
  capabilities?: Record<string, unknown>;
  /** CNI_ARGS. */
  args?: string;
  /** GC: the attachments still valid. */
  valid?: { containerID: string; ifname: string }[];
  /** GC: the cniVersion sent to the plugins, when not the list's. */
  gcVersion?: string;
}

/** Runs `command` (add, check, del, gc, cached, adddel) through libcni inside `host`. */
export async function libcni(
  command: string,
  host: TestNetns,
  call: DriverCall,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = [
    "-conflist",
    call.conflist,
    "-cache",
    call.cache,
    "-path",
    call.path.join(":"),
    "-netns",
    call.netns ?? "",
    "-id",
    call.containerId ?? "ctr1",
    "-ifname",
    call.ifname ?? "eth0",
    "-args",
    call.args ?? "",
    "-valid",
    JSON.stringify(call.valid ?? null),
    ...(call.capabilities ? ["-cap", JSON.stringify(call.capabilities)] : []),
    ...(call.gcVersion ? ["-gcversion", call.gcVersion] : []),
    command,
  ];
  return await spawnOutput("ip", ["netns", "exec", host.name, await driverPath(), ...argv]);
}
