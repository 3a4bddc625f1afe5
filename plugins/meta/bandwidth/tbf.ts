/**
 * Token bucket parameters, computed bit for bit as the reference computes
 * them (Go float64 arithmetic, uint32 conversions and all), and the `tc`
 * burst that makes the kernel store the reference's bucket size.
 *
 * The reference hands the kernel a bucket size in ticks. `tc` hands it the
 * burst in bytes as well, and then the kernel computes the ticks itself
 * from its own fixed-point rate, so the burst given to `tc` is chosen such
 * that the kernel's ticks equal the reference's: then a CHECK of either
 * implementation passes on a qdisc the other made.
 * @module
 */

/** A TBF as the kernel reports it: rate and limit in bytes, bucket in ticks. */
export interface Tbf {
  /** Bytes per second. */
  rate: number;
  /** The burst in bytes (the reference's `burstInBytes`). */
  burst: number;
  /** The bucket size in psched ticks, as `tc -raw` shows it (`burst_raw`). */
  buffer: number;
  /** Bytes. */
  limit: number;
}

const TWO_32 = 2 ** 32;
const TIME_UNITS_PER_SEC = 1_000_000;
const LATENCY_MS = 25;

/** Go's `uint32(f)` for a float64 on amd64: truncated, then the low 32 bits. */
function goUint32(f: number): number {
  const t = Math.trunc(f);
  return ((t % TWO_32) + TWO_32) % TWO_32;
}

/** The kernel's psched ticks per microsecond, from /proc/net/psched (as netlink and tc read it). */
export function tickInUsec(): number {
  const fields = Deno.readTextFileSync("/proc/net/psched").trim().split(/\s+/).map((h) =>
    parseInt(h, 16)
  );
  let [t2us, us2t, clockRes] = fields as [number, number, number];
  // The kernel's compatibility hack for nanosecond clocks.
  if (clockRes === 1_000_000_000) t2us = us2t;
  return t2us / us2t * (clockRes / TIME_UNITS_PER_SEC);
}

/** The reference's TBF for a rate and a burst in bits (both non-zero). */
export function referenceTbf(rateBits: number, burstBits: number, tick: number): Tbf {
  const rate = Math.floor(rateBits / 8);
  const burst = goUint32(Math.floor(burstBits / 8));
  const buffer = goUint32(goUint32(burst * TIME_UNITS_PER_SEC / rate) * tick);
  const latency = TIME_UNITS_PER_SEC * (LATENCY_MS / 1000);
  const limit = (goUint32(rate * latency / TIME_UNITS_PER_SEC) + burst) % TWO_32;
  return { rate, burst, buffer, limit };
}

/** A rate as the kernel keeps it: bytes → ns is `(bytes * mult) >> shift`. */
interface FixedPointRate {
  mult: bigint;
  shift: bigint;
}

/** The kernel's fixed-point form of `rate` bytes/s (`psched_ratecfg_precompute`). */
function fixedPoint(rate: number): FixedPointRate {
  const r = BigInt(rate);
  let factor = 1_000_000_000n;
  let shift = 0n;
  let mult = 1n;
  if (r > 0n) {
    for (;;) {
      mult = BigInt.asUintN(32, factor / r);
      if (mult & (1n << 31n) || factor & (1n << 63n)) break;
      factor <<= 1n;
      shift++;
    }
  }
  return { mult, shift };
}

function ticksAt(fp: FixedPointRate, size: number): number {
  const ns = BigInt.asUintN(64, BigInt(size) * fp.mult) >> fp.shift;
  return Number(BigInt.asUintN(32, ns >> 6n));
}

/**
 * The ticks the kernel stores for a bucket of `size` bytes at `rate`
 * bytes/s when the burst comes in bytes: nanoseconds by its fixed-point
 * rate, then ticks of 64 ns cut to 32 bits, as it reports them.
 */
export function kernelTicks(rate: number, size: number): number {
  return ticksAt(fixedPoint(rate), size);
}

/**
 * The burst to give `tc` so that the kernel stores `tbf.buffer` ticks: the
 * configured burst when that already does (the usual case), else the size
 * the kernel's arithmetic maps onto those ticks (found by inverting it, then
 * checking the neighbours), else the configured burst: below one tick per
 * byte no size may hit the reference's ticks, and the kernel's then differ
 * by less than a byte's worth.
 */
export function tcBurst(tbf: Tbf): number {
  const fp = fixedPoint(tbf.rate);
  if (ticksAt(fp, tbf.burst) === tbf.buffer) return tbf.burst;
  const guess = Number(((BigInt(tbf.buffer) << 6n << fp.shift) + fp.mult - 1n) / fp.mult);
  for (const size of [guess, guess - 1, guess + 1]) {
    if (size > 0 && size < TWO_32 && ticksAt(fp, size) === tbf.buffer) return size;
  }
  return tbf.burst;
}

/** The `tc qdisc add … tbf` arguments for `tbf` on `dev` as the root qdisc, handle 1:. */
export function tbfCommand(dev: string, tbf: Tbf): string[] {
  return [
    "qdisc",
    "add",
    "dev",
    dev,
    "root",
    "handle",
    "1:",
    "tbf",
    "rate",
    `${tbf.rate}bps`,
    "burst",
    String(tcBurst(tbf)),
    "limit",
    String(tbf.limit),
  ];
}

/** The bucket sizes (ticks) CHECK accepts: the reference's, and what `tc` gives when no burst matches it. */
export function acceptedBuffers(tbf: Tbf): number[] {
  return [tbf.buffer, kernelTicks(tbf.rate, tcBurst(tbf))];
}
