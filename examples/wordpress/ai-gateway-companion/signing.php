<?php
/**
 * Standard Webhooks signatures with AI_EVENTS_SECRET, both ways: the gateway signs the events it
 * sends to WordPress, and WordPress signs its privacy calls to the gateway.
 *
 * - Headers: `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`, which holds
 *   one or more space-separated `v1,<base64>` values.
 * - Each value is base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), over the body's exact bytes.
 * - The key is the base64 decoding of the text after `whsec_`. A secret without that prefix is
 *   used as its raw bytes, as the gateway does.
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

const AI_GATEWAY_WHSEC_PREFIX = 'whsec_';
// More values than this is not a key rotation; it is someone making us hash a lot.
const AI_GATEWAY_MAX_SIGNATURES = 16;

/** AI_EVENTS_SECRET from wp-config.php, else the environment variable; null when neither is set. */
function ai_gateway_events_secret() {
	if ( defined( 'AI_EVENTS_SECRET' ) && is_string( AI_EVENTS_SECRET ) && '' !== AI_EVENTS_SECRET ) {
		return AI_EVENTS_SECRET;
	}
	$env = getenv( 'AI_EVENTS_SECRET' );
	return ( is_string( $env ) && '' !== $env ) ? $env : null;
}

/**
 * The HMAC key of a secret, or null when a `whsec_` secret is not valid base64 (a typo in
 * wp-config.php must not turn into a key that silently never matches).
 */
function ai_gateway_webhook_key( $secret ) {
	if ( 0 !== strpos( $secret, AI_GATEWAY_WHSEC_PREFIX ) ) {
		return $secret;
	}
	$encoded = substr( $secret, strlen( AI_GATEWAY_WHSEC_PREFIX ) );
	if ( '' === $encoded || 1 !== preg_match( '#^[A-Za-z0-9+/]+={0,2}$#D', $encoded ) ) {
		return null;
	}
	$key = base64_decode( $encoded, true );
	return ( false === $key || '' === $key ) ? null : $key;
}

/** The base64 signature of one delivery (without the `v1,` prefix). */
function ai_gateway_webhook_signature( $key, $id, $timestamp, $body ) {
	return base64_encode( hash_hmac( 'sha256', $id . '.' . $timestamp . '.' . $body, $key, true ) );
}

/**
 * The three headers that sign `$body` (the exact bytes sent; '' for a GET).
 *
 * @param string   $key  From ai_gateway_webhook_key().
 * @param string   $body
 * @param int|null $now  Unix time; defaults to time().
 * @return array<string, string>
 */
function ai_gateway_webhook_sign_headers( $key, $body, $now = null ) {
	$id        = 'msg_' . bin2hex( random_bytes( 16 ) );
	$timestamp = (string) ( null === $now ? time() : (int) $now );
	return array(
		'webhook-id'        => $id,
		'webhook-timestamp' => $timestamp,
		'webhook-signature' => 'v1,' . ai_gateway_webhook_signature( $key, $id, $timestamp, $body ),
	);
}

/**
 * True when one of the `v1,` values of `$signature_header` signs `$id.$timestamp.$body` with
 * `$key`. Other versions (`v1a` is asymmetric) are skipped. Every value is compared with
 * hash_equals(), and all of them are compared, so timing does not tell which one matched.
 */
function ai_gateway_webhook_signature_matches( $key, $id, $timestamp, $body, $signature_header ) {
	$expected = hash_hmac( 'sha256', $id . '.' . $timestamp . '.' . $body, $key, true );
	$values   = preg_split( '/ +/', trim( (string) $signature_header ) );
	if ( count( $values ) > AI_GATEWAY_MAX_SIGNATURES ) {
		return false;
	}
	$matched = false;
	foreach ( $values as $value ) {
		if ( 0 !== strpos( $value, 'v1,' ) ) {
			continue;
		}
		$candidate = base64_decode( substr( $value, 3 ), true );
		if ( false === $candidate || 32 !== strlen( $candidate ) ) {
			continue;
		}
		$matched = hash_equals( $expected, $candidate ) || $matched;
	}
	return $matched;
}
