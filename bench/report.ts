/**
 * Where every benchmark writes its results: its own section of BENCHMARKS.md, between the markers
 * `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`. Only that section is rewritten; the
 * findings written by hand below it stay as they are.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCHMARKS = join(dirname(fileURLToPath(import.meta.url)), '..', 'BENCHMARKS.md');

/**
 * Replaces the `bench:NAME` section with `report`, or appends it (followed by an empty findings
 * heading titled `findings`, when given) if the file has none yet.
 */
export function writeBenchSection(name: string, report: string, findings?: string): void {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const section = `${start}\n${report}\n${end}`;
  let text = existsSync(BENCHMARKS) ? readFileSync(BENCHMARKS, 'utf8') : '# Benchmarks\n';
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from >= 0 && to > from) text = text.slice(0, from) + section + text.slice(to + end.length);
  else {
    const kept = findings
      ? `\n### ${findings} (kept by the benchmark, which only rewrites the section above)\n\n- (none yet)\n`
      : '';
    text = `${text.trimEnd()}\n\n${section}\n${kept}`;
  }
  writeFileSync(BENCHMARKS, text);
  console.error(`wrote the ${name} section of ${BENCHMARKS}`);
}
