/** The SDK's public surface: the client, its options and results, and its error. */
export {
  NeedleClient,
  type CallOptions,
  type CompactedCopy,
  type CompactReport,
  type ClientStats,
  type DeleteResult,
  type FileInfo,
  type Location,
  type UploadData,
  type UploadItem,
  type UploadManyOptions,
  type UploadOptions,
  type UploadResult,
  type VerifyReportItem,
  type VerifyVolumeOptions,
  type VolumeVerifyReport,
} from './client.js'
export { NeedleClientError, isNeedleClientError, type ErrorCode, type NeedleClientErrorDetails } from './errors.js'
export { CLIENT_DEFAULTS, resolveClientOptions, type NeedleClientOptions, type ResolvedClientOptions } from './options.js'
