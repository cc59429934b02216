import { generateKeyPairSync } from 'node:crypto'
import closeWithGrace from 'close-with-grace'
import { SignJWT } from 'jose'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import { withDevSecrets } from './dev-secrets.js'
import { createLogger } from './logger.js'

function devPrivateKey(): string {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
}

async function banner(config: Readonly<Config>): Promise<string> {
  const secret = new TextEncoder().encode(config.publicTokenSecret)
  const token = await new SignJWT({ sub: '1' }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setIssuedAt().setExpirationTime('24h').sign(secret)
  const base = `${config.publicUrl}/wp-json/ai/v1`
  return [
    '',
    'wp-ai-gateway is running on its embedded default (SQLite in ./data, in-memory store, echo provider).',
    'Dev public token for user 1 (valid 24 h; generated secrets are kept in ./data/dev-secrets.json):',
    `  ${token}`,
    '',
    'Create a job:',
    `  curl -s -X POST '${base}/jobs' -H 'Authorization: Bearer ${token}' -H 'Content-Type: application/json' -d '{"input":"Hello from WordPress"}'`,
    'Read it back (newest job first; or GET the Location the create returned):',
    `  curl -s '${base}/jobs?limit=1' -H 'Authorization: Bearer ${token}'`,
    '',
  ].join('\n')
}

async function main(): Promise<void> {
  let config: Readonly<Config>
  try {
    config = withDevSecrets(loadConfig(), devPrivateKey)
  } catch (err) {
    // One line naming the variable and the problem; never a stack trace for a bad setting.
    process.stderr.write(`wp-ai-gateway: configuration error: ${err instanceof ConfigError ? err.message : (err as Error).message}\n`)
    process.exit(1)
  }
  const logger = createLogger(config.logLevel)
  const app = await buildApp(config, { logger })

  // SIGHUP reloads the configuration below; it must not close the server.
  closeWithGrace({ delay: config.shutdownGraceSeconds * 1000 + 5_000, logger, skip: ['SIGHUP'] }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'shutting down after an error')
    else logger.info({ signal }, 'shutting down: no new claims, running jobs get the grace period')
    await app.close()
  })

  // SIGHUP re-reads wp-config.php, so salts rotated in WordPress take effect without a restart.
  process.on('SIGHUP', () => {
    try {
      app.auth.reloadWordPressSettings(loadConfig())
      logger.info('configuration re-read on SIGHUP: WordPress salts reloaded')
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'SIGHUP: configuration not reloaded; keeping the previous one')
    }
  })

  await app.listen({ port: config.port, host: config.host })
  if (config.embedded) process.stdout.write(`${await banner(config)}\n`)
}

main().catch((err: unknown) => {
  process.stderr.write(`wp-ai-gateway: failed to start: ${(err as Error).message}\n`)
  process.exit(1)
})
