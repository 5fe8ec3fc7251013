// Rebuilds server/assets/demo.js from demo/src/editor.js with the packages of
// js-reference/ (run `npm ci` there first): node demo/build.mjs [OUTFILE]
// (OUTFILE: write the bundle there instead, as the test comparing the
// committed bundle with its sources does).
import { createRequire } from 'node:module'
import path from 'node:path'

const root = path.resolve(import.meta.dirname, '..')
const packages = path.join(root, 'js-reference')
const require = createRequire(path.join(packages, 'package.json'))
const esbuild = require('esbuild')

const outfile = process.argv[2] ? path.resolve(process.argv[2]) : path.join(root, 'server/assets/demo.js')

await esbuild.build({
  entryPoints: [path.join(root, 'demo/src/editor.js')],
  outfile,
  nodePaths: [path.join(packages, 'node_modules')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  legalComments: 'eof',
  logLevel: 'warning'
})
console.log(`wrote ${path.relative(process.cwd(), outfile)}`)
