/**
 * A tag unique to this test process (each test file runs in its own fork), added to database
 * names, table prefixes and so Redis channels. Two test runs on one MariaDB and one Redis (two
 * developers, or CI jobs on a shared host) then never drop or wake each other's databases.
 */
export const RUN = process.pid.toString(36)
