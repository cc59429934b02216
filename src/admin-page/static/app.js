/**
 * The admin page's script (SPEC §4 `GET /admin`): plain browser JavaScript, served by the gateway
 * itself, since the page's Content-Security-Policy allows no other script and no inline one.
 *
 * Every value that comes from the API is written as text (textContent, text nodes) or with
 * setAttribute, never parsed as HTML: model output, error texts and model names can hold markup.
 * The charts are SVG built element by element.
 */

// A namespace name, never fetched.
const SVG_NS = 'http://www.w3.org/2000/svg'

const metaContent = (name) => document.querySelector(`meta[name="${name}"]`)?.getAttribute('content') ?? ''
const API = metaContent('ai-gateway-api')
const NONCE = metaContent('ai-gateway-nonce')

const STATUSES = ['pending', 'running', 'succeeded', 'failed', 'canceled']
const TERMINAL = new Set(['succeeded', 'failed', 'canceled'])
const PAGE_SIZE = 25
const POLL_MS = 1500
const DETAIL_CHARS = 140

const numbers = new Intl.NumberFormat('en')
const compact = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 })
const formatNumber = (n) => (n === null || n === undefined ? '–' : numbers.format(n))

// ---------------------------------------------------------------------------------------------
// DOM helpers: attributes through setAttribute, children as text nodes or elements.

function appendChildren(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return node
}

function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value))
  }
  return node
}

/** An HTML element. */
function h(tag, attrs = {}, ...children) {
  return appendChildren(setAttributes(document.createElement(tag), attrs), children)
}

/** An SVG element. */
function svg(tag, attrs = {}, ...children) {
  return appendChildren(setAttributes(document.createElementNS(SVG_NS, tag), attrs), children)
}

const round = (n) => Math.round(n * 10) / 10

// ---------------------------------------------------------------------------------------------
// The admin API: the page's nonce on every call, the WordPress login cookie with it.

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { 'X-WP-Nonce': NONCE, Accept: 'application/json' }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  const res = await fetch(`${API}${path}`, {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  let data = null
  try {
    data = text === '' ? null : JSON.parse(text)
  } catch {
    data = null
  }
  if (!res.ok) {
    const code = typeof data?.code === 'string' ? data.code : `http_${res.status}`
    const message = typeof data?.message === 'string' ? data.message : `HTTP ${res.status}`
    throw new ApiFailure(res.status, code, message)
  }
  return data
}

/** What to tell the site owner about a failed call. */
function explain(err) {
  if (err instanceof ApiFailure) {
    if (err.code === 'rest_cookie_invalid_nonce') return "the page's nonce has expired: reload the page."
    if (err.status === 401) return 'your WordPress login has ended: log in again, then reload the page.'
    return `${err.message} (${err.code})`
  }
  return err instanceof Error ? err.message : String(err)
}

const notice = document.getElementById('notice')

function say(text, kind = 'ok') {
  notice.textContent = text
  notice.className = `notice ${kind}`
  notice.hidden = false
}

// ---------------------------------------------------------------------------------------------
// Filters

const form = document.getElementById('filters')

/** The day after a `YYYY-MM-DD`: the API's `to` is exclusive, the form's "To" inclusive. */
function dayAfter(day) {
  const d = new Date(`${day}T00:00:00Z`)
  d.setUTCDate(d.getUTCDate() + 1)
  return d.toISOString().slice(0, 10)
}

function formValue(name) {
  return String(new FormData(form).get(name) ?? '').trim()
}

function rangeQuery() {
  const q = new URLSearchParams()
  if (formValue('from')) q.set('from', formValue('from'))
  if (formValue('to')) q.set('to', dayAfter(formValue('to')))
  return q
}

function jobsQuery() {
  const q = rangeQuery()
  for (const name of ['status', 'user_id', 'model']) {
    if (formValue(name) !== '') q.set(name, formValue(name))
  }
  q.set('limit', String(PAGE_SIZE))
  return q
}

// ---------------------------------------------------------------------------------------------
// Jobs

const tbody = document.getElementById('jobs-body')
const olderButton = document.getElementById('jobs-older')
const emptyNote = document.getElementById('jobs-empty')
let cursor = null
// A new filter makes the answers of earlier loads stale.
let generation = 0

function shortTime(iso) {
  return typeof iso === 'string' ? iso.replace('T', ' ').slice(0, 19) : ''
}

function clip(text) {
  return text.length > DETAIL_CHARS ? `${text.slice(0, DETAIL_CHARS - 1)}…` : text
}

/** The result's text (or its JSON), or the error, for the detail cell. */
function jobDetail(job) {
  if (typeof job.error === 'string' && job.error !== '') return { kind: 'detail error', text: job.error }
  const result = job.result
  // A result over RESULT_INLINE_MAX_BYTES is not in the list; its signed link is (SPEC §12).
  if ((result === null || result === undefined) && typeof job.result_url === 'string') return { kind: 'detail', text: 'Large result, stored outside the table (result_url)' }
  if (result === null || result === undefined) return { kind: 'detail', text: '' }
  const text = typeof result === 'string' ? result : typeof result.output === 'string' ? result.output : JSON.stringify(result)
  return { kind: 'detail', text }
}

function actionButton(job) {
  if (TERMINAL.has(job.status)) return h('button', { type: 'button', class: 'secondary', 'data-action': 'retry' }, 'Retry')
  return h('button', { type: 'button', class: 'danger', 'data-action': 'cancel' }, 'Cancel')
}

function jobRow(job) {
  const status = STATUSES.includes(job.status) ? job.status : 'unknown'
  const usage = job.usage ?? {}
  const detail = jobDetail(job)
  return h('tr', { 'data-job-id': job.job_id, 'data-user-id': job.user_id, 'data-status': status, 'data-updated-at': job.updated_at },
    h('td', { class: 'num' }, job.job_id),
    h('td', { class: 'time', title: job.created_at }, shortTime(job.created_at)),
    h('td', { class: 'num' }, job.user_id === 0 ? 'visitor' : job.user_id),
    h('td', { class: 'model' }, job.model),
    h('td', {}, h('span', { class: `badge status-${status}` }, status)),
    h('td', { class: 'num' }, job.attempts),
    h('td', { class: 'num' }, `${formatNumber(usage.input_tokens)} / ${formatNumber(usage.output_tokens)}`),
    h('td', { class: 'num' }, usage.provider_ms === null || usage.provider_ms === undefined ? '–' : `${formatNumber(usage.provider_ms)} ms`),
    h('td', { class: detail.kind, title: detail.text.length > DETAIL_CHARS ? detail.text : null }, clip(detail.text)),
    h('td', { class: 'actions' }, actionButton(job)),
  )
}

function showJob(row, job) {
  const fresh = jobRow(job)
  row.replaceWith(fresh)
  return fresh
}

async function loadJobs({ more = false } = {}) {
  const mine = more ? generation : ++generation
  const q = jobsQuery()
  if (more && cursor) q.set('cursor', cursor)
  olderButton.disabled = true
  try {
    const page = await api(`/admin/jobs?${q}`)
    if (mine !== generation) return
    if (!more) tbody.replaceChildren()
    for (const job of page.jobs) tbody.appendChild(jobRow(job))
    cursor = page.next_cursor
    olderButton.hidden = cursor === null
    emptyNote.hidden = tbody.rows.length > 0
    watchOpenJobs()
  } catch (err) {
    if (mine === generation) say(`The jobs could not be loaded: ${explain(err)}`, 'error')
  } finally {
    olderButton.disabled = false
  }
}

tbody.addEventListener('click', async (event) => {
  const button = event.target instanceof Element ? event.target.closest('button[data-action]') : null
  if (!button) return
  const row = button.closest('tr')
  const id = row.dataset.jobId
  const action = button.dataset.action
  button.disabled = true
  try {
    const job = await api(`/admin/jobs/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: {} })
    showJob(row, { ...job, user_id: Number(row.dataset.userId) })
    say(`Job ${id} ${action === 'retry' ? 'was retried' : 'was canceled'}: it is ${job.status} now.`)
    if (!TERMINAL.has(job.status)) followed.add(id)
    watchOpenJobs()
    loadStatsSoon()
  } catch (err) {
    button.disabled = false
    say(`Job ${id} could not be ${action === 'retry' ? 'retried' : 'canceled'}: ${explain(err)}`, 'error')
  }
})

// Rows of jobs still pending or running follow their job until it ends.
let pollTimer = null
// The jobs this page retried: their end is announced too.
const followed = new Set()

function watchOpenJobs() {
  if (pollTimer === null) pollTimer = setTimeout(pollOpenJobs, POLL_MS)
}

async function pollOpenJobs() {
  const open = [...tbody.rows].filter((row) => !TERMINAL.has(row.dataset.status)).slice(0, 20)
  let finished = false
  await Promise.all(open.map(async (row) => {
    try {
      const job = await api(`/jobs/${encodeURIComponent(row.dataset.jobId)}`)
      if (!row.isConnected || job.updated_at === row.dataset.updatedAt) return
      showJob(row, { ...job, user_id: Number(row.dataset.userId) })
      if (!TERMINAL.has(job.status)) return
      finished = true
      if (followed.delete(String(job.job_id))) say(`Job ${job.job_id} has ${job.status === 'canceled' ? 'been canceled' : job.status}.`, job.status === 'succeeded' ? 'ok' : 'error')
    } catch {
      // Erased meanwhile, or the login ended: the row stays as it was.
    }
  }))
  pollTimer = null
  if (finished) loadStatsSoon()
  if ([...tbody.rows].some((row) => !TERMINAL.has(row.dataset.status))) watchOpenJobs()
}

olderButton.addEventListener('click', () => loadJobs({ more: true }))
form.addEventListener('submit', (event) => {
  event.preventDefault()
  loadJobs()
  loadStats()
})
form.addEventListener('reset', () => {
  // After the browser has cleared the fields.
  setTimeout(() => {
    loadJobs()
    loadStats()
  }, 0)
})

// ---------------------------------------------------------------------------------------------
// Charts

const W = 640
const H = 220
const M = { top: 14, right: 12, bottom: 30, left: 56 }

/** A round step (1, 2, 2.5 or 5 times a power of ten) of at least `n`. */
function niceStep(n) {
  if (!(n > 0)) return 1
  const power = 10 ** Math.floor(Math.log10(n))
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= n) return step * power
  return 10 * power
}

const TICKS = 4

/** The top of an axis that holds `n`: four round steps. */
function axisMax(n) {
  return niceStep(n / TICKS) * TICKS
}

function plotArea(label) {
  return svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'plot' })
}

/** Horizontal grid lines with their values, 0 to `max`; returns the y of a value. */
function yAxis(plot, max, unit = '') {
  const y = (v) => M.top + (1 - v / max) * (H - M.top - M.bottom)
  for (let i = 0; i <= TICKS; i++) {
    const v = (max * i) / TICKS
    plot.appendChild(svg('line', { x1: M.left, x2: W - M.right, y1: round(y(v)), y2: round(y(v)), class: i === 0 ? 'axis' : 'grid' }))
    plot.appendChild(svg('text', { x: M.left - 6, y: round(y(v) + 4), class: 'tick', 'text-anchor': 'end' }, `${compact.format(v)}${unit}`))
  }
  return y
}

/** Day labels under the x axis, thinned to about eight. */
function xLabels(plot, days, xCenter) {
  const every = Math.max(1, Math.ceil(days.length / 8))
  days.forEach((day, i) => {
    // Counted back from the last day, so today always has its label.
    if ((days.length - 1 - i) % every !== 0) return
    plot.appendChild(svg('text', { x: round(xCenter(i)), y: H - M.bottom + 16, class: 'tick', 'text-anchor': 'middle' }, day.slice(5)))
  })
}

function legend(items) {
  return h('ul', { class: 'legend' }, ...items.map(([cls, label]) => h('li', {}, h('span', { class: `swatch ${cls}` }), label)))
}

function note(text) {
  return h('p', { class: 'empty' }, text)
}

function tokensChart(days) {
  const plot = plotArea('Tokens per day, input and output')
  const max = axisMax(Math.max(0, ...days.map((d) => Math.max(d.input_tokens, d.output_tokens))))
  const y = yAxis(plot, max)
  const band = (W - M.left - M.right) / Math.max(1, days.length)
  const barWidth = Math.max(1, band * 0.38)
  const xCenter = (i) => M.left + i * band + band / 2
  days.forEach((d, i) => {
    const left = xCenter(i) - barWidth
    for (const [k, value, cls, what] of [[0, d.input_tokens, 'series-input', 'input'], [1, d.output_tokens, 'series-output', 'output']]) {
      const top = y(value)
      plot.appendChild(svg('rect', { x: round(left + k * barWidth), y: round(top), width: round(barWidth), height: round(y(0) - top), class: cls },
        svg('title', {}, `${d.day}: ${formatNumber(value)} ${what} tokens (${formatNumber(d.jobs)} jobs)`)))
    }
  })
  xLabels(plot, days.map((d) => d.day), xCenter)
  return [plot, legend([['series-input', 'input tokens'], ['series-output', 'output tokens']])]
}

function latencyChart(days) {
  if (!days.some((d) => d.samples > 0)) return [note('No finished jobs with a provider call in this range.')]
  const plot = plotArea('Provider latency per day, p50 and p95')
  const max = axisMax(Math.max(0, ...days.map((d) => d.p95_ms ?? 0)))
  const y = yAxis(plot, max, ' ms')
  const step = (W - M.left - M.right) / Math.max(1, days.length)
  const xCenter = (i) => M.left + i * step + step / 2
  // Lines under the points, so each point's title shows on hover.
  const lines = svg('g')
  const points = svg('g')
  plot.appendChild(lines)
  plot.appendChild(points)
  for (const [key, cls, what] of [['p95_ms', 'series-p95', 'p95'], ['p50_ms', 'series-p50', 'p50']]) {
    // A day without samples breaks the line.
    let path = ''
    let drawing = false
    days.forEach((d, i) => {
      const v = d[key]
      if (v === null || v === undefined) {
        drawing = false
        return
      }
      path += `${drawing ? 'L' : 'M'}${round(xCenter(i))},${round(y(v))} `
      drawing = true
      points.appendChild(svg('circle', { cx: round(xCenter(i)), cy: round(y(v)), r: 3, class: cls },
        svg('title', {}, `${d.day}: ${what} ${formatNumber(v)} ms (${formatNumber(d.samples)} samples)`)))
    })
    if (path !== '') lines.appendChild(svg('path', { d: path.trim(), class: `line ${cls}` }))
  }
  xLabels(plot, days.map((d) => d.day), xCenter)
  return [plot, legend([['series-p50', 'p50'], ['series-p95', 'p95']])]
}

/** Labelled horizontal bars: `[{ label, value, max?, cls, title, text }]`. */
function barList(label, rows) {
  // As wide as a narrow card, so its text keeps the page's size.
  const width = 360
  const rowHeight = 28
  const height = rows.length * rowHeight + 8
  const labelWidth = 100
  const valueWidth = 96
  const plot = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, class: 'plot bars' })
  const widest = Math.max(1, ...rows.map((r) => r.max ?? r.parts.reduce((n, p) => n + p.value, 0)))
  const span = width - labelWidth - valueWidth
  rows.forEach((r, i) => {
    const top = 4 + i * rowHeight
    plot.appendChild(svg('text', { x: labelWidth - 8, y: top + 17, class: 'label', 'text-anchor': 'end' }, r.label))
    const scale = r.max ? span / Math.max(1, r.max) : span / widest
    plot.appendChild(svg('rect', { x: labelWidth, y: top + 4, width: span, height: 18, class: 'track' }))
    let x = labelWidth
    for (const part of r.parts) {
      const width = Math.min(span - (x - labelWidth), part.value * scale)
      if (width > 0) {
        plot.appendChild(svg('rect', { x: round(x), y: top + 4, width: round(Math.max(1, width)), height: 18, class: part.cls },
          svg('title', {}, part.title)))
      }
      x += Math.max(0, width)
    }
    plot.appendChild(svg('text', { x: width - valueWidth + 8, y: top + 17, class: 'value' }, r.text))
  })
  return plot
}

function statusChart(byStatus) {
  return [barList('Jobs by status', STATUSES.map((status) => ({
    label: status,
    text: formatNumber(byStatus[status] ?? 0),
    parts: [{ value: byStatus[status] ?? 0, cls: `fill status-${status}`, title: `${status}: ${formatNumber(byStatus[status] ?? 0)} jobs` }],
  })))]
}

function budgetsChart(budgets) {
  if (budgets === null || budgets === undefined) return [note('No budgets configured.')]
  if (budgets.top_users.length === 0) return [note('No budget use in this range.')]
  return [barList('Budget use of the top users', budgets.top_users.map((u) => ({
    label: `${u.user_id === 0 ? 'visitor' : `user ${u.user_id}`} · ${u.window}`,
    max: u.limit ?? undefined,
    text: `${formatNumber(u.used + u.reserved)} / ${u.limit === null ? 'unlimited' : formatNumber(u.limit)}`,
    parts: [
      { value: u.used, cls: 'fill used', title: `${u.scope}: ${formatNumber(u.used)} tokens used` },
      { value: u.reserved, cls: 'fill reserved', title: `${u.scope}: ${formatNumber(u.reserved)} tokens reserved by running jobs` },
    ],
  }))), legend([['used', 'used'], ['reserved', 'reserved']])]
}

function breakersTable(breakers) {
  if (breakers.length === 0) return [note('No provider endpoints.')]
  return [h('table', { class: 'breakers' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Endpoint'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col' }, 'Failures'), h('th', { scope: 'col' }, 'Open until'))),
    h('tbody', {}, ...breakers.map((b) => h('tr', {},
      h('td', { class: 'model' }, b.key),
      h('td', {}, h('span', { class: `badge state-${['closed', 'open', 'half-open'].includes(b.state) ? b.state : 'unknown'}` }, b.state)),
      h('td', { class: 'num' }, b.consecutive_failures),
      h('td', { class: 'time' }, b.open_until ? shortTime(b.open_until) : '–'),
    ))),
  ), h('p', { class: 'hint' }, 'Breakers are kept per gateway process; this is the one that answered.')]
}

function deliveriesCard(deliveries) {
  const card = document.getElementById('card-deliveries')
  card.hidden = deliveries === null || deliveries === undefined
  if (card.hidden) return []
  return [h('dl', { class: 'figures' },
    h('div', {}, h('dt', {}, 'pending'), h('dd', {}, formatNumber(deliveries.pending))),
    h('div', {}, h('dt', {}, 'failed'), h('dd', { class: deliveries.failed > 0 ? 'bad' : null }, formatNumber(deliveries.failed))),
    h('div', {}, h('dt', {}, 'delivered'), h('dd', {}, formatNumber(deliveries.delivered))),
  )]
}

// ---------------------------------------------------------------------------------------------
// Events to WordPress: the failed and pending deliveries, each with a resend button.

const EVENT_STATUSES = ['pending', 'delivered', 'failed']
const eventsSection = document.getElementById('events-section')
const eventsBody = document.getElementById('events-body')
const eventsEmpty = document.getElementById('events-empty')
let eventsGeneration = 0

/** The receiver's last answer: its HTTP status and the start of its error, as text. */
function lastAnswer(event) {
  const status = event.last_status === null || event.last_status === undefined ? 'no answer' : `HTTP ${event.last_status}`
  return typeof event.last_error === 'string' && event.last_error !== '' ? `${status}: ${event.last_error}` : status
}

function eventRow(event) {
  const status = EVENT_STATUSES.includes(event.status) ? event.status : 'unknown'
  const answer = event.attempts > 0 ? lastAnswer(event) : 'not tried yet'
  return h('tr', { 'data-event-id': event.id, 'data-status': status },
    h('td', { class: 'num', title: event.webhook_id }, event.id),
    h('td', { class: 'num' }, event.job_id),
    h('td', { class: 'model' }, event.type),
    h('td', {}, h('span', { class: `badge event-${status}` }, status)),
    h('td', { class: 'num' }, event.attempts),
    h('td', { class: status === 'failed' ? 'detail error' : 'detail', title: answer.length > DETAIL_CHARS ? answer : null }, clip(answer)),
    h('td', { class: 'time' }, event.next_attempt_at ? shortTime(event.next_attempt_at) : '–'),
    h('td', { class: 'actions' }, h('button', { type: 'button', class: 'secondary', 'data-action': 'resend' }, 'Resend')),
  )
}

async function loadEvents() {
  const mine = ++eventsGeneration
  try {
    const [failed, pending] = await Promise.all([api('/admin/events?status=failed&limit=50'), api('/admin/events?status=pending&limit=50')])
    if (mine !== eventsGeneration) return
    eventsBody.replaceChildren(...[...failed.events, ...pending.events].map(eventRow))
    eventsEmpty.hidden = eventsBody.rows.length > 0
  } catch (err) {
    if (mine === eventsGeneration) say(`The event deliveries could not be loaded: ${explain(err)}`, 'error')
  }
}

eventsBody.addEventListener('click', async (event) => {
  const button = event.target instanceof Element ? event.target.closest('button[data-action="resend"]') : null
  if (!button) return
  const row = button.closest('tr')
  const id = row.dataset.eventId
  button.disabled = true
  try {
    const sent = await api(`/admin/events/${encodeURIComponent(id)}/resend`, { method: 'POST', body: {} })
    row.replaceWith(eventRow(sent))
    say(`Event ${id} will be sent again now.`)
    loadStatsSoon()
  } catch (err) {
    button.disabled = false
    say(`Event ${id} could not be resent: ${explain(err)}`, 'error')
  }
})

function fill(id, nodes) {
  document.getElementById(id).replaceChildren(...nodes)
}

function renderStats(stats) {
  const last = new Date(Date.parse(stats.to) - 1).toISOString().slice(0, 10)
  document.getElementById('stats-range').textContent = `Jobs created ${stats.from.slice(0, 10)} to ${last} (UTC)`
  fill('chart-tokens', tokensChart(stats.tokens_per_day))
  fill('chart-status', statusChart(stats.jobs_by_status))
  fill('chart-latency', latencyChart(stats.latency_per_day))
  fill('chart-breakers', breakersTable(stats.breakers))
  fill('chart-budgets', budgetsChart(stats.budgets))
  fill('chart-deliveries', deliveriesCard(stats.deliveries))
  eventsSection.hidden = stats.deliveries === null || stats.deliveries === undefined
  if (!eventsSection.hidden) loadEvents()
}

let statsGeneration = 0
let statsTimer = null

async function loadStats() {
  const mine = ++statsGeneration
  try {
    const stats = await api(`/admin/stats?${rangeQuery()}`)
    if (mine === statsGeneration) renderStats(stats)
  } catch (err) {
    if (mine === statsGeneration) say(`The charts could not be loaded: ${explain(err)}`, 'error')
  }
}

/** After a change: once, a moment later, however many changes come meanwhile. */
function loadStatsSoon() {
  clearTimeout(statsTimer)
  statsTimer = setTimeout(loadStats, 1000)
}

document.getElementById('stats-refresh').addEventListener('click', () => loadStats())

loadJobs()
loadStats()
