import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import Type from 'typebox'
import { loadAsset, type StaticAsset } from '../admin-page/assets.js'
import { ADMIN_PAGE_HEADERS, adminPageHtml, errorPageHtml } from '../admin-page/page-html.js'
import { ApiError } from '../errors.js'
import { errorResponses } from '../schemas/common.js'
import { ifNoneMatch } from './etag.js'

const HTML = 'text/html; charset=utf-8'
/** A URL with the file's content hash never changes: browsers and proxies may keep it a year. */
const IMMUTABLE = 'public, max-age=31536000, immutable'

/** A browser's navigation asks for HTML first; API clients and tests without `Accept` get JSON. */
function wantsHtml(request: FastifyRequest): boolean {
  const accept = request.headers.accept ?? ''
  return /(^|,)\s*text\/html/i.test(accept)
}

function pageHeaders(reply: FastifyReply): FastifyReply {
  for (const [name, value] of Object.entries(ADMIN_PAGE_HEADERS)) reply.header(name, value)
  return reply
}

/**
 * The site owner's admin page (SPEC §4 `GET /admin`) and its two static files. The page opens
 * with the WordPress logged-in cookie alone (auth kind `admin-page`) and embeds the fresh nonce
 * its script sends on every admin API call; the script and stylesheet are the gateway's own
 * files (the CSP allows nothing else), public like any wp-admin script.
 */
export async function adminPageRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { config } = app
  const script = loadAsset('app.js', 'text/javascript; charset=utf-8')
  const style = loadAsset('app.css', 'text/css; charset=utf-8')
  const assetUrl = (asset: StaticAsset) => `${config.routePrefix}/admin/assets/${asset.name}?v=${asset.hash}`
  const siteBase = new URL(config.publicUrl).pathname.replace(/\/+$/, '')

  for (const asset of [script, style]) {
    const mediaType = asset.contentType.split(';')[0]!
    app.get(`/admin/assets/${asset.name}`, {
      config: { auth: 'none' },
      schema: {
        summary: `The admin page's ${asset.name}`, tags: ['admin'],
        description: 'Public and static. Linked with `?v=` set to its content hash, which makes it cacheable for a year; ETag and If-None-Match either way.',
        querystring: Type.Object({ v: Type.Optional(Type.String({ description: 'the content hash the page links' })) }),
        headers: Type.Object({ 'if-none-match': Type.Optional(Type.String()) }),
        response: { 200: { description: asset.name, content: { [mediaType]: { schema: Type.String() } } }, 304: Type.Null({ description: 'Not modified' }), ...errorResponses },
      },
    }, async (request, reply) => {
      const cacheControl = request.query.v === asset.hash ? IMMUTABLE : 'no-cache'
      if (ifNoneMatch(request.headers['if-none-match'], asset.etag)) {
        return reply.code(304).header('ETag', asset.etag).header('Cache-Control', cacheControl).send()
      }
      return reply.header('ETag', asset.etag).header('Cache-Control', cacheControl).type(asset.contentType).send(asset.body)
    })
  }

  await app.register(async (page) => {
    // A browser sent here without a login, or by a user without the capability, gets a page
    // that says so (with a link to wp-login.php) rather than JSON; anything else stays JSON,
    // from the gateway's one error handler.
    page.setErrorHandler((error, request, reply) => {
      if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403) || !wantsHtml(request)) throw error
      for (const [k, v] of Object.entries(error.headers)) reply.header(k, v)
      const message = error.status === 403 && error.code === 'ai_forbidden'
        ? `Your WordPress account lacks the ${config.adminCapability} capability that this page needs (AI_ADMIN_CAPABILITY).`
        : error.status === 401 ? 'This page opens with your WordPress login.' : error.message
      const loginUrl = error.status === 401 ? `${siteBase}/wp-login.php?redirect_to=${encodeURIComponent(`${config.routePrefix}/admin`)}` : undefined
      return pageHeaders(reply).code(error.status).type(HTML)
        .send(errorPageHtml({ status: error.status, code: error.code, message, styleUrl: assetUrl(style), ...(loginUrl ? { loginUrl } : {}) }))
    })

    page.get('/admin', {
      config: { auth: 'admin-page', noStore: true },
      schema: {
        summary: 'The admin page', tags: ['admin'],
        description: 'HTML for a browser: opens with the WordPress logged-in cookie alone (no nonce, as wp-admin does) of a user with AI_ADMIN_CAPABILITY, and embeds a fresh `wp_rest` nonce for its own calls to the admin API. Served with `Content-Security-Policy: default-src \'self\'; frame-ancestors \'none\'`; every value is rendered as text.',
        response: { 200: { description: 'the page', content: { 'text/html': { schema: Type.String() } } }, ...errorResponses },
      },
    }, async (request, reply) => {
      const session = request.adminPage!
      return pageHeaders(reply).type(HTML).send(adminPageHtml({
        nonce: session.nonce,
        login: session.login,
        apiBase: config.routePrefix,
        siteBase,
        scriptUrl: assetUrl(script),
        styleUrl: assetUrl(style),
      }))
    })
  })
}
