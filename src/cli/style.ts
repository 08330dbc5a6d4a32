/**
 * Colour and progress for the commands' output: colour only when stdout is a terminal (and
 * NO_COLOR is unset, TERM is not "dumb"; FORCE_COLOR forces it); plain text otherwise, so that
 * pipes, files and CI logs get clean lines.
 */
function colourOn(stream: NodeJS.WriteStream = process.stdout): boolean {
  if (process.env['FORCE_COLOR'] && process.env['FORCE_COLOR'] !== '0') return true;
  return stream.isTTY === true && !process.env['NO_COLOR'] && process.env['TERM'] !== 'dumb';
}

const paint =
  (code: string) =>
  (text: string): string =>
    colourOn() ? `\x1b[${code}m${text}\x1b[0m` : text;

export const style = {
  bold: paint('1'),
  dim: paint('2'),
  red: paint('31'),
  green: paint('32'),
  yellow: paint('33'),
  cyan: paint('36'),
};

/**
 * Progress of a long operation: on a terminal, one line rewritten in place (then left with the
 * last step); elsewhere, one plain line per step.
 */
export class Progress {
  private shown = false;
  constructor(private readonly stream: NodeJS.WriteStream = process.stdout) {}

  private get live(): boolean {
    return this.stream.isTTY === true;
  }

  step(text: string): void {
    if (this.live) {
      const width = this.stream.columns || 100;
      this.stream.write(`\r\x1b[2K${style.dim('…')} ${text.slice(0, width - 3)}`);
      this.shown = true;
    } else {
      this.stream.write(`  ${text}\n`);
    }
  }

  /** Ends the live line (keeping `text` if given) so that normal output follows. */
  done(text?: string): void {
    if (!this.live) {
      if (text) this.stream.write(`  ${text}\n`);
      return;
    }
    if (this.shown) this.stream.write('\r\x1b[2K');
    if (text) this.stream.write(`${style.green('✓')} ${text}\n`);
    this.shown = false;
  }
}
