/**
 * Plain permalinks share the `ai/v1` namespace with WordPress's own AI plugin (SPEC §1): only the
 * gateway's own route names are rewritten from `?rest_route=`; `ai/v1/logs` and
 * `ai/v1/roles-users` are left alone (and would be WordPress's, behind the proxy recipe).
 */
import { describe, expect, it } from 'vitest'
import { GATEWAY_ROUTES, rewritePlainPermalink } from '../../src/app.js'

describe('rewritePlainPermalink', () => {
  it('rewrites each of the gateway\'s own route names, at / and /index.php', () => {
    for (const name of GATEWAY_ROUTES) {
      for (const path of ['/', '/index.php']) {
        expect(rewritePlainPermalink(`${path}?rest_route=/ai/v1/${name}`, '')).toBe(`/wp-json/ai/v1/${name}`)
        expect(rewritePlainPermalink(`${path}?rest_route=/ai/v1/${name}/deeper/path&x=1`, '')).toBe(`/wp-json/ai/v1/${name}/deeper/path?x=1`)
      }
    }
    expect(rewritePlainPermalink('/?rest_route=%2Fai%2Fv1%2Fjobs%2F7&_wpnonce=abc', '')).toBe('/wp-json/ai/v1/jobs/7?_wpnonce=abc')
    expect(rewritePlainPermalink('/blog/?rest_route=/ai/v1/jobs', '/blog')).toBe('/blog/wp-json/ai/v1/jobs')
    expect(rewritePlainPermalink('/blog?rest_route=/ai/v1/openapi.json', '/blog')).toBe('/blog/wp-json/ai/v1/openapi.json')
  })

  it('leaves WordPress\'s own routes in the namespace, and names that only start like ours, alone', () => {
    for (const url of [
      '/?rest_route=/ai/v1/logs', '/index.php?rest_route=/ai/v1/roles-users', '/?rest_route=/ai/v1',
      '/?rest_route=/ai/v1/jobsx', '/?rest_route=/ai/v1/admin-tools', '/?rest_route=/ai/v1/openapi.jsonp', '/?rest_route=/ai/v1/.well-knownx',
      '/?rest_route=/wp/v2/posts', '/other.php?rest_route=/ai/v1/jobs', '/wp-json/ai/v1/jobs',
    ]) {
      expect(rewritePlainPermalink(url, ''), url).toBe(url)
    }
  })
})
