/** Each host's small chart: CPU and memory in use over the last minutes (uPlot). */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { HostView } from './api.js';

const KEEP = 300; // samples: five minutes at the default report interval

interface Series {
  t: number[];
  cpu: number[];
  mem: number[];
  lastReport: number;
}

export class HostCharts {
  private readonly series = new Map<string, Series>();
  private readonly plots = new Map<string, uPlot>();

  /** Adds the hosts' latest reports (each report once). */
  record(hosts: HostView[], now = Date.now()): void {
    for (const h of hosts) {
      const m = h.metrics;
      if (!m) continue;
      let s = this.series.get(h.id);
      if (!s) this.series.set(h.id, (s = { t: [], cpu: [], mem: [], lastReport: -1 }));
      const at = h.lastSeen ?? now;
      if (at === s.lastReport) continue;
      s.lastReport = at;
      s.t.push(at / 1000);
      s.cpu.push(Math.round(m.cpu.usage * 1000) / 10);
      s.mem.push(Math.round((1 - m.memory.freeBytes / Math.max(1, m.memory.totalBytes)) * 1000) / 10);
      if (s.t.length > KEEP) {
        s.t.shift();
        s.cpu.shift();
        s.mem.shift();
      }
    }
  }

  /** The chart element of a host (made once, kept across renders), with its latest data. */
  element(hostId: string, width: number): HTMLElement {
    const s = this.series.get(hostId) ?? { t: [], cpu: [], mem: [], lastReport: -1 };
    const data: uPlot.AlignedData = [s.t, s.cpu, s.mem];
    let plot = this.plots.get(hostId);
    if (!plot) {
      const el = document.createElement('div');
      el.className = 'chart';
      plot = new uPlot(
        {
          width,
          height: 90,
          legend: { show: false },
          cursor: { show: false },
          scales: { y: { range: [0, 100] } },
          axes: [
            {
              size: 18,
              font: '10px sans-serif',
              stroke: '#8a94a6',
              grid: { stroke: '#2a3140' },
              ticks: { show: false },
            },
            {
              size: 30,
              font: '10px sans-serif',
              stroke: '#8a94a6',
              grid: { stroke: '#2a3140' },
              ticks: { show: false },
              values: (_u, vals) => vals.map((v) => `${v}%`),
              splits: () => [0, 50, 100],
            },
          ],
          series: [
            {},
            { label: 'CPU', stroke: '#4fc3f7', width: 1.5, fill: 'rgba(79,195,247,0.15)' },
            { label: 'memory', stroke: '#ba68c8', width: 1.5 },
          ],
        },
        data,
        el,
      );
      this.plots.set(hostId, plot);
    } else {
      plot.setData(data);
    }
    return plot.root.parentElement ?? plot.root;
  }

  forget(keep: Set<string>): void {
    for (const [id, plot] of this.plots) {
      if (keep.has(id)) continue;
      plot.destroy();
      this.plots.delete(id);
      this.series.delete(id);
    }
  }
}
