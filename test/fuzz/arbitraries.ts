import { createHmac } from 'node:crypto'
import fc from 'fast-check'
import { signStandardWebhook, signXAiSignature } from '../../src/webhook/verify-signature.js'

/**
 * Generators of hostile and odd HTTP requests for the gateway's public routes: bad JSON, wrong
 * types, extreme numbers, deep nesting, invalid UTF-8, odd headers and query strings, forged
 * cookies, tokens, Basic credentials and webhook signatures. Valid credentials and real job ids
 * come from a `FuzzWorld` the test seeds first, so authenticated paths are exercised too.
 */

export interface FuzzRequest {
  method: string
  url: string
  headers: Record<string, string>
  payload?: string | Buffer
  remoteAddress?: string
}

export interface Login {
  cookie: string
  nonce: string
}

export interface FuzzWorld {
  nowMs: number
  tokenSecret: string
  /** Valid `Authorization` values: a WordPress user's token and a visitor's. */
  userToken: string
  visitorToken: string
  /** The logged-in cookie's name (`wordpress_logged_in_{COOKIEHASH}`). */
  cookieName: string
  admin: Login
  alice: Login
  /** A valid `Authorization: Basic …` application password. */
  basic: string
  /** Jobs that stay terminal for the whole run (nothing can change them): safe to stream. */
  streamIds: number[]
  /** Seeded jobs the run may cancel, retry or complete. */
  mutableIds: number[]
  /** Stored idempotency keys by job id, for webhook bodies that name the right key. */
  keys: Record<number, string>
  webhookSecrets: string[]
  models: string[]
}

/** The gateway's route prefix and the plain-permalink forms of SPEC §1. */
type Form = 'pretty' | 'plain' | 'plain-encoded' | 'index'
const FORM = fc.constantFrom<Form>('pretty', 'pretty', 'plain', 'plain-encoded', 'index')

function routeUrl(form: Form, path: string, query: string): string {
  switch (form) {
    case 'pretty':
      return `/wp-json/ai/v1${path}${query ? `?${query}` : ''}`
    case 'plain':
      return `/?rest_route=/ai/v1${path}${query ? `&${query}` : ''}`
    case 'plain-encoded':
      return `/?rest_route=${pct(`/ai/v1${path}`)}${query ? `&${query}` : ''}`
    case 'index':
      return `/index.php?${query ? `${query}&` : ''}rest_route=/ai/v1${path}`
  }
}

// ---------------------------------------------------------------- text and numbers

const ODD_TEXT = [
  '', ' ', '\t', '\u0000', '\u0007', '\u001f', '\u007f', '\r\n', 'null', 'undefined', 'NaN', 'true', '[]', '{}',
  '__proto__', 'constructor', 'prototype', '%00', '%', '%E0%A4%A', '\u202e', '\ufeff', '\u2028', 'é', '日本語',
  '💩', '\ud800', '\udfff', "' OR 1=1 --", '<script>alert(1)</script>', '../../etc/passwd', '${jndi:x}', 'a'.repeat(300),
]

/** Short strings of every kind: lone surrogates, control characters, non-ASCII, the usual suspects. */
export const oddText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...ODD_TEXT),
  fc.string({ unit: 'binary', maxLength: 24 }),
  fc.string({ unit: 'grapheme', maxLength: 24 }),
  fc.string({ maxLength: 24 }),
)

/** Number literals as JSON text, including ones no double holds exactly. */
export const numberText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '1e308', '-1e308', '1e309', '-0', '-0.0', '0', '0.0', '1', '2', '-1', '0.5', '1.5', '1E2', '1e-400', '5e-324',
    '9007199254740991', '9007199254740992', '9007199254740993', '-9007199254740993', '18446744073709551616',
    '123456789012345678901234567890', '4096', '4097', '100', '101', '4294967295', '4294967296',
  ),
  fc.integer().map(String),
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => JSON.stringify(n)),
)

/** Numbers as query-string or header text: the same, plus what only text can say. */
export const numberish: fc.Arbitrary<string> = fc.oneof(numberText, fc.constantFrom('', ' 1', '1 ', '0x10', '1_000', '١٢', '１', 'Infinity', 'NaN', '1e', '--1', '+1'))

const longString = fc.constantFrom(1_000, 16_000, 70_000).map((n) => 'x'.repeat(n))

// ---------------------------------------------------------------- JSON text

/** JSON built as text, so it can hold duplicate keys and number literals JSON.stringify would not write. */
type J = { raw: string } | { arr: J[] } | { obj: Array<[string, J]> }

export function render(j: J): string {
  if ('raw' in j) return j.raw
  if ('arr' in j) return `[${j.arr.map(render).join(',')}]`
  return `{${j.obj.map(([k, v]) => `${JSON.stringify(k)}:${render(v)}`).join(',')}}`
}

const raw = (text: string): J => ({ raw: text })
const str = (text: string): J => raw(JSON.stringify(text))

const leaf: fc.Arbitrary<J> = fc.oneof(
  numberText.map(raw),
  // Big integers and the like as strings, where a number is expected.
  numberText.map(str),
  oddText.map(str),
  fc.constantFrom('true', 'false', 'null').map(raw),
  // String escapes that are invalid, or that JSON allows but UTF-8 cannot hold.
  fc.constantFrom('"\\ud800"', '"\\udfff\\ud800"', '"\\x41"', '"\\u00"', '"\\u0000"', '"tab\there"').map(raw),
)

const { value: jsonValue } = fc.letrec<{ value: J }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.array(tie('value'), { maxLength: 3 }).map((arr): J => ({ arr })),
    fc.array(fc.tuple(fc.oneof(oddText, fc.constantFrom('a', 'b', '__proto__', 'constructor')), tie('value')), { maxLength: 3 }).map((obj): J => ({ obj })),
  ),
}))

/** Arrays or objects nested `depth` levels: far past every limit the gateway sets. */
const deep: fc.Arbitrary<J> = fc.tuple(fc.integer({ min: 7, max: 6_000 }), fc.boolean()).map(([depth, objects]) =>
  raw(objects ? `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}` : `${'['.repeat(depth)}${']'.repeat(depth)}`))

const anyField: fc.Arbitrary<J> = fc.oneof({ weight: 6, arbitrary: jsonValue }, { weight: 1, arbitrary: deep }, { weight: 1, arbitrary: longString.map(str) })

const pairs = (fields: Record<string, fc.Arbitrary<J>>, extra = true): fc.Arbitrary<J> =>
  fc.tuple(
    fc.subarray(Object.keys(fields), { minLength: 0 }),
    fc.array(fc.tuple(fc.oneof(oddText, fc.constantFrom('__proto__', 'constructor', 'extra', 'input', 'model')), anyField), { maxLength: extra ? 2 : 0 }),
    fc.array(fc.constant(0), { maxLength: 1 }),
  ).chain(([names, extras, dup]) => {
    const chosen = [...names, ...(dup.length > 0 && names.length > 0 ? [names[0]!] : [])]
    return fc.tuple(...chosen.map((name) => fields[name]!.map((v): [string, J] => [name, v]))).map((known): J => ({ obj: [...known, ...extras] }))
  })

// ---------------------------------------------------------------- bodies

export interface Body {
  payload: string | Buffer | undefined
  contentType: string | undefined
}

const CONTENT_TYPES = [
  'application/json', 'application/json', 'application/json', 'application/json; charset=utf-8',
  'application/json; charset=latin1', 'APPLICATION/JSON', 'application/json;;', 'text/plain', 'text/html',
  'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', 'application/problem+json', '', '*/*',
]

/** A JSON text as sent, or broken in transit: cut short, padded, given invalid UTF-8, or replaced. */
export function mangled(text: string): fc.Arbitrary<string | Buffer | undefined> {
  return fc.oneof(
    { weight: 8, arbitrary: fc.constant(text) },
    { weight: 1, arbitrary: fc.nat({ max: Math.max(0, text.length - 1) }).map((n) => text.slice(0, n)) },
    { weight: 1, arbitrary: fc.constantFrom(',', '}', ']', 'x', '\u0000', ' garbage', '{}').map((tail) => text + tail) },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.nat({ max: text.length }), fc.uint8Array({ minLength: 1, maxLength: 6 })).map(([at, bytes]) => {
        // Continuation bytes and overlong forms with no valid UTF-8 reading.
        const bad = Buffer.from(bytes.map((b) => 0x80 | (b & 0x7f)))
        const buf = Buffer.from(text, 'utf8')
        const cut = Math.min(at, buf.length)
        return Buffer.concat([buf.subarray(0, cut), Buffer.from([0xff, 0xc0]), bad, buf.subarray(cut)])
      }),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)) },
    { weight: 1, arbitrary: fc.constantFrom('', ' ', 'null', '"text"', '[]', '0', 'true', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', '\ufeff{}') },
    { weight: 1, arbitrary: deep.map(render) },
    { weight: 1, arbitrary: fc.constant(undefined) },
  )
}

function body(json: fc.Arbitrary<J>): fc.Arbitrary<Body> {
  return fc.tuple(json.map(render).chain(mangled), fc.constantFrom<string | undefined>(...CONTENT_TYPES, undefined))
    .map(([payload, contentType]) => ({ payload, contentType }))
}

const role = fc.oneof(fc.constantFrom('system', 'user', 'assistant').map(str), leaf)
const message = fc.oneof({ weight: 4, arbitrary: pairs({ role, content: fc.oneof(fc.string().map(str), leaf) }) }, { weight: 1, arbitrary: jsonValue })
const stop = fc.oneof(fc.string({ maxLength: 300 }).map(str), fc.array(fc.oneof(fc.string({ maxLength: 10 }).map(str), leaf), { maxLength: 6 }).map((arr): J => ({ arr })), leaf)
const params = fc.oneof(
  { weight: 4, arbitrary: pairs({ temperature: numberText.map(raw), top_p: numberText.map(raw), max_tokens: numberText.map(raw), stop }) },
  { weight: 1, arbitrary: anyField },
)

function metadata(): fc.Arbitrary<J> {
  const nested = fc.integer({ min: 1, max: 12 }).map((depth) => raw(`${'{"m":'.repeat(depth)}"v"${'}'.repeat(depth)}`))
  const sized = fc.integer({ min: 1_000, max: 3_000 }).map((n) => raw(`{"note":${JSON.stringify('é'.repeat(n / 2))}}`))
  return fc.oneof(jsonValue, nested, sized, deep)
}

/** `POST /jobs` bodies: the real fields with values of every type, unknown fields, and broken JSON. */
export function createJobBody(world: FuzzWorld): fc.Arbitrary<Body> {
  const model = fc.oneof(fc.constantFrom(...world.models).map(str), leaf)
  const input = fc.oneof(
    { weight: 4, arbitrary: fc.string({ minLength: 1, maxLength: 40 }).map(str) },
    { weight: 1, arbitrary: longString.map(str) },
    { weight: 2, arbitrary: anyField },
  )
  const messages = fc.oneof(fc.array(message, { maxLength: 4 }).map((arr): J => ({ arr })), anyField)
  const key = fc.oneof(fc.string({ minLength: 1, maxLength: 40 }).map(str), oddText.map(str), leaf)
  const priority = fc.oneof(fc.constantFrom('interactive', 'bulk').map(str), leaf)
  const hostile = body(pairs({ model, input, messages, params, metadata: metadata(), idempotency_key: key, priority }))
  // Requests a client could well send, so that creates, replays and the rate limit are reached too.
  const plausible = fc.record({
    model: fc.constantFrom(...world.models),
    input: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }).filter((s) => /\S/.test(s)),
    messages: fc.array(fc.record({ role: fc.constantFrom('system', 'user', 'assistant'), content: fc.string({ maxLength: 30 }) }), { minLength: 1, maxLength: 3 }),
    params: fc.record({ temperature: fc.double({ min: 0, max: 2, noNaN: true }), top_p: fc.double({ min: 0, max: 1, noNaN: true }), max_tokens: fc.integer({ min: 1, max: 256 }), stop: fc.constantFrom('\n', ['END']) }, { requiredKeys: [] }),
    metadata: fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean()), { maxKeys: 4 }),
    idempotency_key: fc.stringMatching(/^[\x20-\x7e]{1,40}$/),
    priority: fc.constantFrom('interactive', 'bulk'),
    which: fc.constantFrom('input', 'input', 'messages'),
  }, { requiredKeys: ['input', 'messages', 'which'] }).map(({ which, input, messages, ...rest }): Body => ({
    payload: JSON.stringify({ ...rest, ...(which === 'input' ? { input } : { messages }) }),
    contentType: 'application/json',
  }))
  return fc.oneof({ weight: 3, arbitrary: plausible }, { weight: 2, arbitrary: hostile })
}

/** A body for routes that need none (`cancel`, `retry`): empty, `{}`, `null`, or anything. */
export const noBody: fc.Arbitrary<Body> = fc.oneof(
  { weight: 3, arbitrary: fc.constant<Body>({ payload: undefined, contentType: undefined }) },
  { weight: 1, arbitrary: fc.constantFrom<Body>({ payload: '{}', contentType: 'application/json' }, { payload: 'null', contentType: 'application/json' }, { payload: '', contentType: 'application/json' }) },
  { weight: 2, arbitrary: body(anyField) },
)

// ---------------------------------------------------------------- headers

/** Header values of every odd kind: control characters, non-ASCII, empty, 300 characters. */
export const oddHeaderValue: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('', ' ', 'a b', '\t', 'x\u0000y', 'x\u0001', '\u007f', 'é', 'ключ', '日本', '💩', 'a'.repeat(300), 'a'.repeat(129), 'a'.repeat(128), 'a'.repeat(256), 'a'.repeat(255), '../x', 'a,b', 'a;b'),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ maxLength: 40 }),
)

const validRequestId = fc.stringMatching(/^[A-Za-z0-9._:-]{1,128}$/)
export const requestId: fc.Arbitrary<string | undefined> = fc.oneof(fc.constant(undefined), validRequestId, oddHeaderValue)
export const idempotencyKey: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.stringMatching(/^[\x20-\x7e]{1,64}$/) },
  { weight: 2, arbitrary: oddHeaderValue },
)

const remoteAddress = fc.constantFrom(undefined, '127.0.0.1', '10.1.2.3', '192.0.2.7', '::1', '2001:db8::5', '::ffff:198.51.100.4')

const extraHeaders: fc.Arbitrary<Record<string, string>> = fc.dictionary(
  fc.constantFrom('x-forwarded-for', 'forwarded', 'x-forwarded-proto', 'x-forwarded-host', 'if-none-match', 'last-event-id', 'accept', 'accept-encoding', 'origin', 'x-wp-nonce'),
  fc.oneof(oddHeaderValue, numberish, fc.constantFrom('*', 'W/"1.1"', '"1.1"', 'gzip', 'text/event-stream', '0', '999999999')),
  { maxKeys: 2 },
)

// ---------------------------------------------------------------- credentials

/** encodeURIComponent for any string: lone surrogates are sent as U+FFFD's bytes instead of throwing. */
export function pct(text: string): string {
  let out = ''
  for (const byte of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(byte)
    out += /[A-Za-z0-9\-_.!~*'()]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

const b64url = (x: string | Buffer) => Buffer.from(x).toString('base64url')

/** A JWT signed (or not) exactly as given: header and claims are taken as they are. */
function jwt(header: unknown, claims: unknown, secret: string | undefined, hash: 'sha256' | 'sha384' = 'sha256'): string {
  const head = `${b64url(typeof header === 'string' ? header : JSON.stringify(header))}.${b64url(typeof claims === 'string' ? claims : JSON.stringify(claims))}`
  return `${head}.${secret === undefined ? '' : createHmac(hash, secret).update(head).digest('base64url')}`
}

function claimsArb(nowS: number): fc.Arbitrary<Record<string, unknown>> {
  const odd = fc.oneof(numberText.map(Number), oddText, fc.constant(null), fc.constant([]), fc.constant({}))
  return fc.record({
    sub: fc.oneof(fc.constantFrom('2', 2, '0', 0, '1', '42', '-1', '1e3', 1.5, '9007199254740993', '18446744073709551616', 'abc', ''), odd),
    exp: fc.oneof(fc.constantFrom(nowS + 3600, nowS - 1, nowS, nowS + 90_000, 1e308), odd),
    iat: fc.oneof(fc.constantFrom(nowS, nowS + 120, nowS - 90_000), odd),
    nbf: fc.oneof(fc.constantFrom(nowS + 3600, nowS - 10), odd),
    sid: fc.oneof(fc.constantFrom('visitor-0123456789abcdef', 'a:b', 'x', 's'.repeat(129), 's'.repeat(128)), odd),
  }, { requiredKeys: [] })
}

/** Bearer values: forged algorithms, tampered claims, garbled segments, huge tokens. */
function forgedBearer(world: FuzzWorld): fc.Arbitrary<string> {
  const nowS = Math.floor(world.nowMs / 1000)
  const good = { sub: '2', iat: nowS, exp: nowS + 3600 }
  const valid = world.userToken.replace(/^Bearer /, '')
  const [h, p, s] = valid.split('.') as [string, string, string]
  return fc.oneof(
    claimsArb(nowS).map((c) => jwt({ alg: 'HS256', typ: 'JWT' }, c, world.tokenSecret)),
    claimsArb(nowS).map((c) => jwt({ alg: 'none', typ: 'JWT' }, c, undefined)),
    fc.constant(jwt({ alg: 'none' }, good, undefined)),
    fc.constant(jwt({ alg: 'HS384', typ: 'JWT' }, good, world.tokenSecret, 'sha384')),
    fc.constant(jwt({ alg: 'RS256', typ: 'JWT' }, good, world.tokenSecret)),
    fc.constant(jwt({ alg: 'HS256', typ: 'JWT' }, good, 'not-the-secret')),
    fc.constant(jwt({ alg: 'HS256', crit: ['x'] }, good, world.tokenSecret)),
    fc.constant(jwt('not json', good, world.tokenSecret)),
    fc.constant(jwt({ alg: 'HS256' }, 'not json', world.tokenSecret)),
    fc.constant(jwt({ alg: 'HS256' }, '[1,2]', world.tokenSecret)),
    claimsArb(nowS).map((c) => `${h}.${b64url(JSON.stringify(c))}.${s}`),
    fc.constantFrom(`${h}.${p}`, `${h}.${p}.`, `${h}..${s}`, `.${p}.${s}`, `${h}.${p}.${s}.x`, `${h}.${p}.${s.slice(1)}`, `${h}.${p}.${s}=`, valid.toUpperCase(), '', '.', '..', 'a.b.c'),
    fc.constant(jwt({ alg: 'HS256', typ: 'JWT' }, { ...good, pad: 'p'.repeat(60_000) }, world.tokenSecret)),
    fc.constant(`${'A'.repeat(40_000)}.${'B'.repeat(40_000)}.${'C'.repeat(100)}`),
    oddHeaderValue,
  )
}

function basicArb(): fc.Arbitrary<string> {
  const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64')
  return fc.oneof(
    fc.constantFrom('!!!', '====', 'YWxpY2U', 'YWxpY2U=', '', ' ', 'Og==', b64('alice'), b64(':'), b64('alice:'), b64(':pw'), b64('alice:wrong password here'), b64('admin@example.org:x'), b64('alice:t1zR ts0P Cjrw S7ey vheP aClX')),
    fc.tuple(oddText, oddText).map(([u, pw]) => b64(`${u}:${pw}`)),
    fc.uint8Array({ maxLength: 40 }).map((bytes) => b64(Buffer.from(bytes))),
    fc.constant(b64(`${'u'.repeat(5_000)}:${'p'.repeat(5_000)}`)),
    oddHeaderValue,
  )
}

function forgedCookie(world: FuzzWorld): fc.Arbitrary<string> {
  const field = fc.oneof(oddText, numberish, fc.constantFrom('admin', 'alice', '99999999999', '0', '-1', 'a'.repeat(64)))
  const value = fc.oneof(
    fc.array(field, { minLength: 0, maxLength: 6 }).map((parts) => parts.join('|')),
    fc.constantFrom(world.admin.cookie, world.alice.cookie).chain((valid) => fc.nat({ max: valid.length - 1 }).map((i) => `${valid.slice(0, i)}${valid[i] === 'a' ? 'b' : 'a'}${valid.slice(i + 1)}`)),
    fc.constantFrom(world.admin.cookie, world.alice.cookie).map((v) => v.split('|').reverse().join('|')),
  )
  const name = fc.constantFrom(world.cookieName, world.cookieName, `${world.cookieName}[x]`, `${world.cookieName.replace(/_/g, '.')}`, 'wordpress_logged_in_', 'wordpress_logged_in_0123', 'wordpress_sec_x')
  return fc.tuple(name, value, fc.boolean(), fc.constantFrom('', '; other=1', `; ${world.cookieName}=${pct(world.alice.cookie)}`, ';;;'))
    .map(([n, v, encode, tail]) => `${n}=${encode ? pct(v) : v}${tail}`)
}

export interface Credentials {
  headers: Record<string, string>
  query: Array<[string, string]>
}

const nonce = fc.oneof(fc.constantFrom('', '0', 'ffffffffff', 'cc062debb1', '63f5be0e9d'), oddHeaderValue, fc.stringMatching(/^[0-9a-f]{10}$/))

/** Who the request claims to be: real logins (so authenticated paths run), forgeries, or nobody. */
export function credentials(world: FuzzWorld): fc.Arbitrary<Credentials> {
  const cookieOf = (login: Login) => `${world.cookieName}=${pct(login.cookie)}`
  const none: Credentials = { headers: {}, query: [] }
  const wp = (login: Login) => fc.oneof(
    { weight: 3, arbitrary: fc.constant<Credentials>({ headers: { cookie: cookieOf(login), 'x-wp-nonce': login.nonce }, query: [] }) },
    { weight: 1, arbitrary: fc.constant<Credentials>({ headers: { cookie: cookieOf(login) }, query: [['_wpnonce', login.nonce]] }) },
    // _wpnonce is read before the header: a bad one beside a good header, repeated, or missing.
    { weight: 1, arbitrary: nonce.map((n): Credentials => ({ headers: { cookie: cookieOf(login), 'x-wp-nonce': login.nonce }, query: [['_wpnonce', n]] })) },
    { weight: 1, arbitrary: nonce.map((n): Credentials => ({ headers: { cookie: cookieOf(login) }, query: [['_wpnonce', login.nonce], ['_wpnonce', n]] })) },
    { weight: 1, arbitrary: nonce.map((n): Credentials => ({ headers: { cookie: cookieOf(login), 'x-wp-nonce': n }, query: [] })) },
    { weight: 1, arbitrary: fc.constant<Credentials>({ headers: { cookie: cookieOf(login) }, query: [] }) },
  )
  return fc.oneof(
    { weight: 8, arbitrary: fc.constant<Credentials>({ headers: { authorization: world.userToken }, query: [] }) },
    { weight: 4, arbitrary: fc.constant<Credentials>({ headers: { authorization: world.visitorToken }, query: [] }) },
    { weight: 6, arbitrary: wp(world.admin) },
    { weight: 3, arbitrary: wp(world.alice) },
    { weight: 2, arbitrary: fc.constant<Credentials>({ headers: { authorization: world.basic }, query: [] }) },
    { weight: 2, arbitrary: fc.constant(none) },
    { weight: 3, arbitrary: fc.tuple(fc.constantFrom('Bearer', 'bearer', 'BEARER', 'Bearer  ', 'Token'), forgedBearer(world)).map(([scheme, t]): Credentials => ({ headers: { authorization: `${scheme} ${t}` }, query: [] })) },
    { weight: 3, arbitrary: fc.tuple(fc.constantFrom('Basic', 'basic', 'Basic  '), basicArb()).map(([scheme, b]): Credentials => ({ headers: { authorization: `${scheme} ${b}` }, query: [] })) },
    { weight: 3, arbitrary: fc.tuple(forgedCookie(world), fc.option(nonce, { nil: undefined })).map(([cookie, n]): Credentials => ({ headers: { cookie, ...(n === undefined ? {} : { 'x-wp-nonce': n }) }, query: [] })) },
    { weight: 1, arbitrary: fc.tuple(forgedCookie(world), fc.constant(world.userToken)).map(([cookie, a]): Credentials => ({ headers: { cookie, authorization: a }, query: [] })) },
    { weight: 1, arbitrary: fc.oneof(oddHeaderValue, fc.constantFrom('Digest x', 'Bearer', 'Basic', 'Negotiate abc', 'Bearer a b c')).map((a): Credentials => ({ headers: { authorization: a }, query: [] })) },
  )
}

// ---------------------------------------------------------------- query strings and ids

type Pair = [string, string]

/** A query string from known and unknown keys: repeated keys, `a[]=` arrays, broken percent-encoding. */
export function query(known: Record<string, fc.Arbitrary<string>>): fc.Arbitrary<string> {
  const names = Object.keys(known)
  const knownPair: fc.Arbitrary<Pair> = names.length === 0
    ? fc.tuple(fc.constant('x'), oddText)
    : fc.constantFrom(...names).chain((name) => known[name]!.map((v): Pair => [name, v]))
  const part = fc.oneof(
    { weight: 6, arbitrary: fc.tuple(knownPair, fc.boolean()).map(([[k, v], enc]) => `${k}=${enc ? pct(v) : v.replace(/[&#\s]/g, (c) => pct(c))}`) },
    { weight: 1, arbitrary: fc.tuple(knownPair, fc.constantFrom('[]', '[0]', '[a]', '%5B%5D')).map(([[k, v], suffix]) => `${k}${suffix}=${pct(v)}`) },
    { weight: 1, arbitrary: fc.constantFrom('%', '%E0%A4%A', '%zz', '%%', '%C0%AF', '=', '&', 'a', 'a=', '=b', ';', '+', '%2B', '_wpnonce', '_wpnonce=', '_wpnonce[]=x', 'rest_route=/ai/v1/jobs', 'rest_route=') },
    { weight: 1, arbitrary: fc.tuple(oddText, oddText).map(([k, v]) => `${pct(k)}=${pct(v)}`) },
  )
  return fc.array(part, { maxLength: 5 }).map((parts) => parts.join('&'))
}

/** A path id: seeded jobs, plausible ids, and every kind of non-id. */
export function idSegment(ids: number[], plausible = true): fc.Arbitrary<string> {
  const others = fc.oneof(
    fc.constantFrom('0', '-1', '00001', '1e3', '0x10', '1.0', '+1', ' 1', '1 ', '9007199254740991', '9007199254740993', '99999999999999999', '18446744073709551616', '1'.repeat(100), '1'.repeat(101), 'abc', 'null', '%31', '%00', '%2F', '%E0%A4%A', '%', '١', '１', '💩', '..', '.'),
    fc.bigInt({ min: 10n ** 9n, max: 2n ** 70n }).map(String),
    oddText.map(pct),
  )
  return plausible && ids.length > 0
    ? fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...ids).map(String) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 3_000 }).map(String) }, { weight: 3, arbitrary: others })
    : ids.length > 0 ? fc.oneof(fc.constantFrom(...ids).map(String), others) : others
}

const STATUS = fc.oneof(fc.constantFrom('pending', 'running', 'succeeded', 'failed', 'canceled', 'PENDING', 'done', '', 'pending,failed'), oddText)
const DATE = fc.oneof(fc.constantFrom('2026-01-01', '2026-13-45', '2026-02-30', '0000-00-00', '9999-99-99', '2026-01-01T00:00:00Z', '2026-01-01T99:99:99Z', '2026-01-01T00:00:00+25:00', '2026-01-01T::..Z', '275760-09-13', '1970-01-01', '9999-12-31T23:59:59.999-14:00', '0000-01-01T00:00:00+14:00', '0001-01-01', '1000-01-01T00:00:00.123456789Z'), oddText, numberish)
const CURSOR = fc.oneof(
  fc.string({ maxLength: 40 }).map((s) => Buffer.from(s).toString('base64url')),
  fc.tuple(fc.oneof(fc.constantFrom('2026-01-01 00:00:00.000', '9999-12-31 23:59:59.999999', '0000-00-00 00:00:00', '9999-99-99 99:99:99', '2026-02-30 25:61:61.123456', '0001-01-01 00:00:00'), oddText), fc.oneof(numberText.map(Number), oddText, fc.constant(null)))
    .map((pair) => Buffer.from(JSON.stringify(pair)).toString('base64url')),
  oddText,
  fc.constant('A'.repeat(5_000)),
)

// ---------------------------------------------------------------- webhooks

type Signing = 'standard' | 'standard-stale' | 'standard-future' | 'standard-wrong-secret' | 'standard-malformed' | 'seed' | 'seed-stale' | 'seed-wrong-secret' | 'seed-malformed' | 'both' | 'other-bytes' | 'none'

function webhookBody(world: FuzzWorld): fc.Arbitrary<string | Buffer | undefined> {
  const ids = world.mutableIds
  const job = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...ids) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3_000 }) })
  return job.chain((id) => {
    const key = fc.oneof({ weight: 4, arbitrary: fc.constant(world.keys[id] ?? 'f'.repeat(64)).map(str) }, { weight: 1, arbitrary: fc.oneof(oddText.map(str), leaf, fc.constant(str('0'.repeat(64)))) })
    const jobId = fc.oneof({ weight: 4, arbitrary: fc.constant(raw(String(id))) }, { weight: 1, arbitrary: fc.oneof(numberText.map(raw), leaf) })
    const status = fc.oneof({ weight: 4, arbitrary: fc.constantFrom('succeeded', 'failed').map(str) }, { weight: 1, arbitrary: fc.oneof(fc.constantFrom('canceled', 'running', 'SUCCEEDED').map(str), leaf) })
    const usage = fc.oneof(pairs({ tokens: numberText.map(raw), ms: numberText.map(raw) }), leaf)
    const errorText = fc.oneof(fc.string({ minLength: 1, maxLength: 30 }).map(str), leaf, fc.constant(str('e'.repeat(70_000))))
    const hostile = pairs({ job_id: jobId, idempotency_key: key, status, result_json: anyField, error_text: errorText, usage, attempt: numberText.map(raw) })
      .map(render).chain(mangled)
    // What a worker would send, so that deliveries reach the job and its state.
    const plausible = fc.record({
      outcome: fc.oneof(
        fc.record({ status: fc.constant('succeeded'), result_json: fc.jsonValue({ maxDepth: 3 }) }),
        fc.record({ status: fc.constant('failed'), error_text: fc.string({ minLength: 1, maxLength: 40 }) }),
      ),
      usage: fc.record({ tokens: fc.nat(), ms: fc.nat() }, { requiredKeys: [] }),
      attempt: fc.integer({ min: 1, max: 3 }),
      key: fc.oneof({ weight: 5, arbitrary: fc.constant(world.keys[id] ?? 'f'.repeat(64)) }, { weight: 1, arbitrary: fc.constant('0'.repeat(64)) }),
    }, { requiredKeys: ['outcome', 'key'] }).map(({ outcome, key: k, ...rest }) => JSON.stringify({ job_id: id, idempotency_key: k, ...outcome, ...rest }))
    return fc.oneof({ weight: 2, arbitrary: plausible }, { weight: 3, arbitrary: hostile })
  })
}

function signed(world: FuzzWorld, payload: string | Buffer | undefined, signing: Signing, id: string): Record<string, string> {
  const bytes = payload === undefined ? Buffer.alloc(0) : Buffer.from(payload)
  const nowS = Math.floor(world.nowMs / 1000)
  const [whsec, plain] = world.webhookSecrets as [string, string]
  const standard = (secret: string, ts: number, over: Buffer = bytes) => signStandardWebhook({ secret, id, timestampSeconds: ts, body: over }) as unknown as Record<string, string>
  const seed = (secret: string, ts: number | string) => ({ 'x-ai-signature': signXAiSignature(secret, bytes), 'x-ai-timestamp': String(ts) })
  switch (signing) {
    case 'standard':
      return standard(id.length % 2 === 0 ? whsec : plain, nowS - (id.length % 100))
    case 'standard-stale':
      return standard(whsec, nowS - 121 - (id.length % 5_000))
    case 'standard-future':
      return standard(whsec, nowS + 121 + (id.length % 5_000))
    case 'standard-wrong-secret':
      return standard('whsec_' + Buffer.from('wrong secret entirely').toString('base64'), nowS)
    case 'standard-malformed': {
      const good = standard(whsec, nowS)
      const variants: Record<string, string>[] = [
        { ...good, 'webhook-timestamp': 'abc' },
        { ...good, 'webhook-timestamp': `${nowS}.5` },
        { ...good, 'webhook-timestamp': '9'.repeat(40) },
        { ...good, 'webhook-id': '' },
        { ...good, 'webhook-id': 'i'.repeat(10_000) },
        { ...good, 'webhook-signature': 'v1,' },
        { ...good, 'webhook-signature': `v2,${good['webhook-signature']!.slice(3)}` },
        { ...good, 'webhook-signature': Array.from({ length: 40 }, () => good['webhook-signature']).join(' ') },
        { ...good, 'webhook-signature': `v1,${'A'.repeat(20_000)}` },
        { ...good, 'webhook-signature': good['webhook-signature']!.replace(/[A-Za-z]/, (c) => (c === 'A' ? 'B' : 'A')) },
        { 'webhook-signature': good['webhook-signature']! },
      ]
      return variants[id.length % variants.length]!
    }
    case 'seed':
      return seed(id.length % 2 === 0 ? plain : whsec, nowS)
    case 'seed-stale':
      return seed(plain, nowS - 121 - (id.length % 5_000))
    case 'seed-wrong-secret':
      return seed('another secret', nowS)
    case 'seed-malformed': {
      const variants: Record<string, string>[] = [
        { 'x-ai-signature': signXAiSignature(plain, bytes) },
        { ...seed(plain, nowS), 'x-ai-timestamp': '' },
        { ...seed(plain, nowS), 'x-ai-timestamp': '-5' },
        { ...seed(plain, nowS), 'x-ai-signature': 'not base64!' },
        { ...seed(plain, nowS), 'x-ai-signature': 'A'.repeat(50_000) },
        { ...seed(plain, nowS), 'x-ai-signature': createHmac('sha256', plain).update(bytes).digest('hex') },
      ]
      return variants[id.length % variants.length]!
    }
    case 'both':
      return { ...standard('whsec_' + Buffer.from('wrong').toString('base64'), nowS), ...seed(plain, nowS) }
    case 'other-bytes':
      return standard(whsec, nowS, Buffer.concat([bytes, Buffer.from(' ')]))
    case 'none':
      return {}
  }
}

// ---------------------------------------------------------------- requests per route

function assemble(parts: {
  method: string
  form: Form
  path: string
  query: string
  creds: Credentials
  rid: string | undefined
  extra: Record<string, string>
  body?: Body | undefined
  headers?: Record<string, string>
  remote: string | undefined
}): FuzzRequest {
  const q = [parts.query, ...parts.creds.query.map(([k, v]) => `${k}=${pct(v)}`)].filter((s) => s !== '').join('&')
  const headers: Record<string, string> = { ...parts.extra, ...parts.creds.headers, ...parts.headers }
  if (parts.rid !== undefined) headers['x-request-id'] = parts.rid
  if (parts.body?.contentType !== undefined) headers['content-type'] = parts.body.contentType
  const req: FuzzRequest = { method: parts.method, url: routeUrl(parts.form, parts.path, q), headers }
  if (parts.body?.payload !== undefined) req.payload = parts.body.payload
  if (parts.remote !== undefined) req.remoteAddress = parts.remote
  return req
}

const common = <T>(world: FuzzWorld, rest: fc.Arbitrary<T>) =>
  fc.record({ form: FORM, creds: credentials(world), rid: requestId, extra: extraHeaders, remote: remoteAddress, rest })

const limitValue = fc.oneof(fc.constantFrom('1', '20', '100', '101', '0'), numberish)

export const ROUTES = [
  'GET /jobs/:id/events', 'POST /jobs', 'GET /jobs', 'GET /jobs/:id', 'POST /jobs/:id/cancel', 'POST /webhook',
  'GET /.well-known/jwks.json', 'GET /openapi.json', 'GET /admin/jobs', 'POST /admin/jobs/:id/retry',
  'POST /admin/jobs/:id/cancel', 'GET /admin/usage.csv', 'any route, any method',
] as const
export type Route = (typeof ROUTES)[number]

/** The requests for one public route (or for any route with any method), from what `world` holds now. */
export function routeArbitrary(world: FuzzWorld, route: Route): fc.Arbitrary<FuzzRequest> {
  const anyId = idSegment([...world.streamIds, ...world.mutableIds])
  const mutableId = idSegment(world.mutableIds)
  // Streams stay open while a job is not terminal, so only ids that are terminal for the whole
  // run, or name no job, are streamed.
  const streamId = idSegment(world.streamIds, false)
  const get = (path: fc.Arbitrary<string>, known: Record<string, fc.Arbitrary<string>>, headers: fc.Arbitrary<Record<string, string>> = fc.constant({})) =>
    common(world, fc.tuple(path, query(known), headers)).map(({ rest: [path, q, h], ...c }) =>
      assemble({ method: 'GET', form: c.form, path, query: q, creds: c.creds, rid: c.rid, extra: c.extra, headers: h, remote: c.remote }))
  const post = (path: fc.Arbitrary<string>, bodyArb: fc.Arbitrary<Body>, headers: fc.Arbitrary<Record<string, string>> = fc.constant({})) =>
    common(world, fc.tuple(path, bodyArb, headers, query({}))).map(({ rest: [path, b, h, q], ...c }) =>
      assemble({ method: 'POST', form: c.form, path, query: q, creds: c.creds, rid: c.rid, extra: c.extra, body: b, headers: h, remote: c.remote }))

  const ifNoneMatch = fc.oneof(fc.constant({}), fc.oneof(oddHeaderValue, fc.constantFrom('*', '"1.1"', 'W/"1.1"', '"1.1", "2.2"', '""')).map((v) => ({ 'if-none-match': v })))
  const lastEventId = fc.oneof(fc.constant({}), numberish.map((v) => ({ 'last-event-id': v })), oddHeaderValue.map((v) => ({ 'last-event-id': v })))

  const webhook = () => fc.record({
    form: FORM, rid: requestId, extra: extraHeaders, remote: remoteAddress,
    payload: webhookBody(world),
    contentType: fc.constantFrom<string | undefined>('application/json', 'application/json', 'text/plain', 'application/octet-stream', undefined, 'application/json; charset=latin1'),
    signing: fc.constantFrom<Signing>('standard', 'standard', 'standard', 'standard', 'standard', 'seed', 'seed', 'standard-stale', 'standard-future', 'standard-wrong-secret', 'standard-malformed', 'seed', 'seed', 'seed-stale', 'seed-wrong-secret', 'seed-malformed', 'both', 'other-bytes', 'none'),
    id: fc.stringMatching(/^msg_[A-Za-z0-9]{1,40}$/),
  }).map((w) => assemble({
    method: 'POST', form: w.form, path: '/webhook', query: '', creds: { headers: {}, query: [] }, rid: w.rid, extra: w.extra, remote: w.remote,
    body: { payload: w.payload, contentType: w.contentType }, headers: signed(world, w.payload, w.signing, w.id),
  }))

  const anyRoute = () => fc.record({
    form: FORM, creds: credentials(world), rid: requestId, extra: extraHeaders, remote: remoteAddress,
    method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'),
    path: fc.oneof(
      fc.constantFrom('/jobs', '/webhook', '/admin/jobs', '/admin/usage.csv', '/openapi.json', '/.well-known/jwks.json', '/usage', '/openai/models', '/logs', '/roles-users', '/', ''),
      anyId.map((id) => `/jobs/${id}`),
      mutableId.map((id) => `/admin/jobs/${id}/retry`),
      fc.tuple(fc.constantFrom('/jobs/', '/admin/jobs/', '/admin/', '/.well-known/'), oddText).map(([a, b]) => a + pct(b)),
    ),
    body: noBody,
    q: query({ status: STATUS, limit: limitValue }),
  }).map((r) => assemble({ method: r.method, form: r.form, path: r.path, query: r.q, creds: r.creds, rid: r.rid, extra: r.extra, body: r.body, remote: r.remote }))

  const table: Record<Route, () => fc.Arbitrary<FuzzRequest>> = {
    'POST /jobs': () => post(fc.constant('/jobs'), createJobBody(world), idempotencyKey.map((k): Record<string, string> => (k === undefined ? {} : { 'idempotency-key': k }))),
    'GET /jobs': () => get(fc.constant('/jobs'), { status: STATUS, limit: limitValue, cursor: CURSOR }),
    'GET /jobs/:id': () => get(anyId.map((id) => `/jobs/${id}`), {}, ifNoneMatch),
    'GET /jobs/:id/events': () => get(streamId.map((id) => `/jobs/${id}/events`), {}, lastEventId),
    'POST /jobs/:id/cancel': () => post(mutableId.map((id) => `/jobs/${id}/cancel`), noBody),
    'POST /webhook': webhook,
    'GET /.well-known/jwks.json': () => get(fc.constant('/.well-known/jwks.json'), { kid: oddText }),
    'GET /openapi.json': () => get(fc.constant('/openapi.json'), { format: oddText }),
    'GET /admin/jobs': () => get(fc.constant('/admin/jobs'), { status: STATUS, user_id: numberish, model: fc.oneof(fc.constantFrom(...world.models), oddText), from: DATE, to: DATE, limit: limitValue, cursor: CURSOR }),
    'POST /admin/jobs/:id/retry': () => post(mutableId.map((id) => `/admin/jobs/${id}/retry`), noBody),
    'POST /admin/jobs/:id/cancel': () => post(mutableId.map((id) => `/admin/jobs/${id}/cancel`), noBody),
    'GET /admin/usage.csv': () => get(fc.constant('/admin/usage.csv'), { from: DATE, to: DATE }),
    'any route, any method': anyRoute,
  }
  return table[route]()
}
