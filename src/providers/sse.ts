/** One dispatched server-sent event. `event` is `message` when the stream named none. */
export interface SseEvent {
  event: string
  data: string
}

/**
 * An incremental `text/event-stream` parser, as the WHATWG HTML standard ("Server-sent events",
 * interpreting an event stream) reads one: UTF-8 decoded across chunk boundaries (a multi-byte
 * character may be split between TCP reads), lines ended by CRLF, LF or CR (a CRLF split between
 * two chunks is still one line end), `:` comments ignored, `data` lines of one event joined with
 * `\n`, one space after the colon dropped, and an event dispatched by a blank line. Text after
 * the last blank line is an incomplete event and is never dispatched.
 */
export class SseParser {
  private readonly decoder = new TextDecoder('utf-8')
  private line = ''
  private skipLineFeed = false
  private eventType = ''
  private data: string[] | undefined

  /** Feeds the next bytes; returns the events they completed. */
  push(chunk: Uint8Array | string): SseEvent[] {
    const text = typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true })
    const events: SseEvent[] = []
    let start = 0
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i)
      if (this.skipLineFeed) {
        this.skipLineFeed = false
        if (c === 0x0a) {
          start = i + 1
          continue
        }
      }
      if (c !== 0x0a && c !== 0x0d) continue
      const line = this.line + text.slice(start, i)
      this.line = ''
      start = i + 1
      if (c === 0x0d) this.skipLineFeed = true
      const event = this.takeLine(line)
      if (event) events.push(event)
    }
    this.line += text.slice(start)
    return events
  }

  private takeLine(line: string): SseEvent | undefined {
    if (line === '') {
      const data = this.data
      const event = this.eventType || 'message'
      this.data = undefined
      this.eventType = ''
      return data === undefined ? undefined : { event, data: data.join('\n') }
    }
    if (line.charCodeAt(0) === 0x3a) return undefined // a comment (heartbeats and keep-alives)
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === 0x20) value = value.slice(1)
    if (field === 'data') (this.data ??= []).push(value)
    else if (field === 'event') this.eventType = value
    // `id` and `retry` steer a browser's reconnection; a provider call never reconnects.
    return undefined
  }
}
