<?php
/**
 * Example: write an AI job's result into the post excerpt.
 *
 * The block-editor button in excerpt-button.js creates the job with
 * `metadata: { post_id, purpose: 'excerpt' }`. When the job succeeds, the gateway sends the event
 * to the companion plugin, which fires `ai_gateway_job_finished`; this hook then saves the
 * result. Put both parts in a theme (functions.php and js/excerpt-button.js) or in a plugin.
 *
 * The metadata comes from the browser: anyone who may create jobs can put any post id there. So
 * the hook writes only after checking that the job's user may edit that post.
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

add_action(
	'ai_gateway_job_finished',
	function ( $job, $metadata, $type ) {
		if ( 'job.succeeded' !== $type || ! is_array( $metadata ) || ! isset( $metadata['purpose'], $metadata['post_id'] ) || 'excerpt' !== $metadata['purpose'] ) {
			return;
		}
		$post_id = (int) $metadata['post_id'];
		// user_id 0 (a visitor) may edit nothing; user_can() also says no for a post that does not exist.
		if ( $post_id <= 0 || ! user_can( (int) $job['user_id'], 'edit_post', $post_id ) ) {
			return;
		}
		$output = isset( $job['result']['output'] ) && is_string( $job['result']['output'] ) ? $job['result']['output'] : '';
		if ( '' === trim( $output ) ) {
			return;
		}
		// Model output is untrusted text: an excerpt is plain text, so tags and stray markup go.
		$saved = wp_update_post(
			array(
				'ID'           => $post_id,
				'post_excerpt' => sanitize_textarea_field( $output ),
			),
			true
		);
		if ( is_wp_error( $saved ) ) {
			// The companion plugin then answers 500, and the gateway sends the event again later.
			throw new RuntimeException( 'The excerpt of post ' . $post_id . ' was not saved: ' . $saved->get_error_message() );
		}
	},
	10,
	3
);

// The button, in the block editor only. Adjust the path to where the script lives.
add_action(
	'enqueue_block_editor_assets',
	function () {
		wp_enqueue_script(
			'my-theme-ai-excerpt',
			get_theme_file_uri( 'js/excerpt-button.js' ),
			array( 'wp-plugins', 'wp-editor', 'wp-element', 'wp-components', 'wp-data', 'wp-api-fetch' ),
			'1.0',
			true
		);
	}
);
