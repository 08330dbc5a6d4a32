/**
 * The topology view: remote peers connect to the proxy, the proxy to each host, and each guest
 * sits in its host's box. Guest nodes are kept across renders and move with a CSS transition, so
 * a migration is seen as the guest gliding from one host to the other; a move in progress is a
 * dashed arrow from the source to the target.
 */
import { s } from './dom.js';
import type { GuestView, HostView, StreamView } from './api.js';

export interface PendingMove {
  guest: string;
  from: string;
  to: string;
}

const W = 1000;
const PROXY = { x: 560, y: 45 };
const HOST_Y = 175;
const HOST_W = 190;
const HOST_H = 100;

export class Topology {
  private readonly links: SVGGElement;
  private readonly nodes: SVGGElement;
  private readonly guestLayer: SVGGElement;
  private readonly guestNodes = new Map<string, SVGGElement>();

  constructor(private readonly svg: SVGSVGElement) {
    this.links = s('g', { class: 'links' }) as SVGGElement;
    this.nodes = s('g', { class: 'nodes' }) as SVGGElement;
    this.guestLayer = s('g', { class: 'guests' }) as SVGGElement;
    const defs = s(
      'defs',
      {},
      s(
        'marker',
        {
          id: 'arrow',
          viewBox: '0 0 10 10',
          refX: 9,
          refY: 5,
          markerWidth: 7,
          markerHeight: 7,
          orient: 'auto-start-reverse',
        },
        s('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#ffb74d' }),
      ),
    );
    svg.append(defs, this.links, this.nodes, this.guestLayer);
  }

  render(hosts: HostView[], guests: GuestView[], streams: StreamView[], moves: PendingMove[]): void {
    const shown = hosts.filter((h) => h.state !== 'left' && h.state !== 'evicted');
    const gap = shown.length ? W / shown.length : W;
    const place = new Map<string, { x: number; y: number }>();
    shown.forEach((h, i) => place.set(h.name, { x: gap * i + gap / 2, y: HOST_Y }));
    this.links.replaceChildren();
    this.nodes.replaceChildren();

    // Remote peers: one node per remote address, at the top left.
    const remotes = [
      ...new Set(streams.filter((x) => x.direction === 'inbound').map((x) => x.remote.replace(/:\d+$/, ''))),
    ];
    remotes.slice(0, 4).forEach((addr, i) => {
      const x = 70 + i * 95;
      const y = 40;
      this.links.append(s('line', { x1: x, y1: y, x2: PROXY.x - 60, y2: PROXY.y, class: 'link remote' }));
      const count = streams.filter((st) => st.remote.startsWith(`${addr}:`)).length;
      this.nodes.append(
        s(
          'g',
          { class: 'remote', 'data-remote': addr },
          s('circle', { cx: x, cy: y, r: 18 }),
          s('text', { x, y: y + 4, 'text-anchor': 'middle', class: 'small' }, `${count}`),
          s('text', { x, y: y + 32, 'text-anchor': 'middle', class: 'small' }, addr),
        ),
      );
    });

    this.nodes.append(
      s(
        'g',
        { class: 'proxy' },
        s('rect', { x: PROXY.x - 60, y: PROXY.y - 22, width: 120, height: 44, rx: 8 }),
        s('text', { x: PROXY.x, y: PROXY.y + 5, 'text-anchor': 'middle' }, 'proxy'),
      ),
    );
    for (const h of shown) {
      const p = place.get(h.name);
      if (!p) continue;
      this.links.append(s('line', { x1: PROXY.x, y1: PROXY.y + 22, x2: p.x, y2: p.y, class: `link host ${h.state}` }));
      this.nodes.append(
        s(
          'g',
          { class: `host ${h.state}`, 'data-host': h.name },
          s('rect', { x: p.x - HOST_W / 2, y: p.y, width: HOST_W, height: HOST_H, rx: 10 }),
          s('text', { x: p.x, y: p.y + HOST_H + 18, 'text-anchor': 'middle' }, `${h.name} (${h.state})`),
        ),
      );
    }
    for (const m of moves) {
      const a = place.get(m.from);
      const b = place.get(m.to);
      if (!a || !b) continue;
      const dir = b.x > a.x ? 1 : -1;
      this.links.append(
        s('path', {
          d: `M ${a.x + (dir * HOST_W) / 2} ${a.y + 30} C ${a.x + dir * 160} ${a.y - 40}, ${b.x - dir * 160} ${b.y - 40}, ${b.x - (dir * HOST_W) / 2} ${b.y + 30}`,
          class: 'move',
          'marker-end': 'url(#arrow)',
        }),
      );
    }

    // Guests: kept by id so their move is animated.
    const seen = new Set<string>();
    const perHost = new Map<string, number>();
    for (const g of guests) {
      const p = g.hostName ? place.get(g.hostName) : undefined;
      if (!p) continue;
      seen.add(g.id);
      const i = perHost.get(g.hostName ?? '') ?? 0;
      perHost.set(g.hostName ?? '', i + 1);
      const x = p.x - HOST_W / 2 + 35 + (i % 4) * 40;
      const y = p.y + 30 + Math.floor(i / 4) * 40;
      let node = this.guestNodes.get(g.id);
      if (!node) {
        node = s(
          'g',
          { class: 'guest', 'data-guest': g.name },
          s('circle', { r: 16 }),
          s('text', { y: 32, 'text-anchor': 'middle', class: 'small' }, g.name),
        ) as SVGGElement;
        node.style.transform = `translate(${x}px, ${y}px)`;
        this.guestLayer.append(node);
        this.guestNodes.set(g.id, node);
      }
      node.setAttribute('class', `guest ${g.state}${moves.some((m) => m.guest === g.name) ? ' moving' : ''}`);
      node.setAttribute('data-host', g.hostName ?? '');
      node.style.transform = `translate(${x}px, ${y}px)`;
    }
    for (const [id, node] of this.guestNodes) {
      if (seen.has(id)) continue;
      node.remove();
      this.guestNodes.delete(id);
    }
  }
}
