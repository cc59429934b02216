/**
 * A strict reader for PHP's serialize() format, for the values WordPress keeps in user meta and
 * options (`session_tokens`, `_application_passwords`, `wp_capabilities`, `wp_user_roles`).
 *
 * It works on bytes because PHP's string lengths count bytes, not characters: `s:2:"é";`.
 * Only plain data is read (N, b, i, d, s, a). Objects (O, C), enums (E) and references (r, R)
 * are refused, never instantiated: there is no class to build here, and refusing them means a
 * crafted meta value can never smuggle behaviour in.
 *
 * PHP arrays become a `PhpArray`: a `Map` in insertion order (PHP arrays are ordered), keyed by
 * `number` for integer keys and `string` otherwise. Use `phpArrayGet()` and `isPhpArray()` to
 * read them.
 */

export type PhpKey = number | string
/** PHP integers beyond JavaScript's safe range come back as `bigint`. */
export type PhpValue = null | boolean | number | bigint | string | PhpArray
export type PhpArray = Map<PhpKey, PhpValue>

export class PhpUnserializeError extends Error {
  constructor(message: string, readonly offset: number) {
    super(`${message} at byte ${offset}`)
    this.name = 'PhpUnserializeError'
  }
}

// PHP's default `unserialize_max_depth` is 4096, deeper than a JavaScript stack safely recurses;
// WordPress's own values nest three levels at most.
const MAX_DEPTH = 512
const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n
const DIGITS = /^[0-9]+$/
const SIGNED_INT = /^[+-]?[0-9]+$/
// PHP's re2c grammar for `d:`: (iv | nv | nvexp) with an optional sign, or NAN / INF / -INF.
const FLOAT = /^[+-]?([0-9]+|[0-9]*\.[0-9]+|[0-9]+\.[0-9]*)([eE][+-]?[0-9]+)?$/
// A string key PHP's symbol table turns into an integer key: canonical decimal, no "-0".
const CANONICAL_INT = /^(0|-?[1-9][0-9]*)$/
const utf8 = new TextDecoder('utf-8')

class Reader {
  pos = 0
  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length
  }

  fail(message: string): never {
    throw new PhpUnserializeError(message, this.pos)
  }

  peek(): number {
    if (this.done) this.fail('unexpected end of input')
    return this.buf[this.pos]!
  }

  expect(text: string): void {
    for (let i = 0; i < text.length; i++) {
      if (this.peek() !== text.charCodeAt(i)) this.fail(`expected "${text}"`)
      this.pos++
    }
  }

  /** Reads up to (and consumes) `stop`, returning the ASCII text before it. */
  until(stop: string): string {
    const end = this.buf.indexOf(stop.charCodeAt(0), this.pos)
    if (end < 0) this.fail(`missing "${stop}"`)
    const text = this.buf.toString('latin1', this.pos, end)
    this.pos = end + 1
    return text
  }

  bytes(length: number): Buffer {
    if (this.pos + length > this.buf.length) this.fail('string runs past the end of input')
    const out = this.buf.subarray(this.pos, this.pos + length)
    this.pos += length
    return out
  }
}

function toInteger(text: string, reader: Reader): number | bigint {
  if (!SIGNED_INT.test(text)) reader.fail(`bad integer "${text}"`)
  const big = BigInt(text)
  // PHP 8 refuses integers that overflow its 64-bit int rather than wrapping them.
  if (big < INT64_MIN || big > INT64_MAX) reader.fail('integer out of range')
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big
}

function toFloat(text: string, reader: Reader): number {
  if (text === 'NAN') return Number.NaN
  if (text === 'INF') return Number.POSITIVE_INFINITY
  if (text === '-INF') return Number.NEGATIVE_INFINITY
  if (!FLOAT.test(text)) reader.fail(`bad float "${text}"`)
  return Number(text)
}

function readLength(reader: Reader): number {
  const text = reader.until(':')
  if (!DIGITS.test(text)) reader.fail(`bad length "${text}"`)
  const n = Number(text)
  if (!Number.isSafeInteger(n)) reader.fail('length out of range')
  return n
}

function readString(reader: Reader): string {
  const length = readLength(reader)
  reader.expect('"')
  const bytes = reader.bytes(length)
  reader.expect('";')
  return utf8.decode(bytes)
}

function readKey(reader: Reader): PhpKey {
  const type = reader.peek()
  if (type === 0x69 /* i */) {
    reader.pos++
    reader.expect(':')
    const key = toInteger(reader.until(';'), reader)
    // Keys past 2^53 cannot be Map keys that compare equal to a number; keep their digits.
    return typeof key === 'bigint' ? key.toString() : key
  }
  if (type === 0x73 /* s */) {
    reader.pos++
    reader.expect(':')
    const key = readString(reader)
    // PHP stores "5" as the integer key 5 (zend_symtable_update), so a["5"] and a[5] are one.
    if (CANONICAL_INT.test(key)) {
      const n = Number(key)
      if (Number.isSafeInteger(n)) return n
    }
    return key
  }
  return reader.fail('array keys must be integers or strings')
}

function readArray(reader: Reader, depth: number): PhpArray {
  const count = readLength(reader)
  reader.expect('{')
  const out: PhpArray = new Map()
  for (let i = 0; i < count; i++) {
    const key = readKey(reader)
    out.set(key, readValue(reader, depth + 1))
  }
  reader.expect('}')
  return out
}

function readValue(reader: Reader, depth: number): PhpValue {
  if (depth > MAX_DEPTH) reader.fail('nested too deeply')
  const type = String.fromCharCode(reader.peek())
  reader.pos++
  if (type === 'N') {
    reader.expect(';')
    return null
  }
  reader.expect(':')
  switch (type) {
    case 'b': {
      const text = reader.until(';')
      if (text !== '0' && text !== '1') reader.fail(`bad boolean "${text}"`)
      return text === '1'
    }
    case 'i':
      return toInteger(reader.until(';'), reader)
    case 'd':
      return toFloat(reader.until(';'), reader)
    case 's':
      return readString(reader)
    case 'a':
      return readArray(reader, depth)
    case 'O':
    case 'C':
    case 'E':
      return reader.fail('objects and enums are refused')
    case 'r':
    case 'R':
      return reader.fail('references are refused')
    default:
      return reader.fail(`unknown type "${type}"`)
  }
}

/**
 * Parses one serialized PHP value. Throws `PhpUnserializeError` on anything malformed, on
 * objects, enums and references, and on bytes left after the value (PHP itself ignores
 * trailing bytes, with a warning since 8.3; refusing them is stricter on purpose).
 */
export function unserialize(input: Buffer | string): PhpValue {
  const reader = new Reader(typeof input === 'string' ? Buffer.from(input, 'utf8') : input)
  const value = readValue(reader, 0)
  if (!reader.done) reader.fail('trailing bytes after the value')
  return value
}

// PHP's trim() default character list: " \t\n\r\0\x0B".
function phpTrim(text: string): string {
  return text.replace(/^[ \t\n\r\0\x0B]+|[ \t\n\r\0\x0B]+$/g, '')
}

/** WordPress's is_serialized($data, strict = true): a cheap shape test, not a parse. */
export function isSerialized(data: string): boolean {
  const text = phpTrim(data)
  if (text === 'N;') return true
  if (text.length < 4 || text[1] !== ':') return false
  const last = text[text.length - 1]
  if (last !== ';' && last !== '}') return false
  const token = text[0]!
  switch (token) {
    case 's':
      if (text[text.length - 2] !== '"') return false
      return /^s:[0-9]+:/s.test(text)
    case 'a':
    case 'O':
    case 'E':
      return new RegExp(`^${token}:[0-9]+:`, 's').test(text)
    case 'b':
    case 'i':
    case 'd':
      return new RegExp(`^${token}:[0-9.E+-]+;$`).test(text)
    default:
      return false
  }
}

/**
 * WordPress's maybe_unserialize(): text that looks serialized is parsed (after trim, as WordPress
 * does); anything else is returned as is. Where WordPress's `@unserialize()` would fail it
 * returns `false`, and so does this, for refused objects and references too; callers then see
 * what WordPress code sees (for example `! is_array( $sessions )`).
 */
export function maybeUnserialize(text: string): PhpValue {
  if (!isSerialized(text)) return text
  try {
    return unserialize(phpTrim(text))
  } catch (err) {
    if (err instanceof PhpUnserializeError) return false
    throw err
  }
}

export function isPhpArray(value: unknown): value is PhpArray {
  return value instanceof Map
}

/** `$array[$key]` with PHP's key coercion: the string "5" and the number 5 name one entry. */
export function phpArrayGet(array: PhpArray, key: PhpKey): PhpValue | undefined {
  if (typeof key === 'string' && CANONICAL_INT.test(key)) {
    const n = Number(key)
    if (Number.isSafeInteger(n)) return array.get(n)
  }
  return array.get(key)
}

/** PHP's empty(): false, 0, 0.0, "", "0", null and the empty array are empty. */
export function phpEmpty(value: PhpValue | undefined): boolean {
  if (value === undefined || value === null || value === false) return true
  if (typeof value === 'number') return value === 0
  if (typeof value === 'bigint') return value === 0n
  if (typeof value === 'string') return value === '' || value === '0'
  if (value instanceof Map) return value.size === 0
  return false
}
