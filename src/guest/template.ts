/**
 * The runtime template: the memory of a sandbox that has evaluated the guest runtime and nothing
 * else. Evaluating the runtime takes QuickJS a few hundred milliseconds; copying the template
 * into a new sandbox takes a few, so every guest starts from it (as V8 starts from a snapshot).
 *
 * `npm run build` writes it to dist/guest-runtime.template (an ordinary checkpoint image, checked
 * like any other); a process that finds it missing or made from another runtime builds its own.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../package-root.js';
import { ROAM_VERSION } from '../version.js';
import {
  applyPages,
  decodeImage,
  encodeImage,
  snapshotMemory,
  type ImageContents,
  type MemorySnapshot,
} from './image/index.js';
import { guestRuntimeSource } from './runtime-source.js';
import { DEFAULT_LIMITS, Sandbox } from './sandbox/sandbox.js';

export const TEMPLATE_FILE = 'guest-runtime.template';

/** The runtime template as a base memory: images store only the pages that differ from it. */
export interface RuntimeBase {
  /** A hash of the template's bytes: an image names the exact base it needs. */
  id: string;
  snapshot: MemorySnapshot;
  /** The template as one flat memory, for page comparisons at checkpoint. */
  full: Uint8Array;
}

let template: Promise<RuntimeBase> | undefined;

/** Which runtime a template was made from (its id must match the runtime this process runs). */
async function runtimeId(): Promise<string> {
  return createHash('sha256')
    .update(await guestRuntimeSource())
    .digest('hex')
    .slice(0, 32);
}

/** Boots a sandbox, evaluates the guest runtime in it, and captures its memory. */
export async function makeTemplate(): Promise<MemorySnapshot> {
  const source = await guestRuntimeSource();
  // The template must be the same bytes on every machine (images are stored as differences from
  // it), so the clock QuickJS reads while booting (it seeds Math.random and the allocator's magic
  // from it) is held still meanwhile. The guest runtime reseeds Math.random from the host's
  // randomness when a guest starts.
  const { now } = Date;
  const perfNow = performance.now.bind(performance);
  Date.now = () => 0;
  performance.now = () => 0;
  let sandbox: Sandbox | undefined;
  try {
    sandbox = await Sandbox.create({ ...DEFAULT_LIMITS, cpuBudgetMs: 60_000 });
    sandbox.evalScript(source, 'roam:runtime');
    return snapshotMemory(sandbox.memoryView());
  } finally {
    Date.now = now;
    performance.now = perfNow;
    sandbox?.dispose();
  }
}

/** The template as an image file's bytes (see scripts/build.mjs). */
export async function encodeTemplate(memory: MemorySnapshot): Promise<Uint8Array> {
  return encodeImage({
    meta: {
      kind: 'js',
      guestId: await runtimeId(),
      name: 'roam-runtime-template',
      roamVersion: ROAM_VERSION,
      createdAt: new Date().toISOString(),
    },
    memory,
    state: null,
    files: new Uint8Array(0),
  });
}

async function loadBuilt(): Promise<MemorySnapshot | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(packageRoot(), 'dist', TEMPLATE_FILE));
  } catch {
    return undefined;
  }
  const { contents } = await decodeImage(bytes);
  return contents.meta.guestId === (await runtimeId()) ? contents.memory : undefined;
}

function asBase(snapshot: MemorySnapshot): RuntimeBase {
  const hash = createHash('sha256');
  hash.update(`${snapshot.byteLength}:`);
  hash.update(new Uint8Array(snapshot.pages.buffer, snapshot.pages.byteOffset, snapshot.pages.byteLength));
  hash.update(snapshot.data);
  // A new buffer is all zeros: only the template's pages need writing. Comparing the others with
  // zero first faulted every page in: loading the template blocked a new host's event loop for
  // 62-74 ms, 26-31 ms without (2 fresh processes each, 2026-11-28).
  const full = new Uint8Array(snapshot.byteLength);
  applyPages(snapshot, full);
  return { id: `runtime-${hash.digest('hex').slice(0, 32)}`, snapshot, full };
}

/**
 * A guest's image, its pages stored against the runtime template they were captured against (a
 * WebAssembly guest's, which has no base, as they are).
 */
export async function encodeGuestImage(contents: ImageContents): Promise<Uint8Array> {
  return encodeImage(contents, contents.meta.base === undefined ? {} : { base: await runtimeTemplate() });
}

export function runtimeTemplate(): Promise<RuntimeBase> {
  template ??= (async () => asBase((await loadBuilt()) ?? (await makeTemplate())))();
  template.catch(() => (template = undefined));
  return template;
}
