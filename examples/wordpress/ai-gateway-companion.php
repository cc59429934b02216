<?php
/**
 * Plugin Name: AI Gateway Companion
 * Description: Hands theme scripts what they need to call wp-ai-gateway (/wp-json/ai/v1/): the REST nonce for logged-in users, and a signed public token (HS256) for everyone, visitors included. Receives the gateway's job events, adds Tools → AI jobs, and hands the users' AI jobs to WordPress's personal-data export and erasure.
 * Version:     0.2.0
 * Requires PHP: 7.3
 * License:     MIT
 *
 * A must-use plugin: copy this file and the ai-gateway-companion/ folder beside it to
 * wp-content/mu-plugins/. WordPress loads only the top-level file; it requires the rest:
 * - ai-gateway-companion/signing.php: Standard Webhooks signatures with AI_EVENTS_SECRET;
 * - ai-gateway-companion/events.php: POST /wp-json/ai-gateway/v1/events, which fires
 *   `ai_gateway_job_finished` (SPEC §10);
 * - ai-gateway-companion/admin-menu.php: Tools → AI jobs, a link to the gateway's admin page;
 * - ai-gateway-companion/privacy.php: personal-data exporter and eraser, and erasure on user
 *   deletion (SPEC §12).
 * See README.md beside it.
 *
 * Tokens (SPEC §5, "signed public token"):
 * - HS256 JWT, built by hand with hash_hmac() (no library), signed with AI_PUBLIC_TOKEN_SECRET
 *   (a wp-config.php constant, or the environment variable of the same name). It must be the
 *   gateway's AI_PUBLIC_TOKEN_SECRET. Without a secret no token is issued.
 * - Claims: `sub` (the user id as a string, "0" for visitors), `iat`, `exp` (one hour later; the
 *   gateway refuses more than 24 h), and for visitors `sid`, the value of the random
 *   `ai_gateway_sid` cookie this plugin sets, which makes the visitor's jobs theirs across pages.
 * - A token never grants the admin capability, whatever its `sub`.
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

const AI_GATEWAY_HANDLE       = 'ai-gateway';
const AI_GATEWAY_SID_COOKIE   = 'ai_gateway_sid';
const AI_GATEWAY_TOKEN_TTL    = 3600;   // One hour.
const AI_GATEWAY_MAX_TOKEN_TTL = 86400; // The gateway refuses tokens that live longer than 24 h.
const AI_GATEWAY_SID_LIFETIME = 2592000; // 30 days: how long a visitor keeps access to their jobs.

/** The shared HS256 secret, or null when none is configured (then no token is issued). */
function ai_gateway_token_secret() {
	if ( defined( 'AI_PUBLIC_TOKEN_SECRET' ) && is_string( AI_PUBLIC_TOKEN_SECRET ) && '' !== AI_PUBLIC_TOKEN_SECRET ) {
		return AI_PUBLIC_TOKEN_SECRET;
	}
	$env = getenv( 'AI_PUBLIC_TOKEN_SECRET' );
	return ( is_string( $env ) && '' !== $env ) ? $env : null;
}

/** base64url without padding (RFC 7515). */
function ai_gateway_base64url( $bytes ) {
	return rtrim( strtr( base64_encode( $bytes ), '+/', '-_' ), '=' );
}

/** A compact JWS with HS256 over the given claims. */
function ai_gateway_jwt_hs256( array $claims, $secret ) {
	$segments = array(
		ai_gateway_base64url( json_encode( array( 'alg' => 'HS256', 'typ' => 'JWT' ) ) ),
		ai_gateway_base64url( json_encode( $claims, JSON_UNESCAPED_SLASHES ) ),
	);
	$segments[] = ai_gateway_base64url( hash_hmac( 'sha256', implode( '.', $segments ), $secret, true ) );
	return implode( '.', $segments );
}

/** Token lifetime in seconds: 1 h by default, filterable, never above 24 h. */
function ai_gateway_token_ttl() {
	$ttl = (int) apply_filters( 'ai_gateway_token_ttl', AI_GATEWAY_TOKEN_TTL );
	return max( 60, min( $ttl, AI_GATEWAY_MAX_TOKEN_TTL ) );
}

function ai_gateway_is_valid_sid( $value ) {
	return is_string( $value ) && 1 === preg_match( '/^[a-f0-9]{32}$/', $value );
}

/** The visitor cookie's attributes: HttpOnly, SameSite=Lax, Secure on HTTPS. */
function ai_gateway_sid_cookie_options( $now = null ) {
	return array(
		'expires'  => ( null === $now ? time() : $now ) + AI_GATEWAY_SID_LIFETIME,
		'path'     => ( defined( 'COOKIEPATH' ) && COOKIEPATH ) ? COOKIEPATH : '/',
		'domain'   => ( defined( 'COOKIE_DOMAIN' ) && COOKIE_DOMAIN ) ? COOKIE_DOMAIN : '',
		'secure'   => is_ssl(),
		'httponly' => true,
		'samesite' => 'Lax',
	);
}

/**
 * The visitor's session id: the `ai_gateway_sid` cookie when it holds one, otherwise a new random
 * one, sent as that cookie (if headers can still be sent) and remembered for this request.
 */
function ai_gateway_visitor_sid() {
	static $sid = null;
	if ( null !== $sid ) {
		return $sid;
	}
	// The value is only ever 32 hex digits, so WordPress's slashing of $_COOKIE cannot touch it.
	$current = isset( $_COOKIE[ AI_GATEWAY_SID_COOKIE ] ) ? $_COOKIE[ AI_GATEWAY_SID_COOKIE ] : '';
	if ( ai_gateway_is_valid_sid( $current ) ) {
		$sid = $current;
		return $sid;
	}
	$sid = bin2hex( random_bytes( 16 ) );
	if ( ! headers_sent() ) {
		setcookie( AI_GATEWAY_SID_COOKIE, $sid, ai_gateway_sid_cookie_options() );
	}
	$_COOKIE[ AI_GATEWAY_SID_COOKIE ] = $sid;
	return $sid;
}

/**
 * A signed token for the current user (sub = their id) or visitor (sub = "0" and sid), or null
 * without a secret.
 *
 * @param int|null $now Unix time; defaults to time().
 * @return array{token: string, expires_at: int}|null
 */
function ai_gateway_issue_token( $now = null ) {
	$secret = ai_gateway_token_secret();
	if ( null === $secret ) {
		return null;
	}
	$now     = null === $now ? time() : (int) $now;
	$user_id = (int) get_current_user_id();
	$claims  = array(
		'sub' => (string) $user_id,
		'iat' => $now,
		'exp' => $now + ai_gateway_token_ttl(),
	);
	if ( 0 === $user_id ) {
		$claims['sid'] = ai_gateway_visitor_sid();
	}
	return array(
		'token'      => ai_gateway_jwt_hs256( $claims, $secret ),
		'expires_at' => $claims['exp'],
	);
}

/** Front-end visitors get their sid cookie before any output, so later pages keep the same one. */
function ai_gateway_ensure_visitor_cookie() {
	if ( is_user_logged_in() || null === ai_gateway_token_secret() ) {
		return;
	}
	if ( apply_filters( 'ai_gateway_set_visitor_cookie', true ) ) {
		ai_gateway_visitor_sid();
	}
}
add_action( 'template_redirect', 'ai_gateway_ensure_visitor_cookie' );

/**
 * Registers the `ai-gateway` handle (no file of its own; it depends on wp-api-fetch) and attaches
 * `window.aiGateway` to it. A theme script that lists `ai-gateway` as a dependency gets both.
 */
function ai_gateway_register_script() {
	wp_register_script( AI_GATEWAY_HANDLE, false, array( 'wp-api-fetch' ), '0.1.0', true );
	$logged_in = is_user_logged_in();
	$token     = ai_gateway_issue_token();
	$data      = array(
		// rest_url() follows the permalink setting: /wp-json/ or /?rest_route=/ (both reach the gateway).
		'root'           => esc_url_raw( rest_url() ),
		'loggedIn'       => $logged_in,
		'nonce'          => $logged_in ? wp_create_nonce( 'wp_rest' ) : '',
		'token'          => $token ? $token['token'] : null,
		'tokenExpiresAt' => $token ? $token['expires_at'] : null,
	);
	wp_add_inline_script( AI_GATEWAY_HANDLE, 'window.aiGateway = ' . wp_json_encode( $data ) . ';', 'before' );
}
add_action( 'wp_enqueue_scripts', 'ai_gateway_register_script', 5 );

/**
 * A page that prints a token must not be stored in a shared page cache: every visitor of the
 * cached copy would share one `sid`, and so each other's jobs. Page-cache plugins honour
 * DONOTCACHEPAGE; caches in front of WordPress (Varnish, a CDN) need their own rule (README).
 */
function ai_gateway_mark_uncacheable( $handles ) {
	if ( in_array( AI_GATEWAY_HANDLE, (array) $handles, true ) && ! defined( 'DONOTCACHEPAGE' ) ) {
		define( 'DONOTCACHEPAGE', true );
	}
	return $handles;
}
add_filter( 'print_scripts_array', 'ai_gateway_mark_uncacheable' );

/*
 * The other parts. If the folder was not copied, the token part above still works and the log
 * says what is missing; a fatal error here would take the whole site down.
 */
$ai_gateway_parts = array( 'signing', 'events', 'admin-menu', 'privacy' );
$ai_gateway_dir   = __DIR__ . '/ai-gateway-companion/';
$ai_gateway_found = true;
foreach ( $ai_gateway_parts as $ai_gateway_part ) {
	$ai_gateway_found = $ai_gateway_found && is_readable( $ai_gateway_dir . $ai_gateway_part . '.php' );
}
if ( $ai_gateway_found ) {
	foreach ( $ai_gateway_parts as $ai_gateway_part ) {
		require_once $ai_gateway_dir . $ai_gateway_part . '.php';
	}
} else {
	error_log( 'ai-gateway: ' . $ai_gateway_dir . ' is missing or incomplete; copy the ai-gateway-companion/ folder beside ai-gateway-companion.php to enable events, Tools → AI jobs and the personal-data exporter and eraser.' );
}
unset( $ai_gateway_parts, $ai_gateway_dir, $ai_gateway_found, $ai_gateway_part );
