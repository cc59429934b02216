import { describe, expect, it } from 'vitest'
import { checkServerVersion, dialectOf, mysqlPoolOptions } from '../../src/db/database.js'

describe('checkServerVersion (SKIP LOCKED needs MySQL 8.0.1+ or MariaDB 10.6+)', () => {
  it.each([
    '10.6.0-MariaDB', '10.11.19-MariaDB-0+deb12u1', '11.4.2-MariaDB-ubu2404', '8.0.1', '8.0.36-0ubuntu0.22.04.1', '8.4.0', '9.0.1',
  ])('accepts %s', (version) => {
    expect(() => checkServerVersion(version)).not.toThrow()
  })

  it.each([
    ['10.5.23-MariaDB', /MariaDB 10\.5\.23-MariaDB is too old: wp-ai-gateway needs MariaDB 10\.6/],
    ['10.3.39-MariaDB-0+deb10u1', /needs MariaDB 10\.6 or newer/],
    ['8.0.0', /MySQL 8\.0\.0 is too old: wp-ai-gateway needs MySQL 8\.0\.1/],
    ['5.7.44-log', /MySQL 5\.7\.44-log is too old/],
    ['garbage', /cannot read the database version/],
  ])('refuses %s with a message that says what is needed', (version, message) => {
    expect(() => checkServerVersion(version)).toThrow(message)
  })
})

describe('database URLs', () => {
  it('knows the dialect from the scheme and refuses others', () => {
    expect(dialectOf('sqlite:./data/x.sqlite')).toBe('sqlite')
    expect(dialectOf('mysql://root@127.0.0.1/wp')).toBe('mysql')
    expect(dialectOf('mariadb://root@127.0.0.1/wp')).toBe('mysql')
    expect(() => dialectOf('postgres://x/y')).toThrow(/mysql:\/\/ or sqlite:/)
  })

  it('reads host, port, socket, credentials and database, with UTC, text times and numeric ids', () => {
    const tcp = mysqlPoolOptions('mysql://wp%40user:p%3Ass@db.internal:3307/word%20press', 5)
    expect(tcp).toMatchObject({ host: 'db.internal', port: 3307, user: 'wp@user', password: 'p:ss', database: 'word press', connectionLimit: 5, timezone: 'Z', dateStrings: true, bigNumberStrings: false })
    const socket = mysqlPoolOptions('mysql://root@localhost/wp?socket=/run/mysqld/mysqld.sock', 2)
    expect(socket).toMatchObject({ socketPath: '/run/mysqld/mysqld.sock', database: 'wp' })
    expect(socket).not.toHaveProperty('host')
  })
})
