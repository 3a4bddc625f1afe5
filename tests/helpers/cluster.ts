/**
 * A cluster of simulated nodes for the agent's tests, all inside namespaces
 * the test creates: an "underlay" namespace holding a bridge, a namespace
 * per node (a veth into the bridge, the node's address on it), one for etcd
 * (a real etcd, its data in a temp dir, ended by PID) and an "outside" host
 * beyond the cluster CIDR. Agents run inside the node namespaces as
 * processes of dist/bin/cnikit; pods are namespaces added with
 * dist/bin/cnitool and the list the node's agent wrote, run inside the
 * node's namespace. Everything is removed by {@link TestCluster.close}.
 * @module
 */

import { DIST_BIN, REFERENCE_BIN } from "./applet.ts";
import { sh, spawnOutput, TestNetns, uniqueName } from "./netns.ts";

/** The underlay's /24: nodes are .10 upwards, etcd .2, the outside host .3. */
export const UNDERLAY = "10.123.0";
export const ETCD_IP = `${UNDERLAY}.2`;
export const OUTSIDE_IP = `${UNDERLAY}.3`;
export const ETCD_URL = `http://${ETCD_IP}:2379`;

/** A program started by a test, with its stderr collected as it comes. */
export class TestProcess {
  readonly child: Deno.ChildProcess;
  #log = "";
  #reading: Promise<void>;
  #status?: Deno.CommandStatus;
  #exited = false;

  constructor(argv: string[], env: Record<string, string> = {}) {
    const child = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.child = child;
    child.status.then(() => this.#exited = true);
    this.#reading = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#log += chunk;
      }
    })();
  }

  get pid(): number {
    return this.child.pid;
  }

  /** What it printed on stderr so far. */
  get log(): string {
    return this.#log;
  }

  /** Waits until its stderr matches `pattern`; throws after `seconds` or when it exits first. */
  async waitForLog(pattern: RegExp, seconds = 60, from = 0): Promise<RegExpMatchArray> {
    const deadline = Date.now() + seconds * 1000;
    while (Date.now() < deadline) {
      const match = this.#log.slice(from).match(pattern);
      if (match) return match;
      if (this.#exited) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no ${pattern} in the log within ${seconds} s:\n${this.#log}`);
  }

  /** Sends `signal` and waits for the exit. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    if (!this.#status) {
      try {
        this.child.kill(signal);
      } catch { /* already gone */ }
    }
    return await this.wait();
  }

  /** Waits for the exit. */
  async wait(): Promise<Deno.CommandStatus> {
    this.#status ??= await this.child.status;
    await this.#reading;
    return this.#status;
  }
}

/** A pod: its namespace and address. */
export interface Pod {
  ns: TestNetns;
  ip: string;
  node: TestNode;
}

/** A node: a namespace on the underlay, its agent's directories and its agent. */
export class TestNode {
  agent?: TestProcess;
  readonly pods: Pod[] = [];

  constructor(
    readonly cluster: TestCluster,
    readonly name: string,
    readonly ns: TestNetns,
    readonly ip: string,
    readonly dir: string,
  ) {}

  get confDir(): string {
    return `${this.dir}/net.d`;
  }

  get stateDir(): string {
    return `${this.dir}/state`;
  }

  /** The flags every agent of this node is started with. */
  agentArgs(extra: string[] = []): string[] {
    const c = this.cluster;
    return [
      "--etcd-endpoints",
      ETCD_URL,
      "--cluster-cidr",
      c.clusterCIDR,
      "--subnet-len",
      String(c.subnetLen),
      "--backend",
      c.backend,
      "--public-ip",
      this.ip,
      "--node-name",
      this.name,
      "--cni-conf-dir",
      this.confDir,
      "--ipam-data-dir",
      `${this.dir}/ipam`,
      "--state-dir",
      this.stateDir,
      "--lease-ttl",
      String(c.leaseTTL),
      "--etcd-prefix",
      c.etcdPrefix,
      ...extra,
    ];
  }

  /** Starts the agent inside the node's namespace and waits for its first sync. */
  async startAgent(extra: string[] = [], waitForSync = true): Promise<TestProcess> {
    const agent = new TestProcess([
      "ip",
      "netns",
      "exec",
      this.ns.name,
      `${DIST_BIN}/cnikit`,
      "agent",
      ...this.agentArgs(extra),
    ], this.cluster.denoEnv);
    this.agent = agent;
    if (waitForSync) await agent.waitForLog(/reconcile \(start/);
    return agent;
  }

  /** The subnet the agent leased, from the list it wrote. */
  async subnet(): Promise<string> {
    const list = JSON.parse(await Deno.readTextFile(`${this.confDir}/10-cnikit.conflist`));
    return list.plugins[0].ipam.ranges[0][0].subnet;
  }

  /** `cnitool <verb> cnikit <pod netns>` inside the node, as a runtime on the node would. */
  cnitool(verb: "add" | "del" | "check", pod: TestNetns) {
    return spawnOutput("ip", [
      "netns",
      "exec",
      this.ns.name,
      `${DIST_BIN}/cnitool`,
      verb,
      "cnikit",
      pod.path,
    ], {
      env: {
        ...this.cluster.denoEnv,
        NETCONFPATH: this.confDir,
        CNI_PATH: `${DIST_BIN}:${REFERENCE_BIN}`,
        CNI_CACHE_DIR: `${this.dir}/cache`,
      },
    });
  }

  /** Adds a pod (a new namespace) with the node's list; returns it with its address. */
  async addPod(): Promise<Pod> {
    const ns = await TestNetns.create("ckp");
    this.cluster.namespaces.push(ns);
    const out = await this.cnitool("add", ns);
    if (out.code !== 0) {
      throw new Error(
        `cnitool add on ${this.name} failed (exit ${out.code}): ${out.stdout}${out.stderr}`,
      );
    }
    const ip = JSON.parse(out.stdout).ips[0].address.split("/")[0];
    const pod = { ns, ip, node: this };
    this.pods.push(pod);
    return pod;
  }

  /** Removes a pod with DEL, then its namespace. */
  async delPod(pod: Pod): Promise<void> {
    const out = await this.cnitool("del", pod.ns);
    if (out.code !== 0) {
      throw new Error(
        `cnitool del on ${this.name} failed (exit ${out.code}): ${out.stdout}${out.stderr}`,
      );
    }
    await pod.ns.remove();
    this.pods.splice(this.pods.indexOf(pod), 1);
  }

  /** `ip -j <args>` inside the node. */
  ipJson<T>(...args: string[]): Promise<T> {
    return this.ns.ipJson<T>(...args);
  }
}

/** Options for {@link TestCluster.create}. */
export interface ClusterOptions {
  backend: "host-gw" | "vxlan";
  /**
   * Lease TTL of every agent, seconds. Long by default, so that an agent
   * starved of CPU on a busy machine does not lose its lease; the tests of
   * lease expiry set a short one.
   */
  leaseTTL?: number;
  clusterCIDR?: string;
  subnetLen?: number;
}

/** The namespaces, etcd and agents of one test. */
export class TestCluster {
  readonly namespaces: TestNetns[] = [];
  readonly nodes: TestNode[] = [];
  readonly etcdPrefix = "/cnikit/network";
  etcd?: TestProcess;
  readonly backend: "host-gw" | "vxlan";
  readonly leaseTTL: number;
  readonly clusterCIDR: string;
  readonly subnetLen: number;
  readonly bridge = "br0";
  /**
   * The Deno processes of a cluster (agents, cnitool) keep their V8 code
   * cache in the cluster's directory: the machine-wide cache database is
   * shared with every other Deno process there, and under heavy contention
   * a process has died of SIGBUS in it.
   */
  readonly denoEnv: Record<string, string>;

  private constructor(
    options: ClusterOptions,
    readonly dir: string,
    readonly underlay: TestNetns,
    readonly etcdNs: TestNetns,
    readonly outside: TestNetns,
  ) {
    this.backend = options.backend;
    this.leaseTTL = options.leaseTTL ?? 15;
    this.clusterCIDR = options.clusterCIDR ?? "10.244.0.0/16";
    this.subnetLen = options.subnetLen ?? 24;
    this.denoEnv = { DENO_DIR: `${dir}/deno` };
  }

  /** The underlay with etcd running and the outside host; no nodes yet. */
  static async create(options: ClusterOptions): Promise<TestCluster> {
    const dir = await Deno.makeTempDir({ prefix: "cnikit-cluster-" });
    const created: TestNetns[] = [];
    try {
      for (const prefix of ["cku", "cke", "cko"]) created.push(await TestNetns.create(prefix));
      const [underlay, etcdNs, outside] = created as [TestNetns, TestNetns, TestNetns];
      const cluster = new TestCluster(options, dir, underlay, etcdNs, outside);
      cluster.namespaces.push(...created);
      await sh("ip", ["-n", underlay.name, "link", "add", cluster.bridge, "type", "bridge"]);
      await sh("ip", ["-n", underlay.name, "link", "set", cluster.bridge, "up"]);
      await cluster.#plug(etcdNs, ETCD_IP);
      await cluster.#plug(outside, OUTSIDE_IP);
      await cluster.startEtcd();
      return cluster;
    } catch (e) {
      await Promise.all(created.map((ns) => ns.remove()));
      await Deno.remove(dir, { recursive: true });
      throw e;
    }
  }

  /** Connects `ns` to the underlay's bridge as `eth0` with `ip`/24. */
  async #plug(ns: TestNetns, ip: string): Promise<void> {
    const port = uniqueName("cku");
    await sh("ip", [
      "-n",
      this.underlay.name,
      "link",
      "add",
      port,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns.name,
    ]);
    await sh("ip", ["-n", this.underlay.name, "link", "set", port, "master", this.bridge, "up"]);
    await sh("ip", ["-n", ns.name, "addr", "add", `${ip}/24`, "dev", "eth0"]);
    await sh("ip", ["-n", ns.name, "link", "set", "eth0", "up"]);
  }

  /** Starts etcd (again, on the same data) and waits until it answers. */
  async startEtcd(): Promise<void> {
    this.etcd = new TestProcess([
      "ip",
      "netns",
      "exec",
      this.etcdNs.name,
      "etcd",
      "--name",
      "test",
      "--data-dir",
      `${this.dir}/etcd`,
      "--listen-client-urls",
      `${ETCD_URL},http://127.0.0.1:2379`,
      "--advertise-client-urls",
      ETCD_URL,
      "--listen-peer-urls",
      "http://127.0.0.1:2380",
      "--initial-advertise-peer-urls",
      "http://127.0.0.1:2380",
      "--initial-cluster",
      "test=http://127.0.0.1:2380",
      "--log-level",
      "warn",
      "--logger",
      "zap",
    ]);
    for (let i = 0; i < 200; i++) {
      if (await this.etcdctl(["endpoint", "health"]).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`etcd did not come up:\n${this.etcd.log}`);
  }

  /** Stops etcd (SIGTERM, by PID). */
  async stopEtcd(): Promise<void> {
    await this.etcd?.stop();
    this.etcd = undefined;
  }

  /** `etcdctl` against the test's etcd; throws on failure. */
  etcdctl(args: string[]): Promise<string> {
    return sh("ip", [
      "netns",
      "exec",
      this.etcdNs.name,
      "env",
      "ETCDCTL_API=3",
      "etcdctl",
      "--endpoints",
      "http://127.0.0.1:2379",
      "--command-timeout",
      "3s",
      ...args,
    ]);
  }

  /** The subnets held in etcd, as `subnet → node`. */
  async subnetsInEtcd(): Promise<Map<string, string>> {
    const out = await this.etcdctl(["get", "--prefix", `${this.etcdPrefix}/subnets/`]);
    const lines = out.split("\n").filter(Boolean);
    const held = new Map<string, string>();
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const subnet = lines[i]!.slice(`${this.etcdPrefix}/subnets/`.length).replace("-", "/");
      held.set(subnet, JSON.parse(lines[i + 1]!).node);
    }
    return held;
  }

  /** Adds a node namespace on the underlay (no agent yet). */
  async addNode(): Promise<TestNode> {
    const index = this.nodes.length;
    const ns = await TestNetns.create("ckn");
    this.namespaces.push(ns);
    const ip = `${UNDERLAY}.${10 + index}`;
    await this.#plug(ns, ip);
    const name = `node${index + 1}`;
    const dir = `${this.dir}/${name}`;
    await Deno.mkdir(dir, { recursive: true });
    const node = new TestNode(this, name, ns, ip, dir);
    this.nodes.push(node);
    return node;
  }

  /** Adds `count` nodes and starts their agents at once; waits for each one's first sync. */
  async addNodes(count: number): Promise<TestNode[]> {
    const nodes: TestNode[] = [];
    for (let i = 0; i < count; i++) nodes.push(await this.addNode());
    await Promise.all(nodes.map((n) => n.startAgent()));
    return nodes;
  }

  /** Ends every agent and etcd (by PID), removes the namespaces and files. */
  async close(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.agent?.stop("SIGKILL")));
    await this.etcd?.stop("SIGKILL");
    await Promise.all(this.namespaces.map((ns) => ns.remove()));
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Retries `check` (an assertion) every 100 ms until it passes; after `seconds` its last failure is thrown. */
export async function eventually(check: () => Promise<void>, seconds = 15): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (true) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() >= deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Prints every agent's log (what explains most failures here). */
export function dumpLogs(cluster: TestCluster): void {
  for (const node of cluster.nodes) {
    if (node.agent) console.error(`--- agent of ${node.name} ---\n${node.agent.log}`);
  }
}

/**
 * A step of a cluster test: the agents' logs are printed when it fails
 * (a failed step does not throw out of the test function).
 */
export async function clusterStep(
  t: Deno.TestContext,
  cluster: TestCluster,
  name: string,
  fn: () => Promise<void>,
): Promise<void> {
  const ok = await t.step(name, async () => {
    try {
      await fn();
    } catch (e) {
      dumpLogs(cluster);
      throw e;
    }
  });
  if (!ok) throw new Error(`step failed: ${name}`);
}

/** Runs `fn` with a fresh cluster, closed afterwards even when `fn` fails. */
export async function withCluster(
  options: ClusterOptions,
  fn: (cluster: TestCluster) => Promise<void>,
): Promise<void> {
  const cluster = await TestCluster.create(options);
  try {
    await fn(cluster);
  } catch (e) {
    if (!(e instanceof Error && e.message.startsWith("step failed: "))) dumpLogs(cluster);
    throw e;
  } finally {
    await cluster.close();
  }
}
