// The package's builds: ESM (`.js`) and CommonJS (`.cjs`) of each entry with their type
// declarations (`.d.ts`, `.d.cts`), and one minified ESM file for browsers without a bundler
// (the demo page serves a copy of it; `scripts/copy-bundle.mjs`).
import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: { index: 'src/index.ts', react: 'src/react.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    target: 'es2022',
    platform: 'neutral',
    external: ['react'],
    outDir: 'dist',
  },
  {
    entry: { 'statgate-client.browser': 'src/index.ts' },
    format: ['esm'],
    minify: true,
    target: 'es2022',
    platform: 'browser',
    outDir: 'dist',
  },
]);
