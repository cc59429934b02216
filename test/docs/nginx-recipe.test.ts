/**
 * docs/proxy/nginx.conf, run by Debian's nginx in front of the real gateway and a stand-in
 * WordPress (the checks are in proxy-recipe-suite.ts). The recipe is used as shipped: only its
 * upstream addresses and `listen` port are replaced, and for the subdirectory install the map
 * inputs its comment tells a user to change.
 *
 * nginx is required: without it these tests fail (CI installs it in .ci/run).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describeProxyRecipe, replaceOnce, runUntilListening } from './proxy-recipe-suite.js'

const FILE = 'docs/proxy/nginx.conf'
const RECIPE = readFileSync(fileURLToPath(new URL(`../../${FILE}`, import.meta.url)), 'utf8')
const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx'].find((p) => existsSync(p))

function recipeFor(ports: { port: number; gatewayPort: number; wordpressPort: number }, basePath: string): string {
  let conf = RECIPE
  conf = replaceOnce(conf, 'server gateway:3000;', `server 127.0.0.1:${ports.gatewayPort};`, FILE)
  conf = replaceOnce(conf, 'server wordpress:80;', `server 127.0.0.1:${ports.wordpressPort};`, FILE)
  conf = replaceOnce(conf, 'listen 80;', `listen 127.0.0.1:${ports.port};`, FILE)
  if (basePath) {
    // What the recipe's comment tells a subdirectory install to do.
    conf = replaceOnce(conf, '"~^/wp-json(?<wp_rest_path>/.*)$"', `"~^${basePath}/wp-json(?<wp_rest_path>/.*)$"`, FILE)
    conf = replaceOnce(conf, '\n    /                                   $arg_rest_route;', `\n    ${basePath}/ $arg_rest_route;\n    ${basePath} $arg_rest_route;`, FILE)
    conf = replaceOnce(conf, '\n    /index.php                          $arg_rest_route;', `\n    ${basePath}/index.php $arg_rest_route;`, FILE)
  }
  return conf
}

describeProxyRecipe({
  title: FILE,
  missing: () => (NGINX ? undefined : 'nginx is not installed, but the proxy recipe test runs docs/proxy/nginx.conf with it: install it with `apt-get install -y nginx` (CI: .ci/run does).'),
  start: async ({ dir, port, gatewayPort, wordpressPort, basePath }) => {
    for (const sub of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub), { recursive: true })
    writeFileSync(join(dir, 'site.conf'), recipeFor({ port, gatewayPort, wordpressPort }, basePath))
    // The recipe is http-level configuration; this is the rest of a main nginx.conf around it.
    writeFileSync(join(dir, 'nginx.conf'), [
      // Workers of a root master run as `user`; root keeps them able to use the temp directories.
      process.getuid?.() === 0 ? 'user root;' : '',
      'worker_processes 1;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      'events { worker_connections 256; }',
      'http {',
      `  access_log ${join(dir, 'access.log')};`,
      `  client_body_temp_path ${join(dir, 'client_body')};`,
      `  proxy_temp_path ${join(dir, 'proxy')};`,
      `  fastcgi_temp_path ${join(dir, 'fastcgi')};`,
      `  uwsgi_temp_path ${join(dir, 'uwsgi')};`,
      `  scgi_temp_path ${join(dir, 'scgi')};`,
      `  include ${join(dir, 'site.conf')};`,
      '}',
      '',
    ].join('\n'))
    return runUntilListening(NGINX!, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], port, { logFile: join(dir, 'error.log') })
  },
})
