/** How the operator commands show the roaming table: hosts, guests, events, published ports. */
import type { HostReport } from '../controller/metrics/index.js';
import type { PublishedPort } from '../proxy/store.js';
import type { EventView, GuestView, HostView } from '../proxy/view.js';
import { style } from './style.js';
import { formatAgo, formatBytes, formatMs, formatPercent, formatTime, renderTable, shortId } from './table.js';

/** `tcp 8080->80, udp 5353` (`arrow` spaced out for sentences). */
export function publishText(ports: PublishedPort[], arrow = '->'): string {
  return ports.map((p) => `${p.protocol} ${p.public}${p.public === p.guest ? '' : `${arrow}${p.guest}`}`).join(', ');
}

function linkText(mbps: number): string {
  return mbps >= 1000 ? `${Number((mbps / 1000).toFixed(1))} Gb/s` : `${Math.round(mbps)} Mb/s`;
}

function networkText(n: HostReport['network']): string {
  if (n.linkMbps !== null && n.utilisation !== null)
    return `${formatPercent(n.utilisation)} of ${linkText(n.linkMbps)}`;
  return `${formatBytes(Math.max(n.rxBytesPerSec, n.txBytesPerSec))}/s`;
}

/** Three significant digits at most: 1.23, 41.2, 412. */
function scoreText(score: number | null): string {
  if (score === null) return '-';
  return Math.abs(score) >= 100 ? String(Math.round(score)) : String(Number(score.toPrecision(3)));
}

const STATE_ORDER: Record<string, number> = { up: 0, disconnected: 1, left: 2, evicted: 3 };

export function hostsTable(hosts: HostView[], now = Date.now()): string {
  const sorted = [...hosts].sort(
    (a, b) => (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) || a.name.localeCompare(b.name),
  );
  const rows = sorted.map((h) => {
    const m = h.metrics;
    return [
      h.name,
      h.state,
      h.address ? `${h.address}${h.peerPort ? `:${h.peerPort}` : ''}` : '-',
      formatMs(h.rttMs),
      m ? formatPercent(m.cpu.usage) : '-',
      m ? String(Number(m.cpu.capacity.toFixed(2))) : '-',
      m ? `${formatBytes(m.memory.freeBytes)} of ${formatBytes(m.memory.totalBytes)}` : '-',
      m ? networkText(m.network) : '-',
      scoreText(h.benchmarkScore),
      String(h.guests),
      formatAgo(h.lastSeen, now),
      shortId(h.id),
    ];
  });
  return renderTable(
    [
      { header: 'NAME' },
      { header: 'STATE' },
      { header: 'ADDRESS' },
      { header: 'RTT', align: 'right' },
      { header: 'CPU', align: 'right' },
      { header: 'CORES', align: 'right' },
      { header: 'MEMORY FREE' },
      { header: 'NETWORK' },
      { header: 'SCORE', align: 'right' },
      { header: 'GUESTS', align: 'right' },
      { header: 'SEEN' },
      { header: 'ID' },
    ],
    rows,
  );
}

export function guestState(g: GuestView): string {
  return g.exitCode !== null && g.state !== 'running' ? `${g.state} (${g.exitCode})` : g.state;
}

export function guestsTable(guests: GuestView[], now = Date.now()): string {
  const rows = [...guests]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((g) => [
      g.name,
      g.kind,
      guestState(g),
      g.hostName ?? shortId(g.hostId),
      publishText(g.publish) || '-',
      formatBytes(g.memoryBytes),
      formatMs(g.cpuMs),
      String(g.streams),
      formatAgo(g.since, now),
      formatAgo(g.image?.takenAt, now),
      shortId(g.id),
    ]);
  return renderTable(
    [
      { header: 'NAME' },
      { header: 'KIND' },
      { header: 'STATE' },
      { header: 'HOST' },
      { header: 'PUBLISHED' },
      { header: 'MEMORY', align: 'right' },
      { header: 'CPU', align: 'right' },
      { header: 'STREAMS', align: 'right' },
      { header: 'SINCE' },
      { header: 'IMAGE' },
      { header: 'ID' },
    ],
    rows,
  );
}

/** `web running on host-a (3f2a1b9c), published tcp 8080 -> 80` */
export function placement(g: GuestView): string {
  const where =
    g.hostName || g.hostId ? ` on ${g.hostName ?? shortId(g.hostId)} (${shortId(g.hostId)})` : ' (no host yet)';
  const published = g.publish.length ? `, published ${publishText(g.publish, ' -> ')}` : '';
  return `${g.name} ${guestState(g)}${where}${published}\n`;
}

export function eventLine(e: EventView): string {
  const kind = e.kind.padEnd(18);
  const painted = /\.(failed|evicted|lost|refused|dropped)$/.test(e.kind) ? style.red(kind) : style.cyan(kind);
  return `${formatTime(e.t)}  ${painted}  ${e.message}\n`;
}
