import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNonce } from '../../src/wordpress/nonce.js'
import { waitFor } from '../helpers.js'
import { killAllGateways, startGateway, type GatewayProcess } from '../support/gateway-process.js'
import { authVectors, dropWordPressFixturesMysql, loadWordPressFixturesMysql } from '../support/wordpress-fixtures.js'

const NAME = `gw_test_auth_sighup_${process.pid}`
const salts = authVectors.salts as Record<string, string>

function wpConfig(database: string, loggedInSalt: string): string {
  return `<?php
define( 'DB_NAME', '${database}' );
define( 'DB_USER', 'root' );
define( 'DB_PASSWORD', '' );
define( 'DB_HOST', '127.0.0.1:3306' );
define( 'AUTH_KEY',         '${salts.AUTH_KEY}' );
define( 'AUTH_SALT',        '${salts.AUTH_SALT}' );
define( 'LOGGED_IN_KEY',    '${salts.LOGGED_IN_KEY}' );
define( 'LOGGED_IN_SALT',   '${loggedInSalt}' );
define( 'NONCE_KEY',        '${salts.NONCE_KEY}' );
define( 'NONCE_SALT',       '${salts.NONCE_SALT}' );
$table_prefix = 'wp_';
require_once ABSPATH . 'wp-settings.php';
`
}

describe('SIGHUP re-reads wp-config.php, so salts rotated in WordPress take effect', () => {
  let dir: string
  let file: string
  let gateway: GatewayProcess
  beforeAll(async () => {
    await loadWordPressFixturesMysql(NAME)
    dir = mkdtempSync(join(tmpdir(), 'gw-sighup-'))
    file = join(dir, 'wp-config.php')
    writeFileSync(file, wpConfig(NAME, salts.LOGGED_IN_SALT!))
    gateway = await startGateway({ name: 'sighup', env: { WP_CONFIG_PATH: file, WORKER_CONCURRENCY: '0' } })
  }, 60_000)
  afterAll(async () => {
    await killAllGateways()
    await dropWordPressFixturesMysql(NAME)
    rmSync(dir, { recursive: true, force: true })
  })

  it('accepts alice, refuses her cookie after the salt changes, and accepts it again once restored', async () => {
    const alice = authVectors.cases.find((c) => c.user === 'alice' && c.expect_user_id === 2)!
    const token = alice.cookie.split('|')[2]!
    const nonce = createNonce({ action: 'wp_rest', userId: 2, token, nowSeconds: Math.floor(Date.now() / 1000), salt: salts.NONCE_KEY! + salts.NONCE_SALT! })
    const create = (input: string) => fetch(`${gateway.api}/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie: `${authVectors.logged_in_cookie_name}=${encodeURIComponent(alice.cookie)}`, 'x-wp-nonce': nonce },
      body: JSON.stringify({ input }),
    })

    expect((await create('before rotation')).status).toBe(202)

    writeFileSync(file, wpConfig(NAME, 'a-rotated-logged-in-salt-that-wordpress-now-uses'))
    gateway.kill('SIGHUP')
    // The old cookie no longer validates: no usable credentials.
    await waitFor(async () => ((await create(`after rotation ${Date.now()}`)).status === 401 ? true : undefined), 10_000, 'the rotated salt')
    expect(gateway.alive).toBe(true)

    writeFileSync(file, wpConfig(NAME, salts.LOGGED_IN_SALT!))
    gateway.kill('SIGHUP')
    await waitFor(async () => ((await create(`restored ${Date.now()}`)).status === 202 ? true : undefined), 10_000, 'the restored salt')
  })
})
