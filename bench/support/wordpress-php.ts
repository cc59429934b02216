/**
 * The comparison of SPEC §7 with "the same create done as a WordPress PHP REST route": Debian's
 * `wordpress` package on php-fpm behind nginx, all run from the bench's temporary directory with
 * its own configuration files (nothing under /etc is written), installed into its own database,
 * with a must-use plugin that registers `POST /wp-json/ai/v1/jobs-php`. That route does what the
 * gateway's create does at its core: verify the HS256 public token (hash_hmac + hash_equals), check
 * the user's capability, validate `input`, hash it, and `$wpdb->insert` one row into
 * `{prefix}ai_jobs` (same columns as the baseline), answering 202.
 */
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { InsertPlan } from './database.js'
import { freePort, httpReady, startService, tail, type Service } from './services.js'

const WORDPRESS = '/usr/share/wordpress'
const NGINX = '/usr/sbin/nginx'
// php-fpm and php-mysql first: installed together with `wordpress`, apt resolves the `php`
// dependency to Apache's mod_php instead.
const APT_STEPS = [['php-cli', 'php-fpm', 'php-mysql', 'nginx'], ['wordpress']]

export interface PhpStack {
  port: number
  url: string
  fpm: Service
  nginx: Service
  phpVersion: string
  wordpressVersion: string
  /** Set when this run installed the Debian packages. */
  installed: string[]
  stop(): Promise<void>
}

function phpFpmBinary(): string | undefined {
  try {
    return readdirSync('/usr/sbin').filter((f) => /^php-fpm\d+\.\d+$/.test(f)).sort().map((f) => `/usr/sbin/${f}`).pop()
  } catch {
    return undefined
  }
}

function missingPieces(): string[] {
  const missing: string[] = []
  const fpm = phpFpmBinary()
  if (!fpm) missing.push('php-fpm')
  else if (!/^mysqli$/m.test(spawnSync(fpm, ['-m'], { encoding: 'utf8' }).stdout ?? '')) missing.push('php-mysql')
  if (spawnSync('php', ['-v']).status !== 0) missing.push('php-cli')
  if (!existsSync(NGINX)) missing.push('nginx')
  if (!existsSync(join(WORDPRESS, 'wp-load.php'))) missing.push('wordpress')
  return missing
}

/**
 * Installs the Debian packages when one is missing (a second run finds them and installs nothing).
 * Returns what was installed, or throws with the reason it could not be.
 */
function ensurePackages(logPath: string, log: (line: string) => void): string[] {
  const missing = missingPieces()
  if (missing.length === 0) return []
  if (process.getuid?.() !== 0) throw new Error(`missing ${missing.join(', ')}, and installing Debian packages needs root`)
  if (process.env.BENCH_NO_INSTALL === '1') throw new Error(`missing ${missing.join(', ')} (BENCH_NO_INSTALL=1)`)
  log(`installing Debian packages for the WordPress comparison (missing: ${missing.join(', ')}) …`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const run = (args: string[]) => {
    const r = spawnSync('apt-get', args, { env, encoding: 'utf8', timeout: 600_000 })
    writeFileSync(logPath, `$ apt-get ${args.join(' ')}\n${r.stdout ?? ''}${r.stderr ?? ''}\n`, { flag: 'a' })
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${String(r.status)}); see ${logPath}`)
  }
  run(['update', '-q'])
  for (const step of APT_STEPS) run(['install', '-y', '-q', '--no-install-recommends', ...step])
  const still = missingPieces()
  if (still.length > 0) throw new Error(`still missing after apt-get: ${still.join(', ')}`)
  return APT_STEPS.flat()
}

const php = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`

/** WordPress's files, the package's read-only, with the bench's own wp-config.php and wp-content. */
function layOutWordPress(root: string, o: { port: number; dbName: string; dbHost: string; secret: string }): void {
  mkdirSync(join(root, 'wp-content', 'mu-plugins'), { recursive: true })
  for (const entry of readdirSync(WORDPRESS)) {
    if (entry === 'wp-config.php' || entry === 'wp-content') continue
    const source = join(WORDPRESS, entry)
    // Top-level files are copied so that ABSPATH (their __DIR__) is this directory, where the
    // bench's wp-config.php is; the code folders are shared with the package.
    if (statSync(source).isDirectory()) symlinkSync(source, join(root, entry))
    else copyFileSync(source, join(root, entry))
  }
  const salts = ['AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT']
  writeFileSync(join(root, 'wp-config.php'), `<?php
define('DB_NAME', ${php(o.dbName)});
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', ${php(o.dbHost)});
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
${salts.map((s) => `define('${s}', '${randomBytes(24).toString('hex')}');`).join('\n')}
$table_prefix = 'wp_';
define('WP_HOME', 'http://127.0.0.1:${o.port}');
define('WP_SITEURL', 'http://127.0.0.1:${o.port}');
define('WP_CONTENT_DIR', __DIR__ . '/wp-content');
// A production site runs cron from the system, not from page loads.
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_DEBUG', false);
define('AI_PUBLIC_TOKEN_SECRET', ${php(o.secret)});
if (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');
require_once ABSPATH . 'wp-settings.php';
`)
}

function muPlugin(plan: InsertPlan): string {
  return `<?php
/**
 * POST /wp-json/ai/v1/jobs-php: the create of POST /wp-json/ai/v1/jobs as a WordPress REST route,
 * for the benchmark's comparison.
 */
const GW_BENCH_PLAN = ${php(JSON.stringify(plan.columns))};

add_action('rest_api_init', function () {
  register_rest_route('ai/v1', '/jobs-php', [
    'methods' => 'POST',
    'callback' => 'gw_bench_create_job',
    'permission_callback' => 'gw_bench_authenticate',
  ]);
});

function gw_bench_b64url_decode(string $s) {
  return base64_decode(strtr($s, '-_', '+/') . str_repeat('=', (4 - strlen($s) % 4) % 4), true);
}

/** The signed public token: HS256 with AI_PUBLIC_TOKEN_SECRET, sub and exp required. */
function gw_bench_authenticate(WP_REST_Request $request) {
  $unauthorized = new WP_Error('ai_unauthorized', 'Missing or invalid credentials.', ['status' => 401]);
  $auth = $request->get_header('authorization');
  if (!is_string($auth) || strncasecmp($auth, 'Bearer ', 7) !== 0) return $unauthorized;
  $parts = explode('.', substr($auth, 7));
  if (count($parts) !== 3) return $unauthorized;
  [$h, $p, $sig] = $parts;
  $header = json_decode((string) gw_bench_b64url_decode($h), true);
  if (!is_array($header) || ($header['alg'] ?? null) !== 'HS256') return $unauthorized;
  $expected = rtrim(strtr(base64_encode(hash_hmac('sha256', $h . '.' . $p, AI_PUBLIC_TOKEN_SECRET, true)), '+/', '-_'), '=');
  if (!hash_equals($expected, $sig)) return $unauthorized;
  $claims = json_decode((string) gw_bench_b64url_decode($p), true);
  if (!is_array($claims) || !isset($claims['sub'], $claims['exp']) || !is_numeric($claims['exp']) || (int) $claims['exp'] <= time()) return $unauthorized;
  if (isset($claims['iat']) && (int) $claims['exp'] - (int) $claims['iat'] > DAY_IN_SECONDS) return $unauthorized;
  $sub = (int) $claims['sub'];
  if ($sub > 0) {
    if (!user_can($sub, 'read')) return new WP_Error('ai_forbidden', 'Not allowed.', ['status' => 403]);
    $owner = 'u:' . $sub;
  } else {
    $sid = $claims['sid'] ?? '';
    if (!is_string($sid) || !preg_match('/^[A-Za-z0-9_-]{16,128}$/', $sid)) return $unauthorized;
    $owner = 's:' . $sid;
  }
  $GLOBALS['gw_bench_owner'] = ['user_id' => $sub, 'owner_key' => $owner];
  return true;
}

function gw_bench_invalid(string $message) {
  return new WP_Error('ai_invalid_request', $message, ['status' => 400]);
}

function gw_bench_create_job(WP_REST_Request $request) {
  global $wpdb;
  $body = $request->get_json_params();
  if (!is_array($body)) return gw_bench_invalid('The body must be a JSON object.');
  $has_input = array_key_exists('input', $body);
  if ($has_input === array_key_exists('messages', $body)) return gw_bench_invalid('Exactly one of input and messages is required.');
  if ($has_input && (!is_string($body['input']) || $body['input'] === '')) return gw_bench_invalid('input must be a non-empty string.');
  if (!$has_input && (!is_array($body['messages']) || count($body['messages']) === 0)) return gw_bench_invalid('messages must be a non-empty array.');
  $model = $body['model'] ?? 'echo';
  if ($model !== 'echo') return gw_bench_invalid('model is not an allowed model.');
  // Keys in sorted order, as RFC 8785 canonical JSON has them.
  $canonical = $has_input
    ? ['input' => $body['input'], 'model' => $model, 'params' => new stdClass()]
    : ['messages' => $body['messages'], 'model' => $model, 'params' => new stdClass()];
  $input_hash = hash('sha256', wp_json_encode($canonical, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE));
  $t = microtime(true);
  $now = gmdate('Y-m-d H:i:s', (int) $t) . sprintf('.%03d', (int) (($t - floor($t)) * 1000));
  $owner = $GLOBALS['gw_bench_owner'];
  $row = [];
  foreach (json_decode(GW_BENCH_PLAN, true) as $column) {
    $name = $column['name'];
    $value = $column['value'];
    switch ($value['kind']) {
      case 'input_hash': $row[$name] = $input_hash; break;
      case 'request_json': $row[$name] = wp_json_encode($body); break;
      case 'now': $row[$name] = $now; break;
      case 'random_key': $row[$name] = bin2hex(random_bytes(32)); break;
      default: $row[$name] = $value['value'];
    }
    if (isset($owner[$name])) $row[$name] = $owner[$name];
  }
  if ($wpdb->insert($wpdb->prefix . 'ai_jobs', $row) === false) {
    return new WP_Error('ai_unavailable', 'The database is unavailable.', ['status' => 503]);
  }
  $id = (int) $wpdb->insert_id;
  $response = new WP_REST_Response(['job_id' => $id, 'status' => 'pending'], 202);
  $response->header('Location', rest_url('ai/v1/jobs/' . $id));
  return $response;
}
`
}

function installScript(root: string, port: number): string {
  return `<?php
define('WP_INSTALLING', true);
$_SERVER['HTTP_HOST'] = '127.0.0.1:${port}';
$_SERVER['SERVER_NAME'] = '127.0.0.1';
$_SERVER['SERVER_PORT'] = '${port}';
$_SERVER['REQUEST_URI'] = '/';
require ${php(join(root, 'wp-load.php'))};
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
$result = wp_install('wp-ai-gateway bench', 'admin', 'admin@example.invalid', false, '', wp_generate_password(32));
// Pretty permalinks, so /wp-json/ reaches the REST API as on most sites.
global $wp_rewrite;
$wp_rewrite->set_permalink_structure('/%postname%/');
flush_rewrite_rules(false);
echo "\\nGW_BENCH_INSTALLED " . json_encode(['user_id' => $result['user_id'], 'wordpress' => $GLOBALS['wp_version'], 'php' => PHP_VERSION]) . "\\n";
`
}

export interface WordPressOptions {
  dir: string
  dbName: string
  dbHost: string
  secret: string
  plan: InsertPlan
  /** php-fpm children (pm = static). */
  children: number
  /** Creates `{prefix}ai_jobs` (and anything else the route needs) once WordPress is installed. */
  prepareDatabase: () => Promise<void>
  log: (line: string) => void
}

/** Installs (when needed) and starts WordPress on php-fpm behind nginx; throws with the reason it could not. */
export async function startWordPress(o: WordPressOptions): Promise<PhpStack> {
  mkdirSync(o.dir, { recursive: true })
  const installed = ensurePackages(join(o.dir, 'apt.log'), o.log)
  const fpmBinary = phpFpmBinary()!
  const port = await freePort()
  const root = join(o.dir, 'wordpress')
  layOutWordPress(root, { port, dbName: o.dbName, dbHost: o.dbHost, secret: o.secret })
  writeFileSync(join(root, 'wp-content', 'mu-plugins', 'gw-bench-jobs.php'), muPlugin(o.plan))

  const installPhp = join(o.dir, 'install.php')
  writeFileSync(installPhp, installScript(root, port))
  const install = spawnSync('php', [installPhp], { encoding: 'utf8', timeout: 120_000 })
  const marker = /GW_BENCH_INSTALLED (\{.*\})/.exec(install.stdout ?? '')
  if (install.status !== 0 || !marker) {
    throw new Error(`the WordPress install failed (exit ${String(install.status)}): ${(install.stdout + install.stderr).trim().split('\n').slice(-5).join(' | ')}`)
  }
  const versions = JSON.parse(marker[1]!) as { wordpress: string; php: string }
  await o.prepareDatabase()

  const socket = join(o.dir, 'php-fpm.sock')
  const fpmConf = join(o.dir, 'php-fpm.conf')
  writeFileSync(fpmConf, `[global]
pid = ${join(o.dir, 'php-fpm.pid')}
error_log = ${join(o.dir, 'php-fpm.log')}
daemonize = no

[bench]
listen = ${socket}
listen.mode = 0600
pm = static
pm.max_children = ${o.children}
catch_workers_output = yes
php_admin_value[error_log] = ${join(o.dir, 'php-errors.log')}
php_admin_flag[log_errors] = on
php_admin_flag[display_errors] = off
; OPcache on, and no file checks, as a tuned production host runs it.
php_admin_flag[opcache.enable] = on
php_admin_flag[opcache.validate_timestamps] = off
`)
  const fpm = await startService({
    name: 'php-fpm', command: fpmBinary, args: ['--nodaemonize', '--allow-to-run-as-root', '--fpm-config', fpmConf, '--prefix', o.dir],
    port: 0, logPath: join(o.dir, 'php-fpm.out.log'), ready: async () => existsSync(socket),
  })

  const temp = join(o.dir, 'nginx-temp')
  mkdirSync(temp, { recursive: true })
  const nginxConf = join(o.dir, 'nginx.conf')
  writeFileSync(nginxConf, `daemon off;
user root root;
worker_processes auto;
pid ${join(o.dir, 'nginx.pid')};
error_log ${join(o.dir, 'nginx-error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${temp}/client;
  fastcgi_temp_path ${temp}/fastcgi;
  proxy_temp_path ${temp}/proxy;
  uwsgi_temp_path ${temp}/uwsgi;
  scgi_temp_path ${temp}/scgi;
  server {
    listen 127.0.0.1:${port};
    server_name 127.0.0.1;
    root ${root};
    index index.php;
    location / { try_files $uri $uri/ /index.php?$args; }
    location ~ \\.php$ {
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param SCRIPT_NAME $fastcgi_script_name;
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_param REQUEST_URI $request_uri;
      fastcgi_param DOCUMENT_URI $document_uri;
      fastcgi_param DOCUMENT_ROOT $document_root;
      fastcgi_param SERVER_PROTOCOL $server_protocol;
      fastcgi_param REQUEST_SCHEME $scheme;
      fastcgi_param GATEWAY_INTERFACE CGI/1.1;
      fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
      fastcgi_param REMOTE_ADDR $remote_addr;
      fastcgi_param REMOTE_PORT $remote_port;
      fastcgi_param SERVER_ADDR $server_addr;
      fastcgi_param SERVER_PORT $server_port;
      fastcgi_param SERVER_NAME $server_name;
      fastcgi_param REDIRECT_STATUS 200;
      fastcgi_pass unix:${socket};
    }
  }
}
`)
  let nginx: Service
  try {
    nginx = await startService({
      name: 'nginx', command: NGINX, args: ['-p', `${o.dir}/`, '-e', join(o.dir, 'nginx-error.log'), '-c', nginxConf],
      port, logPath: join(o.dir, 'nginx.out.log'), ready: httpReady(`http://127.0.0.1:${port}/wp-json/`),
    })
  } catch (err) {
    await fpm.stop()
    throw new Error(`${(err as Error).message}\nphp errors: ${tail(join(o.dir, 'php-errors.log'), 5)}`)
  }
  return {
    port, url: `http://127.0.0.1:${port}/wp-json/ai/v1/jobs-php`, fpm, nginx, installed,
    phpVersion: versions.php, wordpressVersion: versions.wordpress,
    stop: async () => {
      await Promise.all([nginx.stop(), fpm.stop()])
    },
  }
}

/** The tail of the PHP error log, for a failed smoke test. */
export function phpErrors(dir: string): string {
  return tail(join(dir, 'php-errors.log'), 5)
}
