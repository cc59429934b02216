import { readFileSync } from 'node:fs'

/**
 * Reads wp-config.php as text. PHP is never run: the file is tokenized (comments, strings,
 * heredocs and `?>` … `<?php` spans are recognised, so a define inside a comment is not read and a
 * `//` inside a string is kept) and only `define( 'NAME', <literal> )` and `$table_prefix = <literal>;`
 * are evaluated. The literals understood are PHP strings, numbers, true/false/null and the official
 * Docker image's `getenv_docker('NAME', 'default')`.
 */

export type WpConstantValue = string | number | boolean | null

export interface WpConfig {
  constants: Record<string, WpConstantValue>
  tablePrefix?: string
}

export interface DbHost {
  host: string
  port?: number
  socket?: string
}

const NEEDED = new Set([
  'DB_NAME',
  'DB_USER',
  'DB_PASSWORD',
  'DB_HOST',
  'AUTH_KEY',
  'SECURE_AUTH_KEY',
  'LOGGED_IN_KEY',
  'NONCE_KEY',
  'AUTH_SALT',
  'SECURE_AUTH_SALT',
  'LOGGED_IN_SALT',
  'NONCE_SALT',
  'SECRET_KEY',
  'COOKIEHASH',
])

/** True for the constants the gateway reads: an unreadable value for one of these is an error. */
export function isNeededConstant(name: string): boolean {
  return NEEDED.has(name) || name.startsWith('AI_')
}

const UNDERSTOOD = 'only string literals, numbers and getenv_docker() are understood'

class UnreadableValue extends Error {}

// ---------------------------------------------------------------------------------------------
// Tokenizer

type Token =
  | { kind: 'string'; value: string; interpolates: boolean; line: number }
  | { kind: 'number'; value: number; line: number }
  | { kind: 'ident'; value: string; line: number }
  | { kind: 'variable'; value: string; line: number }
  | { kind: 'punct'; value: string; line: number }
  /** Heredocs, backtick commands and other things whose value is never understood. */
  | { kind: 'opaque'; line: number }

// Longest first, so `===` is not read as `=` `==` and `$a == 'x'` is not an assignment.
const OPERATORS = [
  '<=>', '**=', '...', '<<=', '>>=', '===', '!==', '??=', '?->',
  '==', '!=', '<>', '<=', '>=', '&&', '||', '++', '--', '+=', '-=', '*=', '/=', '.=', '%=', '&=',
  '|=', '^=', '->', '=>', '::', '<<', '>>', '??', '**', '#[',
]

const IDENT_START = /[A-Za-z_\x80-\uffff]/
const IDENT_CHAR = /[A-Za-z0-9_\x80-\uffff]/

function tokenize(text: string): Token[] {
  const tokens: Token[] = []
  let i = 0
  let line = 1
  const n = text.length

  const advanceTo = (end: number): void => {
    for (let k = i; k < end; k++) if (text.charCodeAt(k) === 10) line++
    i = end
  }

  // Text outside `<?php … ?>` is inline HTML. A fragment without any open tag is taken as PHP.
  // Short open tags (`<?`) are off in the php.ini files PHP ships, so only `<?php` and `<?=` count.
  let inPhp = !/<\?(?:php(?=\s|$)|=)/i.test(text)

  while (i < n) {
    if (!inPhp) {
      const open = /<\?(?:php(?=\s|$)|=)/gi
      open.lastIndex = i
      const m = open.exec(text)
      if (!m) break
      advanceTo(m.index + m[0].length)
      inPhp = true
      continue
    }

    const c = text[i]!
    const next = text[i + 1]

    if (c === '\n') {
      line++
      i++
      continue
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') {
      i++
      continue
    }

    // `?>` leaves PHP (and also ends a one-line comment, handled below).
    if (c === '?' && next === '>') {
      advanceTo(i + 2)
      inPhp = false
      continue
    }

    // One-line comments end at a newline or at `?>`. `#[` is a PHP 8 attribute, not a comment.
    if ((c === '/' && next === '/') || (c === '#' && next !== '[')) {
      let k = i
      while (k < n && text[k] !== '\n' && !(text[k] === '?' && text[k + 1] === '>')) k++
      advanceTo(k)
      continue
    }
    if (c === '/' && next === '*') {
      const end = text.indexOf('*/', i + 2)
      // PHP only warns about an unterminated comment; the rest of the file is comment.
      advanceTo(end < 0 ? n : end + 2)
      continue
    }

    const startLine = line

    // b'…' and b"…" are the same strings as '…' and "…".
    if ((c === 'b' || c === 'B') && (next === "'" || next === '"') && !IDENT_CHAR.test(text[i - 1] ?? ' ')) {
      i++
      continue
    }

    if (c === "'") {
      let value = ''
      let k = i + 1
      for (;;) {
        if (k >= n) throw new Error(`wp-config.php: unterminated string starting on line ${startLine}`)
        const ch = text[k]!
        if (ch === '\\' && (text[k + 1] === '\\' || text[k + 1] === "'")) {
          value += text[k + 1]
          k += 2
        } else if (ch === "'") {
          k++
          break
        } else {
          value += ch
          k++
        }
      }
      advanceTo(k)
      tokens.push({ kind: 'string', value, interpolates: false, line: startLine })
      continue
    }

    if (c === '"') {
      const { value, interpolates, end } = readDoubleQuoted(text, i + 1, '"', startLine)
      advanceTo(end)
      tokens.push({ kind: 'string', value, interpolates, line: startLine })
      continue
    }

    if (c === '`') {
      const { end } = readDoubleQuoted(text, i + 1, '`', startLine)
      advanceTo(end)
      tokens.push({ kind: 'opaque', line: startLine })
      continue
    }

    // Heredoc <<<ID / <<<"ID" and nowdoc <<<'ID'. Their value is never needed, but their body
    // must not be scanned for defines or comments.
    if (c === '<' && text.startsWith('<<<', i)) {
      const m = /^<<<[ \t]*(["']?)([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)\1\r?\n/.exec(text.slice(i, i + 300))
      if (m) {
        const id = m[2]!
        const closing = new RegExp(`\\n[ \\t]*${id}(?![A-Za-z0-9_\\x80-\\uffff])`, 'g')
        closing.lastIndex = i + m[0].length - 1
        const found = closing.exec(text)
        if (!found) throw new Error(`wp-config.php: unterminated heredoc starting on line ${startLine}`)
        advanceTo(found.index + found[0].length)
        tokens.push({ kind: 'opaque', line: startLine })
        continue
      }
    }

    if (c === '$' && next !== undefined && IDENT_START.test(next)) {
      let k = i + 1
      while (k < n && IDENT_CHAR.test(text[k]!)) k++
      tokens.push({ kind: 'variable', value: text.slice(i + 1, k), line })
      i = k
      continue
    }

    if (/[0-9]/.test(c) || (c === '.' && next !== undefined && /[0-9]/.test(next))) {
      const m = /^(?:0[xX][0-9a-fA-F]+(?:_[0-9a-fA-F]+)*|0[bB][01]+(?:_[01]+)*|0[oO][0-7]+(?:_[0-7]+)*|(?:[0-9]+(?:_[0-9]+)*)?\.?[0-9]*(?:_[0-9]+)*(?:[eE][+-]?[0-9]+(?:_[0-9]+)*)?)/.exec(
        text.slice(i, i + 200),
      )
      const raw = m![0]
      tokens.push({ kind: 'number', value: phpNumber(raw), line })
      i += raw.length
      continue
    }

    if (IDENT_START.test(c) || c === '\\') {
      // Names may be namespace-qualified: `\define`, `\true`.
      let k = i
      while (k < n && (IDENT_CHAR.test(text[k]!) || text[k] === '\\')) k++
      if (k > i) {
        tokens.push({ kind: 'ident', value: text.slice(i, k), line })
        i = k
        continue
      }
    }

    const op = OPERATORS.find((o) => text.startsWith(o, i))
    const value = op ?? c
    tokens.push({ kind: 'punct', value, line })
    i += value.length
  }
  return tokens
}

function phpNumber(raw: string): number {
  const s = raw.replace(/_/g, '')
  if (/^0[xX]/.test(s)) return parseInt(s.slice(2), 16)
  if (/^0[bB]/.test(s)) return parseInt(s.slice(2), 2)
  if (/^0[oO]/.test(s)) return parseInt(s.slice(2), 8)
  // A leading zero on an integer is octal in PHP (0755).
  if (/^0[0-7]+$/.test(s)) return parseInt(s.slice(1), 8)
  return Number(s)
}

const SIMPLE_ESCAPES: Record<string, string> = {
  n: '\n',
  t: '\t',
  r: '\r',
  v: '\v',
  e: '\x1b',
  f: '\f',
  '\\': '\\',
  $: '$',
}

/** Reads a double-quoted (or backtick) PHP string body starting after the opening quote. */
function readDoubleQuoted(
  text: string,
  start: number,
  quote: '"' | '`',
  startLine: number,
): { value: string; interpolates: boolean; end: number } {
  let value = ''
  let interpolates = false
  let k = start
  for (;;) {
    if (k >= text.length) throw new Error(`wp-config.php: unterminated string starting on line ${startLine}`)
    const ch = text[k]!
    if (ch === quote) return { value, interpolates, end: k + 1 }
    if (ch === '\\') {
      const e = text[k + 1]
      if (e === undefined) {
        k++
        continue
      }
      if (e === quote) {
        value += e
        k += 2
        continue
      }
      const simple = SIMPLE_ESCAPES[e]
      if (simple !== undefined) {
        value += simple
        k += 2
        continue
      }
      const oct = /^[0-7]{1,3}/.exec(text.slice(k + 1, k + 4))
      if (oct) {
        value += String.fromCharCode(parseInt(oct[0], 8) & 0xff)
        k += 1 + oct[0].length
        continue
      }
      const hex = /^x([0-9A-Fa-f]{1,2})/.exec(text.slice(k + 1, k + 4))
      if (hex) {
        value += String.fromCharCode(parseInt(hex[1]!, 16))
        k += 1 + hex[0].length
        continue
      }
      const uni = /^u\{([0-9A-Fa-f]+)\}/.exec(text.slice(k + 1, k + 12))
      if (uni) {
        value += String.fromCodePoint(parseInt(uni[1]!, 16))
        k += 1 + uni[0].length
        continue
      }
      // PHP keeps an unknown escape as written, backslash included.
      value += ch
      k++
      continue
    }
    // "$name", "{$expr}" and "${name}" interpolate; a lone "$" is literal.
    if ((ch === '$' && (IDENT_START.test(text[k + 1] ?? ' ') || text[k + 1] === '{')) || (ch === '{' && text[k + 1] === '$')) {
      interpolates = true
    }
    value += ch
    k++
  }
}

// ---------------------------------------------------------------------------------------------
// Evaluation of the few expressions understood

type Env = Record<string, string | undefined>

function isPunct(t: Token | undefined, value: string): boolean {
  return t?.kind === 'punct' && t.value === value
}

function literal(tokens: Token[]): WpConstantValue | undefined {
  if (tokens.length === 1) {
    const t = tokens[0]!
    if (t.kind === 'string') {
      if (t.interpolates) throw new UnreadableValue('a double-quoted string that interpolates a $variable is not understood; ' + UNDERSTOOD)
      return t.value
    }
    if (t.kind === 'number') return t.value
    if (t.kind === 'ident') {
      const name = t.value.replace(/^\\/, '').toLowerCase()
      if (name === 'true') return true
      if (name === 'false') return false
      if (name === 'null') return null
    }
    return undefined
  }
  const [sign, number] = tokens
  if (tokens.length === 2 && (isPunct(sign, '-') || isPunct(sign, '+')) && number?.kind === 'number') {
    return isPunct(sign, '-') ? -number.value : number.value
  }
  return undefined
}

/** Splits a token list on top-level commas. */
function splitArgs(tokens: Token[]): Token[][] {
  const args: Token[][] = [[]]
  let depth = 0
  for (const t of tokens) {
    if (t.kind === 'punct') {
      if (t.value === '(' || t.value === '[' || t.value === '{' || t.value === '#[') depth++
      else if (t.value === ')' || t.value === ']' || t.value === '}') depth--
      else if (t.value === ',' && depth === 0) {
        args.push([])
        continue
      }
    }
    args[args.length - 1]!.push(t)
  }
  return args
}

function stripParens(tokens: Token[]): Token[] {
  while (
    tokens.length >= 2 &&
    isPunct(tokens[0], '(') &&
    isPunct(tokens[tokens.length - 1], ')') &&
    closingParen(tokens, 0) === tokens.length - 1
  ) {
    tokens = tokens.slice(1, -1)
  }
  return tokens
}

function closingParen(tokens: Token[], open: number): number {
  let depth = 0
  for (let k = open; k < tokens.length; k++) {
    const t = tokens[k]!
    if (t.kind !== 'punct') continue
    if (t.value === '(' || t.value === '[' || t.value === '{' || t.value === '#[') depth++
    else if (t.value === ')' || t.value === ']' || t.value === '}') {
      depth--
      if (depth === 0) return k
    }
  }
  return -1
}

/**
 * The official image's wp-config-docker.php:
 *   if ($fileEnv = getenv($env . '_FILE')) return rtrim(file_get_contents($fileEnv), "\r\n");
 *   else if (($val = getenv($env)) !== false) return $val;
 *   else return $default;
 * So NAME_FILE wins over NAME, an empty NAME_FILE is ignored, and an empty NAME is a value.
 */
function getenvDocker(args: Token[][], env: Env): WpConstantValue {
  if (args.length !== 2) throw new UnreadableValue(UNDERSTOOD)
  const name = literal(stripParens(args[0]!))
  const fallback = literal(stripParens(args[1]!))
  if (typeof name !== 'string' || fallback === undefined) throw new UnreadableValue(UNDERSTOOD)
  const file = env[`${name}_FILE`]
  if (file) {
    let content: string
    try {
      content = readFileSync(file, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
      throw new UnreadableValue(`getenv_docker('${name}'): cannot read ${name}_FILE ${file}: ${code}`)
    }
    return content.replace(/[\r\n]+$/, '')
  }
  const value = env[name]
  return value !== undefined ? value : fallback
}

function evaluate(expr: Token[], env: Env): WpConstantValue {
  const tokens = stripParens(expr)
  const value = literal(tokens)
  if (value !== undefined) return value
  const head = tokens[0]
  if (
    head?.kind === 'ident' &&
    head.value.replace(/^\\/, '').toLowerCase() === 'getenv_docker' &&
    isPunct(tokens[1], '(') &&
    closingParen(tokens, 1) === tokens.length - 1
  ) {
    return getenvDocker(splitArgs(tokens.slice(2, -1)), env)
  }
  throw new UnreadableValue(UNDERSTOOD)
}

function unreadable(name: string, err: unknown): Error {
  // The message names the constant and never quotes its expression, which may hold a secret.
  return new Error(`wp-config.php: cannot read the value of ${name} (${(err as Error).message})`)
}

// ---------------------------------------------------------------------------------------------

/** Tokens before which `define` / `$table_prefix` is not the statement we are looking for. */
function isMemberAccess(t: Token | undefined): boolean {
  return t?.kind === 'punct' && (t.value === '->' || t.value === '?->' || t.value === '::')
}

/**
 * Reads the defines and `$table_prefix` of a wp-config.php. The first define of a name wins, as in
 * PHP (a second define only warns); the last `$table_prefix` assignment wins. A needed constant
 * (see isNeededConstant) or `$table_prefix` whose value is not understood throws an Error naming
 * it; any other constant whose value is not understood is left out.
 */
export function parseWpConfig(text: string, env: Env): WpConfig {
  const tokens = tokenize(text.replace(/^\uFEFF/, ''))
  const constants = new Map<string, WpConstantValue>()
  let tablePrefix: string | undefined

  for (let k = 0; k < tokens.length; k++) {
    const t = tokens[k]!
    const prev = tokens[k - 1]

    if (
      t.kind === 'ident' &&
      t.value.replace(/^\\/, '').toLowerCase() === 'define' &&
      isPunct(tokens[k + 1], '(') &&
      !isMemberAccess(prev) &&
      !(prev?.kind === 'ident' && /^(function|new|const)$/i.test(prev.value))
    ) {
      const close = closingParen(tokens, k + 1)
      if (close < 0) break
      const args = splitArgs(tokens.slice(k + 2, close))
      k = close
      const nameTokens = stripParens(args[0] ?? [])
      const nameToken = nameTokens.length === 1 ? nameTokens[0] : undefined
      // A name that is not a plain string literal cannot be known without running PHP.
      if (nameToken?.kind !== 'string' || nameToken.interpolates) continue
      const name = nameToken.value
      if (constants.has(name)) continue
      const valueTokens = args[1]
      const needed = isNeededConstant(name)
      try {
        if (!valueTokens || valueTokens.length === 0) throw new UnreadableValue(UNDERSTOOD)
        constants.set(name, evaluate(valueTokens, env))
      } catch (err) {
        if (!(err instanceof UnreadableValue)) throw err
        if (needed) throw unreadable(name, err)
      }
      continue
    }

    if (
      t.kind === 'variable' &&
      t.value === 'table_prefix' &&
      isPunct(tokens[k + 1], '=') &&
      !isMemberAccess(prev) &&
      !isPunct(prev, '$')
    ) {
      let end = k + 2
      let depth = 0
      for (; end < tokens.length; end++) {
        const e = tokens[end]!
        if (e.kind !== 'punct') continue
        if (e.value === '(' || e.value === '[' || e.value === '{') depth++
        else if (e.value === ')' || e.value === ']' || e.value === '}') depth--
        else if (e.value === ';' && depth === 0) break
      }
      try {
        const value = evaluate(tokens.slice(k + 2, end), env)
        if (typeof value !== 'string') throw new UnreadableValue('$table_prefix must be a string')
        tablePrefix = value
      } catch (err) {
        if (!(err instanceof UnreadableValue)) throw err
        throw unreadable('$table_prefix', err)
      }
      k = end
    }
  }

  const result: WpConfig = { constants: Object.fromEntries(constants) }
  if (tablePrefix !== undefined) result.tablePrefix = tablePrefix
  return result
}

/**
 * Splits DB_HOST the way WordPress's wpdb::parse_db_host() does: `host`, `host:port`,
 * `host:/socket/path`, `:/socket/path`, `[::1]:3306` or a bare IPv6 address. An empty host (only a
 * socket) is returned as `localhost`. Throws when the port is not a number from 1 to 65535.
 */
export function parseDbHost(value: string): DbHost {
  let rest = value.trim()
  let socket: string | undefined
  // WordPress peels the socket off at the first ':/'.
  const socketAt = rest.indexOf(':/')
  if (socketAt >= 0) {
    socket = rest.slice(socketAt + 1)
    rest = rest.slice(0, socketAt)
  }

  let host: string
  let portText: string | undefined
  const colons = rest.split(':').length - 1
  if (rest.startsWith('[')) {
    const m = /^\[([0-9A-Fa-f:.]+)\](?::(.*))?$/.exec(rest)
    if (!m) throw new Error(`DB_HOST: cannot read the host "${value}"`)
    host = m[1]!
    portText = m[2]
  } else if (colons > 1) {
    // Two or more colons: a bare IPv6 address, which cannot carry a port without brackets.
    if (!/^[0-9A-Fa-f:.]+$/.test(rest)) throw new Error(`DB_HOST: cannot read the host "${value}"`)
    host = rest
  } else {
    const at = rest.indexOf(':')
    host = at >= 0 ? rest.slice(0, at) : rest
    portText = at >= 0 ? rest.slice(at + 1) : undefined
  }

  const result: DbHost = { host: host || 'localhost' }
  if (portText !== undefined && portText !== '') {
    const port = /^[0-9]+$/.test(portText) ? Number(portText) : NaN
    if (!(port >= 1 && port <= 65535)) throw new Error(`DB_HOST: the port must be a number from 1 to 65535, not "${portText}"`)
    result.port = port
  }
  if (socket !== undefined) result.socket = socket
  return result
}
