/**
 * The admin page's HTML (SPEC §4 `GET /admin`): a shell with no inline script or style (the CSP
 * allows neither), the page's nonce and API base as `<meta>` data, and empty places that
 * static/app.js fills from the admin API. No value from the database is ever put in this HTML;
 * the few values that are (the nonce, the login, paths) are escaped.
 */

/** SPEC §5: the page may load only the gateway's own files, and no site may frame it. */
export const ADMIN_PAGE_CSP = "default-src 'self'; frame-ancestors 'none'"

/** Headers of the page and of its error pages, beside `Cache-Control: private, no-store`. */
export const ADMIN_PAGE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': ADMIN_PAGE_CSP,
  // frame-ancestors for browsers that predate it.
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'same-origin',
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

/** Text as HTML text or as a quoted attribute value. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ENTITIES[c]!)
}

export interface AdminPageContext {
  /** The fresh `wp_rest` nonce the page's calls send as `X-WP-Nonce`. */
  nonce: string
  login: string
  /** The route prefix, e.g. `/wp-json/ai/v1` (or `/blog/wp-json/ai/v1`). */
  apiBase: string
  /** The site's path (PUBLIC_URL's), '' at the root: for links to WordPress. */
  siteBase: string
  scriptUrl: string
  styleUrl: string
}

function head(title: string, styleUrl: string, extra = ''): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
${extra}<title>${escapeHtml(title)}</title>
<link rel="stylesheet" href="${escapeHtml(styleUrl)}">
`
}

const STATUS_OPTIONS = ['pending', 'running', 'succeeded', 'failed', 'canceled']
  .map((s) => `<option value="${s}">${s}</option>`).join('')

/** The page itself. */
export function adminPageHtml(ctx: AdminPageContext): string {
  const meta = [
    `<meta name="ai-gateway-nonce" content="${escapeHtml(ctx.nonce)}">`,
    `<meta name="ai-gateway-api" content="${escapeHtml(ctx.apiBase)}">`,
    `<script type="module" src="${escapeHtml(ctx.scriptUrl)}"></script>`,
  ].join('\n') + '\n'
  return `${head('AI gateway', ctx.styleUrl, meta)}</head>
<body>
<header class="top">
  <h1>AI gateway</h1>
  <p class="who">Signed in as <strong>${escapeHtml(ctx.login)}</strong> · <a href="${escapeHtml(`${ctx.siteBase}/wp-admin/`)}">WordPress dashboard</a></p>
</header>
<main>
  <p id="notice" class="notice" role="status" aria-live="polite" hidden></p>
  <noscript><p class="notice error">This page needs JavaScript.</p></noscript>

  <section class="charts" aria-labelledby="charts-title">
    <div class="section-head">
      <h2 id="charts-title">Usage</h2>
      <p class="range" id="stats-range"></p>
      <button type="button" id="stats-refresh" class="secondary">Refresh</button>
    </div>
    <div class="grid">
      <figure class="card wide"><figcaption>Tokens per day</figcaption><div id="chart-tokens" class="chart"></div></figure>
      <figure class="card"><figcaption>Jobs by status</figcaption><div id="chart-status" class="chart"></div></figure>
      <figure class="card wide"><figcaption>Provider latency per day (p50, p95)</figcaption><div id="chart-latency" class="chart"></div></figure>
      <figure class="card"><figcaption>Circuit breakers</figcaption><div id="chart-breakers" class="chart"></div></figure>
      <figure class="card"><figcaption>Budget use (top users)</figcaption><div id="chart-budgets" class="chart"></div></figure>
      <figure class="card" id="card-deliveries" hidden><figcaption>Event deliveries</figcaption><div id="chart-deliveries" class="chart"></div></figure>
    </div>
  </section>

  <section class="jobs" aria-labelledby="jobs-title">
    <div class="section-head"><h2 id="jobs-title">Jobs</h2></div>
    <form id="filters" class="filters">
      <label>Status <select name="status"><option value="">any</option>${STATUS_OPTIONS}</select></label>
      <label>User ID <input name="user_id" type="number" min="0" step="1" inputmode="numeric"></label>
      <label>Model <input name="model" type="text" autocomplete="off"></label>
      <label>From <input name="from" type="date"></label>
      <label>To (inclusive) <input name="to" type="date"></label>
      <button type="submit">Filter</button>
      <button type="reset" class="secondary">Clear</button>
    </form>
    <div class="table-wrap">
      <table id="jobs-table">
        <thead><tr>
          <th scope="col">ID</th><th scope="col">Created (UTC)</th><th scope="col">User</th><th scope="col">Model</th>
          <th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Tokens in / out</th><th scope="col">Provider</th>
          <th scope="col">Result or error</th><th scope="col"><span class="sr-only">Actions</span></th>
        </tr></thead>
        <tbody id="jobs-body"></tbody>
      </table>
    </div>
    <p id="jobs-empty" class="empty" hidden>No jobs match these filters.</p>
    <p class="more"><button type="button" id="jobs-older" class="secondary" hidden>Older</button></p>
  </section>

  <section class="events" id="events-section" aria-labelledby="events-title" hidden>
    <div class="section-head"><h2 id="events-title">Events to WordPress: failed and pending</h2></div>
    <div class="table-wrap">
      <table id="events-table">
        <thead><tr>
          <th scope="col">Event</th><th scope="col">Job</th><th scope="col">Type</th><th scope="col">Status</th>
          <th scope="col">Tries</th><th scope="col">Last answer</th><th scope="col">Next try (UTC)</th>
          <th scope="col"><span class="sr-only">Actions</span></th>
        </tr></thead>
        <tbody id="events-body"></tbody>
      </table>
    </div>
    <p id="events-empty" class="empty" hidden>Every event has been delivered.</p>
  </section>
</main>
</body>
</html>
`
}

export interface ErrorPageContext {
  status: number
  /** The WordPress error code, shown as text. */
  code: string
  message: string
  styleUrl: string
  /** wp-login.php, back to the page after the login (401). */
  loginUrl?: string
}

/** What a browser shows instead of the page: 401 (no login) or 403 (no capability). */
export function errorPageHtml(ctx: ErrorPageContext): string {
  const title = ctx.status === 401 ? 'Log in to WordPress first' : ctx.status === 403 ? 'Not allowed' : 'The admin page is unavailable'
  const login = ctx.loginUrl ? `\n  <p><a class="button" href="${escapeHtml(ctx.loginUrl)}">Log in</a></p>` : ''
  return `${head(`AI gateway: ${title}`, ctx.styleUrl)}</head>
<body>
<main class="error-page">
  <h1>${escapeHtml(title)}</h1>
  <p>${escapeHtml(ctx.message)}</p>
  <p class="code">${ctx.status} <code>${escapeHtml(ctx.code)}</code></p>${login}
</main>
</body>
</html>
`
}
