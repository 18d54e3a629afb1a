/** The package's public surface. */
export * from './common/index.js'
export * from './dataserver/index.js'
export * from './master/index.js'
export * from './client/index.js'
// The master and the client both name `{ url, publicUrl }` Location; the shapes are the same.
export type { Location } from './client/index.js'
