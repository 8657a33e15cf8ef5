// statgate embeds a copy of the client's browser bundle (one minified ES module, no imports)
// for its demo page; this keeps that copy identical to the build (test/types.test.ts checks).
import { copyFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const from = fileURLToPath(new URL('../dist/statgate-client.browser.js', import.meta.url));
const to = fileURLToPath(new URL('../../src/demo/assets/statgate-client.js', import.meta.url));
copyFileSync(from, to);
