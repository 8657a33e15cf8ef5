// The compiled client has no imports, so dist/index.js is also the browser bundle. statgate
// embeds a copy for its demo page; this keeps that copy identical to the build (a test checks).
import { copyFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const from = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const to = fileURLToPath(new URL('../../src/demo/assets/statgate-client.js', import.meta.url));
copyFileSync(from, to);
