// The size check of `npm test`: each entry of the build, bundled and minified as an app's
// bundler would (React left out), then gzipped. The core must stay under 5 KB.
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const LIMITS = { 'dist/index.js': 5 * 1024, 'dist/react.js': 1024 };
let failed = false;
for (const [entry, limit] of Object.entries(LIMITS)) {
  const { outputFiles } = await build({
    entryPoints: [new URL(`../${entry}`, import.meta.url).pathname],
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2022',
    external: ['react'],
    write: false,
  });
  const code = outputFiles[0].contents;
  const gzipped = gzipSync(code, { level: 9 }).length;
  const ok = gzipped <= limit;
  failed ||= !ok;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${entry}: ${code.length} B minified, ${gzipped} B min+gzip (limit ${limit} B)`);
}
if (failed) process.exit(1);
