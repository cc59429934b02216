/**
 * docs/proxy/apache.conf, run by Debian's Apache 2.4 in front of the real gateway and a stand-in
 * WordPress (the checks are in proxy-recipe-suite.ts). The recipe is used as shipped: only the
 * gateway's address and the virtual host's port are replaced, and for the subdirectory install the
 * two patterns its comment tells a user to change. Apache serves WordPress itself in the recipe;
 * here one added rule proxies everything else to the stand-in instead, and mod_deflate compresses
 * every type, so the recipe's own no-gzip is what keeps events flowing.
 *
 * Apache is required: without it these tests fail (CI installs it in .ci/run).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describeProxyRecipe, replaceOnce, runUntilListening } from './proxy-recipe-suite.js'

const FILE = 'docs/proxy/apache.conf'
const RECIPE = readFileSync(fileURLToPath(new URL(`../../${FILE}`, import.meta.url)), 'utf8')
const APACHE = ['/usr/sbin/apache2', '/usr/sbin/httpd', '/usr/local/apache2/bin/httpd'].find((p) => existsSync(p))
const MODULES = ['/usr/lib/apache2/modules', '/usr/lib64/httpd/modules', '/usr/local/apache2/modules'].find((p) => existsSync(p))

function recipeFor(ports: { port: number; gatewayPort: number; wordpressPort: number }, basePath: string): string {
  let conf = RECIPE
  const gateway = conf.split('http://127.0.0.1:3000').length - 1
  if (gateway !== 2) throw new Error(`${FILE} must name the gateway's address http://127.0.0.1:3000 twice (the test replaces it), found ${gateway}`)
  conf = conf.replaceAll('http://127.0.0.1:3000', `http://127.0.0.1:${ports.gatewayPort}`)
  conf = replaceOnce(conf, '<VirtualHost *:80>', `<VirtualHost 127.0.0.1:${ports.port}>`, FILE)
  conf = replaceOnce(conf, 'DocumentRoot /var/www/html', 'DocumentRoot /tmp', FILE)
  if (basePath) {
    // What the recipe's comment tells a subdirectory install to do.
    conf = replaceOnce(conf, 'RewriteRule "^/wp-json(/.*)$"', `RewriteRule "^${basePath}/wp-json(/.*)$"`, FILE)
    conf = replaceOnce(conf, 'RewriteRule "^/(?:index\\.php)?$"', `RewriteRule "^${basePath}(?:/|/index\\.php)?$"`, FILE)
  }
  // WordPress is served by this Apache in the recipe; here, by the stand-in.
  return replaceOnce(conf, '</VirtualHost>', `    RewriteRule "^/.*$" "http://127.0.0.1:${ports.wordpressPort}$0" [P,L]\n</VirtualHost>`, FILE)
}

describeProxyRecipe({
  title: FILE,
  missing: () => (APACHE && MODULES ? undefined : 'Apache is not installed, but the proxy recipe test runs docs/proxy/apache.conf with it: install it with `apt-get install -y apache2` (CI: .ci/run does).'),
  start: async ({ dir, port, gatewayPort, wordpressPort, basePath }) => {
    writeFileSync(join(dir, 'site.conf'), recipeFor({ port, gatewayPort, wordpressPort }, basePath))
    const load = (name: string) => `LoadModule ${name}_module ${MODULES}/mod_${name}.so`
    writeFileSync(join(dir, 'httpd.conf'), [
      `ServerRoot ${dir}`,
      'ServerName 127.0.0.1',
      ...['mpm_event', 'authz_core', 'proxy', 'proxy_http', 'rewrite', 'headers', 'filter', 'deflate'].map(load),
      // Workers of a root parent run as User; Apache refuses to run them as root.
      process.getuid?.() === 0 ? 'User nobody\nGroup nogroup' : '',
      `PidFile ${join(dir, 'httpd.pid')}`,
      `DefaultRuntimeDir ${dir}`,
      `Mutex file:${dir} default`,
      `ErrorLog ${join(dir, 'error.log')}`,
      'LogLevel warn',
      `Listen 127.0.0.1:${port}`,
      // Compress everything compressible, as an over-eager site might: the recipe must opt its
      // proxied responses out.
      'AddOutputFilterByType DEFLATE text/event-stream application/json text/html',
      `Include ${join(dir, 'site.conf')}`,
      '',
    ].join('\n'))
    return runUntilListening(APACHE!, ['-f', join(dir, 'httpd.conf'), '-DFOREGROUND'], port, { logFile: join(dir, 'error.log') })
  },
})
