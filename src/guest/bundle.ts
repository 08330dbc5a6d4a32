/**
 * Turns a guest program (.ts, .js, .mjs; CommonJS or ES modules; with npm dependencies from its
 * own node_modules) into one script for the sandbox. Node built-ins resolve to the guest runtime;
 * a built-in the runtime does not provide is refused here, naming the module, not at run time.
 *
 * Async functions and generators are lowered to plain generators so that their promises are the
 * runtime's tracked Promise (see runtime/promise.ts: it is how unhandled rejections are seen).
 * An ES module entry may use top-level await: its bundle becomes the body of an async function,
 * lowered in a second pass. CommonJS entries keep sloppy-mode semantics in a plain function.
 */
import { builtinModules } from 'node:module';
import { relative, resolve, sep } from 'node:path';
import { build, transform, type BuildOptions, type Message, type Plugin } from 'esbuild';
import { RoamError } from '../errors.js';
import { GUEST_BUILTINS } from './builtin-names.js';

const provided = new Set<string>(GUEST_BUILTINS);
const UNSUPPORTED = 'roam-unsupported-builtin';
const nodeBuiltins = new Set<string>(builtinModules);

function builtinsPlugin(): Plugin {
  return {
    name: 'roam-builtins',
    setup(b) {
      b.onResolve({ filter: /^[a-z_/:]+$/ }, (args) => {
        const bare = args.path.startsWith('node:') ? args.path.slice(5) : args.path;
        if (provided.has(bare)) return { path: bare, namespace: 'roam-builtin' };
        if (args.path.startsWith('node:') || nodeBuiltins.has(bare)) {
          return {
            errors: [
              {
                text: `the Roam guest runtime does not provide the Node built-in module "${args.path}" (it provides: ${GUEST_BUILTINS.join(', ')})`,
                detail: UNSUPPORTED,
              },
            ],
          };
        }
        return undefined;
      });
      b.onLoad({ filter: /.*/, namespace: 'roam-builtin' }, (args) => ({
        contents: `module.exports = globalThis.__roam_require(${JSON.stringify(args.path)});`,
        loader: 'js',
      }));
    },
  };
}

export interface BundleResult {
  code: string;
  warnings: string[];
}

function formatMessage(m: Message): string {
  const where = m.location ? `${m.location.file}:${m.location.line}:${m.location.column + 1}: ` : '';
  return `${where}${m.text}`;
}

const LOWERED = { 'async-await': false, 'async-generator': false, 'for-await': false } as const;

function common(entry: string): BuildOptions {
  return {
    entryPoints: [entry],
    bundle: true,
    write: false,
    platform: 'node',
    plugins: [builtinsPlugin()],
    logLevel: 'silent',
    sourcemap: false,
    charset: 'utf8',
  };
}

export async function bundleGuest(entry: string): Promise<BundleResult> {
  try {
    // First pass: find out what the entry is (and bundle it, if it is an ES module).
    const esm = await build({ ...common(entry), format: 'esm', target: 'esnext', metafile: true });
    const entryFormat = esm.metafile.inputs[relative(process.cwd(), resolve(entry)).split(sep).join('/')]?.format;
    if (entryFormat === 'esm') {
      const code = esm.outputFiles?.[0]?.text ?? '';
      const lowered = await transform(`(async () => {\n${code}\n})();`, {
        loader: 'js',
        target: 'es2022',
        supported: LOWERED,
        charset: 'utf8',
      });
      return { code: lowered.code, warnings: [...esm.warnings, ...lowered.warnings].map(formatMessage) };
    }
    const result = await build({ ...common(entry), format: 'iife', target: 'es2022', supported: LOWERED });
    const file = result.outputFiles?.[0];
    if (!file) throw new Error('esbuild produced no output');
    return { code: file.text, warnings: result.warnings.map(formatMessage) };
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors;
    if (errors && errors.length > 0) {
      const unsupported = errors.some((e) => e.detail === UNSUPPORTED);
      throw new RoamError(
        unsupported ? 'ROAM_ERR_UNSUPPORTED_BUILTIN' : 'ROAM_ERR_BUNDLE',
        `cannot bundle ${entry}:\n${errors.map(formatMessage).join('\n')}`,
        { cause: err },
      );
    }
    throw new RoamError('ROAM_ERR_BUNDLE', `cannot bundle ${entry}: ${String(err)}`, { cause: err });
  }
}
