<?php
/**
 * `POST /wp-json/ai-gateway/v1/events`: the gateway announces here every job that reaches a
 * terminal state, and the plugin fires
 * `do_action( 'ai_gateway_job_finished', $job, $metadata, $type )` for themes and plugins.
 *
 * - The body is `{ "type": "job.succeeded" | "job.failed" | "job.canceled", "user_id": <int>,
 *   "owner_key": "…", "job": <job JSON, result inline>, "metadata": <object or null> }`.
 * - Each delivery is signed the Standard Webhooks way with AI_EVENTS_SECRET (signing.php).
 * - Delivery is at least once. The gateway sends the same `webhook-id` again until it gets a
 *   2xx, for up to 24 h. The plugin records the id after the action has run, and acknowledges a
 *   recorded id without firing again. Two tries that arrive at the same moment can both fire, so
 *   handlers should be idempotent (writing the same excerpt twice is).
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

const AI_GATEWAY_EVENTS_NAMESPACE = 'ai-gateway/v1';
const AI_GATEWAY_EVENT_TYPES      = array( 'job.succeeded', 'job.failed', 'job.canceled' );
// The gateway signs every try afresh, so a genuine delivery is always seconds old. 300 s (the
// Standard Webhooks libraries' default) allows for clock skew between the two hosts and a slow
// request, and still makes a captured delivery useless after five minutes.
const AI_GATEWAY_EVENT_TOLERANCE = 300;
// Seen ids are kept 48 h: the gateway retries for up to 24 h, and a retry can come after a 2xx
// it never received. Twice that leaves room for a cleanup that ran late.
const AI_GATEWAY_EVENT_RETENTION     = 172800;
const AI_GATEWAY_EVENT_OPTION_PREFIX = 'ai_gateway_event_';
const AI_GATEWAY_EVENT_CLEANUP_HOOK  = 'ai_gateway_cleanup_events';
const AI_GATEWAY_EVENT_CLEANUP_BATCH = 1000;
// Ids are opaque, but they are printable ASCII of bounded length (the gateway's own rule).
const AI_GATEWAY_WEBHOOK_ID_PATTERN = '/^[\x21-\x7e]{1,256}$/D';

function ai_gateway_register_event_route() {
	register_rest_route(
		AI_GATEWAY_EVENTS_NAMESPACE,
		'/events',
		array(
			'methods'             => 'POST',
			'callback'            => 'ai_gateway_receive_event',
			'permission_callback' => 'ai_gateway_events_permission',
		)
	);
}
add_action( 'rest_api_init', 'ai_gateway_register_event_route' );

/**
 * Open to every caller on purpose: the gateway sends no WordPress login. The Standard Webhooks
 * signature, checked first thing in ai_gateway_receive_event(), is the authentication.
 */
function ai_gateway_events_permission() {
	return true;
}

/**
 * Verifies a delivery, fires `ai_gateway_job_finished` once per `webhook-id`, and answers.
 *
 * @param WP_REST_Request $request
 * @param int|null        $now Unix time; defaults to time().
 * @return WP_REST_Response|WP_Error
 */
function ai_gateway_receive_event( $request, $now = null ) {
	$now    = is_int( $now ) ? $now : time();
	$secret = ai_gateway_events_secret();
	$key    = null === $secret ? null : ai_gateway_webhook_key( $secret );
	if ( null === $key ) {
		return new WP_Error(
			'ai_gateway_events_disabled',
			null === $secret ? 'AI_EVENTS_SECRET is not configured, so events are not accepted.' : 'AI_EVENTS_SECRET starts with whsec_ but the rest is not valid base64.',
			array( 'status' => 503 )
		);
	}

	$id        = (string) $request->get_header( 'webhook-id' );
	$timestamp = (string) $request->get_header( 'webhook-timestamp' );
	$signature = (string) $request->get_header( 'webhook-signature' );
	$body      = (string) $request->get_body();
	if ( 1 !== preg_match( AI_GATEWAY_WEBHOOK_ID_PATTERN, $id ) || 1 !== preg_match( '/^[0-9]{1,12}$/D', $timestamp ) || '' === $signature
		|| ! ai_gateway_webhook_signature_matches( $key, $id, $timestamp, $body, $signature ) ) {
		return new WP_Error( 'ai_gateway_invalid_signature', 'The event signature is missing or wrong.', array( 'status' => 401 ) );
	}
	// Checked after the signature, so only a genuine (but old) delivery learns that it is old.
	if ( abs( $now - (int) $timestamp ) > AI_GATEWAY_EVENT_TOLERANCE ) {
		return new WP_Error( 'ai_gateway_stale_event', 'The event timestamp is too far from the current time.', array( 'status' => 401 ) );
	}

	$event = ai_gateway_parse_event( $body );
	if ( null === $event ) {
		return new WP_Error( 'ai_gateway_invalid_event', 'The event body is not a job event.', array( 'status' => 400 ) );
	}

	if ( ai_gateway_event_seen( $id ) ) {
		return new WP_REST_Response( array( 'received' => true, 'duplicate' => true ), 200 );
	}

	try {
		do_action( 'ai_gateway_job_finished', $event['job'], $event['metadata'], $event['type'] );
	} catch ( Throwable $e ) {
		// Not recorded: the 500 makes the gateway send the event again later.
		error_log( sprintf( 'ai-gateway: a handler of ai_gateway_job_finished failed on event %s (job %s): %s', $id, isset( $event['job']['job_id'] ) ? $event['job']['job_id'] : '?', $e->getMessage() ) );
		return new WP_Error( 'ai_gateway_event_failed', 'A handler of the event failed; the gateway will send it again.', array( 'status' => 500 ) );
	}

	ai_gateway_event_record( $id, $now );
	return new WP_REST_Response( array( 'received' => true ), 200 );
}

/**
 * The event's type, job and metadata, or null when the body is not an event. The job gets the
 * top-level `user_id` (and `owner_key`) when its own JSON lacks them, so a hook can check what
 * that user may do.
 *
 * @return array{type: string, job: array, metadata: array|null}|null
 */
function ai_gateway_parse_event( $body ) {
	$event = json_decode( $body, true );
	if ( ! is_array( $event )
		|| ! isset( $event['type'] ) || ! in_array( $event['type'], AI_GATEWAY_EVENT_TYPES, true )
		|| ! isset( $event['user_id'] ) || ! is_int( $event['user_id'] ) || $event['user_id'] < 0
		|| ! isset( $event['job'] ) || ! is_array( $event['job'] ) ) {
		return null;
	}
	$metadata = array_key_exists( 'metadata', $event ) ? $event['metadata'] : null;
	if ( null !== $metadata && ! is_array( $metadata ) ) {
		return null;
	}
	$job = $event['job'];
	if ( ! isset( $job['user_id'] ) ) {
		$job['user_id'] = $event['user_id'];
	}
	if ( ! isset( $job['owner_key'] ) && isset( $event['owner_key'] ) && is_string( $event['owner_key'] ) ) {
		$job['owner_key'] = $event['owner_key'];
	}
	return array(
		'type'     => $event['type'],
		'job'      => $job,
		'metadata' => $metadata,
	);
}

/*
 * Seen ids are options, one per id, with autoload off. A transient alone would not do: with a
 * persistent object cache, transients live only in the cache, and an eviction would let a retry
 * fire the action twice. Options are always written to the database (the cache only speeds up
 * reads), need no table of their own (a must-use plugin has no activation hook to create one),
 * and with autoload off they never load on page views. The name holds a hash of the id, because
 * ids may be longer than an option name allows. A daily wp-cron job deletes those older than
 * AI_GATEWAY_EVENT_RETENTION.
 */

function ai_gateway_event_option_name( $webhook_id ) {
	return AI_GATEWAY_EVENT_OPTION_PREFIX . hash( 'sha256', $webhook_id );
}

function ai_gateway_event_seen( $webhook_id ) {
	return false !== get_option( ai_gateway_event_option_name( $webhook_id ), false );
}

function ai_gateway_event_record( $webhook_id, $now ) {
	// `false`, not 'no': both WordPress before 6.6 and after read it as "autoload off".
	add_option( ai_gateway_event_option_name( $webhook_id ), (string) $now, '', false );
}

function ai_gateway_schedule_event_cleanup() {
	if ( ! wp_next_scheduled( AI_GATEWAY_EVENT_CLEANUP_HOOK ) ) {
		wp_schedule_event( time() + HOUR_IN_SECONDS, 'daily', AI_GATEWAY_EVENT_CLEANUP_HOOK );
	}
}
add_action( 'init', 'ai_gateway_schedule_event_cleanup' );

/**
 * Deletes the seen ids older than AI_GATEWAY_EVENT_RETENTION, in batches, within a time budget
 * (whatever is left waits for the next day). delete_option() rather than one DELETE keeps a
 * persistent object cache in step with the table.
 *
 * @param int|string $now Unix time; wp-cron passes '', which means time().
 */
function ai_gateway_cleanup_seen_events( $now = null ) {
	global $wpdb;
	$cutoff   = ( is_int( $now ) ? $now : time() ) - AI_GATEWAY_EVENT_RETENTION;
	$deadline = microtime( true ) + 20;
	do {
		$names = $wpdb->get_col(
			$wpdb->prepare(
				"SELECT option_name FROM {$wpdb->options} WHERE option_name LIKE %s AND CAST(option_value AS UNSIGNED) < %d LIMIT %d",
				$wpdb->esc_like( AI_GATEWAY_EVENT_OPTION_PREFIX ) . '%',
				$cutoff,
				AI_GATEWAY_EVENT_CLEANUP_BATCH
			)
		);
		foreach ( (array) $names as $name ) {
			delete_option( $name );
		}
	} while ( count( (array) $names ) === AI_GATEWAY_EVENT_CLEANUP_BATCH && microtime( true ) < $deadline );
}
add_action( AI_GATEWAY_EVENT_CLEANUP_HOOK, 'ai_gateway_cleanup_seen_events' );
