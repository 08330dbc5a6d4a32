/** The `roam` command. */
import { Command, CommanderError } from 'commander';
import { isRoamError } from '../errors.js';
import { ROAM_VERSION } from '../version.js';
import { EXIT } from '../guest/exit-codes.js';
import { hostCommand, proxyCommand } from './daemons.js';
import { exitCodeFor, guestCommand } from './guest.js';
import { demoCommand } from './demo.js';
import { operatorCommands } from './operator.js';

// A reader that went away (`roam ... | head`) is not an error of ours.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

const program = new Command('roam')
  .enablePositionalOptions()
  .version(ROAM_VERSION)
  .description(
    'Roam moves live programs between machines without dropping their connections.\n' +
      'A guest program runs in a sandbox; it can be checkpointed into an image and resumed elsewhere.',
  )
  .addHelpText(
    'after',
    `
Examples:
  roam demo                                               everything on this machine, with the dashboard: start here
  roam guest run examples/counter.ts                      run a guest in the foreground
  roam guest run app.ts --checkpoint-after 2s --out a.img  run it, then freeze it into an image
  roam guest resume a.img                                 continue it, here or on another machine
  roam guest inspect a.img                                see what the image holds
  roam proxy                                              the public proxy (prints the roam host command)
  roam host --proxy PROXY:7400 --join-token-file FILE     offer this machine to the proxy
  roam run app.ts --name web --publish 8080:80            start a guest on the best host, via the proxy
  roam ps / roam hosts / roam events --follow             where everything runs, and what happens

Exit codes: the guest's own (process.exit), 1 for an uncaught guest error, 64 usage,
65 image refused, 66 input not readable, 67 bundle failed, 68 guest memory limit,
69 guest CPU budget, 70 internal error. Commands that use the proxy's API (run, ps, hosts, stop,
logs, events, migrate) also: 66 guest not found, 73 conflict (name taken), 75 API unreachable or no host
available (retry later), 76 the move failed, 77 admin token refused. roam demo: 0 when its client
lost nothing, 1 otherwise. Output is coloured only on a terminal (NO_COLOR turns it off); every
listing command takes --json.`,
  );

program.addCommand(demoCommand());
program.addCommand(guestCommand());
program.addCommand(proxyCommand());
program.addCommand(hostCommand());
for (const cmd of operatorCommands()) program.addCommand(cmd);

// Usage errors anywhere in the tree exit with 64 and a message, through the handler below.
function configure(cmd: Command): void {
  cmd.exitOverride().configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const sub of cmd.commands) configure(sub);
}
configure(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : EXIT.USAGE;
  } else {
    const message = isRoamError(err) ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`roam: ${message}\n`);
    process.exitCode = exitCodeFor(err);
  }
}
