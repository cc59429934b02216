/**
 * docs/proxy/Caddyfile, run by Debian's Caddy 2 in front of the real gateway and a stand-in
 * WordPress (the checks are in proxy-recipe-suite.ts). The recipe is used as shipped: only the
 * site address, the gateway's address and the WordPress handler are replaced, and for the
 * subdirectory install the map inputs its comment tells a user to change. `admin off` keeps the
 * test off Caddy's fixed admin port.
 *
 * Caddy is required: without it these tests fail (CI installs it in .ci/run).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describeProxyRecipe, replaceOnce, runUntilListening } from './proxy-recipe-suite.js'

const FILE = 'docs/proxy/Caddyfile'
const RECIPE = readFileSync(fileURLToPath(new URL(`../../${FILE}`, import.meta.url)), 'utf8')
const CADDY = ['/usr/bin/caddy', '/usr/local/bin/caddy'].find((p) => existsSync(p))

function recipeFor(ports: { port: number; gatewayPort: number; wordpressPort: number }, basePath: string): string {
  let conf = RECIPE
  // Any Host, as example.com's own site block would see only its own name.
  conf = replaceOnce(conf, '\nexample.com {', `\nhttp://:${ports.port} {\n\tbind 127.0.0.1`, FILE)
  conf = replaceOnce(conf, 'reverse_proxy 127.0.0.1:3000 {', `reverse_proxy 127.0.0.1:${ports.gatewayPort} {`, FILE)
  // WordPress is served through PHP-FPM in the recipe; here, by the stand-in.
  conf = replaceOnce(conf, 'php_fastcgi unix//run/php/php-fpm.sock', `reverse_proxy 127.0.0.1:${ports.wordpressPort}`, FILE)
  if (basePath) {
    // What the recipe's comment tells a subdirectory install to do.
    conf = replaceOnce(conf, '~^/wp-json(/.*)$ "${1}"', `~^${basePath}/wp-json(/.*)$ "\${1}"`, FILE)
    conf = replaceOnce(conf, '\n\t\t/ {query.rest_route}', `\n\t\t${basePath}/ {query.rest_route}\n\t\t${basePath} {query.rest_route}`, FILE)
    conf = replaceOnce(conf, '\n\t\t/index.php {query.rest_route}', `\n\t\t${basePath}/index.php {query.rest_route}`, FILE)
  }
  return `{\n\tadmin off\n}\n\n${conf}`
}

describeProxyRecipe({
  title: FILE,
  missing: () => (CADDY ? undefined : 'Caddy is not installed, but the proxy recipe test runs docs/proxy/Caddyfile with it: install it with `apt-get install -y caddy` (CI: .ci/run does).'),
  start: async ({ dir, port, gatewayPort, wordpressPort, basePath }) => {
    const file = join(dir, 'Caddyfile')
    writeFileSync(file, recipeFor({ port, gatewayPort, wordpressPort }, basePath))
    return runUntilListening(CADDY!, ['run', '--config', file, '--adapter', 'caddyfile'], port, {
      logFile: join(dir, 'caddy.log'),
      // Caddy keeps its state under these; the test's directory, not the user's home.
      env: { ...process.env, HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir },
    })
  },
})
