/**
 * Network: the link speed of the interfaces the host talks through and how much of it is in use.
 *
 * Which interfaces: the one the operator names, else those that carry a default route (IPv4
 * /proc/net/route or IPv6 /proc/net/ipv6_route), else every interface but loopback (loopback only
 * when it is all there is). Link speed is the sum of their /sys/class/net/IFACE/speed, and
 * unknown (`null`) as soon as one of them is unknown: virtual NICs, Wi-Fi and bridges often have
 * no speed (the file is missing, reading it fails with EINVAL, or it holds -1), and Roam never
 * makes one up. Utilisation is the busier direction's bit rate over the link speed: links are
 * full duplex, so each direction has the whole speed.
 */
import { lines, parseCount, parseSignedCount } from './read.js';

export interface InterfaceCounters {
  rxBytes: number;
  txBytes: number;
}

/** A name that is safe to put in a sysfs path (the kernel's own rules: IFNAMSIZ, no '/', no space). */
export function isInterfaceName(name: string): boolean {
  return /^[^/\s:]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

/** Parses /proc/net/dev into byte counters per interface; malformed lines are skipped. */
export function parseNetDev(text: string | undefined): Map<string, InterfaceCounters> {
  const out = new Map<string, InterfaceCounters>();
  if (typeof text !== 'string') return out;
  for (const line of lines(text)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    if (!isInterfaceName(name)) continue;
    // Old kernels glue wide counters to the colon ("eth0:123456"), so split after it.
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    if (fields.length < 16) continue;
    const rxBytes = parseCount(fields[0]);
    const txBytes = parseCount(fields[8]);
    if (rxBytes === undefined || txBytes === undefined) continue;
    out.set(name, { rxBytes, txBytes });
  }
  return out;
}

const RTF_UP = 0x1;
const RTF_REJECT = 0x200;

/** Interfaces with an IPv4 default route (destination and mask 0, route up) in /proc/net/route. */
export function parseDefaultRouteV4(text: string | undefined): string[] {
  if (typeof text !== 'string') return [];
  const out: string[] = [];
  for (const line of lines(text)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[0] === 'Iface') continue;
    const [iface, dest, , flagsHex] = f;
    const mask = f[7];
    if (iface === undefined || flagsHex === undefined || !isInterfaceName(iface)) continue;
    if (!/^0+$/.test(dest ?? '') || !/^0+$/.test(mask ?? '')) continue;
    const flags = /^[0-9A-Fa-f]{1,8}$/.test(flagsHex) ? parseInt(flagsHex, 16) : 0;
    if (flags & RTF_UP && !(flags & RTF_REJECT) && !out.includes(iface)) out.push(iface);
  }
  return out;
}

/** Interfaces with an IPv6 default route (::/0, up, not a reject route) in /proc/net/ipv6_route. */
export function parseDefaultRouteV6(text: string | undefined): string[] {
  if (typeof text !== 'string') return [];
  const out: string[] = [];
  for (const line of lines(text)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [dest, prefix] = f;
    const flagsHex = f[8] ?? '';
    const iface = f[9] ?? '';
    if (!/^0{32}$/.test(dest ?? '') || prefix !== '00' || !isInterfaceName(iface) || iface === 'lo') continue;
    const flags = /^[0-9A-Fa-f]{1,8}$/.test(flagsHex) ? parseInt(flagsHex, 16) : 0;
    if (flags & RTF_UP && !(flags & RTF_REJECT) && !out.includes(iface)) out.push(iface);
  }
  return out;
}

/**
 * /sys/class/net/IFACE/speed in Mbit/s, or `null` when the kernel does not know: a missing file or
 * read error (`undefined`), -1 (SPEED_UNKNOWN), 0, or the unsigned forms of "unknown" that old
 * kernels and some drivers print (65535, 4294967295).
 */
export function parseLinkSpeed(text: string | undefined): number | null {
  const n = parseSignedCount(text);
  if (n === undefined || n <= 0 || n === 0xffff || n >= 0xffffffff) return null;
  return n;
}

/**
 * Which interfaces to measure: `requested` when given, else the default-route interfaces that
 * exist, else all but loopback, else loopback.
 */
export function chooseInterfaces(
  present: readonly string[],
  defaultRoute: readonly string[],
  requested?: string,
): string[] {
  if (requested !== undefined) return isInterfaceName(requested) ? [requested] : [];
  const routed = defaultRoute.filter((i) => present.includes(i));
  if (routed.length > 0) return routed;
  const real = present.filter((i) => i !== 'lo');
  if (real.length > 0) return real;
  return present.includes('lo') ? ['lo'] : [];
}

/** Sum of link speeds, or `null` when there is no interface or any one's speed is unknown. */
export function totalLinkMbps(speeds: readonly (number | null)[]): number | null {
  if (speeds.length === 0 || speeds.some((s) => s === null)) return null;
  return (speeds as number[]).reduce((a, b) => a + b, 0);
}

/** Bytes per second each way over `interfaces` between two readings of /proc/net/dev. */
export function byteRates(
  before: ReadonlyMap<string, InterfaceCounters>,
  after: ReadonlyMap<string, InterfaceCounters>,
  interfaces: readonly string[],
  seconds: number,
): { rxBytesPerSec: number; txBytesPerSec: number } {
  let rx = 0;
  let tx = 0;
  if (seconds > 0) {
    for (const name of interfaces) {
      const a = before.get(name);
      const b = after.get(name);
      if (!a || !b) continue;
      // A counter that went backwards was reset (interface recreated): that interval says nothing.
      if (b.rxBytes >= a.rxBytes) rx += b.rxBytes - a.rxBytes;
      if (b.txBytes >= a.txBytes) tx += b.txBytes - a.txBytes;
    }
  }
  return seconds > 0
    ? { rxBytesPerSec: rx / seconds, txBytesPerSec: tx / seconds }
    : { rxBytesPerSec: 0, txBytesPerSec: 0 };
}

/** The busier direction's share of the link, 0..1, or `null` when the link speed is unknown. */
export function linkUtilisation(rxBytesPerSec: number, txBytesPerSec: number, linkMbps: number | null): number | null {
  if (linkMbps === null || !(linkMbps > 0)) return null;
  const bits = Math.max(rxBytesPerSec, txBytesPerSec) * 8;
  const u = bits / (linkMbps * 1e6);
  return Number.isFinite(u) ? Math.min(1, Math.max(0, u)) : null;
}
