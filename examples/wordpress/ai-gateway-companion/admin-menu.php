<?php
/**
 * Tools → AI jobs: a wp-admin menu entry that opens the gateway's admin page,
 * `GET /wp-json/ai/v1/admin`. The gateway serves that page itself, through the same proxy as its
 * other routes, and accepts the logged-in cookie alone for the page load; so the entry only needs
 * to send the browser there. WordPress has no page of its own to render.
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

const AI_GATEWAY_ADMIN_SLUG = 'ai-gateway-jobs';

/**
 * The capability the entry requires. AI_ADMIN_CAPABILITY (a wp-config.php constant, or the
 * environment variable) wins, because the gateway checks that same setting and the entry must
 * not show to users the page would refuse. Without it, `manage_options`, which the
 * `ai_gateway_admin_capability` filter may change (set AI_ADMIN_CAPABILITY on the gateway to
 * match).
 */
function ai_gateway_admin_capability() {
	if ( defined( 'AI_ADMIN_CAPABILITY' ) && is_string( AI_ADMIN_CAPABILITY ) && '' !== AI_ADMIN_CAPABILITY ) {
		return AI_ADMIN_CAPABILITY;
	}
	$env = getenv( 'AI_ADMIN_CAPABILITY' );
	if ( is_string( $env ) && '' !== $env ) {
		return $env;
	}
	return (string) apply_filters( 'ai_gateway_admin_capability', 'manage_options' );
}

/** The gateway's admin page; rest_url() follows the permalink setting, which the gateway serves both ways. */
function ai_gateway_admin_page_url() {
	return rest_url( 'ai/v1/admin' );
}

function ai_gateway_register_admin_menu() {
	$hook = add_management_page( 'AI jobs', 'AI jobs', ai_gateway_admin_capability(), AI_GATEWAY_ADMIN_SLUG, 'ai_gateway_render_admin_link' );
	if ( $hook ) {
		// Before any output, so the entry can redirect straight to the gateway's page.
		add_action( 'load-' . $hook, 'ai_gateway_redirect_to_admin_page' );
	}
}
add_action( 'admin_menu', 'ai_gateway_register_admin_menu' );

function ai_gateway_redirect_to_admin_page() {
	// wp_safe_redirect() accepts only this site's host; the page is on it, behind the same proxy.
	if ( wp_safe_redirect( ai_gateway_admin_page_url() ) ) {
		exit;
	}
}

/** Shown only when the redirect did not happen (a plugin filtered it away): a plain link. */
function ai_gateway_render_admin_link() {
	echo '<div class="wrap"><h1>AI jobs</h1><p><a class="button button-primary" href="' . esc_url( ai_gateway_admin_page_url() ) . '">Open the AI jobs page</a></p></div>';
}
