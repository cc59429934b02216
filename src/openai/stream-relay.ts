/**
 * Turns a job's deltas into the text of `chat.completion.chunk`s (SPEC §9, §11). A chunk, once
 * sent, cannot be taken back, so what is sent is always a prefix of the job's text:
 *
 * - deltas are sent as they come, in `index` order, from index 0;
 * - a gap (the call started following a job whose try had already streamed, a replay) stops the
 *   live relay: the rest of the text is sent from the stored output when the job ends;
 * - a `reset` (a retry after a broken stream; fallbacks never follow a delta) starts the next try
 *   over. Its text is held back while it repeats what was already sent, and sent once it goes past
 *   it; a retry that says something else makes the stream fail (`diverged`), since the client
 *   already holds text the job's answer does not start with.
 */
export class StreamRelay {
  private sent = ''
  private current = ''
  private next = 0
  private live = true

  /** The text to send now ('' for none), or `diverged`. */
  delta(index: number, text: string): string | 'diverged' {
    if (!this.live) return ''
    if (index !== this.next) {
      this.live = false
      return ''
    }
    this.next++
    this.current += text
    return this.advance(this.current)
  }

  reset(): void {
    this.current = ''
    this.next = 0
    this.live = true
  }

  /** The job's whole output: the rest still to send, or `diverged`. */
  finish(output: string): string | 'diverged' {
    return output.startsWith(this.sent) ? this.advance(output) : 'diverged'
  }

  /** All the text sent so far. */
  get text(): string {
    return this.sent
  }

  private advance(known: string): string | 'diverged' {
    if (known.length <= this.sent.length) return this.sent.startsWith(known) ? '' : 'diverged'
    if (!known.startsWith(this.sent)) return 'diverged'
    const more = known.slice(this.sent.length)
    this.sent = known
    return more
  }
}
