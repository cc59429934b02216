import { describe, expect, it } from 'vitest'
import { StreamRelay } from '../../src/openai/stream-relay.js'

describe('StreamRelay', () => {
  it('sends deltas in order, then only what the stored output adds', () => {
    const r = new StreamRelay()
    expect(r.delta(0, 'Hello ')).toBe('Hello ')
    expect(r.delta(1, 'wor')).toBe('wor')
    expect(r.finish('Hello world')).toBe('ld')
    expect(r.text).toBe('Hello world')
  })

  it('after a gap sends nothing live, and the rest of the output at the end', () => {
    const r = new StreamRelay()
    expect(r.delta(3, 'late ')).toBe('')
    expect(r.delta(4, 'words')).toBe('')
    expect(r.finish('early late words')).toBe('early late words')
  })

  it('holds back a retry while it repeats what was sent, and goes on past it', () => {
    const r = new StreamRelay()
    r.delta(0, 'one ')
    r.delta(1, 'two ')
    r.reset()
    expect(r.delta(0, 'one ')).toBe('')
    expect(r.delta(1, 'tw')).toBe('')
    expect(r.delta(2, 'o three')).toBe('three')
    expect(r.finish('one two three')).toBe('')
  })

  it('a retry that says something else, or an output that does not start with the sent text, diverges', () => {
    const r = new StreamRelay()
    r.delta(0, 'Hello ')
    r.reset()
    expect(r.delta(0, 'Goodbye')).toBe('diverged')
    const s = new StreamRelay()
    s.delta(0, 'Hello there')
    expect(s.finish('Hello')).toBe('diverged')
    expect(new StreamRelay().finish('')).toBe('')
  })

  it('a reset with nothing sent yet costs nothing', () => {
    const r = new StreamRelay()
    r.reset()
    expect(r.delta(0, 'fresh')).toBe('fresh')
    expect(r.finish('fresh start')).toBe(' start')
  })
})
