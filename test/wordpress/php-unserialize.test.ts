import { describe, expect, it } from 'vitest'
import {
  isSerialized, maybeUnserialize, phpArrayGet, phpEmpty, PhpUnserializeError, unserialize, type PhpArray,
} from '../../src/wordpress/php-unserialize.js'

describe('unserialize', () => {
  it('reads scalars', () => {
    expect(unserialize('N;')).toBeNull()
    expect(unserialize('b:1;')).toBe(true)
    expect(unserialize('b:0;')).toBe(false)
    expect(unserialize('i:-42;')).toBe(-42)
    expect(unserialize('i:+7;')).toBe(7)
    expect(unserialize('d:0.5;')).toBe(0.5)
    expect(unserialize('d:-1.5E+25;')).toBe(-1.5e25)
    expect(unserialize('d:INF;')).toBe(Number.POSITIVE_INFINITY)
    expect(unserialize('d:-INF;')).toBe(Number.NEGATIVE_INFINITY)
    expect(unserialize('d:NAN;')).toBeNaN()
    expect(unserialize('s:0:"";')).toBe('')
  })

  it('keeps 64-bit integers beyond 2^53 exact as bigint and refuses overflow', () => {
    expect(unserialize('i:9223372036854775807;')).toBe(9223372036854775807n)
    expect(() => unserialize('i:9223372036854775808;')).toThrow(PhpUnserializeError)
  })

  it('counts string lengths in UTF-8 bytes', () => {
    expect(unserialize('s:2:"é";')).toBe('é')
    expect(unserialize('s:4:"😀";')).toBe('😀')
    expect(unserialize(Buffer.from('s:6:"日本";', 'utf8'))).toBe('日本')
    // Character counts instead of byte counts must not parse.
    expect(() => unserialize('s:1:"é";')).toThrow(PhpUnserializeError)
    expect(() => unserialize('s:2:"日本";')).toThrow(PhpUnserializeError)
  })

  it('reads a string containing quotes and semicolons by its length', () => {
    expect(unserialize('s:5:"a";b"";')).toBe('a";b"')
  })

  it('reads nested arrays with numeric and string keys, in order', () => {
    const value = unserialize('a:3:{i:0;s:1:"x";s:1:"k";a:2:{i:5;b:1;s:3:"sub";N;}i:-3;d:1.5;}') as PhpArray
    expect([...value.keys()]).toEqual([0, 'k', -3])
    expect(value.get(0)).toBe('x')
    const inner = value.get('k') as PhpArray
    expect(inner.get(5)).toBe(true)
    expect(inner.get('sub')).toBeNull()
    expect(value.get(-3)).toBe(1.5)
  })

  it('turns canonical numeric string keys into integer keys, as PHP arrays do', () => {
    const value = unserialize('a:2:{s:1:"5";s:1:"a";s:2:"05";s:1:"b";}') as PhpArray
    expect(value.get(5)).toBe('a')
    expect(value.get('05')).toBe('b')
    expect(phpArrayGet(value, '5')).toBe('a')
  })

  it('reads a real session_tokens value', () => {
    const sessions = unserialize('a:1:{s:64:"8eafdb28ca4af1c563cadfed8d61a7a76c370377ed918d3832ee38b28fb0e320";a:2:{s:10:"expiration";i:1924992000;s:5:"login";i:1795914158;}}') as PhpArray
    const session = sessions.get('8eafdb28ca4af1c563cadfed8d61a7a76c370377ed918d3832ee38b28fb0e320') as PhpArray
    expect(session.get('expiration')).toBe(1924992000)
  })

  it.each([
    ['an object', 'O:8:"stdClass":1:{s:1:"a";i:1;}'],
    ['a custom-serialized object', 'C:11:"ArrayObject":21:{x:i:0;a:0:{};m:a:0:{}}'],
    ['an enum', 'E:7:"Foo:Bar";'],
    ['an object inside an array', 'a:1:{i:0;O:8:"stdClass":0:{}}'],
    ['a reference', 'a:2:{i:0;s:1:"a";i:1;R:2;}'],
    ['an object reference', 'a:2:{i:0;s:1:"a";i:1;r:2;}'],
  ])('refuses %s', (_name, input) => {
    expect(() => unserialize(input)).toThrow(PhpUnserializeError)
  })

  it.each([
    ['truncated string', 's:5:"abc'],
    ['truncated array', 'a:2:{i:0;s:1:"a";'],
    ['missing array close', 'a:1:{i:0;i:1;'],
    ['fewer elements than counted', 'a:2:{i:0;i:1;}'],
    ['missing semicolon', 'i:5'],
    ['empty input', ''],
    ['trailing garbage', 'i:5;x'],
    ['a second value', 'N;N;'],
    ['bad boolean', 'b:2;'],
    ['negative length', 's:-1:"";'],
    ['float key', 'a:1:{d:1.5;i:1;}'],
    ['array key', 'a:1:{a:0:{}i:1;}'],
    ['bad float', 'd:1.2.3;'],
    ['unknown type', 'x:1;'],
  ])('refuses %s', (_name, input) => {
    expect(() => unserialize(input)).toThrow(PhpUnserializeError)
  })

  it('refuses nesting deeper than PHP allows without overflowing the stack', () => {
    const deep = 'a:1:{i:0;'.repeat(5000) + 'N;' + '}'.repeat(5000)
    expect(() => unserialize(deep)).toThrow(/nested too deeply/)
  })
})

describe('isSerialized / maybeUnserialize (WordPress semantics)', () => {
  it('passes text that does not look serialized through unchanged', () => {
    expect(maybeUnserialize('admin')).toBe('admin')
    expect(maybeUnserialize('http://127.0.0.1:8080')).toBe('http://127.0.0.1:8080')
    expect(maybeUnserialize('i:5')).toBe('i:5')
    expect(maybeUnserialize('')).toBe('')
  })

  it('unserializes what looks serialized, after trimming like WordPress', () => {
    expect(maybeUnserialize('  i:5;\n')).toBe(5)
    expect(maybeUnserialize('N;')).toBeNull()
    expect((maybeUnserialize('a:1:{s:13:"administrator";b:1;}') as PhpArray).get('administrator')).toBe(true)
  })

  it('answers false where WordPress\'s @unserialize() would fail or we refuse', () => {
    expect(maybeUnserialize('a:1:{i:0;s:5:"abc";}')).toBe(false)
    expect(maybeUnserialize('O:8:"stdClass":0:{}')).toBe(false)
  })

  it('applies is_serialized\'s strict shape test', () => {
    expect(isSerialized('s:3:"abc";')).toBe(true)
    expect(isSerialized('s:3:"abc"')).toBe(false)
    expect(isSerialized('b:1;')).toBe(true)
    expect(isSerialized('d:1.5E+3;')).toBe(true)
    expect(isSerialized('a:0:{}')).toBe(true)
    expect(isSerialized('x:0:{}')).toBe(false)
  })
})

describe('phpEmpty', () => {
  it('follows PHP\'s empty()', () => {
    for (const v of [null, false, 0, '', '0', new Map(), undefined, 0n]) expect(phpEmpty(v)).toBe(true)
    for (const v of [true, 1, 'a', '00', ' ', new Map([[0, null]]), 0.1]) expect(phpEmpty(v)).toBe(false)
  })
})
