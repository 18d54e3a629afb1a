/** The package's public surface. */
export * from './common/index.js'
export * from './dataserver/index.js'
export * from './master/index.js'
