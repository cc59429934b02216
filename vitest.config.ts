import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Files run in parallel; each one that touches MariaDB makes its own database.
    fileParallelism: true,
    pool: 'forks',
  },
})
