import { describe, expect, it } from 'vitest'
import { SseParser, type SseEvent } from '../../src/providers/sse.js'
import { anthropicStream, cutAt, openAiStream, randomCuts, seeded } from './streams.js'

function parseAll(pieces: (string | Uint8Array)[]): SseEvent[] {
  const parser = new SseParser()
  return pieces.flatMap((piece) => parser.push(piece))
}

describe('SseParser', () => {
  it('reads events, event names, comments and multi-line data', () => {
    const events = parseAll([': a comment the server sends as a heartbeat\n', 'event: first\ndata: one\n\n', 'data: two\ndata:  three\n\n', 'data\n\n', 'id: 7\nretry: 10\ndata:x\n\n'])
    expect(events).toEqual([
      { event: 'first', data: 'one' },
      // one space after the colon is dropped, a second is kept; data lines join with \n
      { event: 'message', data: 'two\n three' },
      { event: 'message', data: '' },
      { event: 'message', data: 'x' },
    ])
  })

  it('ends lines on CRLF, LF and CR alike, a CRLF split between chunks included', () => {
    expect(parseAll(['data: a\r\n\r\ndata: b\r\rdata: c\n\n'])).toEqual([
      { event: 'message', data: 'a' }, { event: 'message', data: 'b' }, { event: 'message', data: 'c' },
    ])
    expect(parseAll(['data: a\r', '\n', '\r', '\ndata: b\r', '\r'])).toEqual([{ event: 'message', data: 'a' }, { event: 'message', data: 'b' }])
    // a CRLF is one line end, never an end and a blank line: these lines are one event
    expect(parseAll(['data: a\r\ndata: b\r\n\r\n'])).toEqual([{ event: 'message', data: 'a\nb' }])
    expect(parseAll(['data: a\r', '\ndata: b\r', '\n\r', '\n'])).toEqual([{ event: 'message', data: 'a\nb' }])
  })

  it('dispatches nothing for an event without data, or one the stream never finished', () => {
    expect(parseAll(['event: lonely\n\n', ': only a comment\n\n', 'data: never finished\n'])).toEqual([])
  })

  it('drops a leading byte order mark', () => {
    expect(parseAll([Buffer.from('\uFEFFdata: x\n\n', 'utf8')])).toEqual([{ event: 'message', data: 'x' }])
  })

  const recorded = [
    ['an OpenAI stream (LF)', openAiStream(['Héllo', ' wörld', ' 👋🏽', ' 日本語'])],
    ['an OpenAI stream (CRLF)', openAiStream(['Héllo', ' wörld', ' 👋🏽'], { eol: '\r\n' })],
    ['an Anthropic stream', anthropicStream(['Ça', ' va', ' 🙂'])],
  ] as const

  it.each(recorded)('%s reads the same whatever byte it is cut at', (_name, text) => {
    const whole = parseAll([Buffer.from(text, 'utf8')])
    expect(whole.length).toBeGreaterThan(4)
    const length = Buffer.byteLength(text, 'utf8')
    for (let at = 1; at < length; at++) {
      expect(parseAll(cutAt(text, [at])), `cut at byte ${at}`).toEqual(whole)
    }
  })

  it.each(recorded)('%s reads the same in random pieces (seeded)', (_name, text) => {
    const whole = parseAll([text])
    for (let seed = 1; seed <= 300; seed++) {
      const random = seeded(seed)
      expect(parseAll(cutAt(text, randomCuts(text, random, 40))), `seed ${seed}`).toEqual(whole)
    }
    // one byte at a time
    expect(parseAll([...Buffer.from(text, 'utf8')].map((b) => Uint8Array.of(b)))).toEqual(whole)
  })
})
