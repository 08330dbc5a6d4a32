// Writes dist/guest-runtime.template (run by scripts/build.mjs after the runtime is bundled).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../src/package-root.js';
import { encodeTemplate, makeTemplate, TEMPLATE_FILE } from '../src/guest/template.js';

await writeFile(join(packageRoot(), 'dist', TEMPLATE_FILE), await encodeTemplate(await makeTemplate()));
