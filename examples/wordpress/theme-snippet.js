/**
 * wp-ai-gateway from a theme: create a job and wait for its result.
 *
 * Enqueue this file with `ai-gateway` as a dependency (the companion mu-plugin registers it, and
 * it pulls in wp-api-fetch):
 *
 *   wp_enqueue_script( 'my-theme-ai', get_theme_file_uri( 'js/theme-snippet.js' ), array( 'ai-gateway' ), '1.0', true );
 *
 * Logged-in users go through wp.apiFetch, which adds the REST root (pretty or plain permalinks)
 * and the X-WP-Nonce header itself, so the gateway sees WordPress's own cookie + nonce. Visitors
 * use the signed token the plugin printed in `window.aiGateway.token`.
 *
 * Usage:
 *   const job = await window.myThemeAi.run('Summarise this page in one sentence.')
 *   if (job.status === 'succeeded') console.log(job.result)
 */
(function () {
  'use strict'

  var cfg = window.aiGateway || {}
  var TERMINAL = ['succeeded', 'failed', 'canceled']

  /** `root` is /wp-json/ or /?rest_route=/ (plain permalinks); both reach the gateway. */
  function restUrl(path) {
    var root = cfg.root || '/wp-json/'
    if (root.indexOf('?') !== -1) {
      // Plain permalinks: /?rest_route=/ + ai/v1/jobs
      return root + path.replace(/^\//, '')
    }
    return root.replace(/\/$/, '') + path
  }

  function visitorHeaders(extra) {
    if (!cfg.token) throw new Error('AI gateway: no token (is AI_PUBLIC_TOKEN_SECRET defined in wp-config.php?)')
    if (cfg.tokenExpiresAt && cfg.tokenExpiresAt * 1000 <= Date.now()) {
      throw new Error('AI gateway: the token has expired; reload the page for a new one')
    }
    return Object.assign({ Authorization: 'Bearer ' + cfg.token }, extra || {})
  }

  /** Errors come in WordPress's REST shape: { code, message, data: { status } }. */
  async function errorFrom(response) {
    var body = null
    try { body = await response.json() } catch (e) { /* not JSON */ }
    var err = new Error((body && body.message) || 'HTTP ' + response.status)
    err.code = body && body.code
    err.status = response.status
    err.retryAfter = Number(response.headers.get('Retry-After')) || undefined
    return err
  }

  /** POST /ai/v1/jobs → { job_id, status: 'pending', request_id } (202), or the existing job (200). */
  async function createJob(input) {
    if (cfg.loggedIn) {
      // Cookie + nonce: apiFetch adds X-WP-Nonce and the REST root itself.
      return wp.apiFetch({ path: '/ai/v1/jobs', method: 'POST', data: { input: input } })
    }
    var response = await fetch(restUrl('/ai/v1/jobs'), {
      method: 'POST',
      credentials: 'omit',
      headers: visitorHeaders({ 'Content-Type': 'application/json' }),
      body: JSON.stringify({ input: input }),
    })
    if (!response.ok) throw await errorFrom(response)
    return response.json()
  }

  /**
   * GET /ai/v1/jobs/:id with If-None-Match. Returns { notModified: true } on 304, otherwise
   * { job, etag }. `cache: 'no-store'` keeps the browser's HTTP cache out of the way, so the 304
   * reaches this code instead of being turned into a 200 from the cache.
   */
  async function fetchJob(id, etag) {
    var conditional = etag ? { 'If-None-Match': etag } : {}
    var response
    if (cfg.loggedIn) {
      try {
        response = await wp.apiFetch({ path: '/ai/v1/jobs/' + id, headers: conditional, parse: false, cache: 'no-store' })
      } catch (thrown) {
        // apiFetch rejects every non-2xx answer with the Response itself when parse is false.
        if (thrown && thrown.status === 304) return { notModified: true }
        if (thrown && typeof thrown.json === 'function') throw await errorFrom(thrown)
        throw thrown
      }
    } else {
      response = await fetch(restUrl('/ai/v1/jobs/' + id), {
        credentials: 'omit',
        cache: 'no-store',
        headers: visitorHeaders(conditional),
      })
      if (response.status === 304) return { notModified: true }
      if (!response.ok) throw await errorFrom(response)
    }
    return { job: await response.json(), etag: response.headers.get('ETag') }
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms) })
  }

  /** Polls until the job is succeeded, failed or canceled; waits 1 s, then up to 5 s between polls. */
  async function waitForJob(id, options) {
    var timeoutMs = (options && options.timeoutMs) || 5 * 60 * 1000
    var deadline = Date.now() + timeoutMs
    var etag = null
    var job = null
    var delay = 1000
    for (;;) {
      var answer = await fetchJob(id, etag)
      if (!answer.notModified) {
        job = answer.job
        etag = answer.etag
        if (TERMINAL.indexOf(job.status) !== -1) return job
      }
      if (Date.now() + delay > deadline) throw new Error('AI gateway: job ' + id + ' did not finish in time')
      await sleep(delay)
      delay = Math.min(delay * 1.5, 5000)
    }
  }

  /** Creates a job and waits for it. A create that returns an existing job (200) may already be finished. */
  async function run(input, options) {
    var created = await createJob(input)
    if (TERMINAL.indexOf(created.status) !== -1) return created
    return waitForJob(created.job_id, options)
  }

  window.myThemeAi = { createJob: createJob, fetchJob: fetchJob, waitForJob: waitForJob, run: run }
})()
