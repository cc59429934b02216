import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { isNeededConstant, parseDbHost, parseWpConfig } from '../../src/wordpress/wp-config.js'

const fixture = (name: string): string => readFileSync(new URL(`../config/fixtures/${name}`, import.meta.url), 'utf8')

// Modelled on WordPress's wp-config-sample.php, filled in as an installer would.
const CLASSIC = fixture('wp-config-classic.php')

// The official image's wp-config-docker.php (docker-library/wordpress), with an AI_PROVIDER define added.
const DOCKER = fixture('wp-config-docker.php')

const tmp = mkdtempSync(join(tmpdir(), 'wp-config-test-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

describe('parseWpConfig: a classic wp-config.php', () => {
  const { constants, tablePrefix } = parseWpConfig(CLASSIC, {})

  it('reads the database settings and the table prefix', () => {
    expect(constants.DB_NAME).toBe('wordpress')
    expect(constants.DB_USER).toBe('wp_user')
    expect(constants.DB_HOST).toBe('db.internal:3307')
    expect(constants.DB_COLLATE).toBe('')
    expect(tablePrefix).toBe('wpx_')
  })

  it('unescapes single-quoted strings and keeps comment markers inside them', () => {
    expect(constants.DB_PASSWORD).toBe(String.raw`p@ss'word\with//slashes#and/*stars*/`)
  })

  it('reads all eight keys and salts verbatim', () => {
    expect(constants.AUTH_KEY).toBe('7N]q%)8-|R+*E@Mj<0W|Ri$b6+HV{d&5v/ >Y3Lz:t@(Q^aIBp;rWc~_F')
    expect(constants.SECURE_AUTH_SALT).toBe('Xz"E:v2<e5G~>*+P~7o{z,N^G(kMZl|w+pA]2V9#-.7rG,Tz$dd8=$}-')
    expect(constants.LOGGED_IN_SALT).toBe('k9w:PV8@*G$=QNs{z9W0<w2#U<g/Kc|FfYV)W+]6i0pTfkjmC~`5Un/B')
    expect(constants.NONCE_SALT).toBe('O?w-b/Rw9b*Z|Bp}~.s+PXK#eA-(%E=O2W|~|n9O{f-Y<K:lrk_+ALN;')
    for (const name of ['AUTH', 'SECURE_AUTH', 'LOGGED_IN', 'NONCE']) {
      expect(typeof constants[`${name}_KEY`]).toBe('string')
      expect(typeof constants[`${name}_SALT`]).toBe('string')
    }
  })

  it('reads AI_* defines of every literal kind, whatever the spacing and case of define', () => {
    expect(constants.AI_PROVIDER).toBe('openai')
    expect(constants.AI_MAX_TOKENS).toBe(2048)
    expect(constants.AI_QUEUE_TIMEOUT).toBe(1.5)
    expect(constants.AI_ENABLED).toBe(true)
    expect(constants.WP_DEBUG).toBe(false)
  })

  it('skips other constants it cannot read (ABSPATH = __DIR__ . "/")', () => {
    expect(constants).not.toHaveProperty('ABSPATH')
    expect(constants.WP_MEMORY_LIMIT).toBe('256M')
  })

  it('without a $table_prefix, leaves tablePrefix unset', () => {
    const result = parseWpConfig(`<?php define('DB_NAME', 'x');`, {})
    expect(result).toEqual({ constants: { DB_NAME: 'x' } })
    expect('tablePrefix' in result).toBe(false)
  })
})

describe('parseWpConfig: the official Docker image', () => {
  it('uses the getenv_docker() defaults when nothing is set', () => {
    const { constants, tablePrefix } = parseWpConfig(DOCKER, {})
    expect(constants.DB_NAME).toBe('wordpress')
    expect(constants.DB_USER).toBe('example username')
    expect(constants.DB_PASSWORD).toBe('example password')
    expect(constants.DB_HOST).toBe('mysql')
    expect(constants.AUTH_KEY).toBe('a3f1e0c5b2d94f8e7a6b5c4d3e2f1a0b9c8d7e6f')
    expect(constants.NONCE_SALT).toBe('b0e8f7d2c9e61a5f4b3c2d1e0f9a8b7c6d5e4f3a')
    expect(constants.AI_PROVIDER).toBe('echo')
    expect(tablePrefix).toBe('wp_')
    // `!!getenv_docker(...)` is not understood, and WP_DEBUG is not the gateway's business.
    expect(constants).not.toHaveProperty('WP_DEBUG')
  })

  it('takes the environment over the defaults, an empty variable included', () => {
    const { constants, tablePrefix } = parseWpConfig(DOCKER, {
      WORDPRESS_DB_HOST: 'mariadb:3306',
      WORDPRESS_DB_USER: 'wp',
      WORDPRESS_DB_PASSWORD: '',
      WORDPRESS_AUTH_KEY: 'from-env-auth-key',
      WORDPRESS_TABLE_PREFIX: 'site2_',
      AI_PROVIDER: 'anthropic',
    })
    expect(constants.DB_HOST).toBe('mariadb:3306')
    expect(constants.DB_USER).toBe('wp')
    // getenv() returns '' for a variable set to nothing, and '' !== false.
    expect(constants.DB_PASSWORD).toBe('')
    expect(constants.AUTH_KEY).toBe('from-env-auth-key')
    expect(constants.SECURE_AUTH_KEY).toBe('b4e2f1d6c3e05a9f8b7c6d5e4f3a2b1c0d9e8f7a')
    expect(constants.AI_PROVIDER).toBe('anthropic')
    expect(tablePrefix).toBe('site2_')
  })

  it('reads NAME_FILE before NAME, trimming only the trailing line breaks', () => {
    const file = join(tmp, 'db-password')
    writeFileSync(file, ' s3cret from a file \r\n\n')
    const { constants } = parseWpConfig(DOCKER, {
      WORDPRESS_DB_PASSWORD: 'loses to the file',
      WORDPRESS_DB_PASSWORD_FILE: file,
    })
    expect(constants.DB_PASSWORD).toBe(' s3cret from a file ')
  })

  it('ignores an empty NAME_FILE, as PHP treats "" as false', () => {
    const { constants } = parseWpConfig(DOCKER, { WORDPRESS_DB_PASSWORD_FILE: '', WORDPRESS_DB_PASSWORD: 'env' })
    expect(constants.DB_PASSWORD).toBe('env')
  })

  it('fails, naming the constant, when NAME_FILE cannot be read', () => {
    expect(() => parseWpConfig(DOCKER, { WORDPRESS_DB_PASSWORD_FILE: join(tmp, 'missing') })).toThrow(
      /^wp-config\.php: cannot read the value of DB_PASSWORD \(.*WORDPRESS_DB_PASSWORD_FILE.*ENOENT\)$/,
    )
  })

  it('accepts double-quoted arguments and non-string defaults', () => {
    const { constants } = parseWpConfig(`<?php define("AI_MAX_TOKENS", getenv_docker("AI_MAX_TOKENS", 1024));`, {})
    expect(constants.AI_MAX_TOKENS).toBe(1024)
  })
})

describe('parseWpConfig: comments and strings', () => {
  it('does not read defines inside comments of any kind', () => {
    const text = `<?php
// define('DB_NAME', 'line-comment');
# define('DB_USER', 'hash-comment');
/*
define('DB_PASSWORD', 'block-comment');
*/
/** define('DB_HOST', 'doc-comment'); */
define('DB_NAME', 'real'); // define('DB_NAME', 'trailing');
define('DB_USER', /* 'inline' */ 'real-user');
`
    const { constants } = parseWpConfig(text, {})
    expect(constants).toEqual({ DB_NAME: 'real', DB_USER: 'real-user' })
  })

  it('keeps comment markers and "define(" inside strings', () => {
    const text = `<?php
define('AI_A', '// not a comment');
define('AI_B', "# nor this /* */");
define('AI_C', 'define("DB_NAME", "inside-a-string");');
`
    const { constants } = parseWpConfig(text, {})
    expect(constants).toEqual({
      AI_A: '// not a comment',
      AI_B: '# nor this /* */',
      AI_C: 'define("DB_NAME", "inside-a-string");',
    })
  })

  it('ends a // comment at ?> and skips inline HTML', () => {
    const text = `<?php // a comment ?> define('DB_NAME', 'html, not php') <?php define('DB_NAME', 'php');`
    expect(parseWpConfig(text, {}).constants).toEqual({ DB_NAME: 'php' })
  })

  it('skips heredocs, so a define inside one is not read', () => {
    const text = `<?php
$notes = <<<EOT
define('DB_NAME', 'in-a-heredoc'); /* not a comment either
EOT;
define('DB_NAME', 'after'); // */
`
    expect(parseWpConfig(text, {}).constants).toEqual({ DB_NAME: 'after' })
  })

  it('decodes double-quoted escapes', () => {
    const text = String.raw`<?php define('AI_X', "tab\tnl\nq\"bs\\dollar\$hex\x41oct\101u\u{e9}keep\q");`
    expect(parseWpConfig(text, {}).constants.AI_X).toBe('tab\tnl\nq"bs\\dollar$hexAoctAu\u00e9keep\\q')
  })

  it('keeps the first define of a name, as PHP does', () => {
    const text = `<?php
if ( ! defined( 'AI_PROVIDER' ) ) define( 'AI_PROVIDER', 'openai' );
define( 'AI_PROVIDER', 'anthropic' );
`
    expect(parseWpConfig(text, {}).constants.AI_PROVIDER).toBe('openai')
  })

  it('reads numbers in PHP notations and null', () => {
    const text = `<?php
define('AI_HEX', 0x1F); define('AI_OCT', 0755); define('AI_BIN', 0b101); define('AI_SEP', 1_000_000);
define('AI_NEG', -3); define('AI_EXP', 2.5e3); define('AI_NULL', NULL); define('AI_FALSE', False);
`
    expect(parseWpConfig(text, {}).constants).toEqual({
      AI_HEX: 31,
      AI_OCT: 493,
      AI_BIN: 5,
      AI_SEP: 1_000_000,
      AI_NEG: -3,
      AI_EXP: 2500,
      AI_NULL: null,
      AI_FALSE: false,
    })
  })

  it('ignores method calls and functions named define, and defined()', () => {
    const text = `<?php
$obj->define('DB_NAME', 'method');
Foo::define('DB_NAME', 'static');
if (defined('DB_NAME')) {}
define('DB_NAME', 'real');
`
    expect(parseWpConfig(text, {}).constants).toEqual({ DB_NAME: 'real' })
  })

  it('does not take a comparison with $table_prefix for an assignment', () => {
    const text = `<?php
$table_prefix = 'first_';
if ( $table_prefix == 'other_' ) {}
$table_prefix = "last_";
`
    expect(parseWpConfig(text, {}).tablePrefix).toBe('last_')
  })
})

describe('parseWpConfig: values it cannot read', () => {
  it('stops, naming the needed constant, without quoting its expression', () => {
    const text = `<?php define( 'AUTH_KEY', 'part-one' . 'secret-part-two' );`
    let message = ''
    try {
      parseWpConfig(text, {})
    } catch (err) {
      message = (err as Error).message
    }
    expect(message).toBe(
      'wp-config.php: cannot read the value of AUTH_KEY (only string literals, numbers and getenv_docker() are understood)',
    )
    expect(message).not.toContain('secret-part-two')
  })

  it('stops for any AI_* constant, and for a function call other than getenv_docker()', () => {
    expect(() => parseWpConfig(`<?php define('AI_PROVIDER_API_KEY', getenv('OPENAI_KEY'));`, {})).toThrow(
      /cannot read the value of AI_PROVIDER_API_KEY/,
    )
    expect(() => parseWpConfig(`<?php define('DB_HOST', $host);`, {})).toThrow(/cannot read the value of DB_HOST/)
  })

  it('refuses a double-quoted string that interpolates a variable', () => {
    expect(() => parseWpConfig(`<?php define('DB_PASSWORD', "pre{$secret}post");`, {})).toThrow(
      /cannot read the value of DB_PASSWORD \(a double-quoted string that interpolates/,
    )
    expect(() => parseWpConfig(`<?php define('DB_PASSWORD', "pre$secret");`, {})).toThrow(/DB_PASSWORD/)
    // A lone $ is not interpolation.
    expect(parseWpConfig(`<?php define('DB_PASSWORD', "costs 5$ or $");`, {}).constants.DB_PASSWORD).toBe('costs 5$ or $')
  })

  it('stops when $table_prefix is not understood', () => {
    expect(() => parseWpConfig(`<?php $table_prefix = 'wp_' . $site;`, {})).toThrow(/cannot read the value of \$table_prefix/)
  })

  it('skips, silently, other constants it cannot read', () => {
    const text = `<?php
define( 'WP_DEBUG', !!getenv_docker('WORDPRESS_DEBUG', '') );
define( 'WP_CONTENT_DIR', dirname(__FILE__) . '/content' );
define( 'WP_HOME', "https://{$_SERVER['HTTP_HOST']}" );
define( 'DB_NAME', 'fine' );
`
    expect(parseWpConfig(text, {}).constants).toEqual({ DB_NAME: 'fine' })
  })

  it('reports an unterminated string', () => {
    expect(() => parseWpConfig(`<?php\n\ndefine('DB_NAME', 'oops);`, {})).toThrow(/unterminated string starting on line 3/)
  })

  it('knows which constants it needs', () => {
    expect(isNeededConstant('LOGGED_IN_SALT')).toBe(true)
    expect(isNeededConstant('AI_ANYTHING')).toBe(true)
    expect(isNeededConstant('COOKIEHASH')).toBe(true)
    expect(isNeededConstant('WP_DEBUG')).toBe(false)
    expect(isNeededConstant('ABSPATH')).toBe(false)
  })
})

describe('parseDbHost', () => {
  it.each([
    ['localhost', { host: 'localhost' }],
    ['db.internal', { host: 'db.internal' }],
    ['db.internal:3307', { host: 'db.internal', port: 3307 }],
    ['127.0.0.1:3306', { host: '127.0.0.1', port: 3306 }],
    ['localhost:/var/run/mysqld/mysqld.sock', { host: 'localhost', socket: '/var/run/mysqld/mysqld.sock' }],
    [':/tmp/mysql.sock', { host: 'localhost', socket: '/tmp/mysql.sock' }],
    ['[::1]:3306', { host: '::1', port: 3306 }],
    ['[::1]', { host: '::1' }],
    ['::1', { host: '::1' }],
    ['2001:db8::5', { host: '2001:db8::5' }],
    ['[2001:db8::5]:3307', { host: '2001:db8::5', port: 3307 }],
    [' db:3306 ', { host: 'db', port: 3306 }],
  ])('%s', (value, expected) => {
    expect(parseDbHost(value)).toEqual(expected)
  })

  it.each(['db:abc', 'db:0', 'db:70000', '[::1]:x', '[::1'])('refuses %s, naming DB_HOST', (value) => {
    expect(() => parseDbHost(value)).toThrow(/^DB_HOST: /)
  })
})
