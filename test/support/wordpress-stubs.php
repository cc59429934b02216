<?php
/**
 * The WordPress functions and classes the companion plugin calls, stubbed for php-cli, each
 * recording its calls. Loaded by test/support/companion-php.ts, which passes the run's settings
 * as JSON in AIGW_TEST and appends the test's own PHP after this file. At shutdown (even after
 * `exit`, as a redirect does) the run prints one JSON object: what the test put in $out, the
 * recorded calls, hooks, fired actions and the options table.
 *
 * The stubs behave like WordPress where the plugin depends on it: do_action() passes '' when it
 * has no arguments, as wp-cron's calls do; add_option() never overwrites; WP_REST_Request
 * canonicalises header names.
 */

$cfg = json_decode( getenv( 'AIGW_TEST' ), true );
define( 'ABSPATH', '/' );
define( 'HOUR_IN_SECONDS', 3600 );
foreach ( $cfg['constants'] as $name => $value ) {
	define( $name, $value );
}
$out       = array();
$calls     = array();
$hooks     = array();
$callbacks = array();
$fired     = array();
$routes    = array();
$options   = $cfg['options'];

function ai_test_call( $name, array $args ) {
	$GLOBALS['calls'][] = array( $name, $args );
}

/** The calls recorded for one function, as lists of arguments. */
function ai_test_calls( $name ) {
	$found = array();
	foreach ( $GLOBALS['calls'] as $call ) {
		if ( $call[0] === $name ) {
			$found[] = $call[1];
		}
	}
	return $found;
}

/** A REST answer as the test reads it. */
function ai_test_response( $response ) {
	if ( $response instanceof WP_Error ) {
		return array( 'error' => $response->get_error_code(), 'message' => $response->get_error_message(), 'data' => $response->get_error_data() );
	}
	if ( $response instanceof WP_REST_Response ) {
		return array( 'status' => $response->get_status(), 'data' => $response->get_data() );
	}
	return array( 'value' => $response );
}

register_shutdown_function(
	function () {
		echo json_encode(
			array(
				'out'     => $GLOBALS['out'],
				'calls'   => $GLOBALS['calls'],
				'hooks'   => $GLOBALS['hooks'],
				'fired'   => $GLOBALS['fired'],
				'options' => (object) $GLOBALS['options'],
			),
			JSON_UNESCAPED_SLASHES | JSON_PARTIAL_OUTPUT_ON_ERROR
		);
	}
);

// ---------------------------------------------------------------------------------------------
// Hooks

function ai_test_add_hook( $kind, $hook, $cb, $priority, $accepted_args ) {
	$GLOBALS['hooks'][]              = array( $kind, $hook, is_string( $cb ) ? $cb : 'closure', $priority, $accepted_args );
	$GLOBALS['callbacks'][ $hook ][] = array( $cb, $accepted_args );
	return true;
}
function add_action( $hook, $cb, $priority = 10, $accepted_args = 1 ) {
	return ai_test_add_hook( 'action', $hook, $cb, $priority, $accepted_args );
}
function add_filter( $hook, $cb, $priority = 10, $accepted_args = 1 ) {
	return ai_test_add_hook( 'filter', $hook, $cb, $priority, $accepted_args );
}
function do_action( $hook, ...$args ) {
	$GLOBALS['fired'][] = $hook;
	if ( empty( $args ) ) {
		$args[] = ''; // As WordPress does.
	}
	$registered = isset( $GLOBALS['callbacks'][ $hook ] ) ? $GLOBALS['callbacks'][ $hook ] : array();
	foreach ( $registered as $entry ) {
		call_user_func_array( $entry[0], array_slice( $args, 0, $entry[1] ) );
	}
}
function apply_filters( $hook, $value, ...$args ) {
	$registered = isset( $GLOBALS['callbacks'][ $hook ] ) ? $GLOBALS['callbacks'][ $hook ] : array();
	foreach ( $registered as $entry ) {
		$value = call_user_func_array( $entry[0], array_slice( array_merge( array( $value ), $args ), 0, $entry[1] ) );
	}
	return array_key_exists( $hook, $GLOBALS['cfg']['filters'] ) ? $GLOBALS['cfg']['filters'][ $hook ] : $value;
}

// ---------------------------------------------------------------------------------------------
// Errors and the REST API

class WP_Error {
	private $code;
	private $message;
	private $data;
	public function __construct( $code = '', $message = '', $data = '' ) {
		$this->code    = $code;
		$this->message = $message;
		$this->data    = $data;
	}
	public function get_error_code() {
		return $this->code;
	}
	public function get_error_message() {
		return $this->message;
	}
	public function get_error_data() {
		return $this->data;
	}
}
function is_wp_error( $thing ) {
	return $thing instanceof WP_Error;
}

class WP_REST_Request {
	private $method;
	private $route;
	private $headers = array();
	private $body    = '';
	public function __construct( $method = '', $route = '' ) {
		$this->method = $method;
		$this->route  = $route;
	}
	/** WordPress's canonical form: lowercase, dashes as underscores. */
	private static function canonical( $name ) {
		return str_replace( '-', '_', strtolower( $name ) );
	}
	public function set_header( $name, $value ) {
		$this->headers[ self::canonical( $name ) ] = array( $value );
	}
	public function get_header( $name ) {
		$key = self::canonical( $name );
		return isset( $this->headers[ $key ] ) ? implode( ',', $this->headers[ $key ] ) : null;
	}
	public function set_body( $body ) {
		$this->body = $body;
	}
	public function get_body() {
		return $this->body;
	}
}

class WP_REST_Response {
	private $data;
	private $status;
	public function __construct( $data = null, $status = 200 ) {
		$this->data   = $data;
		$this->status = $status;
	}
	public function get_data() {
		return $this->data;
	}
	public function get_status() {
		return $this->status;
	}
}

function register_rest_route( $namespace, $route, $args ) {
	ai_test_call( 'register_rest_route', array( $namespace, $route, $args ) );
	$GLOBALS['routes'][ $namespace . $route ] = $args;
	return true;
}
function rest_url( $path = '' ) {
	return $GLOBALS['cfg']['rest_url'] . ltrim( $path, '/' );
}
function wp_json_encode( $value ) {
	return json_encode( $value );
}

// ---------------------------------------------------------------------------------------------
// Options, cron and the database

function get_option( $name, $default = false ) {
	return isset( $GLOBALS['options'][ $name ] ) ? $GLOBALS['options'][ $name ]['value'] : $default;
}
function add_option( $name, $value = '', $deprecated = '', $autoload = null ) {
	ai_test_call( 'add_option', array( $name, $value, $deprecated, $autoload ) );
	if ( isset( $GLOBALS['options'][ $name ] ) ) {
		return false;
	}
	$GLOBALS['options'][ $name ] = array( 'value' => $value, 'autoload' => $autoload );
	return true;
}
function delete_option( $name ) {
	ai_test_call( 'delete_option', array( $name ) );
	$existed = isset( $GLOBALS['options'][ $name ] );
	unset( $GLOBALS['options'][ $name ] );
	return $existed;
}
function wp_next_scheduled( $hook ) {
	return in_array( $hook, $GLOBALS['cfg']['scheduled'], true ) ? 1 : false;
}
function wp_schedule_event( $timestamp, $recurrence, $hook, $args = array() ) {
	ai_test_call( 'wp_schedule_event', array( $timestamp, $recurrence, $hook, $args ) );
	return true;
}
function wp_schedule_single_event( $timestamp, $hook, $args = array() ) {
	ai_test_call( 'wp_schedule_single_event', array( $timestamp, $hook, $args ) );
	return true;
}

/** Just enough of wpdb for the seen-events cleanup: it runs that one query over $options. */
class AI_Test_WPDB {
	public $options = 'wp_options';
	public function esc_like( $text ) {
		return addcslashes( $text, '_%\\' );
	}
	public function prepare( $query, ...$args ) {
		$i = 0;
		return preg_replace_callback(
			'/%[sd]/',
			function ( $m ) use ( &$i, $args ) {
				$value = $args[ $i++ ];
				return '%d' === $m[0] ? (string) (int) $value : "'" . addslashes( $value ) . "'";
			},
			$query
		);
	}
	public function get_col( $sql ) {
		ai_test_call( 'wpdb::get_col', array( $sql ) );
		$pattern = '/^SELECT option_name FROM wp_options WHERE option_name LIKE \'((?:[^\'\\\\]|\\\\.)*)\' AND CAST\(option_value AS UNSIGNED\) < (-?\d+) LIMIT (\d+)$/';
		if ( ! preg_match( $pattern, $sql, $m ) ) {
			throw new RuntimeException( 'unexpected query: ' . $sql );
		}
		// Unquote the SQL string, then the LIKE pattern (which must end in an unescaped %).
		$like = stripslashes( $m[1] );
		if ( '%' !== substr( $like, -1 ) || '\\' === substr( $like, -2, 1 ) ) {
			throw new RuntimeException( 'the LIKE pattern is not a prefix match: ' . $like );
		}
		$prefix = stripslashes( substr( $like, 0, -1 ) );
		$names  = array();
		foreach ( $GLOBALS['options'] as $name => $option ) {
			if ( 0 === strpos( $name, $prefix ) && (int) $option['value'] < (int) $m[2] && count( $names ) < (int) $m[3] ) {
				$names[] = $name;
			}
		}
		return $names;
	}
}
$wpdb = new AI_Test_WPDB();

// ---------------------------------------------------------------------------------------------
// Users, posts, admin screens, scripts

function get_user_by( $field, $value ) {
	ai_test_call( 'get_user_by', array( $field, $value ) );
	if ( 'email' !== $field || ! isset( $GLOBALS['cfg']['users'][ $value ] ) ) {
		return false;
	}
	return (object) array( 'ID' => $GLOBALS['cfg']['users'][ $value ], 'user_email' => $value );
}
function is_multisite() {
	return $GLOBALS['cfg']['multisite'];
}
function user_can( $user, $capability, ...$args ) {
	ai_test_call( 'user_can', array_merge( array( $user, $capability ), $args ) );
	return in_array( implode( ':', array_merge( array( $user, $capability ), $args ) ), $GLOBALS['cfg']['grants'], true );
}
function wp_update_post( $postarr, $wp_error = false ) {
	ai_test_call( 'wp_update_post', array( $postarr, $wp_error ) );
	if ( $GLOBALS['cfg']['update_post_fails'] ) {
		return $wp_error ? new WP_Error( 'db_update_error', 'Could not update post in the database.' ) : 0;
	}
	return $postarr['ID'];
}
function sanitize_textarea_field( $text ) {
	return trim( strip_tags( $text ) );
}
function add_management_page( $page_title, $menu_title, $capability, $menu_slug, $callback = '' ) {
	ai_test_call( 'add_management_page', array( $page_title, $menu_title, $capability, $menu_slug, $callback ) );
	return 'tools_page_' . $menu_slug;
}
function wp_safe_redirect( $location, $status = 302 ) {
	ai_test_call( 'wp_safe_redirect', array( $location, $status ) );
	return $GLOBALS['cfg']['redirect_works'];
}
function esc_url( $url ) {
	return htmlspecialchars( $url, ENT_QUOTES );
}
function get_theme_file_uri( $file ) {
	return 'http://example.test/wp-content/themes/example/' . $file;
}
function wp_enqueue_script() {
	ai_test_call( 'wp_enqueue_script', func_get_args() );
}

// ---------------------------------------------------------------------------------------------
// HTTP: a real request through PHP's http stream wrapper (php-cli has no curl here), shaped
// like WordPress's wp_remote_request() answer.

function wp_remote_request( $url, $args = array() ) {
	ai_test_call( 'wp_remote_request', array( $url, $args ) );
	$lines = array();
	foreach ( isset( $args['headers'] ) ? $args['headers'] : array() as $name => $value ) {
		$lines[] = $name . ': ' . $value;
	}
	$http = array(
		'method'          => isset( $args['method'] ) ? $args['method'] : 'GET',
		'header'          => implode( "\r\n", $lines ),
		'timeout'         => isset( $args['timeout'] ) ? $args['timeout'] : 5,
		'ignore_errors'   => true,
		'follow_location' => 0,
	);
	if ( isset( $args['body'] ) ) {
		$http['content'] = $args['body'];
	}
	$http_response_header = null;
	$body                 = @file_get_contents( $url, false, stream_context_create( array( 'http' => $http ) ) );
	if ( false === $body || ! is_array( $http_response_header ) ) {
		$last = error_get_last();
		return new WP_Error( 'http_request_failed', $last ? $last['message'] : 'request failed' );
	}
	preg_match( '#^HTTP/\S+ (\d{3})#', $http_response_header[0], $m );
	return array( 'response' => array( 'code' => (int) $m[1] ), 'body' => $body );
}
function wp_remote_retrieve_response_code( $response ) {
	return is_array( $response ) ? $response['response']['code'] : '';
}
function wp_remote_retrieve_body( $response ) {
	return is_array( $response ) ? $response['body'] : '';
}

require $cfg['plugin'];
foreach ( $cfg['require'] as $file ) {
	require $file;
}
