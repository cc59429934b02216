<?php
/**
 * Personal data: the user's AI jobs in Tools → Export Personal Data and Tools → Erase Personal
 * Data, and their erasure when the account is deleted.
 *
 * WordPress asks the gateway server to server:
 * - `GET {base}/wp-json/ai/v1/admin/users/{id}/export?page={n}&per_page=100`;
 * - `POST {base}/wp-json/ai/v1/admin/users/{id}/erase` with the body `{}`.
 * Both are signed the Standard Webhooks way with AI_EVENTS_SECRET (signing.php), over the exact
 * body bytes ('' for the GET). The gateway accepts that signature on these routes in place of an
 * admin login, and on no other route.
 *
 * `{base}` is AI_GATEWAY_URL (a wp-config.php constant or the environment variable), the gateway's
 * own address such as `http://127.0.0.1:3000`, plus the path of its PUBLIC_URL when WordPress
 * lives in a subdirectory. Without it the calls go to rest_url(), through the public proxy.
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

const AI_GATEWAY_EXPORT_PER_PAGE = 100;
// An export page is at most 100 jobs; anything slower than this is a gateway in trouble.
const AI_GATEWAY_PRIVACY_TIMEOUT = 15;
const AI_GATEWAY_ERASE_RETRY_HOOK  = 'ai_gateway_erase_user_retry';
const AI_GATEWAY_ERASE_RETRY_DELAY = 600;
// Erase answers `done: false` while it still has work; a gateway that says so forever must not
// keep a browser tab (or a user deletion) looping.
const AI_GATEWAY_ERASE_MAX_ROUNDS = 50;

/** AI_GATEWAY_URL without its trailing slash, or null when it is not set. */
function ai_gateway_server_base() {
	if ( defined( 'AI_GATEWAY_URL' ) && is_string( AI_GATEWAY_URL ) && '' !== AI_GATEWAY_URL ) {
		return rtrim( AI_GATEWAY_URL, '/' );
	}
	$env = getenv( 'AI_GATEWAY_URL' );
	return ( is_string( $env ) && '' !== $env ) ? rtrim( $env, '/' ) : null;
}

/** The full URL of a gateway route such as `admin/users/42/export`. */
function ai_gateway_server_url( $route, array $query = array() ) {
	$base = ai_gateway_server_base();
	$url  = null === $base ? rest_url( 'ai/v1/' . $route ) : $base . '/wp-json/ai/v1/' . $route;
	if ( $query ) {
		// rest_url() with plain permalinks already has `?rest_route=…`.
		$url .= ( false === strpos( $url, '?' ) ? '?' : '&' ) . http_build_query( $query, '', '&', PHP_QUERY_RFC3986 );
	}
	return $url;
}

/**
 * Calls a privacy route of the gateway, signed with AI_EVENTS_SECRET.
 *
 * @param string $method 'GET' or 'POST'.
 * @param string $route  Below `ai/v1/`.
 * @param array  $query
 * @param string $body   The exact bytes to send; ignored for GET, which signs ''.
 * @return array|WP_Error The decoded JSON answer of a 2xx, or why there is none.
 */
function ai_gateway_call_privacy_route( $method, $route, array $query = array(), $body = '' ) {
	$secret = ai_gateway_events_secret();
	$key    = null === $secret ? null : ai_gateway_webhook_key( $secret );
	if ( null === $key ) {
		return new WP_Error( 'ai_gateway_not_configured', 'AI_EVENTS_SECRET is not set (or not a valid whsec_ secret), so the AI gateway cannot be asked for personal data.' );
	}
	$body    = 'GET' === $method ? '' : (string) $body;
	$headers = ai_gateway_webhook_sign_headers( $key, $body );
	$headers['Accept'] = 'application/json';
	$args = array(
		'method'      => $method,
		'timeout'     => (int) apply_filters( 'ai_gateway_privacy_timeout', AI_GATEWAY_PRIVACY_TIMEOUT ),
		// A signed request goes to the configured gateway and nowhere else.
		'redirection' => 0,
		'headers'     => $headers,
	);
	if ( 'GET' !== $method ) {
		$args['headers']['Content-Type'] = 'application/json';
		$args['body']                    = $body;
	}

	$response = wp_remote_request( ai_gateway_server_url( $route, $query ), $args );
	if ( is_wp_error( $response ) ) {
		return new WP_Error( 'ai_gateway_unreachable', 'The AI gateway could not be reached: ' . $response->get_error_message() );
	}
	$status = (int) wp_remote_retrieve_response_code( $response );
	$data   = json_decode( (string) wp_remote_retrieve_body( $response ), true );
	if ( $status < 200 || $status >= 300 ) {
		// The gateway answers errors in the WordPress REST shape { code, message, data }.
		$detail = ( is_array( $data ) && isset( $data['message'] ) && is_string( $data['message'] ) ) ? ': ' . $data['message'] : '';
		return new WP_Error( 'ai_gateway_request_failed', sprintf( 'The AI gateway answered %d%s', $status, $detail ), array( 'status' => $status ) );
	}
	if ( ! is_array( $data ) ) {
		return new WP_Error( 'ai_gateway_bad_response', sprintf( 'The AI gateway answered %d without a JSON object.', $status ) );
	}
	return $data;
}

function ai_gateway_register_privacy_exporter( $exporters ) {
	$exporters['ai-gateway'] = array(
		'exporter_friendly_name' => 'AI jobs',
		'callback'               => 'ai_gateway_export_personal_data',
	);
	return $exporters;
}
add_filter( 'wp_privacy_personal_data_exporters', 'ai_gateway_register_privacy_exporter' );

function ai_gateway_register_privacy_eraser( $erasers ) {
	$erasers['ai-gateway'] = array(
		'eraser_friendly_name' => 'AI jobs',
		'callback'             => 'ai_gateway_erase_personal_data',
	);
	return $erasers;
}
add_filter( 'wp_privacy_personal_data_erasers', 'ai_gateway_register_privacy_eraser' );

/**
 * The exporter: one page of the user's jobs, 100 at a time. A WP_Error is shown to the admin as
 * the export's error.
 *
 * @return array{data: array, done: bool}|WP_Error
 */
function ai_gateway_export_personal_data( $email_address, $page = 1 ) {
	$user = get_user_by( 'email', $email_address );
	if ( ! $user ) {
		return array( 'data' => array(), 'done' => true );
	}
	$answer = ai_gateway_call_privacy_route(
		'GET',
		'admin/users/' . (int) $user->ID . '/export',
		array( 'page' => max( 1, (int) $page ), 'per_page' => AI_GATEWAY_EXPORT_PER_PAGE )
	);
	if ( is_wp_error( $answer ) ) {
		return $answer;
	}
	$jobs  = ( isset( $answer['jobs'] ) && is_array( $answer['jobs'] ) ) ? $answer['jobs'] : array();
	$items = array();
	foreach ( $jobs as $job ) {
		if ( is_array( $job ) && isset( $job['job_id'] ) ) {
			$items[] = ai_gateway_export_item( $job );
		}
	}
	// A page without jobs ends the export whatever `done` says: WordPress would ask forever.
	$done = empty( $jobs ) || ! isset( $answer['done'] ) || false !== $answer['done'];
	return array( 'data' => $items, 'done' => $done );
}

/** One job in WordPress's exporter item format. */
function ai_gateway_export_item( array $job ) {
	$request = ( isset( $job['request'] ) && is_array( $job['request'] ) ) ? $job['request'] : array();
	$pairs   = array(
		'Created' => isset( $job['created_at'] ) ? $job['created_at'] : null,
		'Status'  => isset( $job['status'] ) ? $job['status'] : null,
		'Model'   => isset( $job['model'] ) ? $job['model'] : null,
		'Prompt'  => ai_gateway_export_prompt( $request ),
		'Result'  => array_key_exists( 'result', $job ) ? ai_gateway_export_result( $job['result'] ) : null,
		'Error'   => isset( $job['error'] ) ? $job['error'] : null,
		// Metadata is whatever the site's scripts attached to the job, so it may be personal too.
		'Metadata' => ( isset( $job['metadata'] ) && array() !== $job['metadata'] ) ? wp_json_encode( $job['metadata'] ) : null,
	);
	$data = array();
	foreach ( $pairs as $name => $value ) {
		if ( null !== $value && '' !== $value ) {
			$data[] = array( 'name' => $name, 'value' => (string) $value );
		}
	}
	return array(
		'group_id'          => 'ai-gateway-jobs',
		'group_label'       => 'AI jobs',
		'group_description' => 'Requests this user sent to the AI gateway, and their results.',
		'item_id'           => 'ai-job-' . $job['job_id'],
		'data'              => $data,
	);
}

/** The prompt as text: `input`, or the messages as "role: content" paragraphs. */
function ai_gateway_export_prompt( array $request ) {
	if ( isset( $request['input'] ) && is_string( $request['input'] ) ) {
		return $request['input'];
	}
	$lines = array();
	if ( isset( $request['messages'] ) && is_array( $request['messages'] ) ) {
		foreach ( $request['messages'] as $message ) {
			if ( is_array( $message ) && isset( $message['content'] ) && is_string( $message['content'] ) ) {
				$lines[] = ( isset( $message['role'] ) && is_string( $message['role'] ) ? $message['role'] . ': ' : '' ) . $message['content'];
			}
		}
	}
	return implode( "\n\n", $lines );
}

/** The result as text: `result.output` when it is a string, otherwise the result's JSON. */
function ai_gateway_export_result( $result ) {
	if ( null === $result ) {
		return null;
	}
	if ( is_array( $result ) && isset( $result['output'] ) && is_string( $result['output'] ) ) {
		return $result['output'];
	}
	return wp_json_encode( $result );
}

/**
 * The eraser. The gateway deletes the user's jobs, their stored results and their lines in
 * archive files; none is retained.
 *
 * @return array{items_removed: bool, items_retained: bool, messages: string[], done: bool}|WP_Error
 */
function ai_gateway_erase_personal_data( $email_address, $page = 1 ) {
	$user = get_user_by( 'email', $email_address );
	if ( ! $user ) {
		return array( 'items_removed' => false, 'items_retained' => false, 'messages' => array(), 'done' => true );
	}
	$answer = ai_gateway_erase_user( (int) $user->ID );
	if ( is_wp_error( $answer ) ) {
		return $answer;
	}
	$jobs     = isset( $answer['jobs_erased'] ) ? (int) $answer['jobs_erased'] : 0;
	$results  = isset( $answer['results_erased'] ) ? (int) $answer['results_erased'] : 0;
	$archived = isset( $answer['archive_lines_erased'] ) ? (int) $answer['archive_lines_erased'] : 0;
	$messages = array();
	if ( $jobs + $results + $archived > 0 ) {
		$messages[] = sprintf( 'AI gateway: %d jobs, %d stored results and %d archived jobs erased.', $jobs, $results, $archived );
	}
	$done = ai_gateway_erase_is_done( $answer );
	if ( ! $done && (int) $page >= AI_GATEWAY_ERASE_MAX_ROUNDS ) {
		$messages[] = 'AI gateway: erasure is not finished; run the erasure again.';
		$done       = true;
	}
	return array(
		// An archived job is a job too: removing its line removes the user's data.
		'items_removed'  => $jobs + $archived > 0,
		'items_retained' => false,
		'messages'       => $messages,
		'done'           => $done,
	);
}

/** One erase call for a user id. */
function ai_gateway_erase_user( $user_id ) {
	return ai_gateway_call_privacy_route( 'POST', 'admin/users/' . (int) $user_id . '/erase', array(), '{}' );
}

function ai_gateway_erase_is_done( array $answer ) {
	return ! isset( $answer['done'] ) || false !== $answer['done'];
}

/*
 * A deleted account takes its AI jobs with it. On a multisite, `delete_user` only removes the
 * user from one site (the account and its jobs stay), and `wpmu_delete_user` announces the real
 * deletion; so each hook acts where it means deletion.
 */

function ai_gateway_on_delete_user( $user_id ) {
	if ( ! is_multisite() ) {
		ai_gateway_erase_deleted_user( (int) $user_id, true );
	}
}
add_action( 'delete_user', 'ai_gateway_on_delete_user' );

function ai_gateway_on_wpmu_delete_user( $user_id ) {
	ai_gateway_erase_deleted_user( (int) $user_id, true );
}
add_action( 'wpmu_delete_user', 'ai_gateway_on_wpmu_delete_user' );

/** The wp-cron retry: one more try, then only the log. */
function ai_gateway_retry_erase_user( $user_id ) {
	ai_gateway_erase_deleted_user( (int) $user_id, false );
}
add_action( AI_GATEWAY_ERASE_RETRY_HOOK, 'ai_gateway_retry_erase_user' );

/**
 * Erases a deleted user's jobs, calling again while the gateway says it is not done. A failure
 * must not stop the account deletion: it is logged, and with `$retry` tried once more by wp-cron.
 *
 * @return bool Whether the gateway finished erasing.
 */
function ai_gateway_erase_deleted_user( $user_id, $retry ) {
	for ( $round = 0; $round < AI_GATEWAY_ERASE_MAX_ROUNDS; $round++ ) {
		$answer = ai_gateway_erase_user( $user_id );
		if ( is_wp_error( $answer ) || ai_gateway_erase_is_done( $answer ) ) {
			break;
		}
	}
	if ( ! is_wp_error( $answer ) && ai_gateway_erase_is_done( $answer ) ) {
		return true;
	}
	$reason = is_wp_error( $answer ) ? $answer->get_error_message() : 'the gateway had not finished';
	// Without a secret a retry cannot do better; the log says what to configure.
	$retry = $retry && ! ( is_wp_error( $answer ) && 'ai_gateway_not_configured' === $answer->get_error_code() );
	error_log( sprintf( 'ai-gateway: erasing the AI jobs of deleted user %d failed: %s%s', $user_id, $reason, $retry ? '; one retry is scheduled' : '' ) );
	if ( $retry ) {
		wp_schedule_single_event( time() + AI_GATEWAY_ERASE_RETRY_DELAY, AI_GATEWAY_ERASE_RETRY_HOOK, array( $user_id ) );
	}
	return false;
}
