// Builds tracker/dist/ from tracker/src/hush.js with the minifier and compressor
// pinned in package-lock.json:
//   script.js     minified (terser)
//   script.js.gz  gzip, by zopfli (deterministic, a little smaller than zlib -9):
//                 what hush serves to clients that accept gzip; its size is the
//                 budget (1,024 bytes), checked by a Rust test
//   script.js.br  brotli (Node's zlib, quality 11)
//   build.json    the source's SHA-256, the tools' versions and the sizes; a Rust
//                 test recomputes the hash, so a source change without a rebuild
//                 fails the tests even where node is absent
//
//   node build.mjs           rebuild dist/
//   node build.mjs --check   fail if dist/ differs from a fresh build
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, brotliDecompressSync, constants, gzipSync } from 'node:zlib';
import { minify } from 'terser';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const zopfli = require('@gfx/zopfli');
const version = (name) =>
  JSON.parse(readFileSync(join(here, 'node_modules', name, 'package.json'), 'utf8')).version;

const source = readFileSync(join(here, 'src/hush.js'));
const { code } = await minify(source.toString('utf8'), {
  ecma: 2020,
  compress: { passes: 3, unsafe_arrows: true },
  mangle: true,
  format: { comments: false },
});
const js = Buffer.from(code);
const gz = Buffer.from(await zopfli.gzipAsync(js, { numiterations: 1000 }));
const br = brotliCompressSync(js, {
  params: {
    [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
    [constants.BROTLI_PARAM_QUALITY]: 11,
    [constants.BROTLI_PARAM_SIZE_HINT]: js.length,
  },
});
const manifest = Buffer.from(
  JSON.stringify(
    {
      source: 'src/hush.js',
      source_sha256: createHash('sha256').update(source).digest('hex'),
      minifier: `terser ${version('terser')}`,
      gzip: `@gfx/zopfli ${version('@gfx/zopfli')}, 1000 iterations`,
      bytes: js.length,
      gzip_bytes: gz.length,
      gzip_9_bytes: gzipSync(js, { level: 9 }).length,
      brotli_bytes: br.length,
    },
    null,
    2
  ) + '\n'
);

const dist = join(here, 'dist');
const outputs = {
  'script.js': js,
  'script.js.gz': gz,
  'script.js.br': br,
  'build.json': manifest,
};
if (process.argv.includes('--check')) {
  // Every file byte for byte, except the brotli one, which depends on the brotli
  // that Node links: it must decompress to script.js.
  const stale = [];
  for (const [name, bytes] of Object.entries(outputs)) {
    let committed = null;
    try {
      committed = readFileSync(join(dist, name));
    } catch {}
    const same =
      committed &&
      (name.endsWith('.br') ? brotliDecompressSync(committed).equals(js) : committed.equals(bytes));
    if (!same) stale.push(name);
  }
  if (stale.length) {
    console.error(`tracker/dist is not a build of src/hush.js (${stale.join(', ')}): run tracker/build`);
    process.exit(1);
  }
  console.log(`tracker/dist is a build of src/hush.js: ${js.length} bytes, ${gz.length} gzipped`);
} else {
  mkdirSync(dist, { recursive: true });
  for (const [name, bytes] of Object.entries(outputs)) writeFileSync(join(dist, name), bytes);
  console.log(`tracker/dist: ${js.length} bytes, ${gz.length} gzipped, ${br.length} brotli`);
}
