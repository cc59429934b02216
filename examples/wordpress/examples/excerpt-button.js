/**
 * Example: an "AI excerpt" panel in the block editor's document sidebar.
 *
 * The button creates a job with the post's text as the prompt and
 * `metadata: { post_id, purpose: 'excerpt' }`. The editor then only waits for the job to end:
 * the excerpt is written on the server, by the `ai_gateway_job_finished` hook in excerpt-hook.php,
 * when the gateway's event reaches WordPress, even if the editor was closed in the meantime.
 *
 * No build step: plain JavaScript over the editor's globals. excerpt-hook.php enqueues it with
 * wp-plugins, wp-editor, wp-element, wp-components, wp-data and wp-api-fetch.
 */
(function (wp) {
  'use strict'

  var el = wp.element.createElement
  var useState = wp.element.useState
  var useSelect = wp.data.useSelect
  var Button = wp.components.Button
  // wp.editor since WordPress 6.6, wp.editPost before.
  var PluginDocumentSettingPanel = (wp.editor && wp.editor.PluginDocumentSettingPanel) || wp.editPost.PluginDocumentSettingPanel

  var TERMINAL = ['succeeded', 'failed', 'canceled']
  // The gateway refuses bodies over REQUEST_MAX_BYTES (64 KiB by default); the start of a long
  // post is enough for an excerpt.
  var MAX_INPUT_CHARS = 20000

  /** The post's text without markup. DOMParser never runs scripts or loads images, unlike innerHTML. */
  function textOf(html) {
    var doc = new DOMParser().parseFromString(html, 'text/html')
    return (doc.body.textContent || '').replace(/\s+/g, ' ').trim()
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms) })
  }

  /** Polls the job until it ends: every second at first, then up to every 5 s, for 5 minutes. */
  async function waitForJob(jobId) {
    var delay = 1000
    var deadline = Date.now() + 5 * 60 * 1000
    for (;;) {
      var job = await wp.apiFetch({ path: '/ai/v1/jobs/' + jobId })
      if (TERMINAL.indexOf(job.status) !== -1) return job
      if (Date.now() > deadline) return job
      await sleep(delay)
      delay = Math.min(delay * 1.5, 5000)
    }
  }

  function ExcerptPanel() {
    var post = useSelect(function (select) {
      var editor = select('core/editor')
      return {
        id: editor.getCurrentPostId(),
        title: editor.getEditedPostAttribute('title') || '',
        content: editor.getEditedPostContent() || '',
      }
    }, [])
    var state = useState({ busy: false, message: '' })
    var current = state[0]
    var setState = state[1]

    async function writeExcerpt() {
      setState({ busy: true, message: 'Writing the excerpt…' })
      try {
        var text = textOf(post.content).slice(0, MAX_INPUT_CHARS)
        var created = await wp.apiFetch({
          path: '/ai/v1/jobs',
          method: 'POST',
          data: {
            input: 'Write an excerpt of at most 55 words, plain text, for this post.\n\nTitle: ' + post.title + '\n\n' + text,
            // Read by excerpt-hook.php, which checks that the user may edit this post.
            metadata: { post_id: post.id, purpose: 'excerpt' },
          },
        })
        var job = await waitForJob(created.job_id)
        var message =
          job.status === 'succeeded' ? 'Done: the excerpt is saved. Reload the editor to see it.'
          : job.status === 'failed' ? 'The job failed: ' + (job.error || 'no reason given')
          : job.status === 'canceled' ? 'The job was canceled.'
          : 'Still running; the excerpt is saved when the job finishes.'
        setState({ busy: false, message: message })
      } catch (err) {
        // apiFetch rejects with WordPress's REST error shape: { code, message, data }.
        setState({ busy: false, message: (err && err.message) || 'The job could not be created.' })
      }
    }

    return el(
      PluginDocumentSettingPanel,
      { name: 'my-theme-ai-excerpt', title: 'AI excerpt' },
      el(Button, { variant: 'secondary', isBusy: current.busy, disabled: current.busy || !post.id, onClick: writeExcerpt }, 'Write the excerpt with AI'),
      current.message ? el('p', { role: 'status' }, current.message) : null
    )
  }

  wp.plugins.registerPlugin('my-theme-ai-excerpt', { render: ExcerptPanel })
})(window.wp)
