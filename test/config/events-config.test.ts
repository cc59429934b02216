/** AI_EVENTS_URL and AI_EVENTS_SECRET (SPEC §10): both or neither, a usable URL, a whsec_ secret, never echoed. */
import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../../src/config.js'

const SECRET = `whsec_${Buffer.from('a-config-test-secret-of-32-bytes').toString('base64')}`
const URL_OK = 'https://example.test/wp-json/ai-gateway/v1/events'

function refusal(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env)
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error('the configuration was accepted')
}

describe('events configuration', () => {
  it('is off by default and on with both variables', () => {
    expect(loadConfig({})).toMatchObject({ eventsUrl: undefined, eventsSecret: undefined })
    expect(loadConfig({ AI_EVENTS_URL: URL_OK, AI_EVENTS_SECRET: SECRET })).toMatchObject({ eventsUrl: URL_OK, eventsSecret: SECRET })
  })

  it('takes the secret alone: it then only signs the privacy calls from WordPress (SPEC §12)', () => {
    expect(loadConfig({ AI_EVENTS_SECRET: SECRET })).toMatchObject({ eventsUrl: undefined, eventsSecret: SECRET })
  })

  it('stops start-up with one line naming the variable, never the secret', () => {
    const cases: Array<[Record<string, string>, string, RegExp]> = [
      [{ AI_EVENTS_URL: URL_OK }, 'AI_EVENTS_SECRET', /required when AI_EVENTS_URL is set/],
      [{ AI_EVENTS_SECRET: 'whsec_c2hvcnQ=' }, 'AI_EVENTS_SECRET', /at least 16 bytes/],
      [{ AI_EVENTS_URL: 'not a url', AI_EVENTS_SECRET: SECRET }, 'AI_EVENTS_URL', /not a valid URL/],
      [{ AI_EVENTS_URL: 'ftp://example.test/x', AI_EVENTS_SECRET: SECRET }, 'AI_EVENTS_URL', /must use http: or https:/],
      [{ AI_EVENTS_URL: URL_OK, AI_EVENTS_SECRET: 'plain-shared-secret-value' }, 'AI_EVENTS_SECRET', /whsec_/],
      [{ AI_EVENTS_URL: URL_OK, AI_EVENTS_SECRET: 'whsec_not*base64!' }, 'AI_EVENTS_SECRET', /base64/],
      [{ AI_EVENTS_URL: URL_OK, AI_EVENTS_SECRET: 'whsec_c2hvcnQ=' }, 'AI_EVENTS_SECRET', /at least 16 bytes/],
    ]
    for (const [env, variable, problem] of cases) {
      const err = refusal(env)
      expect(err.variable, JSON.stringify(env)).toBe(variable)
      expect(err.message).toMatch(problem)
      expect(err.message.startsWith(`${variable}: `)).toBe(true)
      expect(err.message).not.toContain('\n')
      if (env.AI_EVENTS_SECRET) expect(err.message).not.toContain(env.AI_EVENTS_SECRET.slice(6))
    }
  })
})
